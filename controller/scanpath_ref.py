"""Plain numpy reference implementations of the Cython kernels in ``controller._scanpath``.

Same names, arguments and results; written for clarity with whole-array operations (no
spatial hash tricks beyond sorting), used by the tests as the oracle and by the benchmark
as the baseline. Floating-point expressions are evaluated in the kernels' order so results
are bit-identical.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
I32 = NDArray[np.int32]

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
#: A point within this fraction of the outline's reach (its largest |coordinate|) of an edge
#: is on the outline, hence inside: the closed rule of grid_points
ON_EDGE_REL = 1e-9
_PAIR_CHUNK = 1 << 16


def _mix64(z: NDArray[np.uint64]) -> NDArray[np.uint64]:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _ragged_arange(first: NDArray[np.int64], counts: NDArray[np.int64]) -> NDArray[np.int64]:
    """Concatenation of arange(first[r], first[r] + counts[r]) over r."""
    total = int(counts.sum())
    run_start = np.cumsum(counts) - counts
    return np.repeat(first - run_start, counts) + np.arange(total)


def lattice(
    xmin: float, xmax: float, ymin: float, ymax: float, pitch_um: float, hexagonal: bool,
    offset_x_um: float, offset_y_um: float,
) -> tuple[F64, F64, I32, I32]:
    """Lattice points (x_um, y_um, i, j) in the closed box, row-major (see grid_points)."""
    if not pitch_um > 0:
        raise ValueError(f"pitch_um must be > 0, got {pitch_um}")
    row_um = pitch_um * np.sqrt(3.0) / 2.0 if hexagonal else pitch_um
    jmin = int(np.ceil((ymin - offset_y_um) / row_um))
    jmax = int(np.floor((ymax - offset_y_um) / row_um))
    rows = np.arange(jmin, jmax + 1, dtype=np.int64)
    shift = np.where((rows & 1).astype(bool) & hexagonal, pitch_um / 2.0, 0.0)
    imin = np.ceil((xmin - offset_x_um - shift) / pitch_um).astype(np.int64)
    imax = np.floor((xmax - offset_x_um - shift) / pitch_um).astype(np.int64)
    counts = np.maximum(imax - imin + 1, 0)
    i = _ragged_arange(imin, counts)
    j = np.repeat(rows, counts)
    x = i.astype(np.float64) * pitch_um + np.repeat(shift, counts) + offset_x_um
    y = np.repeat(rows.astype(np.float64) * row_um + offset_y_um, counts)
    return x, y, i.astype(np.int32), j.astype(np.int32)


def uniform(key: int, n: int) -> F64:
    """Reference for :func:`controller._scanpath.uniform`."""
    k = np.arange(1, n + 1, dtype=np.uint64)
    z = _mix64(np.uint64(key) + k * GOLDEN)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def jitter(x: F64, y: F64, half_side_um: float, key: int) -> tuple[F64, F64]:
    """Point k moved by (2u-1) * half_side_um per axis, u = the high (x) and low (y) 32 bits
    of hash k of the stream over 2^32."""
    bits = _mix64(np.uint64(key) + np.arange(1, len(x) + 1, dtype=np.uint64) * GOLDEN)
    ux = (bits >> np.uint64(32)).astype(np.float64) * (1.0 / 4294967296.0)
    uy = (bits & np.uint64(0xFFFFFFFF)).astype(np.float64) * (1.0 / 4294967296.0)
    return x + (2.0 * ux - 1.0) * half_side_um, y + (2.0 * uy - 1.0) * half_side_um


def on_edge_tolerance_um(vx: F64, vy: F64) -> float:
    """Distance from an edge within which a point is on the outline (see ON_EDGE_REL)."""
    return ON_EDGE_REL * float(max(np.abs(vx).max(), np.abs(vy).max()))


def inside_polygon(x: F64, y: F64, vx: F64, vy: F64) -> NDArray[np.bool_]:
    """Closed point-in-polygon test: within :func:`on_edge_tolerance_um` of an edge (every
    edge alike), or inside by the crossing number."""
    tol = on_edge_tolerance_um(vx, vy)
    inside = np.zeros(len(x), dtype=bool)
    on_edge = np.zeros(len(x), dtype=bool)
    for e in range(len(vx)):
        xi, yi = vx[e], vy[e]
        xj, yj = vx[(e + 1) % len(vx)], vy[(e + 1) % len(vx)]
        spans = (yi > y) != (yj > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            left = x < (y - yi) * ((xj - xi) / (yj - yi)) + xi
        inside ^= spans & left
        ex, ey = xj - xi, yj - yi
        length2 = ex * ex + ey * ey
        t = np.zeros(len(x))
        if length2 > 0.0:  # a zero-length edge is its start vertex
            t = np.clip(((x - xi) * ex + (y - yi) * ey) / length2, 0.0, 1.0)
        dx, dy = xi + t * ex - x, yi + t * ey - y
        on_edge |= dx * dx + dy * dy <= tol * tol
    return inside | on_edge


def grid_points(
    vx: F64, vy: F64, pitch_um: float, hexagonal: bool, offset_x_um: float, offset_y_um: float,
    jitter_half_um: float, key: int, cos_turn: float, sin_turn: float,
) -> tuple[F64, F64, I32, I32]:
    """Reference for :func:`controller._scanpath.grid_points`: lattice over the polygon's
    bounding box grown by the on-edge tolerance, jitter, mask, rotation, one step after the
    other."""
    if len(vx) < 3:
        raise ValueError(f"a polygon needs at least 3 vertices, got {len(vx)}")
    tol = on_edge_tolerance_um(vx, vy)
    x, y, i, j = lattice(vx.min() - tol, vx.max() + tol, vy.min() - tol, vy.max() + tol,
                         pitch_um, hexagonal, offset_x_um, offset_y_um)
    if jitter_half_um > 0:
        x, y = jitter(x, y, jitter_half_um, key)
    inside = inside_polygon(x, y, vx, vy)
    x, y = x[inside], y[inside]
    return cos_turn * x - sin_turn * y, sin_turn * x + cos_turn * y, i[inside], j[inside]


def _edge_dist2(x: F64, y: F64, vx: F64, vy: F64) -> F64:
    """Squared distance from each point to the nearest polygon edge."""
    best = np.full(len(x), 1e308)
    for e in range(len(vx)):
        ex = vx[(e + 1) % len(vx)] - vx[e]
        ey = vy[(e + 1) % len(vy)] - vy[e]
        length2 = ex * ex + ey * ey
        t = np.zeros(len(x))
        if length2 > 0.0:  # a zero-length edge is its start vertex
            t = np.clip(((x - vx[e]) * ex + (y - vy[e]) * ey) / length2, 0.0, 1.0)
        dx = vx[e] + t * ex - x
        dy = vy[e] + t * ey - y
        best = np.minimum(best, dx * dx + dy * dy)
    return best


def edge_distance(x: F64, y: F64, vx: F64, vy: F64) -> F64:
    """Reference for :func:`controller._scanpath.edge_distance`."""
    return np.sqrt(_edge_dist2(x, y, vx, vy))


def near_outline(x: F64, y: F64, vx: F64, vy: F64, radius_um: float) -> NDArray[np.bool_]:
    """Reference for :func:`controller._scanpath.near_outline`."""
    if len(vx) < 3:
        raise ValueError(f"a polygon needs at least 3 vertices, got {len(vx)}")
    return _edge_dist2(x, y, vx, vy) < radius_um * radius_um


def interlaced_order(i: I32, j: I32, x: F64, y: F64, ki: int, kj: int) -> I32:
    """Reference for :func:`controller._scanpath.interlaced_order`."""
    if len(i) == 0:
        return np.empty(0, dtype=np.int32)
    group = (j.astype(np.int64) % kj) * ki + i.astype(np.int64) % ki
    seq = np.argsort(group, kind="stable")
    g, row = group[seq], j[seq]
    new_row = np.r_[True, (g[1:] != g[:-1]) | (row[1:] != row[:-1])]
    row_id = np.cumsum(new_row) - 1
    row_start = np.flatnonzero(new_row)
    row_end = np.r_[row_start[1:], len(seq)]
    row_group = g[row_start]
    # parity of each row within its sub-grid, and each sub-grid's first-row direction
    first_row_of_group = np.r_[True, row_group[1:] != row_group[:-1]]
    group_first = np.flatnonzero(first_row_of_group)
    rank_in_group = np.arange(len(row_start)) - np.repeat(
        group_first, np.diff(np.r_[group_first, len(row_start)]))
    start_forward = np.ones(len(group_first), dtype=bool)
    for q in range(1, len(group_first)):
        prev_rows = slice(group_first[q - 1], group_first[q])
        n_prev = prev_rows.stop - prev_rows.start
        last_row = prev_rows.stop - 1
        last_forward = start_forward[q - 1] == (n_prev % 2 == 1)
        last = seq[row_end[last_row] - 1] if last_forward else seq[row_start[last_row]]
        r = group_first[q]
        left, right = seq[row_start[r]], seq[row_end[r] - 1]
        dl = (x[left] - x[last]) * (x[left] - x[last]) + (y[left] - y[last]) * (y[left] - y[last])
        dr = (x[right] - x[last]) * (x[right] - x[last]) + (
            y[right] - y[last]) * (y[right] - y[last])
        start_forward[q] = dl >= dr
    forward = np.repeat(start_forward, np.diff(np.r_[group_first, len(row_start)])) == (
        rank_in_group % 2 == 0)
    pos = np.arange(len(seq))
    rs, re = row_start[row_id], row_end[row_id]
    src = np.where(forward[row_id], pos, rs + re - 1 - pos)
    return seq[src].astype(np.int32)


def _pairs_within(x: F64, y: F64, radius_um: float) -> tuple[NDArray[np.int64], ...]:
    """All index pairs (a, b), a < b, of points strictly closer than ``radius_um``."""
    n = len(x)
    if n < 2 or not radius_um > 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    cell_um = max(radius_um, (np.ptp(x) + np.ptp(y)) * 1e-6)  # at most ~1e6 cells a side
    cx = np.floor((x - x.min()) / cell_um).astype(np.int64)
    cy = np.floor((y - y.min()) / cell_um).astype(np.int64)
    width = int(cx.max()) + 3
    key = (cy + 1) * width + (cx + 1)
    by_key = np.argsort(key, kind="stable")
    sorted_key = key[by_key]
    found_a, found_b = [], []
    for lo in range(0, n, _PAIR_CHUNK):
        a_all = np.arange(lo, min(lo + _PAIR_CHUNK, n))
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                target = key[a_all] + dy * width + dx
                first = np.searchsorted(sorted_key, target, "left")
                counts = np.searchsorted(sorted_key, target, "right") - first
                a = np.repeat(a_all, counts)
                b = by_key[_ragged_arange(first, counts)]
                keep = (b > a) & ((x[b] - x[a]) ** 2 + (y[b] - y[a]) ** 2 < radius_um**2)
                found_a.append(a[keep])
                found_b.append(b[keep])
    return np.concatenate(found_a), np.concatenate(found_b)


def min_neighbour_gap(x: F64, y: F64, radius_um: float, cap: int) -> int:
    """Reference for :func:`controller._scanpath.min_neighbour_gap`."""
    a, b = _pairs_within(x, y, radius_um)
    return int(min([len(x), max(cap, 0), *(b - a).min(initial=len(x), keepdims=True)]))


def fire_times(
    x: F64, y: F64, pulse_us: I32, stack: I32, period_us: float, speed_um_per_us: float,
    accel_um_per_us2: float, settle_us: float,
) -> tuple[F64, float, float]:
    """Reference for :func:`controller._scanpath.fire_times`."""
    if len(x) == 0:
        return np.empty(0), 0.0, 0.0
    dx = np.diff(x, prepend=0.0)
    dy = np.diff(y, prepend=0.0)
    d = np.sqrt(dx * dx + dy * dy)
    with np.errstate(divide="ignore", invalid="ignore"):
        jump = np.where(
            d == 0.0, 0.0,
            np.where(d < speed_um_per_us * speed_um_per_us / accel_um_per_us2,
                     2.0 * np.sqrt(d / accel_um_per_us2),
                     d / speed_um_per_us + speed_um_per_us / accel_um_per_us2))
    busy = stack.astype(np.float64) * pulse_us  # each spot's pulses, back to back
    step = np.maximum(busy[:-1] + jump[1:] + settle_us, period_us)
    t = np.cumsum(np.r_[jump[0] + settle_us, step])
    end = t[-1] + busy[-1]
    return t, float(end), float(d.sum())


def uncovered_samples(x: F64, y: F64, radius_um: float, sx: F64, sy: F64, inside: F64,
                      vx: F64, vy: F64) -> float:
    """Reference for :func:`controller._scanpath.uncovered_samples`."""
    if len(inside) != len(x):
        raise ValueError(f"array lengths differ: {[len(x), len(inside)]}")
    a, b = _pairs_within(x, y, 2.0 * radius_um)
    covered = np.zeros((len(x), len(sx)), dtype=bool)
    for s in range(len(sx)):
        px, py = x[b] + sx[s], y[b] + sy[s]
        hit = (px - x[a]) * (px - x[a]) + (py - y[a]) * (py - y[a]) < radius_um * radius_um
        covered[b[hit], s] = True
    partly = np.flatnonzero(inside < 1.0)
    outside = np.zeros_like(covered)
    outside[partly] = ~inside_polygon((x[partly, None] + sx).ravel(),
                                      (y[partly, None] + sy).ravel(), vx, vy
                                      ).reshape(len(partly), len(sx))
    overlapped = np.zeros(len(x), dtype=bool)
    overlapped[b] = True
    # summed disc after disc, as the kernel does
    per_disc = np.where(overlapped, (~covered & ~outside).sum(axis=1).astype(np.float64),
                        inside * float(len(sx)))
    return float(np.cumsum(per_disc)[-1]) if len(x) else 0.0
