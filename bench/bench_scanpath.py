"""Scan-path benchmark: Cython kernels against their numpy references, side by side, one run.

Targets (issue 5), for 1,000,000 spots: generation (lattice, jitter, polygon mask) and the
thermal-spread ordering each >= 10x faster than the numpy reference; a full plan (mask, grid,
order, metrics) < 0.5 s. Estimated treatment time (timing model): thermal-spread <= 1.25x
serpentine, random shown beside. Wall-clock figures are the best of a few runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from types import ModuleType

from controller import _scanpath, scanpath_ref, timing
from controller import scanpath as sp
from controller.handpiece import get_handpiece
from controller.settings import DensitySpec, Pattern, ScanOrder, TreatmentSettings

SPOTS = 1_000_000
PITCH_UM = 300.0
JITTER_UM = 20.0
BIG_FIELD = timing.GalvoTiming(field_um=500_000.0)
#: Runs of the numpy reference generation (best kept): several where they are quick.
REF_RUNS = {"circle": 1, "square": 3}


@contextmanager
def kernels(module: ModuleType) -> Iterator[None]:
    """Run the planner on ``module``'s kernels (the Cython ones or the numpy references)."""
    saved = sp._scanpath, timing._scanpath
    sp._scanpath = timing._scanpath = module
    try:
        yield
    finally:
        sp._scanpath, timing._scanpath = saved


def best_s(fn: Callable[[], object], runs: int) -> float:
    """Best wall time of ``runs`` calls of ``fn``, in s (the least disturbed by other load)."""
    best = math.inf
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def settings_for(shape: str, kind: str, spots: int = SPOTS, pitch_um: float = PITCH_UM,
                 jitter_um: float = JITTER_UM) -> TreatmentSettings:
    """A pattern of about ``spots`` spots with the default 120 µm handpiece."""
    area_mm2 = spots * (pitch_um / 1000.0) ** 2
    width_mm = math.sqrt(area_mm2 * 4 / math.pi) if shape == "circle" else math.sqrt(area_mm2)
    return TreatmentSettings(get_handpiece(), Pattern(shape, width_mm),  # type: ignore[arg-type]
                             DensitySpec(pitch_um=pitch_um), 300.0, jitter_um=jitter_um,
                             order=ScanOrder(kind))  # type: ignore[arg-type]


def kernel_rows() -> list[tuple[str, float, float, str, bool]]:
    """Generation and ordering timed with the Cython kernels and the numpy references:
    (name, Cython s, numpy s, target, met) per row."""
    rows = []
    for shape in ("circle", "square"):
        s = settings_for(shape, "thermal-spread")
        times = {}
        for module, runs in ((_scanpath, 5), (scanpath_ref, REF_RUNS[shape])):
            with kernels(module):
                times[module] = best_s(partial(sp.pass_geometry, s, 0, 1), runs)
        ratio = times[scanpath_ref] / times[_scanpath]
        rows.append((f"generation, {shape} (lattice+jitter+mask)", times[_scanpath],
                     times[scanpath_ref], ">= 10x", ratio >= 10))
    s = settings_for("circle", "thermal-spread")
    x, y, i, j, _ = sp.pass_geometry(s, 0, 1)
    times = {}
    for module, runs in ((_scanpath, 5), (scanpath_ref, 1)):
        with kernels(module):
            times[module] = best_s(
                lambda: sp.firing_order(s, x, y, i, j, 1, BIG_FIELD), runs)
    ratio = times[scanpath_ref] / times[_scanpath]
    rows.append(("thermal-spread ordering, circle", times[_scanpath], times[scanpath_ref],
                 ">= 10x", ratio >= 10))
    return rows


def main() -> None:
    """Print kernel speed-ups, full-plan time and estimated treatment time per scan order."""
    s = settings_for("circle", "thermal-spread")
    plan = sp.build_plan(s, BIG_FIELD, seed=1)
    n = plan.metrics.passes[0].spot_count
    print(f"{n:,} spots: circle {s.pattern.width_mm:.0f} mm, pitch {PITCH_UM:g} µm, jitter "
          f"{JITTER_UM:g} µm, 120 µm handpiece; Cython best of 5, numpy reference best of "
          f"{REF_RUNS['square']} (square generation) or 1 run; one thread each")
    print(f"{'kernel':44} {'cython ms':>10} {'numpy ms':>10} {'speed-up':>9}  target    ok")
    for name, fast, slow, target, ok in kernel_rows():
        print(f"{name:44} {fast * 1e3:10.1f} {slow * 1e3:10.1f} {slow / fast:8.1f}x  "
              f"{target:8}  {'yes' if ok else 'NO'}")
    full = best_s(lambda: sp.build_plan(s, BIG_FIELD, seed=1), 5)
    print(f"{'full plan, build_plan (mask+grid+order+metrics)':44} {full * 1e3:10.1f} "
          f"{'':>10} {'':>9}  < 500 ms  {'yes' if full < 0.5 else 'NO'}")

    cases = [("10 x 10 mm, pitch 500 µm", "square", 400, 500.0, 0.0),
             ("10 x 10 mm, pitch 200 µm", "square", 2500, 200.0, 0.0),
             ("circle 20 mm, pitch 300 µm, jitter", "circle", 3491, 300.0, JITTER_UM),
             (f"circle, {SPOTS:,} spots", "circle", SPOTS, PITCH_UM, JITTER_UM)]
    galvo_bound = timing.GalvoTiming(max_spot_rate_hz=5000.0, field_um=BIG_FIELD.field_um)
    for limits, why in ((BIG_FIELD, "spot-rate bound"), (galvo_bound, "galvo bound")):
        print(f"\nestimated treatment time per pass (timing model: {limits.max_spot_rate_hz:g} Hz,"
              f" settle {limits.settle_us:g} µs, {limits.jump_speed_um_per_us:g} µm/µs, "
              f"{limits.jump_accel_um_per_us2:g} µm/µs^2; {why})")
        print(f"{'pattern':34} {'serpentine':>11} {'thermal':>11} {'random':>11} "
              f"{'thermal/serp':>13}  target     ok")
        for label, shape, spots, pitch_um, jitter_um in cases:
            dur = {kind: sp.build_plan(settings_for(shape, kind, spots, pitch_um, jitter_um),
                                       limits, seed=1).metrics.total_duration_s
                   for kind in ("serpentine", "thermal-spread", "random")}
            ratio = dur["thermal-spread"] / dur["serpentine"]
            print(f"{label:34} {dur['serpentine']:10.2f}s {dur['thermal-spread']:10.2f}s "
                  f"{dur['random']:10.2f}s {ratio:12.2f}x  <= 1.25x   "
                  f"{'yes' if ratio <= 1.25 else 'NO'}")
