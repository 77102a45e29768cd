"""``co2scan devices``: serial ports and USB devices found, and how to reach the simulator."""

from __future__ import annotations

import argparse

from controller.commands import add_command
from drivers.discovery import serial_ports, usb_devices

HELP = """list serial ports and co2scan USB devices, and how to reach the simulator

example:
  co2scan devices
"""


def run(args: argparse.Namespace) -> int:
    """Print the serial ports and co2scan USB devices found, and the simulator's URLs; exit 0."""
    ports = serial_ports()
    print("Serial ports:")
    for p in ports:
        serial = f"  serial {p.serial_number}" if p.serial_number else ""
        print(f"  {p.url:<28} {p.description}{serial}")
    if not ports:
        print("  (none)")
    found, problem = usb_devices()
    print("USB devices (co2scan vendor/product id):")
    for d in found:
        print(f"  {d.url:<28} {d.description}")
    if problem:
        print(f"  not searched: {problem}")
    elif not found:
        print("  (none)")
    print("Simulator:")
    print("  sim://                       in-process, e.g. --device 'sim://?footswitch=down'")
    print("  co2scan sim serve --pty      a pseudo-terminal any serial program can open")
    print("  co2scan sim serve --tcp PORT then --device socket://127.0.0.1:PORT")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``co2scan devices`` command to the CLI's subcommands."""
    parser = add_command(subparsers, "devices", "list devices and how to reach the simulator", HELP)
    parser.set_defaults(handler=run)
