"""``co2scan demo``: the whole story on the embedded simulator, pictures included."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from controller.commands import add_command, chosen
from controller.commands.plan import EXIT_REJECTED, fail, format_table, pass_rows
from controller.commands.report import draw_session_report
from controller.commands.run import EXIT, add_quiet_delivery
from controller.errors import SettingsError
from controller.progress import ProgressDisplay, screen_display
from controller.record import RecordError, TreatmentRecord
from controller.script import TreatmentScript, load_script
from controller.session import TreatmentSession, timing_for, who_and_whom
from controller.validation import PlanRejected
from drivers import Device, DeviceError, open_device

EXIT_NOT_WRITTEN = 1
DEMO_SCRIPT = Path(__file__).resolve().parents[1] / "data" / "demo.toml"

HELP = """plan an example treatment, preview it, deliver it to the embedded simulator with
progress, verify the record and draw the report

Writes plan.png, report.png, demo.toml and the treatment record into --out. The record is
treatments.db with its chain head treatments.db.head (and the lock file
treatments.db.lock): copy the .head file along with the .db, or the copy does not verify
(see co2scan log --help).

examples:
  co2scan demo
  co2scan demo --out out/demo --script examples/deep_scar.toml
  co2scan demo --script examples/rapid_recovery.toml --operator "Dr A" --patient "test card"
"""


def run(args: argparse.Namespace) -> int:
    """The demo; a bad script, output directory or device URL ends it with the reason."""
    from controller.pictures import PictureError

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        script = load_script(args.script)
        # as co2scan run: who treats and whom, before the device is reached
        who = who_and_whom(chosen(args.operator, script.operator),
                           chosen(args.patient, script.patient_ref))
    except SettingsError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"cannot create {out}: {exc.strerror or exc}", EXIT_NOT_WRITTEN)
    print(f"1. treatment script {args.script} ({len(script.passes)} passes, handpiece "
          f"{script.handpiece.name})")
    try:
        device = open_device(args.device)
    except DeviceError as exc:
        return fail(f"cannot reach the device at {args.device}: {exc}", EXIT["device"])
    try:
        return _deliver(script, who, device, args.device, out, args.quiet)
    except (SettingsError, RecordError) as exc:  # the script against this device's limits;
        return fail(str(exc))                    # a record in --out that does not verify
    except PictureError as exc:
        return fail(str(exc), EXIT_NOT_WRITTEN)


def _deliver(script: TreatmentScript, who: tuple[str, str], device: Device, url: str,
             out: Path, quiet: bool = False) -> int:
    from controller.pictures import draw_plan

    with device:
        info = device.info
        print(f"2. device {info.serial}, firmware {info.firmware}, protocol "
              f"{info.protocol_version} at {url}: field {info.limits.field_size_um} µm, "
              f"energy {info.limits.energy_min_uj}-{info.limits.energy_max_uj} µJ, "
              f"{info.limits.rep_rate_max_hz} Hz max, buffer {info.limits.buffer_spots} spots")
        plans = script.plans(lambda s: timing_for(info.limits, s))
        record_path = out / "treatments.db"
        with TreatmentRecord(record_path) as record:
            display = ProgressDisplay(sys.stderr, quiet=quiet)
            rejected: PlanRejected | None
            try:
                with screen_display(sys.stderr, plans, quiet=quiet):
                    session = TreatmentSession(device, plans, record, operator=who[0],
                                               patient_ref=who[1],
                                               on_progress=display.update,
                                               pass_wait_s=script.pass_wait_s)
            except PlanRejected as exc:
                thermal, rejected = exc.thermal, exc
            else:
                thermal, rejected = session.thermal, None
            print("3. plan, with this device's timing and power limits, thermally screened:")
            print(format_table(pass_rows(plans, thermal), sys.stdout))
            preview = draw_plan(plans, [c.outcome for c in thermal], out / "plan.png",
                                title=f"co2scan demo: {script.path.name}")
            print(f"4. preview: {preview.path}")
            if rejected is not None:
                display.close()
                return fail(f"{rejected}\nnothing was delivered", EXIT_REJECTED)
            if session.warnings:
                session.acknowledge_warnings(by="co2scan demo")
            print("5. delivering (the simulator's footswitch is held down):")
            outcome = session.run()
            display.close()
            session.close()
            truth = device.simulator.device.ground_truth if device.simulator else None
            fired = len(truth) if truth is not None else "?"
            print(f"   session {outcome.session_id}: {outcome.status}; spots delivered "
                  f"{sum(outcome.delivered.values())}, fired by the simulator {fired}")
            check = record.verify()
            print(f"6. record {record_path}: {check.entries} entries, "
                  + ("hash chain verified" if check.ok else f"PROBLEMS {check.problems}"))
            report = draw_session_report(record, outcome.session_id, out / "report.png",
                                         f"demo session {outcome.session_id}: "
                                         f"{sum(outcome.delivered.values())} of "
                                         f"{sum(j.spots.count for j in session.jobs)} spots "
                                         "delivered")
        print(f"7. report: {report.path}")
    (out / "demo.toml").write_text(script.path.read_text(encoding="utf-8"), encoding="utf-8")
    return 0 if outcome.status == "completed" and check.ok else 4


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``co2scan demo`` command to the CLI's subcommands."""
    parser = add_command(subparsers, "demo", "the whole story on the embedded simulator", HELP)
    parser.add_argument("--out", default="out/demo", metavar="DIR",
                        help="where to write pictures and the record (default out/demo)")
    parser.add_argument("--script", default=str(DEMO_SCRIPT), metavar="SCRIPT",
                        help="treatment script (default: the built-in demo)")
    parser.add_argument("--device", default="sim://?footswitch=down&seed=1", metavar="URL",
                        help="device URL (default: the embedded simulator, footswitch down)")
    parser.add_argument("--operator",
                        help="operator for the record, over the script's operator (one of the "
                             "two is required)")
    parser.add_argument("--patient", metavar="REF",
                        help="patient reference for the record, over the script's patient_ref "
                             "(one of the two is required)")
    add_quiet_delivery(parser)
    parser.set_defaults(handler=run)
