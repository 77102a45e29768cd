"""Plain numpy reference of the thermal kernels in :mod:`controller._thermal` (tests, bench).

Same algorithm and arithmetic as the Cython kernel, with numpy vector operations where the
kernel has loops. The model and the scheme are described in docs/thermal_model.md; the grid
and time-scale fields come from :class:`controller.thermal.Layout`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from controller.thermal import Layout

F64 = NDArray[np.float64]

#: A later spot takes over a cell's damage integral only if the cell lies this many cells
#: inside its window (rounding must never leave a cell to no window).
COVER_MARGIN = 1e-6

#: In a damage sample, a sharp spot whose width grows by at most this factor over the interval
#: is counted at the interval's ends (its pulse is resolved there), a younger one at its largest
#: rise over the interval.
RESOLVED_RATIO = 4.0

#: In a window's damage samples, a sharp spot whose width is at least this many times rho^2
#: (rho: the half-diagonal of the box of the cells live at the first damage sample) enters as
#: a 2nd-order Taylor sum about that box's centre instead of exactly: the cells lie within
#: a quarter of its 1/e radius of the centre (the background's Taylor sum: within half).
DAMAGE_TAYLOR_RATIO = 16.0

#: Far-grid blocks a window may sample ahead of its own (the Cython kernel: at most its chunk).
LOOKAHEAD = 8
#: Snapshots of the far grid per block, the first at its start: a window samples on until a
#: snapshot holds its spot, so the spacing of the snapshots sets how long it waits after its
#: spot's width reaches snap_s.
SNAPS_PER_BLOCK = 4


def cell_span(lo_um: float, hi_um: float, origin_um: float, cell_um: float,
              n: int) -> tuple[int, int]:
    """Half-open index range of cells whose centres lie in [lo_um, hi_um], clipped to [0, n)."""
    first = math.ceil((lo_um - origin_um) / cell_um - 0.5)
    last = math.floor((hi_um - origin_um) / cell_um - 0.5)
    return max(first, 0), min(last + 1, n)


def lesion_mask(x_um: F64, y_um: F64, radius_um: F64, layout: Layout) -> NDArray[np.bool_]:
    """Cells whose centre lies within some spot's lesion (column + coagulation rim)."""
    lay = layout
    mask = np.zeros((lay.ny, lay.nx), dtype=bool)
    xc = lay.x0_um + (np.arange(lay.nx) + 0.5) * lay.cell_um
    yc = lay.y0_um + (np.arange(lay.ny) + 0.5) * lay.cell_um
    for x, y, r in zip(x_um, y_um, radius_um, strict=True):
        c0, c1 = cell_span(x - r, x + r, lay.x0_um, lay.cell_um, lay.nx)
        r0, r1 = cell_span(y - r, y + r, lay.y0_um, lay.cell_um, lay.ny)
        dx2 = (xc[c0:c1] - x) ** 2
        dy2 = (yc[r0:r1] - y) ** 2
        mask[r0:r1, c0:c1] |= dy2[:, None] + dx2[None, :] <= r * r
    return mask


def depth_factor(age_s: F64, layout: Layout) -> F64:
    """Share of a spot's heat still in the slab at ``age_s`` (table lookup, as the kernel)."""
    v = np.sqrt(np.maximum(age_s, 0.0)) * layout.loss_per_sqrt_s
    table = layout.loss_table
    pos = (v / (1.0 + v)) * (len(table) - 1)
    k = np.minimum(pos.astype(np.intp), len(table) - 2)
    return table[k] + (pos - k) * (table[k + 1] - table[k])


def damage_rate(rise_k: F64, layout: Layout) -> F64:
    """Arrhenius damage rate (1/s) at these rises; 0 at or below the floor rise; from the floor
    on linear between the nodes of the layout's rate table, exact above it (as the kernel)."""
    rise = np.asarray(rise_k, dtype=np.float64)
    lay = layout
    table = lay.rate_table
    rate = np.exp(lay.rate_ln_a - lay.rate_ea_r_k / (lay.rate_base_k + np.maximum(rise, 0.0)))
    pos = (rise - lay.rate_floor_k) * lay.rate_per_k
    inside = (rise > lay.rate_floor_k) & (pos < len(table) - 1)
    k = np.where(inside, pos, 0.0).astype(np.intp)
    lin = table[k] + (pos - k) * (table[k + 1] - table[k])
    return np.where(rise > lay.rate_floor_k, np.where(inside, lin, rate), 0.0)


def peak_rise(x_um: F64, y_um: F64, t_s: F64, e_k_um2: F64, s0_um2: F64,
              layout: Layout) -> tuple[F64, F64, F64, NDArray[np.bool_]]:
    """Windowed superposition plus far grid; spots sorted by ``t_s``.

    ``e_k_um2`` is each spot's heat over (heat capacity x thickness), ``s0_um2`` its initial
    Gaussian width (lesion radius squared). Returns the peak rise map on the fine grid (the
    larger of the window samples and the interpolated far snapshots), the damage-integral map
    (the sum of the window integrals and the interpolated far integral; each interval between
    two samples at the larger of their rises), the far grid at the end (the heat still in the
    slab) and the map of the cells some window sampled.
    """
    return _Run(x_um, y_um, t_s, e_k_um2, s0_um2, layout).run()


class _Run:
    """State of one reference evaluation (mirrors the loops of the Cython kernel)."""

    def __init__(self, x: F64, y: F64, t: F64, e: F64, s0: F64, layout: Layout) -> None:
        self.x, self.y, self.t, self.e, self.s0, self.lay = x, y, t, e, s0, layout
        lay = layout
        self.xc = lay.x0_um + (np.arange(lay.nx) + 0.5) * lay.cell_um
        self.yc = lay.y0_um + (np.arange(lay.ny) + 0.5) * lay.cell_um
        self.xn = lay.fx0_um + np.arange(lay.nfx) * lay.far_um
        self.yn = lay.fy0_um + np.arange(lay.nfy) * lay.far_um
        self.taps = lay.taps
        self.block_decay = np.exp(-lay.mode_decay_per_s * lay.block_s)
        self.fine = np.full((lay.ny, lay.nx), -1.0)
        self.dose = np.zeros((lay.ny, lay.nx))
        self.far_peak = np.zeros((lay.nfy, lay.nfx))
        self.far_dose = np.zeros((lay.nfy, lay.nfx))
        self.far_prev = np.zeros((lay.nfy, lay.nfx))

    def boundary(self, b: int) -> float:
        return self.lay.t0_s + b * self.lay.block_s

    def snap_time(self, k: int) -> float:
        """Snapshot k's time: SNAPS_PER_BLOCK a block, the first at its start."""
        return self.boundary(k // SNAPS_PER_BLOCK) + (k % SNAPS_PER_BLOCK) * (
            self.lay.block_s / SNAPS_PER_BLOCK)

    def held_width(self, j: int, ts: float) -> float:
        """Spot j's width at snapshot time ts, as ``snapshot`` and ``hold`` test it."""
        return float(self.s0[j] + 4.0 * self.lay.kappa_um2_s * (ts - self.t[j]))

    def hold(self, j: int) -> float:
        """Spot j's hold: the first snapshot that holds it (by ``snapshot``'s width test:
        where the quotient falls on a snapshot, rounding may put the width there a step
        either side of snap_s)."""
        lay = self.lay
        age = (lay.snap_s_um2 - self.s0[j]) / (4.0 * lay.kappa_um2_s)
        k = math.ceil((self.t[j] + age - lay.t0_s) / (lay.block_s / SNAPS_PER_BLOCK))
        while self.held_width(j, self.snap_time(k)) < lay.snap_s_um2:
            k += 1
        while k > 0 and self.held_width(j, self.snap_time(k - 1)) >= lay.snap_s_um2:
            k -= 1
        return self.snap_time(k)

    def block_of(self, b: int, ts: float) -> int:
        """The far-grid block holding ts for a window of block b, at most LOOKAHEAD - 1 ahead."""
        bs = b
        while bs < b + LOOKAHEAD - 1 and ts >= self.boundary(bs + 1):
            bs += 1
        return bs

    def first_ge(self, value: float) -> int:
        return int(np.searchsorted(self.t, value, "left"))

    def run(self) -> tuple[F64, F64, F64, NDArray[np.bool_]]:
        lay = self.lay
        # Every block's far grid first (sum of the modes at its start, and one block later
        # before the next deposits): a window samples up to LOOKAHEAD blocks ahead.
        cur = np.zeros((lay.nfy, lay.nfx, len(self.block_decay)))
        grids: dict[int, tuple[F64, F64]] = {}
        last = cur
        for b in range(lay.n_blocks + LOOKAHEAD + 1):
            cur_blur = self.blur(cur)
            grids[b] = (cur.sum(axis=2), cur_blur.sum(axis=2))
            if b < lay.n_blocks:
                for q in range(SNAPS_PER_BLOCK):
                    w = q / SNAPS_PER_BLOCK  # the far grid linear in time within its block
                    self.snapshot((1.0 - w) * grids[b][0] + w * grids[b][1],
                                  b * SNAPS_PER_BLOCK + q)
            if b == lay.n_blocks:
                last = cur
            cur = self.deposit(cur_blur, b)
        cur = last
        for b in range(lay.n_blocks):
            for i in range(self.first_ge(self.boundary(b)), self.first_ge(self.boundary(b + 1))):
                self.window(i, b, grids)
        end = cur.sum(axis=2)
        self.snapshot(end, lay.n_blocks * SNAPS_PER_BLOCK)
        fy, ky = np.modf((self.yc - lay.fy0_um) / lay.far_um)
        fx, kx = np.modf((self.xc - lay.fx0_um) / lay.far_um)
        ky, kx = ky.astype(np.intp), kx.astype(np.intp)
        far = _bilinear(self.far_peak, ky, fy, kx, fx)
        dose = self.dose + _bilinear(self.far_dose, ky, fy, kx, fx)
        return np.maximum(self.fine, far), dose, end, self.fine >= 0.0

    def blur(self, grid: F64) -> F64:
        """One block of every far-grid mode: exact heat-kernel step with reflecting
        (heat-keeping) edges, then the mode's depth decay."""
        half = len(self.taps) // 2
        padded = np.pad(grid, ((0, 0), (half, half), (0, 0)), mode="symmetric")
        rows = np.lib.stride_tricks.sliding_window_view(padded, len(self.taps), axis=1)
        grid = rows @ self.taps
        padded = np.pad(grid, ((half, half), (0, 0), (0, 0)), mode="symmetric")
        cols = np.lib.stride_tricks.sliding_window_view(padded, len(self.taps), axis=0)
        return (cols @ self.taps) * self.block_decay

    def deposit(self, grid: F64, b: int) -> F64:
        """Add the spots that age past the hand-over during block b to the far grid at t_{b+1},
        split over the modes by their weights at that age."""
        lay = self.lay
        out = grid.copy()
        t1 = self.boundary(b + 1)
        for j in range(self.first_ge(self.boundary(b) - lay.handover_s),
                       self.first_ge(t1 - lay.handover_s)):
            age = t1 - self.t[j]
            s = self.s0[j] + 4.0 * lay.kappa_um2_s * age
            reach = math.sqrt(s * lay.reach_log)
            ix, wx = _normalised_weights(self.x[j], reach, s, lay.fx0_um, lay.far_um, lay.nfx)
            iy, wy = _normalised_weights(self.y[j], reach, s, lay.fy0_um, lay.far_um, lay.nfy)
            modes = lay.mode_weight * np.exp(-lay.mode_decay_per_s * age)
            amount = self.e[j] / (lay.far_um * lay.far_um)
            np.add.at(out, (iy[:, None], ix[None, :]),
                      amount * (wy[:, None] * wx[None, :])[:, :, None] * modes)
        return out

    def snapshot(self, far: F64, k: int) -> None:
        """Snapshot k: the far grid (``far``, at its time) plus the near spots it resolves,
        into the far peak map; the damage integral since the snapshot before, at the larger of
        its two ends' rises."""
        lay = self.lay
        tb = self.snap_time(k)
        total = far.copy()
        for j in range(self.first_ge(self.boundary(k // SNAPS_PER_BLOCK) - lay.handover_s),
                       self.first_ge(tb)):
            s = self.held_width(j, tb)
            if s < lay.snap_s_um2:
                continue
            reach = math.sqrt(s * lay.reach_log)
            c0, c1 = _node_span(self.x[j], reach, lay.fx0_um, lay.far_um, lay.nfx)
            r0, r1 = _node_span(self.y[j], reach, lay.fy0_um, lay.far_um, lay.nfy)
            ex = np.exp(-((self.xn[c0:c1] - self.x[j]) ** 2) / s)
            ey = np.exp(-((self.yn[r0:r1] - self.y[j]) ** 2) / s)
            amp = self.e[j] / (math.pi * s) * depth_factor(np.array(tb - self.t[j]), lay)
            total[r0:r1, c0:c1] += amp * ey[:, None] * ex[None, :]
        np.maximum(self.far_peak, total, out=self.far_peak)
        if k > 0:
            self.far_dose += (damage_rate(np.maximum(total, self.far_prev), lay)
                              * (lay.block_s / SNAPS_PER_BLOCK))
        self.far_prev = total

    def window(self, i: int, b: int, grids: dict[int, tuple[F64, F64]]) -> None:
        """Sample the temperature around spot i at its log-spaced times after firing.

        Peak samples run to the first width >= 2 window^2 (index ``kp``): the young near spots
        (``sharp``) are exact at every sample; the far grid and the older near spots
        (background) are evaluated at the first and the last peak sample and interpolated.
        The damage integral of a cell runs from the firing to the next firing whose window
        covers the cell (that window takes over) or to the snapshot width (``damage_s_um2``);
        sampling stops when every cell is handed on. Damage samples (beyond the peak samples)
        evaluate the far grid and every spot fired before i with the background routine at
        each sample, the later spots exactly, on the bounding box of the cells still
        integrating. Each interval counts at the larger of its two ends' rises, the end
        leaving out spots fired within the interval (their own windows count them).
        """
        lay = self.lay
        xi, yi, kappa4, w = self.x[i], self.y[i], 4.0 * lay.kappa_um2_s, lay.window_um
        c0, c1 = cell_span(xi - w, xi + w, lay.x0_um, lay.cell_um, lay.nx)
        r0, r1 = cell_span(yi - w, yi + w, lay.y0_um, lay.cell_um, lay.ny)
        u = self.xc[c0:c1] - xi
        v = self.yc[r0:r1] - yi
        s_peak = 2.0 * w * w
        widths = [self.s0[i]]
        while widths[-1] < s_peak:
            widths.append(widths[-1] * lay.sample_ratio)
        kp = len(widths) - 1
        if widths[kp] < lay.damage_s_um2:
            # Damage samples: the fewest that reach damage_s at ratio at most q^3, evenly spaced.
            n_ext = math.ceil(math.log(lay.damage_s_um2 / widths[kp])
                              / math.log(lay.sample_ratio * lay.sample_ratio * lay.sample_ratio))
            ext_ratio = (lay.damage_s_um2 / widths[kp]) ** (1.0 / n_ext)
            for _ in range(n_ext):
                widths.append(widths[-1] * ext_ratio)
        times = [self.t[i] + (s - self.s0[i]) / kappa4 for s in widths]
        t_end = self.extended_end(i, b, times[-1])
        while times[-1] < t_end:  # past damage_s: ratio q, the last at t_end
            widths.append(widths[-1] * lay.sample_ratio)
            times.append(min(self.t[i] + (widths[-1] - self.s0[i]) / kappa4, t_end))
        js = np.arange(self.first_ge(self.boundary(b) - lay.handover_s),
                       int(np.searchsorted(self.t, t_end, "right")))
        js = js[self.in_reach(js, t_end, xi, yi)]
        age_i = self.t[i] - self.t[js]
        handed = self.t[js] < self.boundary(b + 1) - lay.handover_s
        old = (age_i > 0.0) & (self.s0[js] + kappa4 * age_i
                               >= lay.background_ratio * (widths[kp] - widths[0]))
        bg = old | handed
        earlier = (age_i > 0.0) | handed
        ends = [self.background(ts, js[bg], xi, yi, u, v, grids, b) for ts in (times[0], times[kp])]
        later = js[~earlier & ((self.t[js] > self.t[i])
                               | ((self.t[js] == self.t[i]) & (js > i)))]
        inner = w - COVER_MARGIN * lay.cell_um
        covers = ((np.abs(v[None, :] + yi - self.y[later][:, None]) <= inner)[:, :, None]
                  & (np.abs(u[None, :] + xi - self.x[later][:, None]) <= inner)[:, None, :])
        until = np.where(covers, self.t[later][:, None, None], t_end).min(axis=0, initial=t_end)
        prev = np.zeros((len(v), len(u)))
        # Damage samples: the slow part (far grid, the spots handed over or whose rise is
        # monotone on the window over the damage samples: their pulse peaks nowhere in it)
        # and the sharp spots (the others, exact and bounded).
        near2, far2 = _box_distances(self.x[js], self.y[js], u[0] + xi, u[-1] + xi, v[0] + yi,
                                     v[-1] + yi)
        pulsing = ((near2 <= self.s0[js] + kappa4 * (t_end - self.t[js]))
                   & (far2 >= self.s0[js] + kappa4 * (times[kp] - self.t[js])))
        smooth = handed | ~pulsing
        slow_js, sharp_js = js[smooth], js[~smooth]
        prev_slow = np.zeros((len(v), len(u)))
        for k, ts in enumerate(times):
            if k > kp:
                if times[k - 1] >= until.max():
                    return
                # Damage sample: only the cells still integrating, their bounding box.
                live = until > times[k - 1]
                rows, cols = np.nonzero(live.any(axis=1))[0], np.nonzero(live.any(axis=0))[0]
                ra, rb, ca, cb = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
                if k == kp + 1:
                    prev_slow[ra:rb, ca:cb] = self.background(times[kp], slow_js, xi, yi,
                                                              u[ca:cb], v[ra:rb], grids, b)
                    # later boxes lie inside this one: its centre and half-diagonal rho
                    box = (lay.x0_um + (c0 + 0.5 * (ca + cb - 1) + 0.5) * lay.cell_um,
                           lay.y0_um + (r0 + 0.5 * (ra + rb - 1) + 0.5) * lay.cell_um,
                           DAMAGE_TAYLOR_RATIO * (((cb - ca - 1) * 0.5 * lay.cell_um) ** 2
                                                  + ((rb - ra - 1) * 0.5 * lay.cell_um) ** 2))
                self.damage_sample(i, k, times, ra, rb, ca, cb, r0, c0, slow_js, sharp_js,
                                   prev_slow, until, grids, b, u, v, box)
                continue
            else:
                ra, rb, ca, cb = 0, len(v), 0, len(u)
                frac = (ts - times[0]) / (times[kp] - times[0]) if times[kp] > times[0] else 0.0
                acc = ends[0] + frac * (ends[1] - ends[0])
                sharp = js[~bg]
            sharp = sharp[self.t[sharp] <= ts]
            sharp = sharp[self.in_reach(sharp, ts, xi, yi)]
            s = self.s0[sharp] + kappa4 * (ts - self.t[sharp])
            amp = self.e[sharp] / (math.pi * s) * depth_factor(ts - self.t[sharp], lay)
            ex = np.exp(-((u[None, ca:cb] + (xi - self.x[sharp])[:, None]) ** 2) / s[:, None])
            ey = np.exp(-((v[None, ra:rb] + (yi - self.y[sharp])[:, None]) ** 2) / s[:, None])
            fresh = (self.t[sharp] > times[k - 1]) if k > 0 else np.zeros(len(sharp), bool)
            acc += np.einsum("j,jr,jc->rc", amp[~fresh], ey[~fresh], ex[~fresh])
            full = acc + np.einsum("j,jr,jc->rc", amp[fresh], ey[fresh], ex[fresh])
            view = self.fine[r0 + ra:r0 + rb, c0 + ca:c0 + cb]
            np.maximum(view, full, out=view)
            if k > 0:
                span = np.maximum(np.minimum(ts, until[ra:rb, ca:cb]) - times[k - 1], 0.0)
                self.dose[r0 + ra:r0 + rb, c0 + ca:c0 + cb] += damage_rate(
                    np.maximum(acc, prev[ra:rb, ca:cb]), lay) * span
            prev[ra:rb, ca:cb] = full

    def damage_sample(self, i: int, k: int, times: list[float], ra: int, rb: int, ca: int,
                      cb: int, r0: int, c0: int, slow_js: NDArray[np.intp],
                      sharp_js: NDArray[np.intp], prev_slow: F64, until: F64,
                      grids: dict[int, tuple[F64, F64]], b: int, u: F64, v: F64,
                      box: tuple[float, float, float]) -> None:
        """Damage sample k of window i on the box of its live cells: the peak at times[k], and
        the interval since times[k - 1] counted at a bound of its largest rise: the slow part
        with the sharp spots the interval resolves (width grown at most RESOLVED_RATIO) at the
        larger of the two ends' sums, plus each other sharp spot's largest rise over the
        interval (its Gaussian of width clamp(d^2, s_a, s_b), the depth factor at the
        interval's start; a spot fired within the interval counts from its firing, and not on
        the cells its own window takes over). A pulse between two samples is never missed,
        except a resolved spot's: counted at the ends, not a bound (docs/thermal_model.md,
        Limits).
        A sharp spot's value at an end is exact, or a Taylor sum about the centre of the first
        damage box (``box``: its centre and the width from which a spot is summed so) once
        wide (DAMAGE_TAYLOR_RATIO)."""
        lay = self.lay
        kappa4, xi, yi = 4.0 * lay.kappa_um2_s, self.x[i], self.y[i]
        ta, tb = times[k - 1], times[k]
        uu, vv = u[ca:cb], v[ra:rb]
        bx, by, taylor_s = box
        ub = self.xc[c0 + ca:c0 + cb] - np.float64(bx)
        vb = self.yc[r0 + ra:r0 + rb] - np.float64(by)
        slow = self.background(tb, slow_js, xi, yi, uu, vv, grids, b)
        lo_t = self.boundary(self.block_of(b, tb)) - lay.handover_s  # earlier: in the far grid
        sharp = sharp_js[(self.t[sharp_js] <= tb) & (self.t[sharp_js] >= lo_t)]
        sharp = sharp[self.in_reach(sharp, tb, xi, yi)]
        # resolved by the interval (counted at its ends) or not (at a bound of their largest)
        s_a = self.s0[sharp] + kappa4 * np.maximum(ta - self.t[sharp], 0.0)
        s_b = self.s0[sharp] + kappa4 * (tb - self.t[sharp])
        resolved = (self.t[sharp] <= ta) & (s_b <= RESOLVED_RATIO * s_a)
        at_b = self.spots_at(sharp[resolved], tb, bx, by, ub, vb, taylor_s)
        full = slow + at_b + self.spots_at(sharp[~resolved], tb, bx, by, ub, vb, taylor_s)
        end_a = prev_slow[ra:rb, ca:cb] + self.spots_at(sharp[resolved], ta, bx, by, ub, vb,
                                                        taylor_s)
        end_b = slow + at_b
        bounds = np.zeros_like(slow)
        inner = lay.window_um - COVER_MARGIN * lay.cell_um
        for j, sa, sb in zip(sharp[~resolved], s_a[~resolved], s_b[~resolved], strict=True):
            dx = uu + xi - self.x[j]
            dy = vv + yi - self.y[j]
            d2 = dy[:, None] ** 2 + dx[None, :] ** 2
            amp_a = self.e[j] / math.pi * depth_factor(np.array(max(ta - self.t[j], 0.0)), lay)
            sc = np.clip(d2, sa, sb)
            bound = amp_a * np.exp(-d2 / sc) / sc
            if self.t[j] > ta:  # fired within the interval: not on the cells it takes over
                bound[(np.abs(dy)[:, None] <= inner) & (np.abs(dx)[None, :] <= inner)] = 0.0
            bounds += bound
        hot = np.maximum(end_a, end_b) + bounds
        view = self.fine[r0 + ra:r0 + rb, c0 + ca:c0 + cb]
        np.maximum(view, full, out=view)
        span = np.maximum(np.minimum(tb, until[ra:rb, ca:cb]) - ta, 0.0)
        self.dose[r0 + ra:r0 + rb, c0 + ca:c0 + cb] += damage_rate(hot, lay) * span
        prev_slow[ra:rb, ca:cb] = slow

    def extended_end(self, i: int, b: int, t_last: float) -> float:
        """End of window i's samples: its own spot's hold (past its last width: until then
        the spot is in no snapshot), or later if a spot fired after i and before that end
        sends a pulse the samples would miss: its rise peaks at the window's
        nearest point (width d^2, d its distance to the window) after that end, and before a
        snapshot holds it (d^2 at most its width at the first snapshot that holds it, its
        hold). The samples then run to that hold, and so on; at most
        LOOKAHEAD blocks ahead (the far grid the window can see)."""
        lay = self.lay
        kappa4, w = 4.0 * lay.kappa_um2_s, lay.window_um
        cap = self.boundary(b + LOOKAHEAD)
        # its own spot: until the snapshots hold it (the block before counts at its larger end)
        end = max(t_last, min(self.hold(i), cap))
        for j in range(i + 1, self.first_ge(cap)):
            if self.t[j] >= end:
                break
            ax = max(abs(self.x[j] - self.x[i]) - w, 0.0)
            ay = max(abs(self.y[j] - self.y[i]) - w, 0.0)
            hold = self.hold(j)
            d2 = ax * ax + ay * ay
            if (d2 <= self.s0[j] + kappa4 * (hold - self.t[j])
                    and self.t[j] + (d2 - self.s0[j]) / kappa4 > end):
                end = max(end, min(hold, cap))
        return end

    def in_reach(self, js: NDArray[np.intp], ts: float, xi: float, yi: float
                 ) -> NDArray[np.bool_]:
        """Spots whose Gaussian at ts reaches the window around (xi, yi) above the cut-off."""
        lay = self.lay
        reach2 = (self.s0[js] + 4.0 * lay.kappa_um2_s * (ts - self.t[js])) * lay.reach_log
        ax = np.abs(self.x[js] - xi) - lay.window_um
        ay = np.abs(self.y[js] - yi) - lay.window_um
        return ~(((ax > 0.0) & (ax * ax > reach2)) | ((ay > 0.0) & (ay * ay > reach2)))

    def background(self, ts: float, js: NDArray[np.intp], xi: float, yi: float, u: F64,
                   v: F64, grids: dict[int, tuple[F64, F64]], b: int) -> F64:
        """Far grid (linear in time within its block) plus the background near spots in reach at ts:
        exact Gaussians while sharp, a 2nd-order Taylor sum about the window centre once
        smooth."""
        lay = self.lay
        bs = self.block_of(b, ts)
        start, end = grids[bs]
        px = (u + xi - lay.fx0_um) / lay.far_um
        py = (v + yi - lay.fy0_um) / lay.far_um
        kx, ky = np.floor(px).astype(np.intp), np.floor(py).astype(np.intp)
        fx, fy = px - kx, py - ky
        w = (ts - self.boundary(bs)) / lay.block_s
        acc = (1.0 - w) * _bilinear(start, ky, fy, kx, fx) + w * _bilinear(end, ky, fy, kx, fx)
        js = js[(self.t[js] >= self.boundary(bs) - lay.handover_s) & (self.t[js] <= ts)]
        js = js[self.in_reach(js, ts, xi, yi)]
        return acc + self.spots_at(js, ts, xi, yi, u, v, lay.smooth_s_um2)

    def spots_at(self, js: NDArray[np.intp], ts: float, xc: float, yc: float, u: F64,
                 v: F64, smooth_s: float) -> F64:
        """The rise of the spots js (fired by ts) at ts on the cells (u, v) from (xc, yc):
        exact Gaussians while sharp, a 2nd-order Taylor sum about (xc, yc) once smooth (width
        at least smooth_s)."""
        lay = self.lay
        x, y = self.x[js], self.y[js]
        s = self.s0[js] + 4.0 * lay.kappa_um2_s * (ts - self.t[js])
        amp = self.e[js] / (math.pi * s) * depth_factor(ts - self.t[js], lay)
        sharp = s < smooth_s
        ss = s[sharp]
        ex = np.exp(-((u[None, :] + (xc - x[sharp])[:, None]) ** 2) / ss[:, None])
        ey = np.exp(-((v[None, :] + (yc - y[sharp])[:, None]) ** 2) / ss[:, None])
        acc = np.einsum("j,jr,jc->rc", amp[sharp], ey, ex)
        dx, dy, inv = xc - x[~sharp], yc - y[~sharp], 1.0 / s[~sharp]
        g0 = amp[~sharp] * np.exp(-(dx * dx + dy * dy) * inv)
        gs = g0 * inv
        c0 = g0.sum()
        cx = (-2.0 * gs * dx).sum()
        cy = (-2.0 * gs * dy).sum()
        cxx = (gs * (2.0 * dx * dx * inv - 1.0)).sum()
        cyy = (gs * (2.0 * dy * dy * inv - 1.0)).sum()
        cxy = (4.0 * gs * dx * dy * inv).sum()
        acc += (c0 + cy * v + cyy * v * v)[:, None] + (cx * u + cxx * u * u)[None, :]
        acc += cxy * v[:, None] * u[None, :]
        return acc


def _box_distances(x: F64, y: F64, x_lo: float, x_hi: float, y_lo: float,
                   y_hi: float) -> tuple[F64, F64]:
    """Squared distances from points to the nearest and the farthest point of a rectangle."""
    nx = np.maximum(np.maximum(x_lo - x, x - x_hi), 0.0)
    ny = np.maximum(np.maximum(y_lo - y, y - y_hi), 0.0)
    fx = np.maximum(np.abs(x - x_lo), np.abs(x - x_hi))
    fy = np.maximum(np.abs(y - y_lo), np.abs(y - y_hi))
    return nx * nx + ny * ny, fx * fx + fy * fy


def _bilinear(grid: F64, ky: NDArray[np.intp], fy: F64, kx: NDArray[np.intp], fx: F64) -> F64:
    """Bilinear interpolation of a far grid at the cells given by node index and fraction."""
    a = grid[ky[:, None], kx[None, :]]
    b = grid[ky[:, None], kx[None, :] + 1]
    c = grid[ky[:, None] + 1, kx[None, :]]
    d = grid[ky[:, None] + 1, kx[None, :] + 1]
    fx2, fy2 = fx[None, :], fy[:, None]
    return (1.0 - fy2) * ((1.0 - fx2) * a + fx2 * b) + fy2 * ((1.0 - fx2) * c + fx2 * d)


def _node_span(centre_um: float, reach_um: float, origin_um: float, step_um: float,
               n: int) -> tuple[int, int]:
    """Half-open range of far nodes within reach of a centre, clipped to the grid."""
    first = math.ceil((centre_um - reach_um - origin_um) / step_um)
    last = math.floor((centre_um + reach_um - origin_um) / step_um)
    return max(first, 0), min(last + 1, n)


def _normalised_weights(centre_um: float, reach_um: float, s_um2: float, origin_um: float,
                        step_um: float, n: int) -> tuple[NDArray[np.intp], F64]:
    """Gaussian node weights summing to 1, folded back at the edges (reflecting boundary)."""
    first = math.ceil((centre_um - reach_um - origin_um) / step_um)
    last = math.floor((centre_um + reach_um - origin_um) / step_um)
    k = np.arange(first, last + 1)
    w = np.exp(-((origin_um + k * step_um - centre_um) ** 2) / s_um2)
    return _fold(k, n), w / w.sum()


def _fold(k: NDArray[np.intp], n: int) -> NDArray[np.intp]:
    """Indices of a line of n nodes folded back at its edges (reflecting), as often as it
    takes (a reach wider than the far grid folds more than once)."""
    k = np.mod(k, 2 * n)
    return np.where(k < n, k, 2 * n - 1 - k)
