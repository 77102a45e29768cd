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


def peak_rise(x_um: F64, y_um: F64, t_s: F64, e_k_um2: F64, s0_um2: F64,
              layout: Layout) -> tuple[F64, F64, NDArray[np.bool_]]:
    """Windowed superposition plus far grid; spots sorted by ``t_s``.

    ``e_k_um2`` is each spot's heat over (heat capacity x thickness), ``s0_um2`` its initial
    Gaussian width (lesion radius squared). Returns the peak rise map on the fine grid (the
    larger of the window samples and the interpolated far snapshots), the far grid at the
    end (holding every spot's heat) and the map of the cells some window sampled.
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
        sigma2 = 2.0 * lay.kappa_um2_s * lay.block_s
        half = math.ceil(4.0 * math.sqrt(sigma2) / lay.far_um)
        taps = np.exp(-((np.arange(-half, half + 1) * lay.far_um) ** 2) / (2.0 * sigma2))
        self.taps = taps / taps.sum()
        self.fine = np.full((lay.ny, lay.nx), -1.0)
        self.far_peak = np.zeros((lay.nfy, lay.nfx))

    def boundary(self, b: int) -> float:
        return self.lay.t0_s + b * self.lay.block_s

    def run(self) -> tuple[F64, F64, NDArray[np.bool_]]:
        lay = self.lay
        cur = np.zeros((lay.nfy, lay.nfx))
        cur_blur = self.blur(cur)
        nxt = self.deposit(cur_blur, 0)
        nxt_blur = self.blur(nxt)
        for b in range(lay.n_blocks):
            self.snapshot(cur, b)
            lo = np.searchsorted(self.t, self.boundary(b), "left")
            hi = np.searchsorted(self.t, self.boundary(b + 1), "left")
            grids = {b: (cur, cur_blur), b + 1: (nxt, nxt_blur)}
            for i in range(lo, hi):
                self.window(i, b, grids)
            cur, cur_blur = nxt, nxt_blur
            nxt = self.deposit(cur_blur, b + 1)
            nxt_blur = self.blur(nxt)
        self.snapshot(cur, lay.n_blocks)
        fy, ky = np.modf((self.yc - lay.fy0_um) / lay.far_um)
        fx, kx = np.modf((self.xc - lay.fx0_um) / lay.far_um)
        far = _bilinear(self.far_peak, ky.astype(np.intp), fy, kx.astype(np.intp), fx)
        return np.maximum(self.fine, far), cur, self.fine >= 0.0

    def blur(self, grid: F64) -> F64:
        """Exact heat-kernel step of one block on the far grid, reflecting (heat-keeping) edges."""
        half = len(self.taps) // 2
        padded = np.pad(grid, half, mode="symmetric")
        rows = np.lib.stride_tricks.sliding_window_view(padded, len(self.taps), axis=1)
        grid = rows[half:-half] @ self.taps
        cols = np.lib.stride_tricks.sliding_window_view(
            np.pad(grid, ((half, half), (0, 0)), mode="symmetric"), len(self.taps), axis=0)
        return cols @ self.taps

    def deposit(self, grid: F64, b: int) -> F64:
        """Add the spots that age past the hand-over during block b to the far grid at t_{b+1}."""
        lay = self.lay
        out = grid.copy()
        t1 = self.boundary(b + 1)
        lo = np.searchsorted(self.t, self.boundary(b) - lay.handover_s, "left")
        hi = np.searchsorted(self.t, t1 - lay.handover_s, "left")
        for j in range(lo, hi):
            s = self.s0[j] + 4.0 * lay.kappa_um2_s * (t1 - self.t[j])
            reach = math.sqrt(s * lay.reach_log)
            ix, wx = _normalised_weights(self.x[j], reach, s, lay.fx0_um, lay.far_um, lay.nfx)
            iy, wy = _normalised_weights(self.y[j], reach, s, lay.fy0_um, lay.far_um, lay.nfy)
            amount = self.e[j] / (lay.far_um * lay.far_um)
            np.add.at(out, (iy[:, None], ix[None, :]), amount * wy[:, None] * wx[None, :])
        return out

    def snapshot(self, far: F64, b: int) -> None:
        """Far grid plus the near spots it resolves, at block boundary b, into the far peak map."""
        lay = self.lay
        tb = self.boundary(b)
        total = far.copy()
        lo = np.searchsorted(self.t, tb - lay.handover_s, "left")
        hi = np.searchsorted(self.t, tb, "left")
        for j in range(lo, hi):
            s = self.s0[j] + 4.0 * lay.kappa_um2_s * (tb - self.t[j])
            if s < lay.snap_s_um2:
                continue
            reach = math.sqrt(s * lay.reach_log)
            c0, c1 = _node_span(self.x[j], reach, lay.fx0_um, lay.far_um, lay.nfx)
            r0, r1 = _node_span(self.y[j], reach, lay.fy0_um, lay.far_um, lay.nfy)
            ex = np.exp(-((self.xn[c0:c1] - self.x[j]) ** 2) / s)
            ey = np.exp(-((self.yn[r0:r1] - self.y[j]) ** 2) / s)
            total[r0:r1, c0:c1] += self.e[j] / (math.pi * s) * ey[:, None] * ex[None, :]
        np.maximum(self.far_peak, total, out=self.far_peak)

    def window(self, i: int, b: int, grids: dict[int, tuple[F64, F64]]) -> None:
        """Sample the temperature around spot i at its log-spaced times after firing."""
        lay = self.lay
        xi, yi = self.x[i], self.y[i]
        c0, c1 = cell_span(xi - lay.window_um, xi + lay.window_um, lay.x0_um, lay.cell_um, lay.nx)
        r0, r1 = cell_span(yi - lay.window_um, yi + lay.window_um, lay.y0_um, lay.cell_um, lay.ny)
        u = self.xc[c0:c1] - xi
        v = self.yc[r0:r1] - yi
        px = (self.xc[c0:c1] - lay.fx0_um) / lay.far_um
        py = (self.yc[r0:r1] - lay.fy0_um) / lay.far_um
        kx = np.floor(px).astype(np.intp)
        ky = np.floor(py).astype(np.intp)
        fx, fy = px - kx, py - ky
        s_max = 2.0 * lay.window_um * lay.window_um
        s_i = self.s0[i]
        while True:
            ts = self.t[i] + (s_i - self.s0[i]) / (4.0 * lay.kappa_um2_s)
            bs = b if ts < self.boundary(b + 1) else b + 1
            start, end = grids[bs]
            w = (ts - self.boundary(bs)) / lay.block_s
            acc = (1.0 - w) * _bilinear(start, ky, fy, kx, fx) + w * _bilinear(end, ky, fy, kx, fx)
            lo = np.searchsorted(self.t, self.boundary(bs) - lay.handover_s, "left")
            hi = np.searchsorted(self.t, ts, "right")
            self.add_near(acc, slice(lo, hi), ts, xi, yi, u, v)
            view = self.fine[r0:r1, c0:c1]
            np.maximum(view, acc, out=view)
            if s_i >= s_max:
                return
            s_i *= lay.sample_ratio

    def add_near(self, acc: F64, js: slice, ts: float, xi: float, yi: float,
                 u: F64, v: F64) -> None:
        """Exact Gaussians of sharp near spots plus the 2nd-order Taylor sum of smooth ones."""
        lay = self.lay
        x, y = self.x[js], self.y[js]
        s = self.s0[js] + 4.0 * lay.kappa_um2_s * (ts - self.t[js])
        reach2 = s * lay.reach_log
        ax = np.abs(x - xi) - lay.window_um
        ay = np.abs(y - yi) - lay.window_um
        keep = ~(((ax > 0.0) & (ax * ax > reach2)) | ((ay > 0.0) & (ay * ay > reach2)))
        amp = self.e[js] / (math.pi * s)
        sharp = keep & (s < lay.smooth_s_um2)
        smooth = keep & ~sharp
        ss = s[sharp]
        ex = np.exp(-((u[None, :] + (xi - x[sharp])[:, None]) ** 2) / ss[:, None])
        ey = np.exp(-((v[None, :] + (yi - y[sharp])[:, None]) ** 2) / ss[:, None])
        acc += np.einsum("j,jr,jc->rc", amp[sharp], ey, ex)
        dx, dy, sm = xi - x[smooth], yi - y[smooth], s[smooth]
        g0 = amp[smooth] * np.exp(-(dx * dx + dy * dy) / sm)
        c0 = g0.sum()
        cx = (-2.0 * g0 * dx / sm).sum()
        cy = (-2.0 * g0 * dy / sm).sum()
        cxx = (g0 * (2.0 * dx * dx / (sm * sm) - 1.0 / sm)).sum()
        cyy = (g0 * (2.0 * dy * dy / (sm * sm) - 1.0 / sm)).sum()
        cxy = (4.0 * g0 * dx * dy / (sm * sm)).sum()
        acc += (c0 + cy * v + cyy * v * v)[:, None] + (cx * u + cxx * u * u)[None, :]
        acc += cxy * v[:, None] * u[None, :]


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
    k = np.where(k < 0, -1 - k, np.where(k >= n, 2 * n - 1 - k, k))
    return k, w / w.sum()
