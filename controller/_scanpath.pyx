# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython kernels for the fractional scan path; numpy references in controller.scanpath_ref.

Bounds checks are off for the whole module: every index is derived from lengths checked on
entry (``_same_length``) or from counts computed in the same kernel, and the hypothesis tests
in tests/test_scanpath_kernels.py compare every kernel with its numpy reference on random
inputs, including empty and single-point ones.
"""

import numpy as np

cimport cython
from libc.math cimport ceil, floor, sqrt
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

cdef uint64_t GOLDEN = 0x9E3779B97F4A7C15
cdef double TWO_POW_M32 = 1.0 / 4294967296.0
cdef uint64_t LOW32 = 0xFFFFFFFF
cdef enum:
    MAX_BANDS = 4096


cdef inline uint64_t mix64(uint64_t z) noexcept nogil:
    """splitmix64 finaliser: a well-mixed 64-bit hash of z."""
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


cdef inline double unit(uint64_t key, uint64_t k) noexcept nogil:
    """The k-th uniform double in [0, 1) of the stream ``key`` (counter-based, 53 bits)."""
    return <double>(mix64(key + (k + 1) * GOLDEN) >> 11) * (1.0 / 9007199254740992.0)


cdef inline double dist2(double ax, double ay, double bx, double by) noexcept nogil:
    cdef double dx = ax - bx, dy = ay - by
    return dx * dx + dy * dy


cdef inline Py_ssize_t pymod(Py_ssize_t a, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t r = a % m
    return r + m if r < 0 else r


def _same_length(*arrays):
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"array lengths differ: {[len(a) for a in arrays]}")
    return n


@cython.final
cdef class EdgeBands:
    """A polygon's edges bucketed into horizontal bands, for the crossing-number test: a
    point tests only the edges spanning its band, with the reference's exact arithmetic."""

    cdef const double[::1] vx
    cdef const double[::1] vy
    cdef Py_ssize_t nv, bands
    cdef double y0, y1, inv_band
    cdef Py_ssize_t[::1] start
    cdef Py_ssize_t[::1] edges
    cdef double[::1] slope

    def __init__(self, const double[::1] vx, const double[::1] vy):
        self.nv = _same_length(vx, vy)
        if self.nv < 3:
            raise ValueError(f"a polygon needs at least 3 vertices, got {self.nv}")
        self.vx = vx
        self.vy = vy
        self.y0 = np.min(vy)
        self.y1 = np.max(vy)
        self.bands = min(2 * self.nv, MAX_BANDS)
        self.inv_band = self.bands / (self.y1 - self.y0) if self.y1 > self.y0 else 0.0
        self.start = np.zeros(self.bands + 1, dtype=np.intp)
        # dx/dy of each edge (horizontal edges never reach the crossing test)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.slope = (np.roll(vx, -1) - vx) / (np.roll(vy, -1) - vy)
        cdef Py_ssize_t e, b, total
        for e in range(self.nv):
            for b in range(self.band(min(vy[e], vy[self.next(e)])),
                           self.band(max(vy[e], vy[self.next(e)])) + 1):
                self.start[b + 1] += 1
        for b in range(self.bands):
            self.start[b + 1] += self.start[b]
        total = self.start[self.bands]
        self.edges = np.empty(total, dtype=np.intp)
        fill = np.asarray(self.start[:self.bands]).copy()
        cdef Py_ssize_t[::1] fv = fill
        for e in range(self.nv):
            for b in range(self.band(min(vy[e], vy[self.next(e)])),
                           self.band(max(vy[e], vy[self.next(e)])) + 1):
                self.edges[fv[b]] = e
                fv[b] += 1

    cdef inline Py_ssize_t next(self, Py_ssize_t e) noexcept nogil:
        return e + 1 if e + 1 < self.nv else 0

    cdef inline Py_ssize_t band(self, double py) noexcept nogil:
        return min(<Py_ssize_t>((py - self.y0) * self.inv_band), self.bands - 1)

    cdef inline bint contains(self, double px, double py) noexcept nogil:
        # outside [y0, y1) no edge spans py, so the crossing count is 0 anyway
        if not (py >= self.y0 and py < self.y1):
            return False
        cdef Py_ssize_t b = self.band(py), it, e, e1
        cdef bint c = False
        cdef double xi, yi, yj
        for it in range(self.start[b], self.start[b + 1]):
            e = self.edges[it]
            e1 = self.next(e)
            xi = self.vx[e]
            yi = self.vy[e]
            yj = self.vy[e1]
            if ((yi > py) != (yj > py)) and (px < (py - yi) * self.slope[e] + xi):
                c = not c
        return c


def grid_points(const double[::1] vx, const double[::1] vy, double pitch_um, bint hexagonal,
                double offset_x_um, double offset_y_um, double jitter_half_um, uint64_t key,
                double cos_turn, double sin_turn):
    """One pass's spots: lattice, jitter and polygon mask fused, then a rotation.

    Lattice point (i, j) of the polygon's bounding box sits at x = i*pitch + shift +
    offset_x, y = j*row + offset_y with row = pitch (square) or pitch*sqrt(3)/2 (hexagonal,
    odd rows shifted by pitch/2): anchored at the offset, not at the box. The k-th box point
    (row-major) moves by (2u-1) * jitter_half_um per axis, u being the high (x) and low (y)
    32 bits of hash k of stream ``key`` over 2^32 (no move if jitter_half_um is 0); it is
    kept if inside the polygon
    (crossing number), then turned by the angle whose cosine and sine are given.
    Returns (x_um, y_um, i, j) in row-major order.
    """
    if not pitch_um > 0:
        raise ValueError(f"pitch_um must be > 0, got {pitch_um}")
    cdef EdgeBands poly = EdgeBands(vx, vy)
    cdef double row_um = pitch_um * sqrt(3.0) / 2.0 if hexagonal else pitch_um
    cdef double half_um = pitch_um / 2.0
    cdef double xmin = np.min(vx), xmax = np.max(vx)
    cdef int64_t jmin = <int64_t>ceil((poly.y0 - offset_y_um) / row_um)
    cdef int64_t jmax = <int64_t>floor((poly.y1 - offset_y_um) / row_um)
    cdef int64_t jj, ii, imin, imax, total = 0
    cdef double shift
    for jj in range(jmin, jmax + 1):
        shift = half_um if (hexagonal and (jj & 1)) else 0.0
        imin = <int64_t>ceil((xmin - offset_x_um - shift) / pitch_um)
        imax = <int64_t>floor((xmax - offset_x_um - shift) / pitch_um)
        if imax >= imin:
            total += imax - imin + 1
    x = np.empty(total, dtype=np.float64)
    y = np.empty(total, dtype=np.float64)
    i = np.empty(total, dtype=np.int32)
    j = np.empty(total, dtype=np.int32)
    cdef double[::1] xv = x, yv = y
    cdef int32_t[::1] iv = i, jv = j
    cdef uint64_t k = 0, bits
    cdef Py_ssize_t kept = 0
    cdef double px, py, yrow
    with nogil:
        for jj in range(jmin, jmax + 1):
            shift = half_um if (hexagonal and (jj & 1)) else 0.0
            imin = <int64_t>ceil((xmin - offset_x_um - shift) / pitch_um)
            imax = <int64_t>floor((xmax - offset_x_um - shift) / pitch_um)
            yrow = (<double>jj) * row_um + offset_y_um
            for ii in range(imin, imax + 1):
                px = (<double>ii) * pitch_um + shift + offset_x_um
                py = yrow
                if jitter_half_um > 0.0:
                    bits = mix64(key + (k + 1) * GOLDEN)
                    px = px + (2.0 * <double>(bits >> 32) * TWO_POW_M32 - 1.0) * jitter_half_um
                    py = py + (2.0 * <double>(bits & LOW32) * TWO_POW_M32 - 1.0) \
                        * jitter_half_um
                k += 1
                if poly.contains(px, py):
                    xv[kept] = cos_turn * px - sin_turn * py
                    yv[kept] = sin_turn * px + cos_turn * py
                    iv[kept] = <int32_t>ii
                    jv[kept] = <int32_t>jj
                    kept += 1
    return x[:kept], y[:kept], i[:kept], j[:kept]


def uniform(uint64_t key, Py_ssize_t n):
    """n uniform doubles in [0, 1) from the counter-based stream ``key``."""
    out = np.empty(n, dtype=np.float64)
    cdef double[::1] ov = out
    cdef Py_ssize_t k
    with nogil:
        for k in range(n):
            ov[k] = unit(key, k)
    return out


def edge_distance(const double[::1] x, const double[::1] y,
                  const double[::1] vx, const double[::1] vy):
    """Distance from each point to the nearest polygon edge (µm)."""
    cdef Py_ssize_t n = _same_length(x, y), nv = _same_length(vx, vy)
    if nv < 2:
        raise ValueError("a polygon needs at least 2 vertices")
    out = np.empty(n, dtype=np.float64)
    cdef double[::1] ov = out
    cdef Py_ssize_t k, e, e1
    cdef double best, t, ex, ey, dx, dy, d2, length2
    with nogil:
        for k in range(n):
            best = 1e308
            for e in range(nv):
                e1 = e + 1 if e + 1 < nv else 0
                ex = vx[e1] - vx[e]
                ey = vy[e1] - vy[e]
                length2 = ex * ex + ey * ey
                t = 0.0
                if length2 > 0.0:  # a zero-length edge is its start vertex
                    t = ((x[k] - vx[e]) * ex + (y[k] - vy[e]) * ey) / length2
                    t = min(max(t, 0.0), 1.0)
                dx = vx[e] + t * ex - x[k]
                dy = vy[e] + t * ey - y[k]
                d2 = dx * dx + dy * dy
                if d2 < best:
                    best = d2
            ov[k] = sqrt(best)
    return out


def interlaced_order(const int32_t[::1] i, const int32_t[::1] j,
                     const double[::1] x, const double[::1] y, int ki, int kj):
    """Firing order over ki x kj sub-grids, each fired as a serpentine, bottom row first.

    Input points must be row-major (j non-decreasing, i increasing within a row), as
    ``lattice`` emits them and masking keeps them. Sub-grid (i mod ki, j mod kj) runs are
    fired in row-major sub-grid order; each starts at the end of its first row farther from
    the previous sub-grid's last spot. ki = kj = 1 gives a plain serpentine.
    Returns int32 indices: order[k] is the k-th point fired.
    """
    cdef Py_ssize_t n = _same_length(i, j, x, y)
    if ki < 1 or kj < 1:
        raise ValueError(f"ki and kj must be >= 1, got {ki}, {kj}")
    cdef Py_ssize_t groups = <Py_ssize_t>ki * kj
    seg = np.zeros(groups + 1, dtype=np.intp)
    seq = np.empty(n, dtype=np.intp)
    order = np.empty(n, dtype=np.int32)
    cdef Py_ssize_t[::1] segv = seg, seqv = seq
    cdef int32_t[::1] ov = order
    cdef Py_ssize_t k, g, a, b, r, pos = 0
    cdef bint forward, have_prev = False
    cdef double px = 0.0, py = 0.0, dl, dr
    with nogil:
        for k in range(n):
            segv[pymod(j[k], kj) * ki + pymod(i[k], ki) + 1] += 1
        for g in range(groups):
            segv[g + 1] += segv[g]
        # counting sort (stable): seq holds each sub-grid's points in row-major order
        for k in range(n):
            g = pymod(j[k], kj) * ki + pymod(i[k], ki)
            seqv[segv[g]] = k
            segv[g] += 1
        for g in range(groups - 1, 0, -1):
            segv[g] = segv[g - 1]
        segv[0] = 0
        for g in range(groups):
            a = segv[g]
            if a == segv[g + 1]:
                continue
            b = a
            while b < segv[g + 1] and j[seqv[b]] == j[seqv[a]]:
                b += 1
            forward = True
            if have_prev:
                dl = dist2(x[seqv[a]], y[seqv[a]], px, py)
                dr = dist2(x[seqv[b - 1]], y[seqv[b - 1]], px, py)
                forward = dl >= dr
            while a < segv[g + 1]:
                b = a
                while b < segv[g + 1] and j[seqv[b]] == j[seqv[a]]:
                    b += 1
                for r in range(b - a):
                    ov[pos] = <int32_t>(seqv[a + r] if forward else seqv[b - 1 - r])
                    pos += 1
                forward = not forward
                a = b
            px = x[ov[pos - 1]]
            py = y[ov[pos - 1]]
            have_prev = True
    return order


@cython.final
cdef class CellHash:
    """Points bucketed into square cells no smaller than ``radius_um``: every point closer
    than the radius to a point lies in the 3 x 3 cells around it. Cells never outnumber
    twice the points plus one. ``items`` lists point indices cell by cell (increasing within
    a cell) and ``xs``/``ys`` hold their coordinates in that order, for locality."""

    cdef double x0, y0, inv_cell
    cdef Py_ssize_t ncx, ncy
    cdef Py_ssize_t[::1] start
    cdef Py_ssize_t[::1] items
    cdef double[::1] xs
    cdef double[::1] ys

    def __init__(self, const double[::1] x, const double[::1] y, double radius_um):
        cdef Py_ssize_t n = _same_length(x, y), k, c
        self.x0 = np.min(x) if n else 0.0
        self.y0 = np.min(y) if n else 0.0
        cdef double w = (np.max(x) - self.x0) if n else 0.0
        cdef double h = (np.max(y) - self.y0) if n else 0.0
        cdef double cell = max(radius_um, sqrt(w * h / max(n, 1)), (w + h) / max(n, 1), 1e-6)
        self.inv_cell = 1.0 / cell
        self.ncx = <Py_ssize_t>(w * self.inv_cell) + 1
        self.ncy = <Py_ssize_t>(h * self.inv_cell) + 1
        self.start = np.zeros(self.ncx * self.ncy + 1, dtype=np.intp)
        self.items = np.empty(n, dtype=np.intp)
        self.xs = np.empty(n, dtype=np.float64)
        self.ys = np.empty(n, dtype=np.float64)
        cell_of = np.empty(n, dtype=np.intp)
        cdef Py_ssize_t[::1] cv = cell_of
        with nogil:
            for k in range(n):
                cv[k] = (min(<Py_ssize_t>((y[k] - self.y0) * self.inv_cell), self.ncy - 1)
                         * self.ncx
                         + min(<Py_ssize_t>((x[k] - self.x0) * self.inv_cell), self.ncx - 1))
                self.start[cv[k] + 1] += 1
            for c in range(self.ncx * self.ncy):
                self.start[c + 1] += self.start[c]
            for k in range(n):
                c = self.start[cv[k]]
                self.items[c] = k
                self.xs[c] = x[k]
                self.ys[c] = y[k]
                self.start[cv[k]] += 1
            for c in range(self.ncx * self.ncy, 0, -1):
                self.start[c] = self.start[c - 1]
            self.start[0] = 0


def min_neighbour_gap(const double[::1] x, const double[::1] y, double radius_um,
                      Py_ssize_t cap):
    """Smallest index difference between two points closer than ``radius_um``, or ``cap``
    (at most len(x)) if none is smaller.

    Points are in firing order, so this is the fewest spots fired between two neighbours;
    the cap is the gap that already satisfies the caller, and lets most pairs be skipped.
    Each unordered pair of nearby points is examined once (a cell against itself and four
    of its neighbours).
    """
    cdef Py_ssize_t n = _same_length(x, y)
    cdef CellHash hsh = CellHash(x, y, radius_um)
    cdef Py_ssize_t best = min(n, max(cap, 0)), a, b, gx, gy, c, nb, d, gap, b0
    cdef Py_ssize_t ncx = hsh.ncx, ncy = hsh.ncy
    cdef const Py_ssize_t[::1] start = hsh.start, items = hsh.items
    cdef const double[::1] xs = hsh.xs, ys = hsh.ys
    cdef double r2 = radius_um * radius_um
    cdef int[4] ddx = [1, -1, 0, 1]
    cdef int[4] ddy = [0, 1, 1, 1]
    with nogil:
        for gy in range(ncy):
            for gx in range(ncx):
                c = gy * ncx + gx
                for a in range(start[c], start[c + 1]):
                    for d in range(-1, 4):
                        if d < 0:
                            nb = c
                            b0 = a + 1
                        else:
                            if not (0 <= gx + ddx[d] < ncx and gy + ddy[d] < ncy):
                                continue
                            nb = c + ddy[d] * ncx + ddx[d]
                            b0 = start[nb]
                        for b in range(b0, start[nb + 1]):
                            gap = items[b] - items[a]
                            if gap < 0:
                                gap = -gap
                            if gap < best:
                                best = gap if dist2(xs[a], ys[a], xs[b], ys[b]) < r2 else best
    return best


def fire_times(const double[::1] x, const double[::1] y, const int32_t[::1] pulse_us,
               const int32_t[::1] stack, double period_us, double speed_um_per_us,
               double accel_um_per_us2, double settle_us):
    """Timing model of controller.timing: first-pulse time of each spot (µs from the pass
    start, galvo starting at the origin), pass duration (µs) and galvo travel (µm)."""
    cdef Py_ssize_t n = _same_length(x, y, pulse_us, stack), k
    t = np.empty(n, dtype=np.float64)
    cdef double[::1] tv = t
    cdef double now = 0.0, px = 0.0, py = 0.0, d, jump, q = 0.0, travel = 0.0, end = 0.0
    cdef double d_cruise = speed_um_per_us * speed_um_per_us / accel_um_per_us2
    with nogil:
        for k in range(n):
            d = sqrt(dist2(x[k], y[k], px, py))
            if d == 0.0:
                jump = 0.0
            elif d < d_cruise:
                jump = 2.0 * sqrt(d / accel_um_per_us2)
            else:
                jump = d / speed_um_per_us + speed_um_per_us / accel_um_per_us2
            if k == 0:
                now = jump + settle_us
            else:
                now = now + ((stack[k - 1] - 1) * q
                             + max(pulse_us[k - 1] + jump + settle_us, q))
            q = max(period_us, <double>pulse_us[k])
            tv[k] = now
            travel += d
            px = x[k]
            py = y[k]
        if n:
            end = now + (stack[n - 1] - 1) * q + pulse_us[n - 1]
    return t, end, travel


def uncovered_samples(const double[::1] x, const double[::1] y, double radius_um,
                      const double[::1] sx, const double[::1] sy):
    """Sample points of each disc not covered by any disc of lower index, summed.

    Disc k's samples are its centre plus (sx, sy); a sample is covered by disc m if it lies
    strictly inside it. Union area = count * disc area / len(sx).
    """
    cdef Py_ssize_t n = _same_length(x, y), ns = _same_length(sx, sy)
    cdef CellHash hsh = CellHash(x, y, 2.0 * radius_um)
    cdef int64_t total = 0
    cdef Py_ssize_t k, m, it, gx, gy, cx0, cy0, s
    cdef double r2 = radius_um * radius_um, d2 = 4.0 * radius_um * radius_um, px, py
    cdef bint overlap, covered
    with nogil:
        for k in range(n):
            cx0 = min(<Py_ssize_t>((x[k] - hsh.x0) * hsh.inv_cell), hsh.ncx - 1)
            cy0 = min(<Py_ssize_t>((y[k] - hsh.y0) * hsh.inv_cell), hsh.ncy - 1)
            overlap = False
            for gy in range(max(cy0 - 1, 0), min(cy0 + 2, hsh.ncy)):
                for gx in range(max(cx0 - 1, 0), min(cx0 + 2, hsh.ncx)):
                    for it in range(hsh.start[gy * hsh.ncx + gx],
                                    hsh.start[gy * hsh.ncx + gx + 1]):
                        m = hsh.items[it]
                        if m < k and dist2(x[m], y[m], x[k], y[k]) < d2:
                            overlap = True
            if not overlap:
                total += ns
                continue
            for s in range(ns):
                px = x[k] + sx[s]
                py = y[k] + sy[s]
                covered = False
                for gy in range(max(cy0 - 1, 0), min(cy0 + 2, hsh.ncy)):
                    for gx in range(max(cx0 - 1, 0), min(cx0 + 2, hsh.ncx)):
                        for it in range(hsh.start[gy * hsh.ncx + gx],
                                        hsh.start[gy * hsh.ncx + gx + 1]):
                            m = hsh.items[it]
                            if m < k and dist2(px, py, x[m], y[m]) < r2:
                                covered = True
                if not covered:
                    total += 1
    return total
