"""Command line of the simulator: ``serve`` a device, and talk to a running one's control port.

``add_sim_arguments(subparsers)`` and ``run(args)`` let another CLI mount these commands
(``co2scan sim ...``); ``python -m sim_hw`` mounts them on its own parser.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from sim_hw.config import INPUT_ALIASES, INPUT_WORDS, SimConfig
from sim_hw.control import command_line, send
from sim_hw.faults import fault_words_help, parse_fault_words
from sim_hw.server import Served
from sim_hw.state_file import StateFile

CONTROL_COMMANDS = {"set": "change interlock inputs, e.g. footswitch=down door=closed",
                    "fault": "inject faults, e.g. drop=0.01, reset, drift=25, overtemp=on",
                    "status": "print the device state", "truth": "summarise the spots fired"}
#: The words each control command takes, for its --help.
WORDS_HELP = {
    "set": "inputs (INPUT=VALUE; the first value permits emission):\n" + "\n".join(
        f"  {name}={permit}|{block}" for name, (permit, block) in INPUT_WORDS.items())
    + "".join(f"\n  {alias}: the {name} input" for alias, name in INPUT_ALIASES.items()),
    "fault": "fault words (all are checked before any is applied; 'fault help' lists them "
             "too):\n" + fault_words_help(),
}


def port(text: str) -> int:
    """An argparse type: a TCP port number, 0 (any free port) to 65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} rejected; allowed: a port 0..65535")
    return int(text)


def add_sim_arguments(subparsers: Any) -> None:
    """Add ``serve`` and the control-channel commands to an argparse subparsers object."""
    serve = subparsers.add_parser("serve", help="run a simulated device until Ctrl-C")
    where = serve.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a pseudo-terminal")
    where.add_argument("--tcp", type=port, metavar="PORT", help="serve on 127.0.0.1:PORT")
    where.add_argument("--usb", action="store_true",
                       help="pyusb backend, in this process only (a demo)")
    serve.add_argument("--control-port", type=port, default=0,
                       help="control channel port on 127.0.0.1 (default: any free port)")
    serve.add_argument("--seed", type=int, default=0,
                       help="seed of the link faults and the energy noise, 0..4294967295")
    serve.add_argument("--clock", choices=("virtual", "realtime"), default="virtual")
    for name, (permit, block) in INPUT_WORDS.items():
        serve.add_argument(f"--{name}", choices=(permit, block), help=f"initial {name} input")
    serve.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="any SimConfig option, e.g. pre_emission_ms=0 (repeatable; an "
                       "unknown one or a value out of range is refused, naming the allowed)")
    serve.add_argument("--fault", action="append", default=[], metavar="FAULT",
                       help="fault to inject at start, e.g. drop=0.01 (repeatable; 'sim fault "
                       "--help' lists them)")
    serve.add_argument("--state", metavar="FILE",
                       help="keep the device's non-volatile memory (pass record, fired spots, "
                       "limits, calibration, key, spot rate) in FILE: loaded at start if it "
                       "exists (the device then starts as after a power loss, in FAULT), "
                       "rewritten whenever the device writes it; a file it cannot use is "
                       "refused")
    serve.set_defaults(sim_command="serve")
    for command, text in CONTROL_COMMANDS.items():
        sub = subparsers.add_parser(command, help=text, epilog=WORDS_HELP.get(command),
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--control", type=port, required=True, metavar="PORT",
                         help="control port printed by serve")
        sub.add_argument("words", nargs="*")
        sub.set_defaults(sim_command=command)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The simulator configuration serve's options give; ValueError names an ``--option`` that
    is not KEY=VALUE, or a key or value the configuration refuses."""
    query = {"seed": str(args.seed), "clock": args.clock}
    query.update({name: getattr(args, name) for name in INPUT_WORDS if getattr(args, name)})
    for option in args.option:
        key, sep, value = option.partition("=")
        if not sep:
            raise ValueError(f"--option {option!r}: expected KEY=VALUE; keys: "
                             f"{', '.join(SimConfig.option_names())}")
        query[key] = value
    return SimConfig.from_query(query)


def _start(args: argparse.Namespace, config: SimConfig, state: StateFile | None
           ) -> tuple[Served, list[str]]:
    """The running simulator and the lines that announce where to reach it (printed once it
    is ready, start faults applied)."""
    if args.pty:
        from sim_hw.pty_server import serve_pty

        pty = serve_pty(config, args.control_port, state)
        served: Served = pty
        lines = [f"pty: {pty.path}"]
    elif args.tcp is not None:
        from sim_hw.tcp_server import serve_tcp

        tcp = serve_tcp(config, args.tcp, args.control_port, state)
        served, lines = tcp, [f"url: {tcp.url}"]
    else:
        served, lines = _start_usb(config, args.control_port, state)
    lines.append(f"control: 127.0.0.1:{served.control_port}")
    if state is not None:
        lines.append(f"state: {state.path} (" + (
            "loaded: started as after a power loss" if state.loaded is not None
            else "new: a blank memory, the first power-on") + ")")
    return served, lines


def _start_usb(config: SimConfig, control_port: int, state: StateFile | None
               ) -> tuple[Served, list[str]]:
    import usb.core

    from sim_hw.probe import RawHost
    from sim_hw.usb_backend import PRODUCT_ID, VENDOR_ID, get_backend

    backend, served = get_backend(config, control_port, state)
    dev = usb.core.find(idVendor=VENDOR_ID, idProduct=PRODUCT_ID, backend=backend)

    def read(max_bytes: int, timeout_s: float) -> bytes:
        try:
            return bytes(dev.read(0x81, max_bytes, max(1, int(timeout_s * 1000))))
        except usb.core.USBTimeoutError:
            return b""

    try:
        reply = RawHost(lambda data: dev.write(0x01, data), read).request("IDENTIFY")
    except BaseException:  # refused: the caller discards its state file, so stop serving it
        served.stop()
        raise
    serial_number = bytes(reply["serial"]).rstrip(b"\0").decode()
    return served, [f"usb: {VENDOR_ID:04x}:{PRODUCT_ID:04x} serial {serial_number} - demo only: "
                     "the backend lives in this process; other processes cannot reach it"]


def serve(args: argparse.Namespace) -> int:
    """``serve``: announce where to reach the simulator, then serve until Ctrl-C or SIGTERM; the
    exit status (1 if the serving loop failed, e.g. its state file could not be written)."""
    config = config_from_args(args)
    start_faults = parse_fault_words(args.fault)  # a bad word ends here, before anything starts
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    state = None if args.state is None else StateFile(args.state, config)  # before serving
    try:
        served, lines = _start(args, config, state)
    except BaseException:  # refused: nothing served, nothing left behind
        if state is not None:
            state.discard()
        raise
    with served:
        if start_faults:  # before the simulator is announced
            for step in start_faults:
                step(served.faults)
            lines.append(f"faults: {served.faults.summary()}")
        print("\n".join(lines))
        sys.stdout.flush()
        try:
            while not stop.wait(0.5):
                if served.failure is not None:  # its state file could not be written, say
                    print(f"error: the simulator stopped: {served.failure}", file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
    return 0


def run(args: argparse.Namespace) -> int:
    """Execute a parsed sim command; returns the exit status."""
    if args.sim_command == "serve":
        try:
            return serve(args)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # the port is taken, no pty, ...
            print(f"error: cannot serve: {exc.strerror or exc}", file=sys.stderr)
            return 1
    try:
        line = command_line([args.sim_command, *args.words])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        reply = send(args.control, line)
    except OSError as exc:
        print(f"error: no simulator control port at 127.0.0.1:{args.control} "
              f"({exc.strerror or exc})", file=sys.stderr)
        return 1
    print(reply)
    return 1 if reply.startswith("error") else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m sim_hw``: run the command in ``argv`` (sys.argv when None), logging to
    stderr; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m sim_hw", description=__doc__)
    add_sim_arguments(parser.add_subparsers(required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    return run(args)
