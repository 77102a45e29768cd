# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: extra_compile_args = -fopenmp
# distutils: extra_link_args = -fopenmp
"""Cython kernels of the thermal screening model (numpy reference: controller.thermal_ref).

Same algorithm, loop for loop; the model and the scheme are in docs/thermal_model.md and the
grid fields in controller.thermal.Layout. The windows of one block and the far-grid rows run
on OpenMP threads (OMP_NUM_THREADS); each thread keeps its own peak map, merged by max.
"""

import numpy as np

cimport openmp
from cython.parallel cimport prange, threadid

from libc.math cimport M_PI, ceil, exp, fabs, floor, sqrt


cdef struct Geo:
    double x0, y0, cell, fx0, fy0, far, window, kappa4, t0, block, handover
    double ratio, smooth_s, snap_s, reach_log
    Py_ssize_t nx, ny, nfx, nfy, n_blocks


cdef Geo _geo(layout):
    cdef Geo g
    g.x0, g.y0, g.cell = layout.x0_um, layout.y0_um, layout.cell_um
    g.nx, g.ny = layout.nx, layout.ny
    g.fx0, g.fy0, g.far = layout.fx0_um, layout.fy0_um, layout.far_um
    g.nfx, g.nfy = layout.nfx, layout.nfy
    g.window, g.kappa4 = layout.window_um, 4.0 * layout.kappa_um2_s
    g.t0, g.block, g.handover = layout.t0_s, layout.block_s, layout.handover_s
    g.n_blocks = layout.n_blocks
    g.ratio, g.smooth_s = layout.sample_ratio, layout.smooth_s_um2
    g.snap_s, g.reach_log = layout.snap_s_um2, layout.reach_log
    return g


cdef inline double _max(double a, double b) noexcept nogil:
    """Inline max (libm fmax is an out-of-line call without -ffast-math)."""
    return a if a > b else b


cdef inline double _boundary(const Geo* g, Py_ssize_t b) noexcept nogil:
    return g.t0 + b * g.block


cdef inline Py_ssize_t _reflect(Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    if k < 0:
        return -1 - k
    if k >= n:
        return 2 * n - 1 - k
    return k


cdef inline Py_ssize_t _first_ge(const double[::1] t, double v) noexcept nogil:
    """First index with t >= v (numpy searchsorted 'left')."""
    cdef Py_ssize_t lo = 0, hi = t.shape[0], mid
    while lo < hi:
        mid = (lo + hi) // 2
        if t[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline Py_ssize_t _first_gt(const double[::1] t, double v) noexcept nogil:
    """First index with t > v (numpy searchsorted 'right')."""
    cdef Py_ssize_t lo = 0, hi = t.shape[0], mid
    while lo < hi:
        mid = (lo + hi) // 2
        if t[mid] <= v:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline void _cell_span(double lo, double hi, double origin, double cell, Py_ssize_t n,
                            Py_ssize_t* first, Py_ssize_t* end) noexcept nogil:
    first[0] = <Py_ssize_t>ceil((lo - origin) / cell - 0.5)
    end[0] = <Py_ssize_t>floor((hi - origin) / cell - 0.5) + 1
    if first[0] < 0:
        first[0] = 0
    if end[0] > n:
        end[0] = n


def lesion_mask(const double[::1] x, const double[::1] y, const double[::1] radius, layout):
    """Cells whose centre lies within some spot's lesion (column + coagulation rim)."""
    cdef Geo g = _geo(layout)
    mask = np.zeros((g.ny, g.nx), dtype=np.bool_)
    cdef unsigned char[:, ::1] m = mask.view(np.uint8)
    cdef Py_ssize_t j, r, c, c0, c1, r0, r1
    cdef double dy2, dx, r2
    with nogil:
        for j in range(x.shape[0]):
            _cell_span(x[j] - radius[j], x[j] + radius[j], g.x0, g.cell, g.nx, &c0, &c1)
            _cell_span(y[j] - radius[j], y[j] + radius[j], g.y0, g.cell, g.ny, &r0, &r1)
            r2 = radius[j] * radius[j]
            for r in range(r0, r1):
                dy2 = (g.y0 + (r + 0.5) * g.cell - y[j]) ** 2
                for c in range(c0, c1):
                    dx = g.x0 + (c + 0.5) * g.cell - x[j]
                    if dy2 + dx * dx <= r2:
                        m[r, c] = 1
    return mask


cdef inline double _tap_sum(const double* row, Py_ssize_t i, Py_ssize_t n,
                          const double[::1] taps) noexcept nogil:
    """One output of the 1-D heat-kernel convolution along a row; reflect only at the edges."""
    cdef Py_ssize_t half = taps.shape[0] // 2, k
    cdef double acc = 0.0
    if i >= half and i + half < n:
        for k in range(taps.shape[0]):
            acc = acc + row[i + k - half] * taps[k]
    else:
        for k in range(taps.shape[0]):
            acc = acc + row[_reflect(i + k - half, n)] * taps[k]
    return acc


cdef void _blur(const double[:, ::1] src, double[:, ::1] dst, double[:, ::1] tmp,
                const double[::1] taps) noexcept nogil:
    """Separable heat-kernel step with reflecting (heat-keeping) edges."""
    cdef Py_ssize_t ny = src.shape[0], nx = src.shape[1], r, c, k, src_row
    cdef Py_ssize_t half = taps.shape[0] // 2
    for r in prange(ny, schedule="static"):
        for c in range(nx):
            tmp[r, c] = _tap_sum(&src[r, 0], c, nx, taps)
    for r in prange(ny, schedule="static"):
        for c in range(nx):
            dst[r, c] = 0.0
        for k in range(taps.shape[0]):
            src_row = _reflect(r + k - half, ny)
            for c in range(nx):
                dst[r, c] += tmp[src_row, c] * taps[k]


cdef void _weights(double centre, double reach, double s, double origin, double step,
                   Py_ssize_t* first, Py_ssize_t* count, double[::1] w) noexcept nogil:
    """Gaussian node weights over the reach, normalised to sum 1 (unfolded indices)."""
    cdef Py_ssize_t k
    cdef double total = 0.0, d
    first[0] = <Py_ssize_t>ceil((centre - reach - origin) / step)
    count[0] = <Py_ssize_t>floor((centre + reach - origin) / step) - first[0] + 1
    for k in range(count[0]):
        d = origin + (first[0] + k) * step - centre
        w[k] = exp(-(d * d) / s)
        total = total + w[k]
    for k in range(count[0]):
        w[k] = w[k] / total


cdef void _deposit(const Geo* g, double[:, ::1] far, Py_ssize_t b, const double[::1] x,
                   const double[::1] y, const double[::1] t, const double[::1] e,
                   const double[::1] s0, double[::1] wx, double[::1] wy) noexcept nogil:
    """Add the spots that age past the hand-over during block b, at t_{b+1}."""
    cdef double t1 = _boundary(g, b + 1), s, reach, amount
    cdef Py_ssize_t j, a, q, fx, nxw, fy, nyw, row
    for j in range(_first_ge(t, _boundary(g, b) - g.handover), _first_ge(t, t1 - g.handover)):
        s = s0[j] + g.kappa4 * (t1 - t[j])
        reach = sqrt(s * g.reach_log)
        _weights(x[j], reach, s, g.fx0, g.far, &fx, &nxw, wx)
        _weights(y[j], reach, s, g.fy0, g.far, &fy, &nyw, wy)
        amount = e[j] / (g.far * g.far)
        for a in range(nyw):
            row = _reflect(fy + a, g.nfy)
            for q in range(nxw):
                far[row, _reflect(fx + q, g.nfx)] += amount * wy[a] * wx[q]


cdef void _snapshot(const Geo* g, const double[:, ::1] far, double[:, ::1] total,
                    double[:, ::1] far_peak, Py_ssize_t b, const double[::1] x,
                    const double[::1] y, const double[::1] t, const double[::1] e,
                    const double[::1] s0, double[::1] ex) noexcept nogil:
    """Far grid plus the near spots it resolves, at block boundary b, into the far peak map."""
    cdef double tb = _boundary(g, b), s, reach, amp, gy, d
    cdef Py_ssize_t j, r, c, c0, c1, r0, r1
    total[:, :] = far
    for j in range(_first_ge(t, tb - g.handover), _first_ge(t, tb)):
        s = s0[j] + g.kappa4 * (tb - t[j])
        if s < g.snap_s:
            continue
        reach = sqrt(s * g.reach_log)
        c0 = <Py_ssize_t>ceil((x[j] - reach - g.fx0) / g.far)
        c1 = <Py_ssize_t>floor((x[j] + reach - g.fx0) / g.far) + 1
        r0 = <Py_ssize_t>ceil((y[j] - reach - g.fy0) / g.far)
        r1 = <Py_ssize_t>floor((y[j] + reach - g.fy0) / g.far) + 1
        c0, r0 = max(c0, 0), max(r0, 0)
        c1, r1 = min(c1, g.nfx), min(r1, g.nfy)
        amp = e[j] / (M_PI * s)
        for c in range(c0, c1):
            d = g.fx0 + c * g.far - x[j]
            ex[c - c0] = exp(-(d * d) / s)
        for r in range(r0, r1):
            d = g.fy0 + r * g.far - y[j]
            gy = amp * exp(-(d * d) / s)
            for c in range(c0, c1):
                total[r, c] += gy * ex[c - c0]
    for r in range(g.nfy):
        for c in range(g.nfx):
            if total[r, c] > far_peak[r, c]:
                far_peak[r, c] = total[r, c]


cdef struct Window:
    double xi, yi
    Py_ssize_t c0, c1, r0, r1


cdef inline double _bilinear(const Geo* g, const double[:, ::1] grid, double x,
                             double y) noexcept nogil:
    """Far grid bilinearly interpolated at a point."""
    cdef double px = (x - g.fx0) / g.far, py = (y - g.fy0) / g.far
    cdef Py_ssize_t kx = <Py_ssize_t>floor(px), ky = <Py_ssize_t>floor(py)
    cdef double fx = px - kx, fy = py - ky
    return ((1.0 - fy) * ((1.0 - fx) * grid[ky, kx] + fx * grid[ky, kx + 1])
            + fy * ((1.0 - fx) * grid[ky + 1, kx] + fx * grid[ky + 1, kx + 1]))


cdef void _far_cache(const Geo* g, const Window* w, const double[:, ::1] start,
                     const double[:, ::1] end, double[:, ::1] at_start,
                     double[:, ::1] at_end) noexcept nogil:
    """Far grid at the window cells at the start and the end of a block."""
    cdef Py_ssize_t r, c
    cdef double xc, yc
    for r in range(w.r0, w.r1):
        yc = g.y0 + (r + 0.5) * g.cell
        for c in range(w.c0, w.c1):
            xc = g.x0 + (c + 0.5) * g.cell
            at_start[r - w.r0, c - w.c0] = _bilinear(g, start, xc, yc)
            at_end[r - w.r0, c - w.c0] = _bilinear(g, end, xc, yc)


cdef inline void _gaussian_row(double d0, double step, double s, double scale, Py_ssize_t n,
                              double[::1] out) noexcept nogil:
    """out[k] = scale * exp(-(d0 + k step)^2 / s) by the two-ratio recurrence (3 exp calls)."""
    cdef Py_ssize_t k
    cdef double value = scale * exp(-(d0 * d0) / s)
    cdef double ratio = exp(-(2.0 * d0 * step + step * step) / s)
    cdef double ratio_step = exp(-2.0 * step * step / s)
    for k in range(n):
        out[k] = value
        value = value * ratio
        ratio = ratio * ratio_step


cdef void _near_part(const Geo* g, const Window* w, double ts, double lo_t,
                     const Py_ssize_t[::1] cand, Py_ssize_t n_cand, const double[::1] x,
                     const double[::1] y, const double[::1] t, const double[::1] e,
                     const double[::1] s0, double[:, ::1] acc, double[::1] ex,
                     double[::1] ey) noexcept nogil:
    """Exact Gaussians of sharp near spots plus the 2nd-order Taylor sum of smooth ones."""
    cdef Py_ssize_t q, j, r, c, nc = w.c1 - w.c0
    cdef double s, reach2, ax, ay, amp, dx, dy, g0, d, u, v, gy
    cdef double c00 = 0.0, cx = 0.0, cy = 0.0, cxx = 0.0, cyy = 0.0, cxy = 0.0
    for q in range(n_cand):
        j = cand[q]
        if t[j] < lo_t or t[j] > ts:
            continue
        s = s0[j] + g.kappa4 * (ts - t[j])
        reach2 = s * g.reach_log
        ax = fabs(x[j] - w.xi) - g.window
        ay = fabs(y[j] - w.yi) - g.window
        if (ax > 0.0 and ax * ax > reach2) or (ay > 0.0 and ay * ay > reach2):
            continue
        amp = e[j] / (M_PI * s)
        if s < g.smooth_s:
            _gaussian_row(g.x0 + (w.c0 + 0.5) * g.cell - x[j], g.cell, s, 1.0, nc, ex)
            _gaussian_row(g.y0 + (w.r0 + 0.5) * g.cell - y[j], g.cell, s, amp, w.r1 - w.r0, ey)
            for r in range(w.r1 - w.r0):
                gy = ey[r]
                for c in range(nc):
                    acc[r, c] += gy * ex[c]
        else:
            dx = w.xi - x[j]
            dy = w.yi - y[j]
            g0 = amp * exp(-(dx * dx + dy * dy) / s)
            c00 = c00 + g0
            cx = cx - 2.0 * g0 * dx / s
            cy = cy - 2.0 * g0 * dy / s
            cxx = cxx + g0 * (2.0 * dx * dx / (s * s) - 1.0 / s)
            cyy = cyy + g0 * (2.0 * dy * dy / (s * s) - 1.0 / s)
            cxy = cxy + 4.0 * g0 * dx * dy / (s * s)
    if c00 == 0.0:
        return
    for r in range(w.r1 - w.r0):
        v = g.y0 + (w.r0 + r + 0.5) * g.cell - w.yi
        for c in range(nc):
            u = g.x0 + (w.c0 + c + 0.5) * g.cell - w.xi
            acc[r, c] += c00 + cy * v + cyy * v * v + cx * u + cxx * u * u + cxy * v * u


cdef void _window(const Geo* g, Py_ssize_t i, Py_ssize_t b, const double[:, ::1] cur,
                  const double[:, ::1] cur_blur, const double[:, ::1] nxt,
                  const double[:, ::1] nxt_blur, const double[::1] x, const double[::1] y,
                  const double[::1] t, const double[::1] e, const double[::1] s0,
                  double[:, ::1] fine, double[:, :, ::1] scratch, Py_ssize_t[::1] cand,
                  double[::1] ex, double[::1] ey) noexcept nogil:
    """Sample the temperature around spot i at its log-spaced times after firing."""
    cdef Window w
    cdef double s_max = 2.0 * g.window * g.window, s_i = s0[i], s_last, ts, s, reach2, ax, ay
    cdef double t_next = _boundary(g, b + 1)
    cdef Py_ssize_t j, r, c, n_cand = 0, bs
    cdef bint cached[2]
    cdef double frac
    cdef double* row
    cdef double[:, ::1] acc = scratch[0]
    cached[0] = cached[1] = False
    w.xi, w.yi = x[i], y[i]
    _cell_span(w.xi - g.window, w.xi + g.window, g.x0, g.cell, g.nx, &w.c0, &w.c1)
    _cell_span(w.yi - g.window, w.yi + g.window, g.y0, g.cell, g.ny, &w.r0, &w.r1)
    # Candidates: near spots of any sample, kept if within reach at the last (widest) sample.
    s_last = s_i
    while s_last < s_max:
        s_last = s_last * g.ratio
    ts = t[i] + (s_last - s0[i]) / g.kappa4
    for j in range(_first_ge(t, _boundary(g, b) - g.handover), _first_gt(t, ts)):
        s = s0[j] + g.kappa4 * (ts - t[j])
        reach2 = s * g.reach_log
        ax = fabs(x[j] - w.xi) - g.window
        ay = fabs(y[j] - w.yi) - g.window
        if (ax > 0.0 and ax * ax > reach2) or (ay > 0.0 and ay * ay > reach2):
            continue
        cand[n_cand] = j
        n_cand += 1
    while True:
        ts = t[i] + (s_i - s0[i]) / g.kappa4
        bs = b if ts < t_next else b + 1
        if not cached[bs - b]:
            if bs == b:
                _far_cache(g, &w, cur, cur_blur, scratch[1], scratch[2])
            else:
                _far_cache(g, &w, nxt, nxt_blur, scratch[3], scratch[4])
            cached[bs - b] = True
        frac = (ts - _boundary(g, bs)) / g.block
        for r in range(w.r1 - w.r0):
            for c in range(w.c1 - w.c0):
                acc[r, c] = ((1.0 - frac) * scratch[1 + 2 * (bs - b), r, c]
                             + frac * scratch[2 + 2 * (bs - b), r, c])
        _near_part(g, &w, ts, _boundary(g, bs) - g.handover, cand, n_cand, x, y, t, e, s0,
                   acc, ex, ey)
        for r in range(w.r1 - w.r0):
            row = &fine[w.r0 + r, w.c0]
            for c in range(w.c1 - w.c0):
                row[c] = _max(row[c], acc[r, c])
        if s_i >= s_max:
            return
        s_i = s_i * g.ratio


cdef void _combine(const Geo* g, double[:, :, ::1] fine, const double[:, ::1] far_peak,
                   unsigned char[:, ::1] sampled) noexcept nogil:
    """Peak map into fine[0]: the larger of every thread's window samples and the
    interpolated far snapshots. Marks the cells some window sampled (the others stay -1).
    """
    cdef Py_ssize_t r, c, k
    cdef double v
    for r in prange(g.ny, schedule="static"):
        for c in range(g.nx):
            v = fine[0, r, c]
            for k in range(1, fine.shape[0]):
                v = _max(v, fine[k, r, c])
            sampled[r, c] = v >= 0.0
            fine[0, r, c] = _max(v, _bilinear(g, far_peak, g.x0 + (c + 0.5) * g.cell,
                                              g.y0 + (r + 0.5) * g.cell))


def peak_rise(const double[::1] x, const double[::1] y, const double[::1] t,
              const double[::1] e, const double[::1] s0, layout):
    """Windowed superposition plus far grid; spots sorted by ``t``.

    Returns (peak rise map on the fine grid, far grid at the end holding every spot's heat,
    map of the cells some window sampled); see controller.thermal_ref.peak_rise.
    """
    cdef Geo g = _geo(layout)
    sigma2 = 2.0 * layout.kappa_um2_s * layout.block_s
    half = int(np.ceil(4.0 * np.sqrt(sigma2) / layout.far_um))
    taps_np = np.exp(-((np.arange(-half, half + 1) * layout.far_um) ** 2) / (2.0 * sigma2))
    cdef const double[::1] taps = taps_np / taps_np.sum()
    cdef int n_threads = openmp.omp_get_max_threads()
    shape = (g.nfy, g.nfx)
    fine_np = np.full((n_threads, g.ny, g.nx), -1.0)
    far_peak_np = np.zeros(shape)
    cdef double[:, :, ::1] fine = fine_np
    cdef double[:, ::1] far_peak = far_peak_np
    cdef double[:, ::1] cur = np.zeros(shape), cur_blur = np.zeros(shape)
    cdef double[:, ::1] nxt = np.zeros(shape), nxt_blur = np.zeros(shape)
    cdef double[:, ::1] tmp = np.zeros(shape), total = np.zeros(shape), swap
    width = int(2.0 * g.window / g.cell) + 3
    cdef double[:, :, :, ::1] scratch = np.zeros((n_threads, 5, width, width))
    longest = max(g.nfx, g.nfy, width) + 1
    cdef double[:, ::1] ex = np.zeros((n_threads, longest)), ey = np.zeros((n_threads, longest))
    cdef Py_ssize_t[:, ::1] cand = np.zeros((n_threads, x.shape[0]), dtype=np.intp)
    sampled_np = np.zeros((g.ny, g.nx), dtype=np.bool_)
    cdef unsigned char[:, ::1] sampled = sampled_np.view(np.uint8)
    cdef Py_ssize_t b, i
    cdef int tid
    with nogil:
        _blur(cur, cur_blur, tmp, taps)
        nxt[:, :] = cur_blur
        _deposit(&g, nxt, 0, x, y, t, e, s0, ex[0], ey[0])
        _blur(nxt, nxt_blur, tmp, taps)
        for b in range(g.n_blocks):
            _snapshot(&g, cur, total, far_peak, b, x, y, t, e, s0, ex[0])
            for i in prange(_first_ge(t, _boundary(&g, b)), _first_ge(t, _boundary(&g, b + 1)),
                            schedule="dynamic", chunksize=8):
                tid = threadid()
                _window(&g, i, b, cur, cur_blur, nxt, nxt_blur, x, y, t, e, s0, fine[tid],
                        scratch[tid], cand[tid], ex[tid], ey[tid])
            swap = cur
            cur = nxt
            nxt = swap
            swap = cur_blur
            cur_blur = nxt_blur
            nxt_blur = swap
            nxt[:, :] = cur_blur
            _deposit(&g, nxt, b + 1, x, y, t, e, s0, ex[0], ey[0])
            _blur(nxt, nxt_blur, tmp, taps)
        _snapshot(&g, cur, total, far_peak, g.n_blocks, x, y, t, e, s0, ex[0])
        _combine(&g, fine, far_peak, sampled)
    return fine_np[0], np.asarray(cur), sampled_np
