"""trunner: an OpsLevel job runner built on trio's structured concurrency."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trunner")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
