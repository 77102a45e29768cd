"""co2scan controller: treatment planning, scan path, safety state machine, record and CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("co2scan")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
