# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: extra_compile_args = -fopenmp
# distutils: extra_link_args = -fopenmp
"""Cython kernels for the fractional scan path; numpy references in controller.scanpath_ref.

Bounds checks are off for the whole module: every index is derived from lengths checked on
entry (``_same_length``) or from counts computed in the same kernel, and the hypothesis tests
in tests/test_scanpath_kernels.py compare every kernel with its numpy reference on random
inputs, including empty and single-point ones.
"""

import numpy as np

cimport cython
cimport openmp
from cython.parallel cimport prange
from libc.math cimport ceil, floor, sqrt
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport qsort

cdef uint64_t GOLDEN = 0x9E3779B97F4A7C15
cdef double TWO_POW_M31 = 1.0 / 2147483648.0
cdef uint64_t LOW32 = 0xFFFFFFFF
#: A point within this fraction of the outline's reach (its largest |coordinate|) of an
#: edge is on the outline, hence inside (scanpath_ref.ON_EDGE_REL, the same rule)
cdef double ON_EDGE_REL = 1e-9
# As Python names: tests/test_kernel_constants.py checks them against scanpath_ref.
golden = GOLDEN
on_edge_rel = ON_EDGE_REL
cdef enum:
    MAX_BANDS = 4096
    # point-edge pairs from which edge_distance uses every OpenMP thread: waking a thread
    # on a busy 2-core host can take a 4 ms scheduler tick, so smaller jobs stay serial
    PARALLEL_MIN_PAIRS = 1 << 24


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


cdef struct Poly:
    # a polygon's edges bucketed into horizontal bands (see EdgeBands)
    const double* vx
    const double* vy
    const double* slope
    const Py_ssize_t* start
    const Py_ssize_t* edges
    Py_ssize_t nv, bands
    double y0, y1, inv_band, tol


cdef inline Py_ssize_t next_vertex(const Poly* p, Py_ssize_t e) noexcept nogil:
    return e + 1 if e + 1 < p.nv else 0


cdef inline Py_ssize_t band_of(const Poly* p, double py) noexcept nogil:
    """Band holding height py, clamped to the existing bands."""
    cdef double b = (py - p.y0) * p.inv_band
    if not b > 0.0:
        return 0
    if b >= <double>(p.bands - 1):
        return p.bands - 1
    return <Py_ssize_t>b


cdef inline double edge_dist2(const Poly* p, Py_ssize_t e, double px, double py
                              ) noexcept nogil:
    """Squared distance from the point to edge e (the reference's arithmetic)."""
    cdef Py_ssize_t e1 = next_vertex(p, e)
    cdef double xi = p.vx[e], yi = p.vy[e], ex = p.vx[e1] - xi, ey = p.vy[e1] - yi
    cdef double t = 0.0, length2 = ex * ex + ey * ey, dx, dy
    if length2 > 0.0:  # a zero-length edge is its start vertex
        t = min(max(((px - xi) * ex + (py - yi) * ey) / length2, 0.0), 1.0)
    dx = xi + t * ex - px
    dy = yi + t * ey - py
    return dx * dx + dy * dy


cdef inline bint on_edge(const Poly* p, Py_ssize_t e, double px, double py) noexcept nogil:
    """Is the point within ``p.tol`` of edge e?"""
    cdef Py_ssize_t e1 = next_vertex(p, e)
    cdef double xi = p.vx[e], yi = p.vy[e], xj = p.vx[e1], yj = p.vy[e1]
    # beyond twice the tolerance of the edge's box the distance cannot round into it
    if (px < min(xi, xj) - 2.0 * p.tol or px > max(xi, xj) + 2.0 * p.tol
            or py < min(yi, yj) - 2.0 * p.tol or py > max(yi, yj) + 2.0 * p.tol):
        return False
    return edge_dist2(p, e, px, py) <= p.tol * p.tol


cdef inline bint contains(const Poly* p, double px, double py) noexcept nogil:
    """Closed point-in-polygon test: on an edge (within ``p.tol``), or inside by the
    crossing number (the reference's exact arithmetic), over the bands near py only."""
    # twice the tolerance: rounding here must not drop what the distance would keep
    if not (py >= p.y0 - 2.0 * p.tol and py <= p.y1 + 2.0 * p.tol):
        return False
    cdef Py_ssize_t b, it, e
    for b in range(band_of(p, py - 2.0 * p.tol), band_of(p, py + 2.0 * p.tol) + 1):
        for it in range(p.start[b], p.start[b + 1]):
            if on_edge(p, p.edges[it], px, py):
                return True
    b = band_of(p, py)
    cdef bint c = False
    cdef double yi
    for it in range(p.start[b], p.start[b + 1]):
        e = p.edges[it]
        yi = p.vy[e]
        if ((yi > py) != (p.vy[next_vertex(p, e)] > py)) and (
                px < (py - yi) * p.slope[e] + p.vx[e]):
            c = not c
    return c


@cython.final
cdef class EdgeBands:
    """A polygon's edges bucketed into horizontal bands, for the closed point-in-polygon
    test: a point tests only the edges of the bands at its height (within the on-edge
    tolerance ``p.tol``). Owns the arrays ``p`` points into."""

    cdef Poly p
    cdef object keep

    def __init__(self, const double[::1] vx, const double[::1] vy):
        cdef Py_ssize_t nv = _same_length(vx, vy), e, b
        if nv < 3:
            raise ValueError(f"a polygon needs at least 3 vertices, got {nv}")
        ax, ay = np.array(vx), np.array(vy)
        self.p.nv = nv
        self.p.y0 = ay.min()
        self.p.y1 = ay.max()
        self.p.tol = ON_EDGE_REL * max(np.abs(ax).max(), np.abs(ay).max())
        self.p.bands = min(2 * nv, MAX_BANDS)
        self.p.inv_band = (self.p.bands / (self.p.y1 - self.p.y0) if self.p.y1 > self.p.y0
                           else 0.0)
        # dx/dy of each edge (horizontal edges never reach the crossing test)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = (np.roll(ax, -1) - ax) / (np.roll(ay, -1) - ay)
        start = np.zeros(self.p.bands + 1, dtype=np.intp)
        cdef Py_ssize_t[::1] st = start
        for e in range(nv):  # edge e goes into the bands its heights span
            for b in range(band_of(&self.p, min(vy[e], vy[next_vertex(&self.p, e)])),
                           band_of(&self.p, max(vy[e], vy[next_vertex(&self.p, e)])) + 1):
                st[b + 1] += 1
        for b in range(self.p.bands):
            st[b + 1] += st[b]
        edges = np.empty(st[self.p.bands], dtype=np.intp)
        fill = start[:self.p.bands].copy()
        cdef Py_ssize_t[::1] ev = edges, fv = fill
        for e in range(nv):
            for b in range(band_of(&self.p, min(vy[e], vy[next_vertex(&self.p, e)])),
                           band_of(&self.p, max(vy[e], vy[next_vertex(&self.p, e)])) + 1):
                ev[fv[b]] = e
                fv[b] += 1
        self.keep = (ax, ay, slope, start, edges)
        cdef const double[::1] axv = ax, ayv = ay, sv = slope
        self.p.vx, self.p.vy, self.p.slope = &axv[0], &ayv[0], &sv[0]
        self.p.start = &st[0]
        self.p.edges = &ev[0]  # every edge is in at least one band


cdef struct Lattice:
    # grid_points' lattice, jitter and turn
    double pitch, row, half, ox, oy, jitter, cos_turn, sin_turn
    bint hexagonal
    uint64_t key


cdef inline double row_shift(const Lattice* g, int64_t jj) noexcept nogil:
    return g.half if (g.hexagonal and (jj & 1)) else 0.0


cdef Py_ssize_t edge_ranges(const Poly* p, const Lattice* g, int64_t jj, int64_t imin,
                            int64_t imax, double pad, int64_t* out) noexcept nogil:
    """Index ranges [a, b] of row jj's lattice points within ``pad`` (x) of an edge
    portion inside heights yrow +- pad, widened by one point against rounding; written
    to ``out`` as pairs unless it is NULL. Returns their count (one per edge at most)."""
    cdef double yrow = (<double>jj) * g.row + g.oy, shift = row_shift(g, jj)
    cdef double ylo = yrow - pad, yhi = yrow + pad, xi, yi, xj, yj, ya, yb, xa, xb, fa, fb
    cdef Py_ssize_t b, it, e, e1, count = 0, b0 = band_of(p, ylo), b1 = band_of(p, yhi)
    for b in range(b0, b1 + 1):
        for it in range(p.start[b], p.start[b + 1]):
            e = p.edges[it]
            e1 = next_vertex(p, e)
            xi, yi, xj, yj = p.vx[e], p.vy[e], p.vx[e1], p.vy[e1]
            if max(yi, yj) < ylo or min(yi, yj) > yhi:
                continue
            if b != max(b0, band_of(p, min(yi, yj))):
                continue  # met in an earlier band of this row
            if yi == yj:
                xa, xb = xi, xj
            else:
                ya = min(max(ylo, min(yi, yj)), max(yi, yj))
                yb = min(max(yhi, min(yi, yj)), max(yi, yj))
                xa = xi + (ya - yi) / (yj - yi) * (xj - xi)
                xb = xi + (yb - yi) / (yj - yi) * (xj - xi)
            fa = max(ceil((min(xa, xb) - pad - g.ox - shift) / g.pitch) - 1.0, <double>imin)
            fb = min(floor((max(xa, xb) + pad - g.ox - shift) / g.pitch) + 1.0, <double>imax)
            if fa <= fb:
                if out != NULL:
                    out[2 * count] = <int64_t>fa
                    out[2 * count + 1] = <int64_t>fb
                count += 1
    return count


cdef int by_start(const void* a, const void* b) noexcept nogil:
    cdef int64_t p = (<const int64_t*>a)[0], q = (<const int64_t*>b)[0]
    return (p > q) - (p < q)


cdef Py_ssize_t row_runs(const Poly* p, const Lattice* g, int64_t jj, int64_t imin,
                         int64_t imax, double pad, int64_t* scratch, int64_t* runs
                         ) noexcept nogil:
    """Row jj's lattice points as runs (first, last, test): test = 1 for points near an
    edge, which need the crossing test; test = 0 for runs wholly inside. Runs wholly
    outside are left out. Returns the number of runs written to ``runs``."""
    cdef Py_ssize_t n = edge_ranges(p, g, jj, imin, imax, pad, scratch), q, count = 0
    cdef int64_t c = imin, a, b
    cdef double yrow = (<double>jj) * g.row + g.oy, shift = row_shift(g, jj)
    qsort(scratch, n, 2 * sizeof(int64_t), by_start)
    q = 0
    while True:
        if q < n:  # merge overlapping or adjacent ranges
            a, b = scratch[2 * q], scratch[2 * q + 1]
            q += 1
            while q < n and scratch[2 * q] <= b + 1:
                b = max(b, scratch[2 * q + 1])
                q += 1
        else:
            a, b = imax + 1, imax
        # a gap free of edges has one status: that of its first point
        if a > c and contains(p, (<double>c) * g.pitch + shift + g.ox, yrow):
            runs[3 * count], runs[3 * count + 1], runs[3 * count + 2] = c, a - 1, 0
            count += 1
        if a > imax:
            return count
        runs[3 * count], runs[3 * count + 1], runs[3 * count + 2] = a, b, 1
        count += 1
        c = b + 1


cdef struct RowSpots:
    # one row's constants, copied out of Lattice: stores through the outputs cannot alias
    # them, so they stay in registers
    double pitch, shift, ox, yrow, jitter, c, s
    uint64_t key


cdef inline void place(const RowSpots* w, int64_t ii, uint64_t z, double* px, double* py
                       ) noexcept nogil:
    """Position of the row's lattice point ii, jittered by the hash of z."""
    cdef uint64_t bits
    px[0] = (<double>ii) * w.pitch + w.shift + w.ox
    py[0] = w.yrow
    if w.jitter > 0.0:
        bits = mix64(z)
        # 2 * (h / 2^32) is h / 2^31 exactly; the halves h < 2^32 convert exactly as signed
        px[0] = px[0] + (<double><int64_t>(bits >> 32) * TWO_POW_M31 - 1.0) * w.jitter
        py[0] = py[0] + (<double><int64_t>(bits & LOW32) * TWO_POW_M31 - 1.0) * w.jitter


cdef Py_ssize_t emit_row(const Poly* p, const Lattice* g, int64_t jj, int64_t imin,
                         uint64_t k0, const int64_t* runs, Py_ssize_t nruns, double* xo,
                         double* yo, int32_t* io, int32_t* jo) noexcept nogil:
    """Row jj's kept spots written from xo, yo, io, jo on (counted only if xo is NULL);
    k0 is the stream index of the row's first box point. Returns the count."""
    cdef RowSpots w
    w.pitch, w.ox, w.jitter, w.c, w.s = g.pitch, g.ox, g.jitter, g.cos_turn, g.sin_turn
    w.shift = row_shift(g, jj)
    w.yrow = (<double>jj) * g.row + g.oy
    # point ii is box point k = k0 + ii - imin, hashed as key + (k + 1) * GOLDEN (mod 2^64)
    w.key = g.key + (k0 - <uint64_t>imin + 1) * GOLDEN
    cdef double px, py
    cdef Py_ssize_t r, kept = 0
    cdef int64_t ii, first, last
    cdef int32_t j32 = <int32_t>jj
    cdef uint64_t z
    for r in range(nruns):
        first, last = runs[3 * r], runs[3 * r + 1]
        z = w.key + <uint64_t>first * GOLDEN
        if runs[3 * r + 2]:  # near an edge: test each point
            for ii in range(first, last + 1):
                place(&w, ii, z, &px, &py)
                z += GOLDEN
                if contains(p, px, py):
                    if xo != NULL:
                        xo[kept] = w.c * px - w.s * py
                        yo[kept] = w.s * px + w.c * py
                        io[kept] = <int32_t>ii
                        jo[kept] = j32
                    kept += 1
        elif xo == NULL:
            kept += last - first + 1
        elif w.c == 1.0 and w.s == 0.0:
            # no turn: px - 0*py is px bit for bit, as px and py are never -0.0 (a sum is
            # -0.0 only if both terms are, and ii*pitch + shift is +0.0 at most)
            for ii in range(first, last + 1):
                place(&w, ii, z, &xo[kept], &yo[kept])
                z += GOLDEN
                io[kept] = <int32_t>ii
                jo[kept] = j32
                kept += 1
        else:
            for ii in range(first, last + 1):
                place(&w, ii, z, &px, &py)
                z += GOLDEN
                xo[kept] = w.c * px - w.s * py
                yo[kept] = w.s * px + w.c * py
                io[kept] = <int32_t>ii
                jo[kept] = j32
                kept += 1
    return kept


def grid_points(const double[::1] vx, const double[::1] vy, double pitch_um, bint hexagonal,
                double offset_x_um, double offset_y_um, double jitter_half_um, uint64_t key,
                double cos_turn, double sin_turn):
    """One pass's spots: lattice, jitter and polygon mask fused, then a rotation.

    Lattice point (i, j) of the polygon's bounding box sits at x = i*pitch + shift +
    offset_x, y = j*row + offset_y with row = pitch (square) or pitch*sqrt(3)/2 (hexagonal,
    odd rows shifted by pitch/2): anchored at the offset, not at the box. The k-th box point
    (row-major) moves by (2u-1) * jitter_half_um per axis, u being the high (x) and low (y)
    32 bits of hash k of stream ``key`` over 2^32 (no move if jitter_half_um is 0); it is
    kept if inside the closed polygon, then turned by the angle whose cosine and sine are
    given. Returns (x_um, y_um, i, j) in row-major order.

    The polygon is closed: a point within ON_EDGE_REL of the outline's reach (its largest
    |coordinate|) of an edge is inside, on every edge alike, so a shape symmetric about the
    lattice gives symmetric spots; other points are inside by the crossing number. The box
    is the polygon's bounding box grown by that tolerance.

    Only points whose jittered position can come within a small margin of an edge take
    the test; along each row, the runs between them are kept or dropped whole (beyond the
    margin, far wider than the tolerance, the test's rounding cannot change its answer).
    """
    if not pitch_um > 0:
        raise ValueError(f"pitch_um must be > 0, got {pitch_um}")
    cdef EdgeBands poly = EdgeBands(vx, vy)
    cdef const Poly* p = &poly.p
    cdef Lattice g
    g.pitch, g.hexagonal, g.ox, g.oy, g.key = pitch_um, hexagonal, offset_x_um, offset_y_um, key
    g.row = pitch_um * sqrt(3.0) / 2.0 if hexagonal else pitch_um
    g.half = pitch_um / 2.0
    g.jitter, g.cos_turn, g.sin_turn = jitter_half_um, cos_turn, sin_turn
    cdef double xmin = np.min(vx), xmax = np.max(vx), xlo = xmin - p.tol, xhi = xmax + p.tol
    cdef double scale = max(abs(xmin), abs(xmax), abs(p.y0), abs(p.y1)) + abs(offset_x_um) \
        + abs(offset_y_um) + pitch_um
    # the margin: jitter plus 1000 times the on-edge tolerance at least
    cdef double pad = max(jitter_half_um, 0.0) + 1e-6 * scale
    cdef int64_t jmin = <int64_t>ceil((p.y0 - p.tol - offset_y_um) / g.row)
    cdef Py_ssize_t rows = max(<int64_t>floor((p.y1 + p.tol - offset_y_um) / g.row) - jmin + 1,
                               0)
    cdef Py_ssize_t r, widest = 1
    imin = np.empty(rows, dtype=np.int64)
    imax = np.empty(rows, dtype=np.int64)
    first_run = np.zeros(rows + 1, dtype=np.intp)
    cdef int64_t[::1] lo = imin, hi = imax
    cdef Py_ssize_t[::1] fr = first_run
    cdef int64_t jj
    cdef double shift
    for r in range(rows):
        jj = jmin + r
        shift = row_shift(&g, jj)
        lo[r] = <int64_t>ceil((xlo - offset_x_um - shift) / pitch_um)
        hi[r] = <int64_t>floor((xhi - offset_x_um - shift) / pitch_um)
        fr[r + 1] = 0
        if hi[r] >= lo[r]:
            fr[r + 1] = edge_ranges(p, &g, jj, lo[r], hi[r], pad, NULL)
            widest = max(widest, fr[r + 1])
            fr[r + 1] = 2 * fr[r + 1] + 1
    first_run = np.cumsum(first_run)
    fr = first_run
    # stream index of each row's first box point
    k0 = np.r_[0, np.cumsum(np.maximum(imax - imin + 1, 0))].astype(np.uint64)
    runs = np.empty((max(first_run[rows], 1), 3), dtype=np.int64)
    scratch = np.empty((widest, 2), dtype=np.int64)
    cdef int64_t[:, ::1] rv = runs, sv = scratch
    for r in range(rows):  # runs packed row after row (each row's count <= its bound)
        fr[r + 1] = fr[r] + (row_runs(p, &g, jmin + r, lo[r], hi[r], pad, &sv[0, 0],
                                      &rv[fr[r], 0]) if hi[r] >= lo[r] else 0)
    cdef const int64_t* rp = &rv[0, 0]
    cdef const uint64_t[::1] kv = k0
    cdef Py_ssize_t n = 0
    with nogil:
        for r in range(rows):
            n += emit_row(p, &g, jmin + r, lo[r], kv[r], rp + 3 * fr[r], fr[r + 1] - fr[r],
                          NULL, NULL, NULL, NULL)
    # one allocation for the four outputs: fewer fresh pages to fault in, as glibc keeps a
    # block this size in its heap for the next plan (measured: 2x faster when repeated)
    block = np.empty(24 * n, dtype=np.uint8)
    x = block[:8 * n].view(np.float64)
    y = block[8 * n:16 * n].view(np.float64)
    i = block[16 * n:20 * n].view(np.int32)
    j = block[20 * n:].view(np.int32)
    if n == 0:
        return x, y, i, j
    cdef double[::1] xv = x, yv = y
    cdef int32_t[::1] iv = i, jv = j
    n = 0
    with nogil:
        for r in range(rows):
            n += emit_row(p, &g, jmin + r, lo[r], kv[r], rp + 3 * fr[r], fr[r + 1] - fr[r],
                          &xv[n], &yv[n], &iv[n], &jv[n])
    return x, y, i, j


def near_outline(const double[::1] x, const double[::1] y, const double[::1] vx,
                 const double[::1] vy, double radius_um):
    """Mask of the points closer than ``radius_um`` to an edge of the polygon (squared
    distances compared, so a radius whose square underflows, below about 1e-154 µm, finds
    none); each point tests only the edges of the bands within twice the radius of its
    height."""
    cdef Py_ssize_t n = _same_length(x, y), k, b, it
    cdef EdgeBands poly = EdgeBands(vx, vy)
    cdef const Poly* p = &poly.p
    cdef double r2 = radius_um * radius_um
    out = np.zeros(n, dtype=np.bool_)
    cdef unsigned char[::1] ov = out.view(np.uint8)
    with nogil:
        for k in range(n):
            for b in range(band_of(p, y[k] - 2.0 * radius_um),
                           band_of(p, y[k] + 2.0 * radius_um) + 1):
                for it in range(p.start[b], p.start[b + 1]):
                    if edge_dist2(p, p.edges[it], x[k], y[k]) < r2:
                        ov[k] = 1
                        break
                if ov[k]:
                    break
    return out


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
    """Distance from each point to the nearest polygon edge (µm); large jobs split their
    points over the OpenMP threads (each result depends on its point alone)."""
    cdef Py_ssize_t n = _same_length(x, y), nv = _same_length(vx, vy)
    if nv < 2:
        raise ValueError("a polygon needs at least 2 vertices")
    out = np.empty(n, dtype=np.float64)
    cdef double[::1] ov = out
    cdef Py_ssize_t k, e, e1
    cdef double best, t, ex, ey, dx, dy, d2, length2
    cdef int threads = openmp.omp_get_max_threads() if n * nv >= PARALLEL_MIN_PAIRS else 1
    with nogil:
        for k in prange(n, schedule="guided", num_threads=threads):
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
    cdef double now = 0.0, px = 0.0, py = 0.0, d, jump, travel = 0.0, end = 0.0
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
            else:  # firmware_protocol.md section 5, rule 4
                now = now + max(<double>stack[k - 1] * pulse_us[k - 1] + jump + settle_us,
                                period_us)
            tv[k] = now
            travel += d
            px = x[k]
            py = y[k]
        if n:
            end = now + <double>stack[n - 1] * pulse_us[n - 1]
    return t, end, travel


def uncovered_samples(const double[::1] x, const double[::1] y, double radius_um,
                      const double[::1] sx, const double[::1] sy, const double[::1] inside,
                      const double[::1] vx, const double[::1] vy):
    """Sample points of each disc inside the polygon and not covered by any disc of lower
    index, summed in disc order.

    Disc k's samples are its centre plus (sx, sy); a sample is covered by disc m if it lies
    strictly inside it. A disc that no disc of lower index overlaps adds ``inside[k]``
    (the share of it inside the polygon, in [0, 1]) times the sample count, exactly;
    otherwise its uncovered samples count, those of a disc partly outside (inside[k] < 1)
    only where inside the closed polygon. Union area inside = total * disc area / len(sx).
    """
    cdef Py_ssize_t n = _same_length(x, y, inside), ns = _same_length(sx, sy)
    cdef CellHash hsh = CellHash(x, y, 2.0 * radius_um)
    cdef EdgeBands poly = EdgeBands(vx, vy)
    cdef const Poly* p = &poly.p
    cdef double total = 0.0
    cdef int64_t count
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
                total += inside[k] * <double>ns
                continue
            count = 0
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
                if not covered and (inside[k] >= 1.0 or contains(p, px, py)):
                    count += 1
            total += <double>count
    return total
