"""The co2scan command line: version, help, devices."""

from __future__ import annotations

import subprocess
import sys

import pytest

from controller import __version__
from controller.cli import main


def test_version_flag_prints_the_package_version() -> None:
    out = subprocess.run([sys.executable, "-m", "controller.cli", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"co2scan {__version__}" and __version__ != "0.0.0+unknown"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_devices_lists_sections_and_never_crashes_without_libusb(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    for heading in ("Serial ports:", "USB devices", "Simulator:", "sim://"):
        assert heading in out
