from trunner.cli import main

raise SystemExit(main())
