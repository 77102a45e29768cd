"""Thermal model: 100,000-spot pass time, Cython vs numpy reference, and scan orders compared.

Run: ``python -m bench thermal``. The timing patterns are square grids built here, fired at a
fixed pulse period; the numpy reference is timed on a subset of the pattern, next to the
Cython kernel on the same subset; then the same passes with the planner's windows
(``sized_for_pitch``), one run each. The scan-order comparison uses the real planner
(``build_plan``, its timing model) and the plan screen (``screen_plan``).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from types import ModuleType
from typing import cast

import numpy as np
from numpy.typing import NDArray

from controller import _thermal, thermal_ref
from controller.handpiece import get_handpiece
from controller.scanpath import build_plan
from controller.settings import DensitySpec, PassSettings, Pattern, ScanOrder, TreatmentSettings
from controller.thermal import ThermalResult, TissueParams, _simulate
from controller.thermal_screen import screen_plan, sized_for_pitch

F64 = NDArray[np.float64]
LESION_UM = 70.0  # 120 µm spot + 10 µm coagulation rim
HEAT_UJ = 2000.0  # e.g. 20 mJ pulse, 10 % left in the tissue as heat


def grid(n_side: int, pitch_um: float) -> tuple[F64, F64]:
    """Row-major square grid (raster order)."""
    col, row = np.meshgrid(np.arange(n_side), np.arange(n_side))
    return cast(F64, col.ravel() * pitch_um), cast(F64, row.ravel() * pitch_um)


def spread_order(n_side: int, stride: int = 4) -> NDArray[np.intp]:
    """Interlaced order: sub-lattices of every stride-th row and column, one after another,
    so consecutive spots are stride pitches apart."""
    col, row = np.meshgrid(np.arange(n_side), np.arange(n_side))
    key = ((row % stride) * stride + col % stride) * n_side * n_side + row * n_side + col
    return np.argsort(key.ravel(), kind="stable")


def orders(n_side: int) -> dict[str, NDArray[np.intp]]:
    """Raster, random (fixed seed) and spread firing orders of an ``n_side`` square grid."""
    n = n_side * n_side
    return {"raster": np.arange(n), "random": np.random.default_rng(7).permutation(n),
            "spread": spread_order(n_side)}


def run(n_side: int, pitch_um: float, period_s: float, order: NDArray[np.intp],
        params: TissueParams, kernel: ModuleType = _thermal) -> ThermalResult:
    """Simulate one pass over the grid in ``order``, a pulse every ``period_s``, on ``kernel``
    (the Cython one or the numpy reference)."""
    x, y = grid(n_side, pitch_um)
    n = n_side * n_side
    return _simulate(x[order], y[order], cast(F64, np.arange(n) * period_s), np.full(n, HEAT_UJ),
                     np.full(n, LESION_UM), params, kernel)


def timed(call: Callable[[], ThermalResult], repeats: int) -> tuple[float, float, ThermalResult]:
    """Best wall time and the process CPU time of that run (all threads)."""
    best, cpu, result = np.inf, np.inf, None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = call()
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, time.process_time() - start_cpu
    assert result is not None
    return best, cpu, result


def order_table() -> None:
    """Peak reservoir rise of the planner's raster, random and thermal-spread orders."""
    hp = get_handpiece("spot120")
    cases = [("10x10 mm, 10 %, 300 µm, 1 pass", 10.0, 10.0, 300.0, 1),
             ("10x10 mm, 10 %, 300 µm, 2 passes", 10.0, 10.0, 300.0, 2),
             ("10x10 mm, 20 %, 600 µm, 3 passes", 10.0, 20.0, 600.0, 3),
             ("20x20 mm, 5 %, 300 µm, 1 pass", 20.0, 5.0, 300.0, 1)]
    header = (f"{'plan (spot120)':34} {'order':15} {'spots':>6} {'time s':>7} {'depth loss':>11} "
              f"{'peak K':>7} {'median K':>9} {'damaged':>8} {'no loss: peak K':>16} "
              f"{'median K':>9} {'screen s':>9}")
    print(header)
    print("-" * len(header))
    for label, size_mm, cov_pct, depth_um, passes in cases:
        for kind in ("raster", "random", "thermal-spread"):
            plan = build_plan(TreatmentSettings(
                handpiece=hp, pattern=Pattern("square", width_mm=size_mm),
                density=DensitySpec(coverage_pct=cov_pct), depth_um=depth_um,
                passes=PassSettings(count=passes), order=ScanOrder(kind=kind)))
            start = time.perf_counter()
            screen = screen_plan(plan, hp)
            took_s = time.perf_counter() - start
            kept = screen_plan(plan, hp, replace(screen.params, depth_loss=False))
            last, last_kept = screen.passes[-1].result, kept.passes[-1].result
            print(f"{label:34} {kind:15} {len(plan.x_um):6d} "
                  f"{plan.metrics.total_duration_s:7.1f} {'yes':>11} "
                  f"{last.peak_reservoir_rise_k:7.1f} "
                  f"{np.median(last.peak_rise_k[last.reservoir]):9.1f} "
                  f"{100.0 * last.damaged_reservoir_fraction:7.1f}% "
                  f"{last_kept.peak_reservoir_rise_k:16.1f} "
                  f"{np.median(last_kept.peak_rise_k[last_kept.reservoir]):9.1f} {took_s:9.2f}")
    print("after the last pass (earlier passes' heat included, passes back to back); damaged: "
          "reservoir share whose Arrhenius damage integral reaches 1; slab = column depth from "
          "the handpiece")


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def cpu_model() -> str:
    """The processor's name as the system reports it (timings differ from machine to
    machine: compare builds side by side, on one machine)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def main() -> None:
    """Print pass times, Cython against numpy, the passes with the planner's windows, then
    the scan-order comparison."""
    params = TissueParams()
    threads = os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))
    print(f"params: {params}")
    print(f"spots: {HEAT_UJ:g} µJ residual heat, lesion radius {LESION_UM:g} µm; "
          f"Cython on OpenMP threads (OMP_NUM_THREADS={threads}); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores ({cpu_model()}) at the start\n")

    big, sub = 316, 45
    print(f"timing: {big * big:,}-spot pass, square grid pitch 200 µm, 1 ms pulse period; "
          f"numpy reference on the first {sub}x{sub} = {sub * sub:,} spots of the same grid, "
          "Cython timed on that subset too (ratio measured, not scaled)")
    header = (f"{'order':8} {'cython 100k s':>14} {'(cpu s)':>8} {'cython sub s':>13} "
              f"{'numpy sub s':>12} {'ratio':>7} {'< 1 s':>8} {'>= 20x':>8}")
    print(header)
    print("-" * len(header))
    big_orders, sub_orders = orders(big), orders(sub)
    for name in big_orders:
        t_big, cpu_big, _ = timed(partial(run, big, 200.0, 1e-3, big_orders[name], params), 3)
        t_fast, _, _ = timed(partial(run, sub, 200.0, 1e-3, sub_orders[name], params), 3)
        t_ref, _, _ = timed(partial(run, sub, 200.0, 1e-3, sub_orders[name], params,
                                    thermal_ref), 1)
        print(f"{name:8} {t_big:14.3f} {cpu_big:8.2f} {t_fast:13.4f} {t_ref:12.3f} "
              f"{t_ref / t_fast:7.0f} {_met(t_big < 1.0):>8} {_met(t_ref / t_fast >= 20.0):>8}")
    print("targets (issue #7): 100k-spot pass < 1 s wall; Cython >= 20x the numpy reference")
    sized = sized_for_pitch(params, 200.0)
    walls = {name: timed(partial(run, big, 200.0, 1e-3, order, sized), 1)[0]
             for name, order in big_orders.items()}
    shown = ", ".join(f"{name} {wall:.2f} s (< 1 s {_met(wall < 1.0)})"
                      for name, wall in walls.items())
    print(f"the same passes with the planner's windows for this pitch (sized_for_pitch: window "
          f"{sized.window_um:g} µm, map margin {sized.map_margin_um:g} µm, far grid "
          f"{sized.far_grid_um:g} µm; the slab as above), one run each: {shown}\n")
    print("scan order vs reservoir heating, real planner and timing model:")
    order_table()


if __name__ == "__main__":
    main()
