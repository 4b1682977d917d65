from trunner.cli.app import main

raise SystemExit(main())
