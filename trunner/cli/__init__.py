"""The command line: ``trunner <command>`` (``app``), one module per subcommand (``commands/``),
how it talks to a person (``usage``) and the Go runner's flag forms (``gocli``)."""

from trunner.cli.app import main

__all__ = ["main"]
