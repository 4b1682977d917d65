"""One module per ``trunner`` subcommand; each has ``register(subparsers)``."""
