"""``co2scan report ID -o report.png``: what a session delivered against what was planned."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from controller.commands import add_command
from controller.commands.log import _open
from controller.commands.run import add_record_argument
from controller.record import RecordError, TreatmentRecord
from drivers.protocol.messages import GALVO_CENTRE_LSB, GALVO_FULL_SCALE_LSB, SPOT_DTYPE

HELP = """draw a session's report: delivered vs planned spots (missing ones marked) and the
measured-energy histogram against the set value with the +/-20 % band

examples:
  co2scan report 1 -o report.png
  co2scan report 3 --record clinic.db -o session3.png
"""


def session_arrays(record: TreatmentRecord, session: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Planned positions (µm), delivered mask, measured and set energies of all passes."""
    head = next(e for e in record.entries(session, "session"))
    field_um = float(head.body["field_size_um"])
    xy, mask, measured, set_uj = [], [], [], []
    for p in head.body["passes"]:
        spots = record.pass_spots(session, p["pass"], SPOT_DTYPE)
        if spots is None:
            raise RecordError(f"session {session} pass {p['pass']}: planned spots not stored")
        to_um = field_um / GALVO_FULL_SCALE_LSB
        xy.append(np.column_stack([(spots["x_lsb"].astype(float) - GALVO_CENTRE_LSB) * to_um,
                                   (spots["y_lsb"].astype(float) - GALVO_CENTRE_LSB) * to_um]))
        index, energy = record.delivered_spots(session, p["pass"])
        delivered = np.zeros(len(spots), bool)
        delivered[index] = True
        mask.append(delivered)
        known = energy >= 0
        measured.append(energy[known])
        set_uj.append(spots["energy_uj"][index][known].astype(np.int64)
                      * spots["stack"][index][known])
    return (np.concatenate(xy), np.concatenate(mask), np.concatenate(measured),
            np.concatenate(set_uj), head.body)


def run(args: argparse.Namespace) -> int:
    from controller.pictures import PlottingUnavailable, draw_report

    try:
        with _open(args.record) as record:
            xy, mask, measured, set_uj, head = session_arrays(record, args.session)
    except (RecordError, StopIteration) as exc:
        print(f"error: session {args.session}: {exc or 'not in the record'}", file=sys.stderr)
        return 3
    title = (f"session {args.session}: {int(mask.sum())} of {mask.size} spots delivered; "
             f"operator {head.get('operator', '?')}, patient {head.get('patient_ref', '?')}")
    try:
        picture = draw_report(xy, mask, measured, set_uj, Path(args.output), title)
    except PlottingUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(f"wrote {picture.path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "report", "draw what a session delivered", HELP)
    parser.add_argument("session", type=int, metavar="ID", help="session id")
    parser.add_argument("-o", "--output", default="report.png", metavar="PNG",
                        help="picture to write (default report.png)")
    add_record_argument(parser)
    parser.set_defaults(handler=run)
