"""Thermal model: 100,000-spot pass time, Cython vs numpy reference, and scan orders compared.

Run: ``python -m bench thermal``. Patterns are square grids built here; firing times are a fixed
pulse period (the scan-path timing model is not used). The numpy reference is timed on a
subset of the pattern, next to the Cython kernel on the same subset.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from controller import _thermal, thermal_ref
from controller.thermal import ThermalResult, TissueParams, _simulate

F64 = NDArray[np.float64]
LESION_UM = 70.0  # 120 µm spot + 10 µm coagulation rim
HEAT_UJ = 2000.0  # e.g. 20 mJ pulse, 10 % left in the tissue as heat


def grid(n_side: int, pitch_um: float) -> tuple[F64, F64]:
    """Row-major square grid (raster order)."""
    col, row = np.meshgrid(np.arange(n_side), np.arange(n_side))
    return col.ravel() * pitch_um, row.ravel() * pitch_um


def spread_order(n_side: int, stride: int = 4) -> NDArray[np.intp]:
    """Interlaced order: sub-lattices of every stride-th row and column, one after another,
    so consecutive spots are stride pitches apart."""
    col, row = np.meshgrid(np.arange(n_side), np.arange(n_side))
    key = ((row % stride) * stride + col % stride) * n_side * n_side + row * n_side + col
    return np.argsort(key.ravel(), kind="stable")


def orders(n_side: int) -> dict[str, NDArray[np.intp]]:
    n = n_side * n_side
    return {"raster": np.arange(n), "random": np.random.default_rng(7).permutation(n),
            "spread": spread_order(n_side)}


def run(n_side: int, pitch_um: float, period_s: float, order: NDArray[np.intp],
        params: TissueParams, kernel: object = _thermal) -> ThermalResult:
    x, y = grid(n_side, pitch_um)
    n = n_side * n_side
    return _simulate(x[order], y[order], np.arange(n) * period_s, np.full(n, HEAT_UJ),
                     np.full(n, LESION_UM), params, kernel)


def timed(call: Callable[[], ThermalResult], repeats: int) -> tuple[float, ThermalResult]:
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - start)
    assert result is not None
    return best, result


def main() -> None:
    params = TissueParams()
    threads = os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))
    print(f"params: {params}")
    print(f"spots: {HEAT_UJ:g} µJ residual heat, lesion radius {LESION_UM:g} µm; "
          f"Cython on OpenMP threads (OMP_NUM_THREADS={threads})\n")

    big, sub = 316, 45
    print(f"timing: {big * big:,}-spot pass, square grid pitch 200 µm, 1 ms pulse period; "
          f"numpy reference on the first {sub}x{sub} = {sub * sub:,} spots of the same grid, "
          "Cython timed on that subset too (ratio measured, not scaled)")
    header = (f"{'order':8} {'cython 100k s':>14} {'cython sub s':>13} {'numpy sub s':>12} "
              f"{'ratio':>7} {'numpy 100k (scaled) s':>22}")
    print(header)
    print("-" * len(header))
    big_orders, sub_orders = orders(big), orders(sub)
    for name in big_orders:
        t_big, _ = timed(lambda name=name: run(big, 200.0, 1e-3, big_orders[name], params), 2)
        t_fast, _ = timed(lambda name=name: run(sub, 200.0, 1e-3, sub_orders[name], params), 3)
        t_ref, _ = timed(lambda name=name: run(sub, 200.0, 1e-3, sub_orders[name], params,
                                               thermal_ref), 1)
        scaled = t_ref * (big * big) / (sub * sub)
        print(f"{name:8} {t_big:14.3f} {t_fast:13.4f} {t_ref:12.3f} {t_ref / t_fast:7.0f} "
              f"{scaled:22.0f}")
    print("target: 100k-spot pass < 1 s; Cython >= 20x numpy reference\n")

    print("scan order vs peak reservoir rise (same pattern, same firing times):")
    cases = [("10x10 mm, pitch 400 µm, 300 Hz", 26, 400.0, 1 / 300),
             ("10x10 mm, pitch 200 µm, 1 kHz", 51, 200.0, 1e-3),
             ("63x63 mm, pitch 200 µm, 1 kHz", big, 200.0, 1e-3)]
    header = f"{'pattern':32} {'order':8} {'peak reservoir rise K':>22} {'damaged reservoir':>18}"
    print(header)
    print("-" * len(header))
    for label, n_side, pitch_um, period_s in cases:
        for name, order in orders(n_side).items():
            res = run(n_side, pitch_um, period_s, order, params)
            print(f"{label:32} {name:8} {res.peak_reservoir_rise_k:22.1f} "
                  f"{100.0 * res.damaged_reservoir_fraction:17.1f}%")
    print(f"damage criterion: peak rise >= {params.damage_rise_k:g} K "
          "(adiabatic slab: bulk heat stays in the plane, see docs/thermal_model.md)")


if __name__ == "__main__":
    main()
