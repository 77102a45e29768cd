"""A large recorded session to measure ``co2scan report`` on.

Run: ``python -m bench.report_session RECORD`` (a new record), then e.g.
``/usr/bin/time -v co2scan report 1 --record RECORD -o report.png``. The session is delivered
to the in-process simulator (``sim://``, virtual clock) through a ``TreatmentSession``, so the
record holds what ``co2scan run`` writes. Default: 100,000 spots in one pass over a square
lattice of 280 µm pitch (89 mm across, 5 µm jitter) on a simulator with a 100 mm field, the
handpiece's thermal limit lifted as ``make soak`` does, so that no screen refuses the plan;
``--passes``, ``--pitch-um`` and ``--field-mm`` shape others (``--passes 10 --pitch-um 130
--field-mm 20``: ten passes stacked on a 13 mm square).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace

from controller.handpiece import get_handpiece
from controller.record import TreatmentRecord
from controller.session import TreatmentSession, plan_for_device
from controller.settings import DensitySpec, PassSettings, Pattern, TreatmentSettings
from controller.validation import ClinicalEnvelope
from drivers import open_device

PASSES = 1
PITCH_UM = 280.0
FIELD_MM = 100
#: No clinical limit on how much one area receives (a measuring session, not a treatment).
ENVELOPE = ClinicalEnvelope("bench", 100.0, 1000.0, 1000, 1000.0, 1e9, 1e9)


def record_session(path: str, spots: int, passes: int = PASSES, pitch_um: float = PITCH_UM,
                   field_mm: int = FIELD_MM) -> tuple[int, int]:
    """Deliver a session of about ``spots`` spots in ``passes`` passes over one square lattice
    of ``pitch_um`` into the record at ``path``, on a simulator of a ``field_mm`` field:
    (session id, spots delivered)."""
    handpiece = replace(get_handpiece("spot120"), max_reservoir_damage_fraction=1.0)
    size_mm = round(math.sqrt(spots / passes) * pitch_um / 1000.0, 2)
    settings = TreatmentSettings(handpiece, Pattern("square", size_mm),
                                 DensitySpec(pitch_um=pitch_um), depth_um=200.0,
                                 passes=PassSettings(passes), jitter_um=5.0)
    url = f"sim://?footswitch=down&pre_emission_ms=20&seed=3&field_size_um={field_mm * 1000}"
    with open_device(url) as device, \
            TreatmentRecord(path) as record:
        plan = plan_for_device(settings, device.info.limits)
        session = TreatmentSession(device, [plan], record, operator="bench",
                                   patient_ref="report bench", envelope=ENVELOPE)
        try:
            outcome = session.run()
        finally:
            session.close()
        if outcome.status != "completed":
            raise RuntimeError(f"session {session.session_id}: {outcome.status} "
                               f"{outcome.detail}")
        return session.session_id, sum(outcome.delivered.values())


def main(argv: list[str]) -> int:
    """Record the session described by ``argv`` and print its id and spots delivered."""
    parser = argparse.ArgumentParser(prog="python -m bench.report_session",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("record", help="treatment record to write (created if missing)")
    parser.add_argument("--spots", type=int, default=100_000, help="about this many spots")
    parser.add_argument("--passes", type=int, default=PASSES, help="passes, each on the "
                        "same lattice")
    parser.add_argument("--pitch-um", type=float, default=PITCH_UM, help="lattice pitch")
    parser.add_argument("--field-mm", type=int, default=FIELD_MM, help="the simulator's "
                        "field (at most 100)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    session, delivered = record_session(args.record, args.spots, args.passes, args.pitch_um,
                                        args.field_mm)
    print(f"session {session}: {delivered} spots delivered into {args.record} in "
          f"{time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
