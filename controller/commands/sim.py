"""``co2scan sim ...``: the simulator's own command line (``sim_hw.cli``) mounted under co2scan."""

from __future__ import annotations

import argparse
import textwrap

from controller.commands import add_command
from sim_hw.cli import CONTROL_COMMANDS, WORDS_HELP, add_sim_arguments
from sim_hw.cli import run as run_sim

HELP = """run a simulated device, or change the inputs of a running one

The simulator speaks the device's wire protocol byte for byte. 'serve' prints the URL to
give co2scan's --device option and a control port; 'set', 'fault', 'status' and 'truth'
talk to a running simulator through that control port.

examples:
  co2scan sim serve --tcp 5555 --door closed
  co2scan sim serve --tcp 5555 --state sim-nvm.json   # survives a restart like a power cycle
  co2scan sim set --control 40123 footswitch=down
"""

SERVE_HELP = ("serve a simulated device on a pseudo-terminal, a TCP port or an in-process USB "
              "backend until Ctrl-C; prints its URL and control port")
#: Examples added to the help of each mounted sub-command.
EXAMPLES = {
    "serve": ["co2scan sim serve --pty", "co2scan sim serve --tcp 5555 --footswitch down",
              "co2scan sim serve --tcp 5555 --fault drop=0.01 --option pre_emission_ms=0",
              "co2scan sim serve --tcp 5555 --state sim-nvm.json"],
    "set": ["co2scan sim set --control 40123 footswitch=down door=closed"],
    "fault": ["co2scan sim fault --control 40123 drop=0.01", "co2scan sim fault --control "
              "40123 reset"],
    "status": ["co2scan sim status --control 40123"],
    "truth": ["co2scan sim truth --control 40123"],
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``co2scan sim`` (the simulator's own commands, with co2scan's help) to the CLI."""
    parser = add_command(subparsers, "sim", "run or control a simulated device", HELP)
    commands = parser.add_subparsers(dest="sim_command", required=True, metavar="COMMAND")
    add_sim_arguments(commands)
    for name, sub in commands.choices.items():
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        sub.description = textwrap.fill(CONTROL_COMMANDS.get(name, SERVE_HELP), 92)
        words = WORDS_HELP[name] + "\n\n" if name in WORDS_HELP else ""
        sub.epilog = words + "examples:\n" + "".join(f"  {e}\n" for e in EXAMPLES[name])
    parser.set_defaults(handler=run_sim)
