"""``co2scan run SCRIPT --device URL``: plan, confirm, and deliver a treatment with progress."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from controller.commands import add_command, bounded, chosen, session_id, to_stderr
from controller.commands.plan import fail, format_table, pass_rows, wrap
from controller.errors import SettingsError
from controller.outcomes import AUTO_RESETS, NOT_RESETTABLE
from controller.progress import ProgressDisplay, screen_display
from controller.record import RecordError, TreatmentRecord
from controller.scanpath import Plan
from controller.script import TreatmentScript, load_script
from controller.session import (
    MAX_START_WAIT_S,
    SessionOutcome,
    TreatmentSession,
    timing_for,
    who_and_whom,
)
from controller.validation import PlanRejected
from drivers import Device, DeviceError, LimitError, open_device
from drivers.protocol.messages import FaultCode

MAX_RESETS = 100
EXIT = {"completed": 0, "aborted": 1, "rejected": 3, "fault": 4, "paused": 5, "waiting": 5,
        "device": 6}

HELP = """plan a treatment script, confirm it, and deliver it with a live progress bar

The record names who treats and whom: operator and patient_ref from the script, or
--operator and --patient (which win); a run without either exits 3 before the device is
reached. A resumed session keeps the patient it was recorded for.

Against the simulator (sim://...) its footswitch option stands in for the operator's foot
(sim://?footswitch=down); against a device only the real footswitch releases emission.
Ctrl-C pauses after the current spot and offers resume or abort on a terminal (--yes too;
without a terminal it aborts). SIGTERM (a shutdown) and SIGHUP (the terminal gone) pause it
too, record which signal, and end the run with the session open for --resume. Exit status:
0 completed, 1 aborted or not confirmed (a new session not confirmed is recorded as
cancelled), 3 script invalid, plan rejected, resume refused or a record that does not verify
(co2scan log verify), 4 device fault (an interlock open when arming included), 5 paused or
not started (footswitch not pressed within --start-wait), 6 device unreachable, 130 Ctrl-C
before the delivery (at the confirmation: a "no"), 143 SIGTERM, 129 SIGHUP (128 + the
signal's number, as for a process the signal ends).

examples:
  co2scan run examples/surface_texture.toml --device 'sim://?footswitch=down' --yes
  co2scan run deep_scar.toml --device /dev/ttyACM0 --record clinic.db --operator "Dr A"
  co2scan run examples/rapid_recovery.toml --device /dev/ttyACM0 --operator "Dr A" --patient P-7
  co2scan run deep_scar.toml --device /dev/ttyACM0 --resume 12 --reset-fault 1  # after a crash
"""


def default_record() -> str:
    """Default ``--record``: $CO2SCAN_RECORD, else treatments.db in the current directory."""
    return os.environ.get("CO2SCAN_RECORD", "treatments.db")


def add_quiet_delivery(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet`` of run and demo: no thermal-screen progress, and off a terminal no
    delivery progress lines; errors, questions and the outcome are still shown."""
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no thermal-screen progress and, off a terminal, no delivery "
                             "progress lines (on one the progress bar stays); errors, "
                             "questions and the outcome are still shown")


def add_record_argument(parser: argparse.ArgumentParser) -> None:
    """``--record PATH`` of run, log and report, by default :func:`default_record`."""
    parser.add_argument("--record", default=default_record(), metavar="PATH",
                        help="treatment record (SQLite; default $CO2SCAN_RECORD or "
                             "treatments.db; its folder must exist)")


def ask(question: str, choices: tuple[str, ...]) -> str:
    """Ask on the terminal until one of ``choices`` (first letters accepted) is given."""
    while True:
        try:
            answer = input(f"{question} [{'/'.join(choices)}] ").strip().lower()
        except EOFError:
            return choices[-1]
        for choice in choices:
            if answer and choice.startswith(answer):
                return choice


#: Signals that end co2scan run as Ctrl-C without a terminal does, but leave the session open
#: for --resume: a shutdown or service manager's SIGTERM, SIGHUP when the terminal goes away.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP where no session delivers, raised as Ctrl-C raises
    KeyboardInterrupt; the exit status is 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """Ctrl-C, SIGTERM and SIGHUP while co2scan run holds the record (:meth:`installed`).
    While a session delivers (:meth:`delivering`), each asks it to pause (emission stops after
    the current spot) and SIGTERM or SIGHUP is kept in ``received``; at a question (the
    device paused or faulted: resume, reset?) each, Ctrl-C too, ends the run as it stands;
    where no session delivers, SIGTERM and SIGHUP raise Stopped."""

    def __init__(self) -> None:
        self.session: TreatmentSession | None = None
        self.received: int | None = None
        self.asking = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: the delivering session is asked to pause (SIGTERM, SIGHUP kept in
        ``received``); at a question or where none delivers, Stopped is raised."""
        if self.session is None or self.asking:  # at a question, Ctrl-C too ends the run
            raise Stopped(signum)
        if signum != signal.SIGINT:
            self.received = signum
        self.session.request_pause()

    @contextmanager
    def installed(self, *signums: int) -> Iterator[Signals]:
        """This object handles ``signums`` (SIGTERM and SIGHUP if none) in the block."""
        previous = {signum: signal.signal(signum, self) for signum in signums or STOP_SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextmanager
    def delivering(self, session: TreatmentSession) -> Iterator[None]:
        """Ctrl-C (too), SIGTERM and SIGHUP pause ``session`` in the block."""
        self.session = session
        try:
            with self.installed(signal.SIGINT):
                yield
        finally:
            self.session = None

    def ask(self, question: str, choices: tuple[str, ...]) -> str | None:
        """:func:`ask`; None if Ctrl-C, SIGTERM or SIGHUP arrives meanwhile (kept in
        ``received``)."""
        self.asking = True
        try:
            return ask(question, choices)
        except Stopped as stop:
            self.received = stop.signum
            return None
        finally:
            self.asking = False


def deliver(session: TreatmentSession, interactive: bool, resets: int,
            signals: Signals | None = None) -> SessionOutcome:
    """Run the session. On an operator pause ask resume/abort (abort when not interactive);
    on a device fault ask for an operator reset (or use up to ``resets`` given by flag). A
    pause for SIGTERM or SIGHUP, or one of them at a question, ends it as it stands."""
    signals = signals or Signals()
    with signals.delivering(session):
        outcome = session.run()
        while outcome.status in ("paused", "fault") and signals.received is None:
            to_stderr(f"\n{outcome.status}: {outcome.detail}")
            if outcome.status == "fault":
                if outcome.cause in NOT_RESETTABLE:  # a device reset changes nothing there
                    return outcome
                if resets > 0 and session.mirror.fault in (FaultCode.NONE, *AUTO_RESETS):
                    resets -= 1
                elif not interactive or signals.ask("reset the fault and resume?",
                                                    ("reset", "stop")) != "reset":
                    return outcome
                try:
                    session.operator_reset()
                except DeviceError as exc:
                    to_stderr(f"reset refused: {exc}")
                    return outcome
            else:
                answer = signals.ask("resume or abort?", ("resume", "abort")) if interactive \
                    else "abort"
                if answer is None:
                    return outcome
                if answer == "abort":
                    return session.abort()
            outcome = session.run()
    return outcome


def run(args: argparse.Namespace) -> int:
    """Load the script, reach the device and open the record, then treat; the exit status as
    HELP lists it (128 + the signal's number when SIGTERM or SIGHUP stopped the run)."""
    try:
        script = load_script(args.script)
        # who treats and whom, before the device is reached or the record written
        who_and_whom(chosen(args.operator, script.operator),
                     chosen(args.patient, script.patient_ref),
                     resuming=args.resume is not None)
    except SettingsError as exc:
        return fail(str(exc))
    url = script.device_url if args.device is None else args.device  # "" is refused
    try:
        device = open_device(url)
    except DeviceError as exc:
        to_stderr(f"error: cannot reach the device at {url}: {exc}")
        return EXIT["device"]
    with device:
        limits = device.info.limits
        try:
            plans = script.plans(lambda s: timing_for(limits, s))
            record = TreatmentRecord(Path(args.record))
        except (SettingsError, RecordError) as exc:
            return fail(str(exc))
        with record, Signals().installed() as signals:  # closed (its WAL merged) however
            try:                                          # the run ends
                return treat_with_record(args, script, device, url, plans, record, signals)
            except Stopped as stop:  # where no session delivers: nothing fired
                to_stderr(f"\nstopped by {stop}")
                return 128 + stop.signum


def treat_with_record(args: argparse.Namespace, script: TreatmentScript, device: Device, url: str,
                      plans: list[Plan], record: TreatmentRecord, signals: Signals) -> int:
    """Screen, show, confirm and deliver the plans, recording in ``record``; the exit status."""
    operator = chosen(args.operator, script.operator)  # the session refuses an empty one
    display = ProgressDisplay(sys.stderr, quiet=args.quiet)
    try:
        with screen_display(sys.stderr, plans, quiet=args.quiet):
            session = TreatmentSession(
                device, plans, record, operator=operator,
                patient_ref=chosen(args.patient, script.patient_ref), on_progress=display.update,
                reconnect=lambda: open_device(url), session_id=args.resume,
                start_wait_s=args.start_wait, pass_wait_s=script.pass_wait_s)
    except (PlanRejected, SettingsError, RecordError) as exc:
        return fail(str(exc))
    except LimitError as exc:  # a device co2scan cannot treat with (no energy monitor)
        to_stderr(wrap(f"error: cannot treat with the device at {url}: {exc}"))
        return EXIT["device"]
    print(f"device {device.info.serial} (firmware {device.info.firmware}) at {url}")
    print(wrap(f"operator {operator}, patient {session.patient_ref}"
               + (f" (session {args.resume}, resumed)" if args.resume is not None else "")))
    print(format_table(pass_rows(plans, session.thermal), sys.stdout))
    for warning in session.warnings:
        print(wrap(f"borderline: {warning}"))
    interactive = sys.stdin.isatty()  # --yes confirms; a pause still asks on a terminal
    stopped_by: int | None = None
    try:
        confirmed = args.yes or (interactive and ask("deliver this treatment?", ("yes", "no"))
                                 == "yes")
    except KeyboardInterrupt as exc:  # Ctrl-C (Stopped: SIGTERM, SIGHUP) at the question: no
        confirmed, stopped_by = False, getattr(exc, "signum", signal.SIGINT)
    if not confirmed:
        to_stderr(("not confirmed" if stopped_by is None else
                   f"\nnot confirmed ({signal.Signals(stopped_by).name})") + ": nothing was "
                  "fired (use --yes to confirm without asking)")
        if args.resume is None:  # a resumed session stays open to be resumed
            to_stderr(f"session {session.cancel().session_id}: cancelled")
        session.close()
        return EXIT["aborted"] if stopped_by is None else 128 + stopped_by
    if session.warnings:
        session.acknowledge_warnings(by=operator)
    try:
        outcome = deliver(session, interactive, args.reset_fault, signals)
    except DeviceError as exc:
        outcome = SessionOutcome("fault", session.session_id, str(exc))
    finally:
        display.close()
        session.close()
    stopped_by = signals.received if outcome.status not in ("completed", "aborted") else None
    if stopped_by is not None:
        name = signal.Signals(stopped_by).name
        with contextlib.suppress(RecordError):
            record.append(session.session_id, "interrupted", reason=name)
        to_stderr(wrap(f"\nstopped by {name}: emission is off; session {session.session_id} "
                       "stays open; continue it with:"))
        to_stderr(f"  {resume_command(args, session.session_id)}")  # unwrapped
    detail = f"stopped by {signal.Signals(stopped_by).name}" if stopped_by else outcome.detail
    print(wrap(f"session {outcome.session_id}: {outcome.status}"
               + (f" ({detail})" if detail else "")
               + "; delivered " + ", ".join(f"pass {k + 1}: {n}"
                                            for k, n in outcome.delivered.items())))
    try:
        verification = record.verify()
        print(f"record {args.record}: {verification.entries} entries, "
              + ("chain verified" if verification.ok else "PROBLEMS: "
                 + "; ".join(verification.problems)))
    except RecordError as exc:  # e.g. its writers' lock held by a stalled writer
        to_stderr(wrap(f"record {args.record}: not verified: {exc}"))
    return EXIT[outcome.status] if stopped_by is None else 128 + stopped_by


def resume_command(args: argparse.Namespace, session: int) -> str:
    """The command line that continues ``session``: the same script, device and record."""
    words = ["co2scan", "run", args.script]
    words += ["--device", args.device] if args.device is not None else []
    words += ["--record", args.record, "--resume", str(session)]
    return shlex.join(words)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``co2scan run`` command to the CLI's subcommands."""
    parser = add_command(subparsers, "run", "deliver a treatment script to a device", HELP)
    parser.add_argument("script", metavar="SCRIPT", help="treatment script (TOML)")
    parser.add_argument("--device", metavar="URL",
                        help="device URL (default: the script's [device] url)")
    parser.add_argument("--yes", action="store_true",
                        help="confirm without asking (and acknowledge borderline warnings)")
    parser.add_argument("--operator",
                        help="operator name for the record (required: here or operator = in "
                             "the script)")
    parser.add_argument("--patient", metavar="REF",
                        help="patient reference for the record (required: here or "
                             "patient_ref = in the script; a test pass names what it fires "
                             "at, e.g. 'test card'); --resume keeps the recorded one and "
                             "refuses another")
    parser.add_argument("--resume", type=session_id, metavar="SESSION",
                        help="continue an interrupted session of the record (only one "
                             "planned exactly as this script)")
    parser.add_argument("--reset-fault", type=bounded(int, 0, MAX_RESETS), default=0,
                        metavar="N",
                        help="operator reset of up to N watchdog or power-loss faults "
                             "(DEVICE_RESET) without asking, after a crash; a laser, galvo or "
                             "interlock fault is asked on a terminal, and stops the run "
                             "without one; default 0")
    parser.add_argument("--start-wait", type=bounded(float, 0.0, MAX_START_WAIT_S),
                        default=60.0, metavar="S",
                        help="how long to wait for the footswitch (and the emission "
                             "indicator's delay) before a pass starts (default 60); an "
                             "interlock open when arming (door, key, e-stop) is a device "
                             "fault: close it and run again")
    add_record_argument(parser)
    add_quiet_delivery(parser)
    parser.set_defaults(handler=run)
