"""``co2scan report ID -o report.png``: what a session delivered against what was planned."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from controller.commands import add_command, session_id, to_stderr
from controller.commands.log import EXIT_TAMPERED, verified
from controller.commands.preview import png_output
from controller.commands.run import add_record_argument
from controller.errors import SettingsError
from controller.outcomes import outcome_text, session_outcomes
from controller.progress import step_display
from controller.record import RecordError, TreatmentRecord
from controller.thermal_delivered import recorded_passes, simulate_delivered, spot_positions_um
from controller.thermal_screen import screen_progress

if TYPE_CHECKING:
    from controller.pictures import Picture
    from controller.thermal import ThermalResult

HELP = """draw a session's report, titled with its outcome (as co2scan log list says it:
completed, aborted, cancelled, fault and its cause, paused, waiting, interrupted, open):
delivered vs planned spots (missing ones marked), the injury
map of what was delivered (the thermal model run on the measured energies and the recorded
timing) and the measured-energy histogram against the set value with the +/-20 % band.
-o must name a file ending in .png (PNG is the only format written); anything else exits 2.
A record whose hash chain does not verify is refused (exit 4); see co2scan log verify.
It says on stderr what it is doing (verifying, reading, the thermal model, drawing): on a
terminal one line with the time counting, else a line per step (-q/--quiet: nothing). The
model of a large session takes a while (100,000 spots over 89 mm: about 20 s).

examples:
  co2scan report 1 -o report.png
  co2scan report 3 --record clinic.db -o session3.png
"""


def session_arrays(record: TreatmentRecord, session: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict, np.ndarray]:
    """Planned positions (µm), delivered mask, measured and set energies (whole stack, µJ)
    of the delivered spots with a reading, the session entry's body, and the set energies
    (whole stack, µJ) of every planned spot, of all passes."""
    head = next(e for e in record.entries(session, "session"))
    field_um = float(head.body["field_size_um"])
    xy, mask, measured, set_uj, planned_uj = [], [], [], [], []
    for recorded in recorded_passes(record, session):
        if len(recorded.spots) and min(recorded.spots["stack"].min(),
                                       recorded.spots["energy_uj"].min()) < 1:
            raise RecordError(f"pass {recorded.stored['pass'] + 1}: its stored spots have a "
                              "stack or set energy of 0, which co2scan never sends")
        xy.append(np.column_stack(spot_positions_um(recorded.spots, field_um)))
        delivered = np.zeros(len(recorded.spots), bool)
        delivered[recorded.index] = True
        mask.append(delivered)
        known = recorded.measured_uj >= 0
        measured.append(recorded.measured_uj[known])
        set_uj.append(recorded.set_uj[known])
        planned_uj.append(recorded.spots["energy_uj"].astype(np.int64) * recorded.spots["stack"])
    return (np.concatenate(xy), np.concatenate(mask), np.concatenate(measured),
            np.concatenate(set_uj), head.body, np.concatenate(planned_uj))


def draw_session_report(record: TreatmentRecord, session: int, out_path: str | Path,
                        title: str = "", progress: Callable[[str], None] | None = None
                        ) -> Picture:
    """The report picture of ``session``; ``title`` defaults to the session's outcome (as
    ``co2scan log list`` says it: completed, aborted, cancelled, fault with its cause...), the
    delivered count, operator and patient. A session whose delivered heat cannot be modelled
    (nothing delivered, an unknown handpiece) gets the reason in place of the injury map.
    ``progress(what)`` is told each step as it begins (reading, the thermal model, drawing)."""
    from controller.pictures import draw_report

    step = progress or (lambda what: None)
    step(f"reading session {session}")
    xy, mask, measured, set_uj, head, planned_uj = session_arrays(record, session)
    injury: ThermalResult | str
    try:
        with screen_progress(lambda what: step(f"thermal model of {what}")):
            injury = simulate_delivered(record, session)
    except (RecordError, SettingsError) as exc:
        injury = f"no injury map:\n{exc}"
    outcome = outcome_text(session_outcomes(record, session).get(session, ("open", "")))
    title = title or (f"session {session}, {outcome}: {int(mask.sum())} of {mask.size} spots "
                      f"delivered; operator {head.get('operator', '?')}, patient "
                      f"{head.get('patient_ref', '?')}")
    step(f"drawing {out_path}")
    return draw_report(xy, mask, measured, set_uj, out_path, title, injury=injury,
                       planned_set_uj=planned_uj)


def run(args: argparse.Namespace) -> int:
    """Draw the report of a session of a record whose chain verifies (a tampered record is
    refused, exit 4, as ``log verify`` reports it), saying on stderr what it does (``-q``:
    nothing)."""
    from controller.pictures import PictureError

    try:
        with TreatmentRecord(args.record, read_only=True) as record:
            with step_display(sys.stderr, "report", quiet=args.quiet) as step:
                step(f"verifying {record.path}")
                check = record.verify()
                if check.ok:
                    picture = draw_session_report(record, args.session, Path(args.output),
                                                  progress=step)
                    step("done")
            if not verified(record, "no report drawn", check):  # below the progress line
                return EXIT_TAMPERED
    except (RecordError, StopIteration) as exc:
        print(f"error: session {args.session}: {str(exc) or 'not in the record'}",
              file=sys.stderr)
        return 3
    except PictureError as exc:
        to_stderr(f"error: {exc}")
        return 3
    print(f"wrote {picture.path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``co2scan report`` command to the CLI's subcommands."""
    parser = add_command(subparsers, "report", "draw what a session delivered", HELP)
    parser.add_argument("session", type=session_id, metavar="ID", help="session id")
    parser.add_argument("-o", "--output", default="report.png", metavar="PNG", type=png_output,
                        help="picture to write, a file name ending in .png (default "
                             "report.png)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress lines (what the report is doing)")
    add_record_argument(parser)
    parser.set_defaults(handler=run)
