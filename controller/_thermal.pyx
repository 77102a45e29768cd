# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: extra_compile_args = -fopenmp -fno-trapping-math -ffp-contract=off
# distutils: extra_link_args = -fopenmp
"""Cython kernels of the thermal screening model (numpy reference: controller.thermal_ref).

Same algorithm, loop for loop; the model and the scheme are in docs/thermal_model.md and the
grid fields in controller.thermal.Layout. Blocks run in chunks on OpenMP threads
(OMP_NUM_THREADS): thread 0 produces the far grid two chunks ahead while the others sample
this chunk's windows, and then samples them too; a window gathers its cells' peaks and damage
integrals in its thread's scratch and merges them into the one peak map (max) and damage map
(sum) a row at a time, under that row's lock.
"""

import math
import mmap

import numpy as np

cimport openmp
from cython.parallel cimport parallel, prange, threadid

from libc.math cimport INFINITY, M_PI, ceil, exp, fabs, floor, log, pow, sqrt
from libc.string cimport memcpy


cdef extern from *:
    void __builtin_prefetch(const void* addr, int rw, int locality) nogil


# Hot loops in C: restrict pointers (no run-time overlap checks) and AVX-512 (x86-64-v4) and
# AVX2 clones chosen at load time (GCC function multiversioning), so the module still runs on
# any x86-64. Plain IEEE multiplies and adds in the same order in every clone (no FMA, no
# reassociation): the same results on every machine; -ffp-contract=off, as the AVX-512 targets
# enable FMA and GCC would otherwise fuse a * b + c. -fno-trapping-math (no floating-point
# traps are enabled) lets comparisons become selects, so that loops with them vectorise;
# values are unchanged.
cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
    #define CO2SCAN_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))  /* needs ifunc */
    #else
    #define CO2SCAN_CLONES
    #endif

    /* Hand-written AVX2 and AVX-512 paths (intrinsics), chosen by co2scan_simd: at import
       the highest level the CPU has (0 portable, 1 AVX2, 2 AVX-512 F/DQ/VL); every level
       gives the same bits as the portable twins (the tests compare them). */
    #if defined(__GNUC__) && defined(__x86_64__)
    #define CO2SCAN_AVX2 1
    #define CO2SCAN_AVX512 1
    #include <immintrin.h>
    #define CO2SCAN_TARGET512 __attribute__((target("avx512f,avx512dq,avx512vl")))
    #endif
    static int co2scan_simd = 0;
    static int co2scan_simd_max(void) {  /* the highest level this CPU runs */
    #ifdef CO2SCAN_AVX2
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
                && __builtin_cpu_supports("avx512vl"))
            return 2;
        return __builtin_cpu_supports("avx2") ? 1 : 0;
    #else
        return 0;
    #endif
    }
    static int co2scan_set_simd_level(int level) {  /* returns the previous level */
        int was = co2scan_simd, top = co2scan_simd_max();
        co2scan_simd = level < 0 ? 0 : level > top ? top : level;
        return was;
    }
    static int co2scan_set_simd(int on) {  /* returns the previous level */
        return co2scan_set_simd_level(on ? 2 : 0);
    }

    /* name##_avx2(...) while the hand-written loops are in use, else name##_any(...);
       CO2SCAN_SIMD3 also name##_avx512(...) at level 2; CO2SCAN_SIMD512 name##_avx512(...)
       at level 2, else name##_any(...) (no AVX2 path). */
    #ifdef CO2SCAN_AVX2
    #define CO2SCAN_SIMD(name, ...) \
        (co2scan_simd ? name##_avx2(__VA_ARGS__) : name##_any(__VA_ARGS__))
    #define CO2SCAN_SIMD3(name, ...) \
        (co2scan_simd >= 2 ? name##_avx512(__VA_ARGS__) \
         : co2scan_simd ? name##_avx2(__VA_ARGS__) : name##_any(__VA_ARGS__))
    #define CO2SCAN_SIMD512(name, ...) \
        (co2scan_simd >= 2 ? name##_avx512(__VA_ARGS__) : name##_any(__VA_ARGS__))
    #else
    #define CO2SCAN_SIMD(name, ...) name##_any(__VA_ARGS__)
    #define CO2SCAN_SIMD3(name, ...) name##_any(__VA_ARGS__)
    #define CO2SCAN_SIMD512(name, ...) name##_any(__VA_ARGS__)
    #endif

    /* acc[r * stride + c] += ey[k * ld + r] ex[k * ld + c] for k < nk, r < nr, c < nc: the
       outer products of nk Gaussians' row and column factors, added one after another. */
    static void co2scan_outer_sum_any(
            double *restrict acc, Py_ssize_t stride, const double *restrict ey,
            const double *restrict ex, Py_ssize_t ld, Py_ssize_t nk, Py_ssize_t nr,
            Py_ssize_t nc) {
        for (Py_ssize_t r = 0; r < nr; r++) {
            double *restrict out = acc + r * stride;
            for (Py_ssize_t k = 0; k < nk; k++) {
                double gy = ey[k * ld + r];
                const double *restrict gx = ex + k * ld;
                for (Py_ssize_t c = 0; c < nc; c++)
                    out[c] += gy * gx[c];
            }
        }
    }

    #ifdef CO2SCAN_AVX2
    /* co2scan_outer_sum_any 16 columns at a time, each row's sums kept in four registers
       across the nk Gaussians (one load and one store of acc per row and block instead of
       one per Gaussian); masked loads and stores at the end of a row. The same multiplies
       and adds in the same order: the same bits. ex rows are read up to the next multiple
       of 16 columns (ld is one). */
    __attribute__((target("avx2"))) static void co2scan_outer_sum_avx2(
            double *restrict acc, Py_ssize_t stride, const double *restrict ey,
            const double *restrict ex, Py_ssize_t ld, Py_ssize_t nk, Py_ssize_t nr,
            Py_ssize_t nc) {
        for (Py_ssize_t c0 = 0; c0 < nc; c0 += 16) {
            Py_ssize_t left = nc - c0;
            __m256i lane = _mm256_set_epi64x(3, 2, 1, 0);
            __m256i m0 = _mm256_cmpgt_epi64(_mm256_set1_epi64x(left), lane);
            __m256i m1 = _mm256_cmpgt_epi64(_mm256_set1_epi64x(left - 4), lane);
            __m256i m2 = _mm256_cmpgt_epi64(_mm256_set1_epi64x(left - 8), lane);
            __m256i m3 = _mm256_cmpgt_epi64(_mm256_set1_epi64x(left - 12), lane);
            for (Py_ssize_t r = 0; r < nr; r++) {
                double *out = acc + r * stride + c0;
                __m256d a0 = _mm256_maskload_pd(out, m0), a1 = _mm256_maskload_pd(out + 4, m1);
                __m256d a2 = _mm256_maskload_pd(out + 8, m2);
                __m256d a3 = _mm256_maskload_pd(out + 12, m3);
                for (Py_ssize_t k = 0; k < nk; k++) {
                    __m256d gy = _mm256_broadcast_sd(ey + k * ld + r);
                    const double *gx = ex + k * ld + c0;
                    a0 = _mm256_add_pd(a0, _mm256_mul_pd(gy, _mm256_loadu_pd(gx)));
                    a1 = _mm256_add_pd(a1, _mm256_mul_pd(gy, _mm256_loadu_pd(gx + 4)));
                    a2 = _mm256_add_pd(a2, _mm256_mul_pd(gy, _mm256_loadu_pd(gx + 8)));
                    a3 = _mm256_add_pd(a3, _mm256_mul_pd(gy, _mm256_loadu_pd(gx + 12)));
                }
                _mm256_maskstore_pd(out, m0, a0);
                _mm256_maskstore_pd(out + 4, m1, a1);
                _mm256_maskstore_pd(out + 8, m2, a2);
                _mm256_maskstore_pd(out + 12, m3, a3);
            }
        }
    }
    #endif

    #ifdef CO2SCAN_AVX512
    /* Rows r..r+rows-1 (rows <= 4, a constant once inlined) of co2scan_outer_sum_avx512's
       block of columns c0..c0+15 (m0, m1: the columns in the acc row, of c0..c0+7 and
       c0+8..c0+15; none of the second block unless wide): each row's sums in one or two
       registers across the nk Gaussians, the ex loads shared by the rows. */
    CO2SCAN_TARGET512 static inline void co2scan_outer_rows512(
            double *restrict acc, Py_ssize_t stride, const double *restrict ey,
            const double *restrict ex, Py_ssize_t ld, Py_ssize_t nk, Py_ssize_t r,
            Py_ssize_t c0, int rows, int wide, __mmask8 m0, __mmask8 m1) {
        __m512d a[4][2];
        for (int i = 0; i < rows; i++) {
            double *out = acc + (r + i) * stride + c0;
            a[i][0] = _mm512_maskz_loadu_pd(m0, out);
            if (wide)
                a[i][1] = _mm512_maskz_loadu_pd(m1, out + 8);
        }
        for (Py_ssize_t k = 0; k < nk; k++) {
            const double *gx = ex + k * ld + c0;
            __m512d x0 = _mm512_loadu_pd(gx), x1 = x0;
            if (wide)
                x1 = _mm512_loadu_pd(gx + 8);
            for (int i = 0; i < rows; i++) {
                __m512d gy = _mm512_set1_pd(ey[k * ld + r + i]);
                a[i][0] = _mm512_add_pd(a[i][0], _mm512_mul_pd(gy, x0));
                if (wide)
                    a[i][1] = _mm512_add_pd(a[i][1], _mm512_mul_pd(gy, x1));
            }
        }
        for (int i = 0; i < rows; i++) {
            double *out = acc + (r + i) * stride + c0;
            _mm512_mask_storeu_pd(out, m0, a[i][0]);
            if (wide)
                _mm512_mask_storeu_pd(out + 8, m1, a[i][1]);
        }
    }

    /* co2scan_outer_sum_avx2 with AVX-512: 16 columns (8 at the end of a row if no more are
       left) in one or two registers per row, four rows at a time; masked loads and stores of
       acc. The same multiplies and adds in the same order: the same bits. ex rows are read up
       to the next multiple of 16 columns (ld is one). */
    CO2SCAN_TARGET512 static void co2scan_outer_sum_avx512(
            double *restrict acc, Py_ssize_t stride, const double *restrict ey,
            const double *restrict ex, Py_ssize_t ld, Py_ssize_t nk, Py_ssize_t nr,
            Py_ssize_t nc) {
        for (Py_ssize_t c0 = 0; c0 < nc; c0 += 16) {
            Py_ssize_t left = nc - c0;
            __mmask8 m0 = left >= 8 ? 0xFF : (__mmask8)((1u << left) - 1);
            __mmask8 m1 = left >= 16 ? 0xFF : left > 8 ? (__mmask8)((1u << (left - 8)) - 1) : 0;
            Py_ssize_t r = 0;
            if (m1) {
                for (; r + 4 <= nr; r += 4)
                    co2scan_outer_rows512(acc, stride, ey, ex, ld, nk, r, c0, 4, 1, m0, m1);
                for (; r < nr; r++)
                    co2scan_outer_rows512(acc, stride, ey, ex, ld, nk, r, c0, 1, 1, m0, m1);
            } else {
                for (; r + 4 <= nr; r += 4)
                    co2scan_outer_rows512(acc, stride, ey, ex, ld, nk, r, c0, 4, 0, m0, m1);
                for (; r < nr; r++)
                    co2scan_outer_rows512(acc, stride, ey, ex, ld, nk, r, c0, 1, 0, m0, m1);
            }
        }
    }
    #endif

    static void co2scan_outer_sum(
            double *restrict acc, Py_ssize_t stride, const double *restrict ey,
            const double *restrict ex, Py_ssize_t ld, Py_ssize_t nk, Py_ssize_t nr,
            Py_ssize_t nc) {
        CO2SCAN_SIMD3(co2scan_outer_sum, acc, stride, ey, ex, ld, nk, nr, nc);
    }

    /* exp(x) for x in [-708, 709] (the caller checks): x = k ln2/128 + r, exp(x) =
       2^(k/128) exp(r) with 2^(j/128) from exp2[j] and exp(r), |r| <= ln2/256, by its
       degree-5 Taylor polynomial (truncation below 1e-18; a few ulp in all). Integer work on
       the bits only, so that loops calling it vectorise. */
    static inline double co2scan_exp(double x, const double *restrict exp2) {
        const double shift = 6755399441055744.0;  /* 1.5 2^52: kd + shift holds kd's bits */
        double kt = x * 184.6649652337873 + shift, kd = kt - shift, scale;
        uint64_t shift_bits, kbits, scale_bits;
        memcpy(&shift_bits, &shift, sizeof shift_bits);
        memcpy(&kbits, &kt, sizeof kbits);
        uint64_t k = kbits - shift_bits;  /* kd = round(128 x / ln2), two's complement */
        double r = (x - kd * 0.0054152123475432745) - kd * 5.812982117197185e-13;  /* ln2/128 */
        double p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0
                                                                   + r * (1.0 / 120.0)))));
        scale_bits = ((k - (k & 127)) << 45) + ((uint64_t)1023 << 52);  /* 2^floor(k/128) */
        memcpy(&scale, &scale_bits, sizeof scale);
        return exp2[k & 127] * scale * p;
    }

    /* exp(x) as the kernels' _exp: co2scan_exp in [-708, 709], libm's exp outside. */
    static inline double co2scan_exp_any(double x, const double *restrict exp2) {
        return (x >= -708.0 && x <= 709.0) ? co2scan_exp(x, exp2) : exp(x);
    }

    /* One Gaussian's factors along a line of n cells, step apart, the first d0 from its
       centre: out[k] = scale exp(-(d0 + k step)^2 / s), by the two-ratio recurrence
       (ratio_step = exp(-2 step^2 / s)). Where the first value or ratio lies outside the
       normal range (exponent outside [-708, 709]: a narrow Gaussian far from the start of a
       wide window), the recurrence would multiply an underflowed value by an overflowing
       ratio; each cell is then evaluated on its own. */
    static inline void co2scan_gauss_line(
            double *restrict out, Py_ssize_t n, double d0, double step, double s, double scale,
            double ratio_step, const double *restrict exp2) {
        double e_value = -(d0 * d0) / s, e_ratio = -(2.0 * d0 * step + step * step) / s;
        if (!(e_value >= -708.0 && e_ratio >= -708.0 && e_ratio <= 709.0)) {
            for (Py_ssize_t k = 0; k < n; k++) {
                double d = d0 + (double)k * step;
                out[k] = scale * co2scan_exp_any(-(d * d) / s, exp2);
            }
            return;
        }
        double value = scale * co2scan_exp_any(e_value, exp2);
        double ratio = co2scan_exp_any(e_ratio, exp2);
        for (Py_ssize_t k = 0; k < n; k++) {
            out[k] = value;
            value = value * ratio;
            ratio = ratio * ratio_step;
        }
    }

    /* The factors of nk Gaussians (widths s[q], amplitudes amp[q]) on a window's columns and
       rows: gx[q * ld + c] = exp(-(dx[q] + c step)^2 / s[q]) for c < nc and
       gy[q * ld + r] = amp[q] exp(-(dy[q] + r step)^2 / s[q]) for r < nr. */
    static void co2scan_gauss_factors_any(
            double *restrict gx, double *restrict gy, Py_ssize_t ld, const double *restrict dx,
            const double *restrict dy, const double *restrict s, const double *restrict amp,
            Py_ssize_t nk, double step, Py_ssize_t nc, Py_ssize_t nr,
            const double *restrict exp2) {
        for (Py_ssize_t q = 0; q < nk; q++) {
            double ratio_step = co2scan_exp_any(-2.0 * step * step / s[q], exp2);
            co2scan_gauss_line(gx + q * ld, nc, dx[q], step, s[q], 1.0, ratio_step, exp2);
            co2scan_gauss_line(gy + q * ld, nr, dy[q], step, s[q], amp[q], ratio_step, exp2);
        }
    }

    #ifdef CO2SCAN_AVX2
    /* co2scan_exp on four lanes (the same operations: the same bits); the caller checks
       that every lane lies in [-708, 709]. */
    __attribute__((target("avx2"))) static inline __m256d co2scan_exp4(
            __m256d x, const double *restrict exp2) {
        const __m256d shift = _mm256_set1_pd(6755399441055744.0);
        __m256d kt = _mm256_add_pd(_mm256_mul_pd(x, _mm256_set1_pd(184.6649652337873)), shift);
        __m256d kd = _mm256_sub_pd(kt, shift);
        __m256i k = _mm256_sub_epi64(_mm256_castpd_si256(kt), _mm256_castpd_si256(shift));
        __m256d r = _mm256_sub_pd(
            _mm256_sub_pd(x, _mm256_mul_pd(kd, _mm256_set1_pd(0.0054152123475432745))),
            _mm256_mul_pd(kd, _mm256_set1_pd(5.812982117197185e-13)));
        __m256d p = _mm256_add_pd(_mm256_set1_pd(1.0 / 24.0),
                                  _mm256_mul_pd(r, _mm256_set1_pd(1.0 / 120.0)));
        p = _mm256_add_pd(_mm256_set1_pd(1.0 / 6.0), _mm256_mul_pd(r, p));
        p = _mm256_add_pd(_mm256_set1_pd(0.5), _mm256_mul_pd(r, p));
        p = _mm256_add_pd(_mm256_set1_pd(1.0), _mm256_mul_pd(r, p));
        p = _mm256_add_pd(_mm256_set1_pd(1.0), _mm256_mul_pd(r, p));
        __m256i j = _mm256_and_si256(k, _mm256_set1_epi64x(127));
        __m256i scale = _mm256_add_epi64(_mm256_slli_epi64(_mm256_sub_epi64(k, j), 45),
                                         _mm256_set1_epi64x((long long)1023 << 52));
        __m256d t = _mm256_i64gather_pd(exp2, j, 8);
        return _mm256_mul_pd(_mm256_mul_pd(t, _mm256_castsi256_pd(scale)), p);
    }

    /* Lanes of a, b, c, d (four Gaussians' factors at four consecutive cells) transposed:
       out + l * ld gets lane l of a, b, c, d (one Gaussian's four cells). */
    __attribute__((target("avx2"))) static inline void co2scan_store4x4(
            double *out, Py_ssize_t ld, __m256d a, __m256d b, __m256d c, __m256d d) {
        __m256d ab_lo = _mm256_unpacklo_pd(a, b), ab_hi = _mm256_unpackhi_pd(a, b);
        __m256d cd_lo = _mm256_unpacklo_pd(c, d), cd_hi = _mm256_unpackhi_pd(c, d);
        _mm256_storeu_pd(out, _mm256_permute2f128_pd(ab_lo, cd_lo, 0x20));
        _mm256_storeu_pd(out + ld, _mm256_permute2f128_pd(ab_hi, cd_hi, 0x20));
        _mm256_storeu_pd(out + 2 * ld, _mm256_permute2f128_pd(ab_lo, cd_lo, 0x31));
        _mm256_storeu_pd(out + 3 * ld, _mm256_permute2f128_pd(ab_hi, cd_hi, 0x31));
    }

    /* Four Gaussians' lines by the two-ratio recurrence, one Gaussian per lane, written in
       blocks of four cells up to n rounded up to 4 (ld is a multiple of 16, at least that). */
    __attribute__((target("avx2"))) static inline void co2scan_gauss_lines4(
            double *out, Py_ssize_t ld, Py_ssize_t n, __m256d value, __m256d ratio,
            __m256d ratio_step) {
        for (Py_ssize_t k = 0; k < n; k += 4) {
            __m256d v0 = value;
            value = _mm256_mul_pd(value, ratio); ratio = _mm256_mul_pd(ratio, ratio_step);
            __m256d v1 = value;
            value = _mm256_mul_pd(value, ratio); ratio = _mm256_mul_pd(ratio, ratio_step);
            __m256d v2 = value;
            value = _mm256_mul_pd(value, ratio); ratio = _mm256_mul_pd(ratio, ratio_step);
            __m256d v3 = value;
            value = _mm256_mul_pd(value, ratio); ratio = _mm256_mul_pd(ratio, ratio_step);
            co2scan_store4x4(out + k, ld, v0, v1, v2, v3);
        }
    }

    /* Four Gaussians' factors (co2scan_gauss_factors_any's, one Gaussian per lane) into
       the rows of gx and gy from gx, gy on; 0 (and nothing written) if an exponent lies
       outside the inline exp's range [-708, 709]. */
    __attribute__((target("avx2"))) static inline int co2scan_gauss4(
            double *restrict gx, double *restrict gy, Py_ssize_t ld, __m256d x4, __m256d y4,
            __m256d s4, __m256d amp4, double step, Py_ssize_t nc, Py_ssize_t nr,
            const double *restrict exp2) {
        const __m256d two = _mm256_set1_pd(2.0), st = _mm256_set1_pd(step);
        const __m256d st2 = _mm256_set1_pd(step * step), neg = _mm256_set1_pd(-0.0);
        __m256d e_step = _mm256_div_pd(_mm256_set1_pd(-2.0 * step * step), s4);
        __m256d e_x0 = _mm256_div_pd(_mm256_xor_pd(_mm256_mul_pd(x4, x4), neg), s4);
        __m256d e_xr = _mm256_div_pd(_mm256_xor_pd(_mm256_add_pd(
            _mm256_mul_pd(_mm256_mul_pd(two, x4), st), st2), neg), s4);
        __m256d e_y0 = _mm256_div_pd(_mm256_xor_pd(_mm256_mul_pd(y4, y4), neg), s4);
        __m256d e_yr = _mm256_div_pd(_mm256_xor_pd(_mm256_add_pd(
            _mm256_mul_pd(_mm256_mul_pd(two, y4), st), st2), neg), s4);
        __m256d lo_all = _mm256_min_pd(_mm256_min_pd(e_step, e_x0),
                                       _mm256_min_pd(_mm256_min_pd(e_xr, e_y0), e_yr));
        __m256d hi_all = _mm256_max_pd(_mm256_max_pd(e_step, e_x0),
                                       _mm256_max_pd(_mm256_max_pd(e_xr, e_y0), e_yr));
        /* every lane in range (NaN compares false) */
        if (_mm256_movemask_pd(_mm256_and_pd(
                _mm256_cmp_pd(lo_all, _mm256_set1_pd(-708.0), _CMP_GE_OQ),
                _mm256_cmp_pd(hi_all, _mm256_set1_pd(709.0), _CMP_LE_OQ))) != 15)
            return 0;
        __m256d ratio_step = co2scan_exp4(e_step, exp2);
        co2scan_gauss_lines4(gx, ld, nc, co2scan_exp4(e_x0, exp2), co2scan_exp4(e_xr, exp2),
                             ratio_step);
        co2scan_gauss_lines4(gy, ld, nr, _mm256_mul_pd(amp4, co2scan_exp4(e_y0, exp2)),
                             co2scan_exp4(e_yr, exp2), ratio_step);
        return 1;
    }

    /* co2scan_gauss_factors_any four Gaussians at a time (exponentials and recurrences on
       four lanes; the last group filled up with copies of its last Gaussian, whose rows are
       written beyond nk: the buffers hold a multiple of 4 rows), groups with an exponent
       outside [-708, 709] by it. The same operations in the same order: the same bits
       (cells beyond nc and nr, up to the next multiple of 4, get values too). */
    __attribute__((target("avx2"))) static void co2scan_gauss_factors_avx2(
            double *restrict gx, double *restrict gy, Py_ssize_t ld, const double *restrict dx,
            const double *restrict dy, const double *restrict s, const double *restrict amp,
            Py_ssize_t nk, double step, Py_ssize_t nc, Py_ssize_t nr,
            const double *restrict exp2) {
        for (Py_ssize_t q = 0; q < nk; q += 4) {
            Py_ssize_t m = nk - q < 4 ? nk - q : 4;
            __m256d x4, y4, s4, a4;
            if (m == 4) {
                x4 = _mm256_loadu_pd(dx + q), y4 = _mm256_loadu_pd(dy + q);
                s4 = _mm256_loadu_pd(s + q), a4 = _mm256_loadu_pd(amp + q);
            } else {
                double lanes[4][4];
                for (int l = 0; l < 4; l++) {
                    Py_ssize_t k = q + (l < m ? l : m - 1);
                    lanes[0][l] = dx[k], lanes[1][l] = dy[k], lanes[2][l] = s[k];
                    lanes[3][l] = amp[k];
                }
                x4 = _mm256_loadu_pd(lanes[0]), y4 = _mm256_loadu_pd(lanes[1]);
                s4 = _mm256_loadu_pd(lanes[2]), a4 = _mm256_loadu_pd(lanes[3]);
            }
            if (!co2scan_gauss4(gx + q * ld, gy + q * ld, ld, x4, y4, s4, a4, step, nc, nr,
                                exp2))
                co2scan_gauss_factors_any(gx + q * ld, gy + q * ld, ld, dx + q, dy + q, s + q,
                                          amp + q, m, step, nc, nr, exp2);
        }
    }
    #endif

    #ifdef CO2SCAN_AVX512
    /* co2scan_exp on eight lanes (the same operations: the same bits); the caller checks
       that every lane lies in [-708, 709]. */
    CO2SCAN_TARGET512 static inline __m512d co2scan_exp8(
            __m512d x, const double *restrict exp2) {
        const __m512d shift = _mm512_set1_pd(6755399441055744.0);
        __m512d kt = _mm512_add_pd(_mm512_mul_pd(x, _mm512_set1_pd(184.6649652337873)), shift);
        __m512d kd = _mm512_sub_pd(kt, shift);
        __m512i k = _mm512_sub_epi64(_mm512_castpd_si512(kt), _mm512_castpd_si512(shift));
        __m512d r = _mm512_sub_pd(
            _mm512_sub_pd(x, _mm512_mul_pd(kd, _mm512_set1_pd(0.0054152123475432745))),
            _mm512_mul_pd(kd, _mm512_set1_pd(5.812982117197185e-13)));
        __m512d p = _mm512_add_pd(_mm512_set1_pd(1.0 / 24.0),
                                  _mm512_mul_pd(r, _mm512_set1_pd(1.0 / 120.0)));
        p = _mm512_add_pd(_mm512_set1_pd(1.0 / 6.0), _mm512_mul_pd(r, p));
        p = _mm512_add_pd(_mm512_set1_pd(0.5), _mm512_mul_pd(r, p));
        p = _mm512_add_pd(_mm512_set1_pd(1.0), _mm512_mul_pd(r, p));
        p = _mm512_add_pd(_mm512_set1_pd(1.0), _mm512_mul_pd(r, p));
        __m512i j = _mm512_and_si512(k, _mm512_set1_epi64(127));
        __m512i scale = _mm512_add_epi64(_mm512_slli_epi64(_mm512_sub_epi64(k, j), 45),
                                         _mm512_set1_epi64((long long)1023 << 52));
        __m512d t = _mm512_i64gather_pd(j, exp2, 8);
        return _mm512_mul_pd(_mm512_mul_pd(t, _mm512_castsi512_pd(scale)), p);
    }

    /* Lanes of v[0..7] (eight Gaussians' factors at eight consecutive cells) transposed:
       out + l * ld gets lane l of v[0..7] (one Gaussian's eight cells), for lanes l < m. */
    CO2SCAN_TARGET512 __attribute__((always_inline)) static inline void co2scan_store8x8(
            double *out, Py_ssize_t ld, const __m512d v[8], int m) {
        __m512d t0 = _mm512_unpacklo_pd(v[0], v[1]), t1 = _mm512_unpackhi_pd(v[0], v[1]);
        __m512d t2 = _mm512_unpacklo_pd(v[2], v[3]), t3 = _mm512_unpackhi_pd(v[2], v[3]);
        __m512d t4 = _mm512_unpacklo_pd(v[4], v[5]), t5 = _mm512_unpackhi_pd(v[4], v[5]);
        __m512d t6 = _mm512_unpacklo_pd(v[6], v[7]), t7 = _mm512_unpackhi_pd(v[6], v[7]);
        /* u0: cells 0-3 of lanes 0, 4; u1: of lanes 2, 6 (t1, t3: lanes 1, 5 and 3, 7) */
        __m512d u0 = _mm512_shuffle_f64x2(t0, t2, 0x88), u1 = _mm512_shuffle_f64x2(t0, t2, 0xDD);
        __m512d u2 = _mm512_shuffle_f64x2(t1, t3, 0x88), u3 = _mm512_shuffle_f64x2(t1, t3, 0xDD);
        __m512d w0 = _mm512_shuffle_f64x2(t4, t6, 0x88), w1 = _mm512_shuffle_f64x2(t4, t6, 0xDD);
        __m512d w2 = _mm512_shuffle_f64x2(t5, t7, 0x88), w3 = _mm512_shuffle_f64x2(t5, t7, 0xDD);
        __m512d row[8];
        row[0] = _mm512_shuffle_f64x2(u0, w0, 0x88), row[4] = _mm512_shuffle_f64x2(u0, w0, 0xDD);
        row[2] = _mm512_shuffle_f64x2(u1, w1, 0x88), row[6] = _mm512_shuffle_f64x2(u1, w1, 0xDD);
        row[1] = _mm512_shuffle_f64x2(u2, w2, 0x88), row[5] = _mm512_shuffle_f64x2(u2, w2, 0xDD);
        row[3] = _mm512_shuffle_f64x2(u3, w3, 0x88), row[7] = _mm512_shuffle_f64x2(u3, w3, 0xDD);
        for (int l = 0; l < m; l++)
            _mm512_storeu_pd(out + l * ld, row[l]);
    }

    /* Eight Gaussians' lines by the two-ratio recurrence, one Gaussian per lane (the first m
       written), in blocks of eight cells up to n rounded up to 8 (ld is a multiple of 16, at
       least that): the next block's values and ratios into value and ratio. */
    CO2SCAN_TARGET512 __attribute__((always_inline)) static inline void co2scan_gauss_block8(
            double *out, Py_ssize_t ld, __m512d *value, __m512d *ratio, __m512d ratio_step,
            int m) {
        __m512d v[8];
        for (int j = 0; j < 8; j++) {
            v[j] = *value;
            *value = _mm512_mul_pd(*value, *ratio);
            *ratio = _mm512_mul_pd(*ratio, ratio_step);
        }
        co2scan_store8x8(out, ld, v, m);
    }

    /* Eight Gaussians' column lines (na cells into a) and row lines (nb cells into b) by the
       two-ratio recurrence, one Gaussian per lane (the first m written), in blocks of eight
       cells up to na and nb rounded up to 8 (ld is a multiple of 16, at least that); the two
       recurrences interleaved, so that their latencies overlap. */
    CO2SCAN_TARGET512 static inline void co2scan_gauss_lines8(
            double *a, Py_ssize_t na, __m512d va, __m512d ra, double *b, Py_ssize_t nb,
            __m512d vb, __m512d rb, __m512d ratio_step, Py_ssize_t ld, int m) {
        Py_ssize_t k = 0;
        for (; k < na && k < nb; k += 8) {
            co2scan_gauss_block8(a + k, ld, &va, &ra, ratio_step, m);
            co2scan_gauss_block8(b + k, ld, &vb, &rb, ratio_step, m);
        }
        for (Py_ssize_t j = k; j < na; j += 8)
            co2scan_gauss_block8(a + j, ld, &va, &ra, ratio_step, m);
        for (Py_ssize_t j = k; j < nb; j += 8)
            co2scan_gauss_block8(b + j, ld, &vb, &rb, ratio_step, m);
    }

    /* co2scan_gauss4 on eight lanes, the first m Gaussians' rows written. */
    CO2SCAN_TARGET512 static inline int co2scan_gauss8(
            double *restrict gx, double *restrict gy, Py_ssize_t ld, __m512d x8, __m512d y8,
            __m512d s8, __m512d amp8, double step, Py_ssize_t nc, Py_ssize_t nr, int m,
            const double *restrict exp2) {
        const __m512d two = _mm512_set1_pd(2.0), st = _mm512_set1_pd(step);
        const __m512d st2 = _mm512_set1_pd(step * step);
        const __m512i neg = _mm512_set1_epi64((long long)0x8000000000000000ULL);
        __m512d e_step = _mm512_div_pd(_mm512_set1_pd(-2.0 * step * step), s8);
        __m512d e_x0 = _mm512_div_pd(_mm512_castsi512_pd(_mm512_xor_si512(
            _mm512_castpd_si512(_mm512_mul_pd(x8, x8)), neg)), s8);
        __m512d e_xr = _mm512_div_pd(_mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(
            _mm512_add_pd(_mm512_mul_pd(_mm512_mul_pd(two, x8), st), st2)), neg)), s8);
        __m512d e_y0 = _mm512_div_pd(_mm512_castsi512_pd(_mm512_xor_si512(
            _mm512_castpd_si512(_mm512_mul_pd(y8, y8)), neg)), s8);
        __m512d e_yr = _mm512_div_pd(_mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(
            _mm512_add_pd(_mm512_mul_pd(_mm512_mul_pd(two, y8), st), st2)), neg)), s8);
        __m512d lo_all = _mm512_min_pd(_mm512_min_pd(e_step, e_x0),
                                       _mm512_min_pd(_mm512_min_pd(e_xr, e_y0), e_yr));
        __m512d hi_all = _mm512_max_pd(_mm512_max_pd(e_step, e_x0),
                                       _mm512_max_pd(_mm512_max_pd(e_xr, e_y0), e_yr));
        /* every lane in range (NaN compares false) */
        if ((__mmask8)(_mm512_cmp_pd_mask(lo_all, _mm512_set1_pd(-708.0), _CMP_GE_OQ)
                       & _mm512_cmp_pd_mask(hi_all, _mm512_set1_pd(709.0), _CMP_LE_OQ))
                != 0xFF)
            return 0;
        __m512d ratio_step = co2scan_exp8(e_step, exp2);
        co2scan_gauss_lines8(gx, nc, co2scan_exp8(e_x0, exp2), co2scan_exp8(e_xr, exp2),
                             gy, nr, _mm512_mul_pd(amp8, co2scan_exp8(e_y0, exp2)),
                             co2scan_exp8(e_yr, exp2), ratio_step, ld, m);
        return 1;
    }

    /* co2scan_gauss_factors_avx2 eight Gaussians at a time (the last group's lanes beyond nk
       copies of its last Gaussian, their rows not written), groups with an exponent outside
       [-708, 709] by co2scan_gauss_factors_any. The same operations in the same order: the
       same bits (cells beyond nc and nr, up to the next multiple of 8, get values too). */
    CO2SCAN_TARGET512 static void co2scan_gauss_factors_avx512(
            double *restrict gx, double *restrict gy, Py_ssize_t ld, const double *restrict dx,
            const double *restrict dy, const double *restrict s, const double *restrict amp,
            Py_ssize_t nk, double step, Py_ssize_t nc, Py_ssize_t nr,
            const double *restrict exp2) {
        const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
        for (Py_ssize_t q = 0; q < nk; q += 8) {
            int m = nk - q < 8 ? (int)(nk - q) : 8;
            __mmask8 in = (__mmask8)((1u << m) - 1);
            __m512i pick = _mm512_min_epi64(lane, _mm512_set1_epi64(m - 1));
            __m512d x8 = _mm512_permutexvar_pd(pick, _mm512_maskz_loadu_pd(in, dx + q));
            __m512d y8 = _mm512_permutexvar_pd(pick, _mm512_maskz_loadu_pd(in, dy + q));
            __m512d s8 = _mm512_permutexvar_pd(pick, _mm512_maskz_loadu_pd(in, s + q));
            __m512d a8 = _mm512_permutexvar_pd(pick, _mm512_maskz_loadu_pd(in, amp + q));
            if (!co2scan_gauss8(gx + q * ld, gy + q * ld, ld, x8, y8, s8, a8, step, nc, nr, m,
                                exp2))
                co2scan_gauss_factors_any(gx + q * ld, gy + q * ld, ld, dx + q, dy + q, s + q,
                                          amp + q, m, step, nc, nr, exp2);
        }
    }
    #endif

    static void co2scan_gauss_factors(
            double *restrict gx, double *restrict gy, Py_ssize_t ld, const double *restrict dx,
            const double *restrict dy, const double *restrict s, const double *restrict amp,
            Py_ssize_t nk, double step, Py_ssize_t nc, Py_ssize_t nr,
            const double *restrict exp2) {
        CO2SCAN_SIMD3(co2scan_gauss_factors, gx, gy, ld, dx, dy, s, amp, nk, step, nc, nr, exp2);
    }

    /* The share of a spot's heat still in the slab at this age: the depth factor linear
       between the nodes of table (node k at w = v / (1 + v) = k / (n_table - 1),
       v = sqrt(age) loss_scale). */
    static inline double co2scan_depth(double age, double loss_scale,
                                       const double *restrict table, Py_ssize_t n_table) {
        double v = sqrt(age > 0.0 ? age : 0.0) * loss_scale;
        double pos = (v / (1.0 + v)) * (n_table - 1);
        Py_ssize_t k = pos >= 0.0 ? (Py_ssize_t)pos : 0;  /* NaN (an infinite age): node 0 */
        if (k > n_table - 2)
            k = n_table - 2;
        return table[k] + (pos - k) * (table[k + 1] - table[k]);
    }

    /* Amplitudes of Gaussians: on entry amp[q] is a spot's heat (K um^2), s[q] its width
       and age[q] its age; on exit amp[q] = heat / (pi s) co2scan_depth(age). */
    static void co2scan_amplitudes_any(
            double *restrict amp, const double *restrict s, const double *restrict age,
            Py_ssize_t n, double loss_scale, const double *restrict table,
            Py_ssize_t n_table) {
        for (Py_ssize_t q = 0; q < n; q++)
            amp[q] = (amp[q] / (M_PI * s[q])) * co2scan_depth(age[q], loss_scale, table,
                                                              n_table);
    }

    #ifdef CO2SCAN_AVX2
    /* co2scan_amplitudes_any four terms at a time (square roots and divisions in AVX2; each
       term's two table nodes, adjacent, by one 128-bit load: cheaper than two gathers), the
       rest by it. The same operations in the same order: the same bits. Fewer than 2^31
       table nodes. */
    __attribute__((target("avx2"))) static void co2scan_amplitudes_avx2(
            double *restrict amp, const double *restrict s, const double *restrict age,
            Py_ssize_t n, double loss_scale, const double *restrict table,
            Py_ssize_t n_table) {
        const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0);
        const __m256d scale = _mm256_set1_pd(loss_scale), pi = _mm256_set1_pd(M_PI);
        const __m256d last = _mm256_set1_pd((double)(n_table - 1));
        const __m128i top = _mm_set1_epi32((int)(n_table - 2));
        Py_ssize_t q = 0;
        for (; q + 4 <= n; q += 4) {
            __m256d a = _mm256_loadu_pd(age + q);
            /* age > 0 ? age : 0 (max returns its second operand for NaN and for zeros) */
            __m256d v = _mm256_mul_pd(_mm256_sqrt_pd(_mm256_max_pd(a, zero)), scale);
            __m256d pos = _mm256_mul_pd(_mm256_div_pd(v, _mm256_add_pd(one, v)), last);
            /* NaN (an infinite age) converts to INT_MIN: node 0, as the scalar loop */
            __m128i k = _mm_max_epi32(_mm_min_epi32(_mm256_cvttpd_epi32(pos), top),
                                      _mm_setzero_si128());
            __m128d n0 = _mm_loadu_pd(table + _mm_cvtsi128_si32(k));
            __m128d n1 = _mm_loadu_pd(table + _mm_extract_epi32(k, 1));
            __m128d n2 = _mm_loadu_pd(table + _mm_extract_epi32(k, 2));
            __m128d n3 = _mm_loadu_pd(table + _mm_extract_epi32(k, 3));
            __m256d n02 = _mm256_insertf128_pd(_mm256_castpd128_pd256(n0), n2, 1);
            __m256d n13 = _mm256_insertf128_pd(_mm256_castpd128_pd256(n1), n3, 1);
            __m256d lo = _mm256_unpacklo_pd(n02, n13), hi = _mm256_unpackhi_pd(n02, n13);
            __m256d f = _mm256_add_pd(lo, _mm256_mul_pd(
                _mm256_sub_pd(pos, _mm256_cvtepi32_pd(k)), _mm256_sub_pd(hi, lo)));
            __m256d h = _mm256_div_pd(_mm256_loadu_pd(amp + q),
                                      _mm256_mul_pd(pi, _mm256_loadu_pd(s + q)));
            _mm256_storeu_pd(amp + q, _mm256_mul_pd(h, f));
        }
        co2scan_amplitudes_any(amp + q, s + q, age + q, n - q, loss_scale, table, n_table);
    }
    #endif

    #ifdef CO2SCAN_AVX512
    /* Eight pairs of adjacent table nodes: table[k[i]] into lo's lane i and table[k[i] + 1]
       into hi's, by eight 128-bit loads and shuffles (as the AVX2 paths, four at a time).
       The indices are stored and read back as scalars (one store, eight loads: fewer
       instructions than extracting them, and measured no slower). */
    CO2SCAN_TARGET512 static inline void co2scan_node_pairs8(
            const double *restrict table, __m256i k, __m512d *lo, __m512d *hi) {
        int32_t i[8] __attribute__((aligned(32)));
        _mm256_store_si256((__m256i *)i, k);
        __asm__ volatile("" : : "m"(i) : "memory");  /* else GCC extracts them again */
        __m128d n0 = _mm_loadu_pd(table + i[0]), n1 = _mm_loadu_pd(table + i[1]);
        __m128d n2 = _mm_loadu_pd(table + i[2]), n3 = _mm_loadu_pd(table + i[3]);
        __m128d n4 = _mm_loadu_pd(table + i[4]), n5 = _mm_loadu_pd(table + i[5]);
        __m128d n6 = _mm_loadu_pd(table + i[6]), n7 = _mm_loadu_pd(table + i[7]);
        __m512d a = _mm512_insertf64x4(_mm512_castpd256_pd512(
            _mm256_insertf128_pd(_mm256_castpd128_pd256(n0), n2, 1)),
            _mm256_insertf128_pd(_mm256_castpd128_pd256(n4), n6, 1), 1);
        __m512d b = _mm512_insertf64x4(_mm512_castpd256_pd512(
            _mm256_insertf128_pd(_mm256_castpd128_pd256(n1), n3, 1)),
            _mm256_insertf128_pd(_mm256_castpd128_pd256(n5), n7, 1), 1);
        *lo = _mm512_unpacklo_pd(a, b);  /* lanes of a: n0 n2 n4 n6; of b: n1 n3 n5 n7 */
        *hi = _mm512_unpackhi_pd(a, b);
    }

    /* co2scan_amplitudes_avx2 eight terms at a time, the last (fewer) under a mask instead of
       by co2scan_amplitudes_any; the lanes beyond n read no input (zero age: node 0) and their
       divisions are masked. Fewer than four terms by co2scan_amplitudes_any. The same
       operations in the same order: the same bits. */
    CO2SCAN_TARGET512 static void co2scan_amplitudes_avx512(
            double *restrict amp, const double *restrict s, const double *restrict age,
            Py_ssize_t n, double loss_scale, const double *restrict table,
            Py_ssize_t n_table) {
        const __m512d zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1.0);
        const __m512d scale = _mm512_set1_pd(loss_scale), pi = _mm512_set1_pd(M_PI);
        const __m512d last = _mm512_set1_pd((double)(n_table - 1));
        const __m256i top = _mm256_set1_epi32((int)(n_table - 2));
        if (n < 4) {  /* one to three terms (most calls in a random-order pass): the scalar
                         loop's chain of square root, divisions and table load is shorter */
            co2scan_amplitudes_any(amp, s, age, n, loss_scale, table, n_table);
            return;
        }
        for (Py_ssize_t q = 0; q < n; q += 8) {
            __mmask8 m = n - q >= 8 ? 0xFF : (__mmask8)((1u << (n - q)) - 1);
            __m512d a = _mm512_maskz_loadu_pd(m, age + q);
            /* age > 0 ? age : 0 (max returns its second operand for NaN and for zeros) */
            __m512d v = _mm512_mul_pd(_mm512_sqrt_pd(_mm512_max_pd(a, zero)), scale);
            __m512d pos = _mm512_mul_pd(_mm512_div_pd(v, _mm512_add_pd(one, v)), last);
            /* NaN (an infinite age) converts to INT_MIN: node 0, as the scalar loop */
            __m256i k = _mm256_max_epi32(_mm256_min_epi32(_mm512_cvttpd_epi32(pos), top),
                                         _mm256_setzero_si256());
            __m512d lo, hi;
            co2scan_node_pairs8(table, k, &lo, &hi);
            __m512d f = _mm512_add_pd(lo, _mm512_mul_pd(
                _mm512_sub_pd(pos, _mm512_cvtepi32_pd(k)), _mm512_sub_pd(hi, lo)));
            __m512d h = _mm512_maskz_div_pd(m, _mm512_maskz_loadu_pd(m, amp + q),
                                            _mm512_mul_pd(pi, _mm512_maskz_loadu_pd(m, s + q)));
            _mm512_mask_storeu_pd(amp + q, m, _mm512_mul_pd(h, f));
        }
    }
    #endif

    static void co2scan_amplitudes(
            double *restrict amp, const double *restrict s, const double *restrict age,
            Py_ssize_t n, double loss_scale, const double *restrict table,
            Py_ssize_t n_table) {
        CO2SCAN_SIMD3(co2scan_amplitudes, amp, s, age, n, loss_scale, table, n_table);
    }

    /* A Taylor sum's coefficients: for terms q < n (offset dx, dy of the expansion centre
       from the Gaussian's, width s, amplitude amp), with inv = 1 / s, g0 = amp exp(-(dx^2 +
       dy^2) inv) (exponent clamped at -708: a share below 1e-307, never less) and
       gs = g0 inv: out = [sum g0, sum -2 gs dx, sum -2 gs dy, sum gs (2 dx^2 inv - 1),
       sum gs (2 dy^2 inv - 1), sum 4 gs dx dy inv]. Summed in four lanes (term q into lane
       q % 4 of the first n - n % 4, the lanes then added as (0 + 1) + (2 + 3)), the last
       n % 4 terms after, in order: the same sums as co2scan_taylor_sums_avx2. */
    static inline void co2scan_taylor_term(double acc[6], double dx, double dy, double s,
                                           double amp, const double *restrict exp2) {
        double inv = 1.0 / s;
        double x = -(dx * dx + dy * dy) * inv;
        double g0 = amp * co2scan_exp(x > -708.0 ? x : -708.0, exp2);
        double gs = g0 * inv;
        acc[0] = acc[0] + g0;
        acc[1] = acc[1] - 2.0 * gs * dx;
        acc[2] = acc[2] - 2.0 * gs * dy;
        acc[3] = acc[3] + gs * (2.0 * dx * dx * inv - 1.0);
        acc[4] = acc[4] + gs * (2.0 * dy * dy * inv - 1.0);
        acc[5] = acc[5] + 4.0 * gs * dx * dy * inv;
    }

    static void co2scan_taylor_sums_any(
            double out[6], const double *restrict dx, const double *restrict dy,
            const double *restrict s, const double *restrict amp, Py_ssize_t n,
            const double *restrict exp2) {
        double lane[4][6] = {{0.0}};
        Py_ssize_t q = 0, m = n - n % 4;
        for (; q < m; q++)
            co2scan_taylor_term(lane[q % 4], dx[q], dy[q], s[q], amp[q], exp2);
        for (int c = 0; c < 6; c++)
            out[c] = (lane[0][c] + lane[1][c]) + (lane[2][c] + lane[3][c]);
        for (; q < n; q++)
            co2scan_taylor_term(out, dx[q], dy[q], s[q], amp[q], exp2);
    }

    #ifdef CO2SCAN_AVX2
    /* co2scan_taylor_sums_any with the four lanes in AVX2 registers. */
    __attribute__((target("avx2"))) static void co2scan_taylor_sums_avx2(
            double out[6], const double *restrict dx, const double *restrict dy,
            const double *restrict s, const double *restrict amp, Py_ssize_t n,
            const double *restrict exp2) {
        const __m256d one = _mm256_set1_pd(1.0), two = _mm256_set1_pd(2.0);
        const __m256d four = _mm256_set1_pd(4.0), clamp = _mm256_set1_pd(-708.0);
        const __m256d neg = _mm256_set1_pd(-0.0);
        __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
        Py_ssize_t q = 0, m = n - n % 4;
        for (; q < m; q += 4) {
            __m256d x4 = _mm256_loadu_pd(dx + q), y4 = _mm256_loadu_pd(dy + q);
            __m256d inv = _mm256_div_pd(one, _mm256_loadu_pd(s + q));
            __m256d e = _mm256_mul_pd(_mm256_xor_pd(_mm256_add_pd(
                _mm256_mul_pd(x4, x4), _mm256_mul_pd(y4, y4)), neg), inv);
            /* e > -708 ? e : -708 (max returns its second operand for NaN) */
            __m256d g0 = _mm256_mul_pd(_mm256_loadu_pd(amp + q),
                                       co2scan_exp4(_mm256_max_pd(e, clamp), exp2));
            __m256d gs = _mm256_mul_pd(g0, inv);
            __m256d gs2 = _mm256_mul_pd(two, gs);
            a0 = _mm256_add_pd(a0, g0);
            a1 = _mm256_sub_pd(a1, _mm256_mul_pd(gs2, x4));
            a2 = _mm256_sub_pd(a2, _mm256_mul_pd(gs2, y4));
            a3 = _mm256_add_pd(a3, _mm256_mul_pd(gs, _mm256_sub_pd(_mm256_mul_pd(
                _mm256_mul_pd(_mm256_mul_pd(two, x4), x4), inv), one)));
            a4 = _mm256_add_pd(a4, _mm256_mul_pd(gs, _mm256_sub_pd(_mm256_mul_pd(
                _mm256_mul_pd(_mm256_mul_pd(two, y4), y4), inv), one)));
            a5 = _mm256_add_pd(a5, _mm256_mul_pd(_mm256_mul_pd(_mm256_mul_pd(
                _mm256_mul_pd(four, gs), x4), y4), inv));
        }
        __m256d lanes[6] = {a0, a1, a2, a3, a4, a5};
        for (int c = 0; c < 6; c++) {
            double l[4];
            _mm256_storeu_pd(l, lanes[c]);
            out[c] = (l[0] + l[1]) + (l[2] + l[3]);
        }
        for (; q < n; q++)
            co2scan_taylor_term(out, dx[q], dy[q], s[q], amp[q], exp2);
    }
    #endif

    #ifdef CO2SCAN_AVX512
    /* The six addends of co2scan_taylor_term for eight terms (inv, g0, gs as there): a[0] =
       g0, a[1] = 2 gs dx, a[2] = 2 gs dy, a[3] = gs (2 dx^2 inv - 1), a[4] = gs (2 dy^2 inv -
       1), a[5] = 4 gs dx dy inv (a[1] and a[2] subtracted). */
    CO2SCAN_TARGET512 __attribute__((always_inline)) static inline void co2scan_taylor_terms8(
            __m512d a[6], __m512d x8, __m512d y8, __m512d s8, __m512d amp8,
            const double *restrict exp2) {
        const __m512d one = _mm512_set1_pd(1.0), two = _mm512_set1_pd(2.0);
        const __m512d four = _mm512_set1_pd(4.0), clamp = _mm512_set1_pd(-708.0);
        const __m512i neg = _mm512_set1_epi64((long long)0x8000000000000000ULL);
        __m512d inv = _mm512_div_pd(one, s8);
        __m512d e = _mm512_mul_pd(_mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(
            _mm512_add_pd(_mm512_mul_pd(x8, x8), _mm512_mul_pd(y8, y8))), neg)), inv);
        /* e > -708 ? e : -708 (max returns its second operand for NaN) */
        __m512d g0 = _mm512_mul_pd(amp8, co2scan_exp8(_mm512_max_pd(e, clamp), exp2));
        __m512d gs = _mm512_mul_pd(g0, inv);
        __m512d gs2 = _mm512_mul_pd(two, gs);
        a[0] = g0;
        a[1] = _mm512_mul_pd(gs2, x8);
        a[2] = _mm512_mul_pd(gs2, y8);
        a[3] = _mm512_mul_pd(gs, _mm512_sub_pd(_mm512_mul_pd(
            _mm512_mul_pd(_mm512_mul_pd(two, x8), x8), inv), one));
        a[4] = _mm512_mul_pd(gs, _mm512_sub_pd(_mm512_mul_pd(
            _mm512_mul_pd(_mm512_mul_pd(two, y8), y8), inv), one));
        a[5] = _mm512_mul_pd(_mm512_mul_pd(_mm512_mul_pd(_mm512_mul_pd(four, gs), x8), y8),
                             inv);
    }

    /* co2scan_taylor_sums_avx2 with the terms computed eight at a time (a group of four at the
       end of the first n - n % 4 in the lower lanes, the upper ones unused), each group's
       terms added to the four sums lower lanes first, then upper: term q into lane q % 4, in
       order, as there; the same bits. */
    CO2SCAN_TARGET512 static void co2scan_taylor_sums_avx512(
            double out[6], const double *restrict dx, const double *restrict dy,
            const double *restrict s, const double *restrict amp, Py_ssize_t n,
            const double *restrict exp2) {
        __m256d acc[6];
        for (int c = 0; c < 6; c++)
            acc[c] = _mm256_setzero_pd();
        Py_ssize_t q = 0, m = n - n % 4;
        for (int full; q < m; q += full ? 8 : 4) {
            __m512d a[6];
            full = m - q >= 8;
            __mmask8 in = full ? 0xFF : 0x0F;
            co2scan_taylor_terms8(a, _mm512_maskz_loadu_pd(in, dx + q),
                                  _mm512_maskz_loadu_pd(in, dy + q),
                                  _mm512_mask_loadu_pd(_mm512_set1_pd(1.0), in, s + q),
                                  _mm512_maskz_loadu_pd(in, amp + q), exp2);
            for (int half = 0; half < 1 + full; half++) {
                __m256d t[6];
                for (int c = 0; c < 6; c++)
                    t[c] = half ? _mm512_extractf64x4_pd(a[c], 1) : _mm512_castpd512_pd256(a[c]);
                acc[0] = _mm256_add_pd(acc[0], t[0]);
                acc[1] = _mm256_sub_pd(acc[1], t[1]);
                acc[2] = _mm256_sub_pd(acc[2], t[2]);
                acc[3] = _mm256_add_pd(acc[3], t[3]);
                acc[4] = _mm256_add_pd(acc[4], t[4]);
                acc[5] = _mm256_add_pd(acc[5], t[5]);
            }
        }
        for (int c = 0; c < 6; c++) {
            double l[4];
            _mm256_storeu_pd(l, acc[c]);
            out[c] = (l[0] + l[1]) + (l[2] + l[3]);
        }
        for (; q < n; q++)
            co2scan_taylor_term(out, dx[q], dy[q], s[q], amp[q], exp2);
    }
    #endif

    static void co2scan_taylor_sums(
            double out[6], const double *restrict dx, const double *restrict dy,
            const double *restrict s, const double *restrict amp, Py_ssize_t n,
            const double *restrict exp2) {
        CO2SCAN_SIMD3(co2scan_taylor_sums, out, dx, dy, s, amp, n, exp2);
    }

    /* One row of a spot's deposit on the far grid's modes: out[i] += (c wx[i]) mw[i], with
       wx and mw a column's weight and a mode's weight repeated so that i runs over the
       row's columns and modes together (one contiguous loop). */
    CO2SCAN_CLONES static void co2scan_deposit_row(
            double *restrict out, const double *restrict wx, const double *restrict mw,
            Py_ssize_t n, double c) {
        for (Py_ssize_t i = 0; i < n; i++)
            out[i] += (c * wx[i]) * mw[i];
    }

    /* A window's row into the maps: peak = max(peak, win_peak),
       dose += win_dose. */
    CO2SCAN_CLONES static void co2scan_merge_row(
            double *restrict peak, double *restrict dose, const double *restrict win_peak,
            const double *restrict win_dose, Py_ssize_t n) {
        for (Py_ssize_t c = 0; c < n; c++) {
            peak[c] = peak[c] > win_peak[c] ? peak[c] : win_peak[c];
            dose[c] += win_dose[c];
        }
    }

    /* A spin lock per map row (a byte each): windows of both threads merge into one map, a
       row at a time; held for one short row, so waiting spins (pausing), and yields the core
       after a while in case the holder was preempted (other jobs share this machine). */
    #include <sched.h>
    static inline void co2scan_lock(unsigned char *lock) {
        while (__atomic_test_and_set(lock, __ATOMIC_ACQUIRE)) {
            for (int spins = 0; __atomic_load_n(lock, __ATOMIC_RELAXED); spins++) {
                if (spins >= 1024) {
                    sched_yield();
                    spins = 0;
                }
    #if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
    #endif
            }
        }
    }

    static inline void co2scan_unlock(unsigned char *lock) {
        __atomic_clear(lock, __ATOMIC_RELEASE);
    }

    /* The next `grain` items of a loop shared by the threads: the first of them (the counter
       moved past them). Relaxed: it only hands out indices; the data the items read was
       written before the parallel region began (its start and end order it). */
    static inline Py_ssize_t co2scan_take(Py_ssize_t *next, Py_ssize_t grain) {
        return __atomic_fetch_add(next, grain, __ATOMIC_RELAXED);
    }

    /* out[q] += a x[q] */
    CO2SCAN_CLONES static void co2scan_axpy(
            double *restrict out, const double *restrict x, Py_ssize_t n, double a) {
        for (Py_ssize_t q = 0; q < n; q++)
            out[q] += a * x[q];
    }

    /* A Gaussian's weights at the far nodes first..first + n - 1 of a line (node k at
       origin + k step): out[i] = scale exp(-d^2 / s), d = origin + (first + i) step -
       centre (the snapshot's deposit, a column or a row at a time). The caller's nodes lie
       within sqrt(s reach_log) of the centre (its first and last by ceil and floor), so
       d^2 / s is at most reach_log (13.8 at the smallest cutoff_rel): co2scan_exp, as
       co2scan_exp_any there, without its branch (the loop vectorises); its argument clamped
       at -708 all the same, where co2scan_exp's range ends (a hand-built layout). */
    CO2SCAN_CLONES static void co2scan_node_gauss(
            double *restrict out, Py_ssize_t n, double origin, double step, Py_ssize_t first,
            double centre, double s, double scale, const double *restrict exp2) {
        for (Py_ssize_t i = 0; i < n; i++) {
            double d = origin + (double)(first + i) * step - centre;
            double x = -(d * d) / s;
            out[i] = scale * co2scan_exp(x > -708.0 ? x : -708.0, exp2);
        }
    }

    /* The damage integral of one row: dose[c] += rate(hot[c]) span[c] where span[c] > 0 and
       hot[c] > floor, the rate linear between the nodes of its table (node k at floor +
       k / per_k; fewer than 2^31 nodes). Selects, not branches, so that it vectorises;
       returns whether some cell's rise lies beyond the table (left to the caller: the exact
       rate). */
    CO2SCAN_CLONES static int co2scan_dose_row_any(
            double *restrict dose, const double *restrict hot, const double *restrict span,
            Py_ssize_t n, double floor_k, double per_k, const double *restrict table,
            Py_ssize_t n_table) {
        const double last = (double)(n_table - 1);
        int beyond = 0;
        for (Py_ssize_t c = 0; c < n; c++) {
            double pos = (hot[c] - floor_k) * per_k;  /* > 0 exactly when hot[c] > floor */
            double p = pos > 0.0 ? pos : 0.0;
            p = p < last ? p : 0.0;
            p = span[c] > 0.0 ? p : 0.0;
            int k = (int)p;
            k = k > 0 ? k : 0;
            double rate = table[k] + (p - k) * (table[k + 1] - table[k]);
            dose[c] += p > 0.0 ? rate * span[c] : 0.0;
            beyond |= (span[c] > 0.0) & (pos >= last);
        }
        return beyond;
    }

    #ifdef CO2SCAN_AVX2
    /* co2scan_dose_row_any four cells at a time in AVX2 (GCC emulates the loop's two table
       reads with scalar loads, about twice as slow; each cell's two table nodes, adjacent, by
       one 128-bit load: cheaper than two gathers), the rest (if any) by
       co2scan_dose_row_any. The same operations in the same order: the same bits. */
    __attribute__((target("avx2"))) static int co2scan_dose_row_avx2(
            double *restrict dose, const double *restrict hot, const double *restrict span,
            Py_ssize_t n, double floor_k, double per_k, const double *restrict table,
            Py_ssize_t n_table) {
        const __m256d zero = _mm256_setzero_pd(), floor4 = _mm256_set1_pd(floor_k);
        const __m256d per4 = _mm256_set1_pd(per_k);
        const __m256d last = _mm256_set1_pd((double)(n_table - 1));
        __m256d beyond = zero;
        Py_ssize_t c = 0;
        for (; c + 4 <= n; c += 4) {
            __m256d s = _mm256_loadu_pd(span + c);
            __m256d pos = _mm256_mul_pd(_mm256_sub_pd(_mm256_loadu_pd(hot + c), floor4), per4);
            __m256d counted = _mm256_cmp_pd(s, zero, _CMP_GT_OQ);
            __m256d p = _mm256_max_pd(pos, zero);  /* pos > 0 ? pos : 0 */
            p = _mm256_and_pd(p, _mm256_cmp_pd(p, last, _CMP_LT_OQ));
            p = _mm256_and_pd(p, counted);
            __m128i k = _mm256_cvttpd_epi32(p);  /* p >= 0 */
            __m128d n0 = _mm_loadu_pd(table + _mm_cvtsi128_si32(k));
            __m128d n1 = _mm_loadu_pd(table + _mm_extract_epi32(k, 1));
            __m128d n2 = _mm_loadu_pd(table + _mm_extract_epi32(k, 2));
            __m128d n3 = _mm_loadu_pd(table + _mm_extract_epi32(k, 3));
            __m256d n02 = _mm256_insertf128_pd(_mm256_castpd128_pd256(n0), n2, 1);
            __m256d n13 = _mm256_insertf128_pd(_mm256_castpd128_pd256(n1), n3, 1);
            __m256d lo = _mm256_unpacklo_pd(n02, n13), hi = _mm256_unpackhi_pd(n02, n13);
            __m256d rate = _mm256_add_pd(lo, _mm256_mul_pd(
                _mm256_sub_pd(p, _mm256_cvtepi32_pd(k)), _mm256_sub_pd(hi, lo)));
            __m256d add = _mm256_and_pd(_mm256_mul_pd(rate, s),
                                        _mm256_cmp_pd(p, zero, _CMP_GT_OQ));
            _mm256_storeu_pd(dose + c, _mm256_add_pd(_mm256_loadu_pd(dose + c), add));
            beyond = _mm256_or_pd(beyond, _mm256_and_pd(
                counted, _mm256_cmp_pd(pos, last, _CMP_GE_OQ)));
        }
        int out = _mm256_movemask_pd(beyond) != 0;
        if (c < n)
            out |= co2scan_dose_row_any(dose + c, hot + c, span + c, n - c, floor_k, per_k,
                                        table, n_table);
        return out;
    }
    #endif

    #ifdef CO2SCAN_AVX512
    /* co2scan_dose_row_avx2 eight cells at a time, the last (fewer) under a mask instead of
       by co2scan_dose_row_any (the lanes beyond n read nothing: span 0, not counted). The
       same operations in the same order: the same bits. */
    CO2SCAN_TARGET512 static int co2scan_dose_row_avx512(
            double *restrict dose, const double *restrict hot, const double *restrict span,
            Py_ssize_t n, double floor_k, double per_k, const double *restrict table,
            Py_ssize_t n_table) {
        const __m512d zero = _mm512_setzero_pd(), floor8 = _mm512_set1_pd(floor_k);
        const __m512d per8 = _mm512_set1_pd(per_k);
        const __m512d last = _mm512_set1_pd((double)(n_table - 1));
        __mmask8 beyond = 0;
        for (Py_ssize_t c = 0; c < n; c += 8) {
            __mmask8 m = n - c >= 8 ? 0xFF : (__mmask8)((1u << (n - c)) - 1);
            __m512d s = _mm512_maskz_loadu_pd(m, span + c);
            __m512d pos = _mm512_mul_pd(
                _mm512_sub_pd(_mm512_maskz_loadu_pd(m, hot + c), floor8), per8);
            __mmask8 counted = _mm512_cmp_pd_mask(s, zero, _CMP_GT_OQ);
            __m512d p = _mm512_max_pd(pos, zero);  /* pos > 0 ? pos : 0 */
            p = _mm512_maskz_mov_pd(
                (__mmask8)(_mm512_cmp_pd_mask(p, last, _CMP_LT_OQ) & counted), p);
            __m256i k = _mm512_cvttpd_epi32(p);  /* p >= 0 */
            __m512d lo, hi;
            co2scan_node_pairs8(table, k, &lo, &hi);
            __m512d rate = _mm512_add_pd(lo, _mm512_mul_pd(
                _mm512_sub_pd(p, _mm512_cvtepi32_pd(k)), _mm512_sub_pd(hi, lo)));
            __m512d add = _mm512_maskz_mul_pd(_mm512_cmp_pd_mask(p, zero, _CMP_GT_OQ), rate, s);
            _mm512_mask_storeu_pd(dose + c, m,
                                  _mm512_add_pd(_mm512_maskz_loadu_pd(m, dose + c), add));
            beyond |= counted & _mm512_cmp_pd_mask(pos, last, _CMP_GE_OQ);
        }
        return beyond != 0;
    }
    #endif

    static int co2scan_dose_row(
            double *restrict dose, const double *restrict hot, const double *restrict span,
            Py_ssize_t n, double floor_k, double per_k, const double *restrict table,
            Py_ssize_t n_table) {
        return CO2SCAN_SIMD3(co2scan_dose_row, dose, hot, span, n, floor_k, per_k, table, n_table);
    }

    /* A spot's largest rise over an interval on nr rows of out (stride apart), row r at
       dy = dy0 + r step from the spot: out[c] += ga gxa[c] (its Gaussian at width s_a, ga =
       gya[r]) where d^2 < s_a, gb gxb[c] (at width s_b, gb = gyb[r]) where d^2 > s_b, else
       amp_e / d^2 (the pulse's peak), with d^2 = (dx0 + c step)^2 + dy^2; nothing where
       |dx| <= inner on the rows with |dy| <= inner if fresh. Selects, so that each row's
       loop vectorises (fewer than 2^31 cells a row). */
    CO2SCAN_CLONES static void co2scan_bound_rows(
            double *restrict out, Py_ssize_t stride, const double *restrict gxa,
            const double *restrict gxb, const double *restrict gya, const double *restrict gyb,
            Py_ssize_t nr, Py_ssize_t n, double dx0, double dy0, double step, double s_a,
            double s_b, double amp_e, double inner, int fresh) {
        for (Py_ssize_t r = 0; r < nr; r++) {
            double dy = dy0 + r * step, dy2 = dy * dy, ga = gya[r], gb = gyb[r];
            int skip_inner = fresh && fabs(dy) <= inner;
            double *restrict row = out + r * stride;
            for (int c = 0; c < (int)n; c++) {  /* int: its conversion to double vectorises */
                double dx = dx0 + (double)c * step;
                double d2 = dx * dx + dy2;
                double a = ga * gxa[c], b = gb * gxb[c], peak = amp_e / d2;
                double v = d2 < s_a ? a : (d2 > s_b ? b : peak);
                row[c] += (skip_inner && fabs(dx) <= inner) ? 0.0 : v;
            }
        }
    }

    /* One damage sample of a row: peak = max(peak, acc); span = min(ts, until) - t_prev. */
    CO2SCAN_CLONES static void co2scan_bounded_row(
            double *restrict peak, const double *restrict acc, const double *restrict until,
            double *restrict span, Py_ssize_t n, double ts, double t_prev) {
        for (Py_ssize_t c = 0; c < n; c++) {
            peak[c] = peak[c] > acc[c] ? peak[c] : acc[c];
            span[c] = (ts < until[c] ? ts : until[c]) - t_prev;
        }
    }

    /* out[c] = a[c] + frac (b[c] - a[c]) */
    CO2SCAN_CLONES static void co2scan_lerp(
            double *restrict out, const double *restrict a, const double *restrict b,
            Py_ssize_t n, double frac) {
        for (Py_ssize_t c = 0; c < n; c++)
            out[c] = a[c] + frac * (b[c] - a[c]);
    }

    /* The far grid's part of a box of nr rows and nc columns (out, rows stride apart): the
       block's far grid linear in time (frac of the way from start to end, rows nfx apart)
       at the far nodes about the box (into nodes, rows ldn apart), then bilinear per cell as
       thermal_ref: cell (r, c), centred at x0 + (col0 + c + 0.5) cell, y0 + (row0 + r + 0.5)
       cell, at far-grid coordinates px = (x - fx0) / far, py = (y - fy0) / far: the row's
       values at the nodes, line[q] = (1 - fy) nodes[a][q] + fy nodes[a + 1][q] (a = floor(py)
       less the first row's, fy = py - floor(py)), then (1 - fx) line[k] + fx line[k + 1]
       (likewise). The columns' fractions in f and 1 - f in g, their nodes in k (scratch, nc
       each). The columns of a node form a run: along a row, its two values broadcast over
       the run (no gathers). */
    #define CO2SCAN_FAR_RUNS 16
    CO2SCAN_CLONES static void co2scan_far_box(
            double *restrict out, Py_ssize_t stride, Py_ssize_t nr, Py_ssize_t nc,
            const double *restrict start, const double *restrict end, Py_ssize_t nfx,
            double frac, Py_ssize_t col0, Py_ssize_t row0, double x0, double y0, double cell,
            double fx0, double fy0, double far, double *restrict nodes, Py_ssize_t ldn,
            double *restrict f, double *restrict g, Py_ssize_t *restrict k,
            double *restrict line) {
        Py_ssize_t run_end[CO2SCAN_FAR_RUNS], run_k[CO2SCAN_FAR_RUNS], n_runs = 0;
        if (nr <= 0 || nc <= 0)
            return;
        for (Py_ssize_t c = 0; c < nc; c++) {  /* (vectorises: floor kept as a double) */
            double px = (x0 + ((double)(col0 + c) + 0.5) * cell - fx0) / far;
            double node = floor(px);
            f[c] = px - node;
            g[c] = 1.0 - (px - node);
            k[c] = (Py_ssize_t)node;
        }
        Py_ssize_t kx0 = k[0], n_kx = k[nc - 1] - kx0 + 2;
        Py_ssize_t ky0 = (Py_ssize_t)floor((y0 + ((double)row0 + 0.5) * cell - fy0) / far);
        Py_ssize_t n_ky = (Py_ssize_t)floor((y0 + ((double)(row0 + nr - 1) + 0.5) * cell - fy0)
                                            / far) - ky0 + 2;
        for (Py_ssize_t a = 0; a < n_ky; a++)
            for (Py_ssize_t q = 0; q < n_kx; q++)
                nodes[a * ldn + q] = ((1.0 - frac) * start[(ky0 + a) * nfx + kx0 + q]
                                      + frac * end[(ky0 + a) * nfx + kx0 + q]);
        for (Py_ssize_t c = 0; c < nc; c++) {
            k[c] -= kx0;
            if (n_runs < 0)
                continue;
            if (c == 0 || k[c] != k[c - 1]) {
                if (n_runs == CO2SCAN_FAR_RUNS) {
                    n_runs = -1;  /* too many: cell by cell */
                    continue;
                }
                run_k[n_runs++] = k[c];
            }
            run_end[n_runs - 1] = c + 1;
        }
        for (Py_ssize_t r = 0; r < nr; r++) {
            double py = (y0 + ((double)(row0 + r) + 0.5) * cell - fy0) / far;
            Py_ssize_t a = (Py_ssize_t)floor(py);
            double fy = py - a;
            const double *restrict n0 = nodes + (a - ky0) * ldn;
            for (Py_ssize_t q = 0; q < n_kx; q++)
                line[q] = (1.0 - fy) * n0[q] + fy * n0[ldn + q];
            double *restrict o = out + r * stride;
            if (n_runs < 0) {
                for (Py_ssize_t c = 0; c < nc; c++)
                    o[c] = g[c] * line[k[c]] + f[c] * line[k[c] + 1];
                continue;
            }
            for (Py_ssize_t i = 0, c = 0; i < n_runs; i++) {
                double lo = line[run_k[i]], hi = line[run_k[i] + 1];
                for (; c < run_end[i]; c++)
                    o[c] = g[c] * lo + f[c] * hi;
            }
        }
    }

    /* One row of the final maps: sampled[c] = peak[c] >= 0 (some window sampled the cell);
       then peak[c] = max(peak, far peak) and dose[c] = dose + far dose, the far values
       bilinear from line_peak and line_dose (node k[c], fraction f[c]). */
    static void co2scan_combine_row_any(
            double *restrict peak, double *restrict dose, unsigned char *restrict sampled,
            const double *restrict line_peak, const double *restrict line_dose,
            const Py_ssize_t *restrict k, const double *restrict f, Py_ssize_t n) {
        for (Py_ssize_t c = 0; c < n; c++) {
            double v = peak[c];
            sampled[c] = v >= 0.0;
            double fp = (1.0 - f[c]) * line_peak[k[c]] + f[c] * line_peak[k[c] + 1];
            peak[c] = v > fp ? v : fp;
            dose[c] = dose[c] + ((1.0 - f[c]) * line_dose[k[c]] + f[c] * line_dose[k[c] + 1]);
        }
    }

    #ifdef CO2SCAN_AVX2
    /* co2scan_combine_row_any four cells at a time (the far values gathered), the rest by
       it. The same operations in the same order (max returns its second operand unless the
       first is larger, as the scalar select): the same bits. */
    __attribute__((target("avx2"))) static void co2scan_combine_row_avx2(
            double *restrict peak, double *restrict dose, unsigned char *restrict sampled,
            const double *restrict line_peak, const double *restrict line_dose,
            const Py_ssize_t *restrict k, const double *restrict f, Py_ssize_t n) {
        const __m256d one = _mm256_set1_pd(1.0), zero = _mm256_setzero_pd();
        Py_ssize_t c = 0;
        for (; c + 4 <= n; c += 4) {
            __m256d v = _mm256_loadu_pd(peak + c);
            int mask = _mm256_movemask_pd(_mm256_cmp_pd(v, zero, _CMP_GE_OQ));
            for (int l = 0; l < 4; l++)
                sampled[c + l] = (mask >> l) & 1;
            __m256i kc = _mm256_loadu_si256((const __m256i *)(k + c));
            __m256d f4 = _mm256_loadu_pd(f + c), g4 = _mm256_sub_pd(one, f4);
            __m256d fp = _mm256_add_pd(
                _mm256_mul_pd(g4, _mm256_i64gather_pd(line_peak, kc, 8)),
                _mm256_mul_pd(f4, _mm256_i64gather_pd(line_peak + 1, kc, 8)));
            __m256d fd = _mm256_add_pd(
                _mm256_mul_pd(g4, _mm256_i64gather_pd(line_dose, kc, 8)),
                _mm256_mul_pd(f4, _mm256_i64gather_pd(line_dose + 1, kc, 8)));
            _mm256_storeu_pd(peak + c, _mm256_max_pd(v, fp));
            _mm256_storeu_pd(dose + c, _mm256_add_pd(_mm256_loadu_pd(dose + c), fd));
        }
        co2scan_combine_row_any(peak + c, dose + c, sampled + c, line_peak, line_dose, k + c,
                                f + c, n - c);
    }
    #endif

    static void co2scan_combine_row(
            double *restrict peak, double *restrict dose, unsigned char *restrict sampled,
            const double *restrict line_peak, const double *restrict line_dose,
            const Py_ssize_t *restrict k, const double *restrict f, Py_ssize_t n) {
        CO2SCAN_SIMD(co2scan_combine_row, peak, dose, sampled, line_peak, line_dose, k, f, n);
    }

    /* A 2nd-order Taylor sum (coefficients coef: 1, x, y, xx, yy, xy) about (xc, yc) on a
       box of nr rows and nc columns (acc, rows stride apart) of cells centred x0 + (col0 + c +
       0.5) cell, y0 + (row0 + r + 0.5) cell: with u, v the cell's offsets from (xc, yc), acc +=
       (row + col) + slope u, col = cx u + cxx u u, row = c00 + cy v + cyy v v, slope = cxy v.
       u and col: scratch (nc each). */
    CO2SCAN_CLONES static void co2scan_taylor_box(
            double *restrict acc, Py_ssize_t stride, Py_ssize_t nr, Py_ssize_t nc,
            const double *restrict coef, Py_ssize_t col0, Py_ssize_t row0, double x0,
            double y0, double cell, double xc, double yc, double *restrict u,
            double *restrict col) {
        double c00 = coef[0], cx = coef[1], cy = coef[2], cxx = coef[3], cyy = coef[4];
        double cxy = coef[5];
        for (Py_ssize_t c = 0; c < nc; c++) {
            u[c] = x0 + ((double)(col0 + c) + 0.5) * cell - xc;
            col[c] = cx * u[c] + cxx * u[c] * u[c];
        }
        for (Py_ssize_t r = 0; r < nr; r++) {
            double v = y0 + ((double)(row0 + r) + 0.5) * cell - yc;
            double row = c00 + cy * v + cyy * v * v, slope = cxy * v;
            double *restrict out = acc + r * stride;
            for (Py_ssize_t c = 0; c < nc; c++)
                out[c] = (out[c] + (row + col[c])) + slope * u[c];
        }
    }

    /* One sample on one row: the peak (acc plus fresh, if given) into peak, the sample into
       prev; the larger of the interval's two ends into hot and its span (to until, the
       cell's hand-over) into span, for the damage integral. */
    CO2SCAN_CLONES static void co2scan_sample_row(
            double *restrict peak, const double *restrict acc, const double *restrict fresh,
            double *restrict prev, const double *restrict until, double *restrict hot,
            double *restrict span, Py_ssize_t n, double ts, double t_prev) {
        for (Py_ssize_t c = 0; c < n; c++) {
            double v = acc[c];
            hot[c] = v > prev[c] ? v : prev[c];
            span[c] = (ts < until[c] ? ts : until[c]) - t_prev;
            if (fresh)
                v = v + fresh[c];
            peak[c] = peak[c] > v ? peak[c] : v;
            prev[c] = v;
        }
    }
    """
    int _set_simd "co2scan_set_simd"(int on) nogil
    int _set_simd_level "co2scan_set_simd_level"(int level) nogil
    int _simd_max "co2scan_simd_max"() nogil
    void _outer_sum "co2scan_outer_sum"(double* acc, Py_ssize_t stride, const double* ey,
                                         const double* ex, Py_ssize_t ld, Py_ssize_t nk,
                                         Py_ssize_t nr, Py_ssize_t nc) nogil
    void _amplitudes "co2scan_amplitudes"(double* amp, const double* s, const double* age,
                                           Py_ssize_t n, double loss_scale, const double* table,
                                           Py_ssize_t n_table) nogil
    void _gauss_factors "co2scan_gauss_factors"(
        double* gx, double* gy, Py_ssize_t ld, const double* dx, const double* dy,
        const double* s, const double* amp, Py_ssize_t nk, double step, Py_ssize_t nc,
        Py_ssize_t nr, const double* exp2) nogil
    double _exp_any "co2scan_exp_any"(double x, const double* exp2) nogil
    double _depth_of "co2scan_depth"(double age, double loss_scale, const double* table,
                                     Py_ssize_t n_table) nogil
    void _taylor_sums "co2scan_taylor_sums"(double* out, const double* dx, const double* dy,
                                            const double* s, const double* amp, Py_ssize_t n,
                                            const double* exp2) nogil
    void _deposit_row "co2scan_deposit_row"(double* out, const double* wx, const double* mw,
                                             Py_ssize_t n, double c) nogil
    void _merge_row "co2scan_merge_row"(double* peak, double* dose, const double* win_peak,
                                         const double* win_dose, Py_ssize_t n) nogil
    void _lock "co2scan_lock"(unsigned char* lock) nogil
    void _unlock "co2scan_unlock"(unsigned char* lock) nogil
    Py_ssize_t _take "co2scan_take"(Py_ssize_t* next, Py_ssize_t grain) nogil
    void _axpy "co2scan_axpy"(double* out, const double* x, Py_ssize_t n, double a) nogil
    void _node_gauss "co2scan_node_gauss"(double* out, Py_ssize_t n, double origin,
                                          double step, Py_ssize_t first, double centre,
                                          double s, double scale, const double* exp2) nogil
    bint _dose_row "co2scan_dose_row"(double* dose, const double* hot, const double* span,
                                      Py_ssize_t n, double floor_k, double per_k,
                                      const double* table, Py_ssize_t n_table) nogil
    void _bound_rows "co2scan_bound_rows"(double* out, Py_ssize_t stride, const double* gxa,
                                           const double* gxb, const double* gya,
                                           const double* gyb, Py_ssize_t nr, Py_ssize_t n,
                                           double dx0, double dy0, double step, double s_a,
                                           double s_b, double amp_e, double inner,
                                           int fresh) nogil
    void _bounded_row "co2scan_bounded_row"(double* peak, const double* acc,
                                             const double* until, double* span, Py_ssize_t n,
                                             double ts, double t_prev) nogil
    void _lerp "co2scan_lerp"(double* out, const double* a, const double* b, Py_ssize_t n,
                              double frac) nogil
    void _far_box "co2scan_far_box"(
        double* out, Py_ssize_t stride, Py_ssize_t nr, Py_ssize_t nc, const double* start,
        const double* end, Py_ssize_t nfx, double frac, Py_ssize_t col0, Py_ssize_t row0,
        double x0, double y0, double cell, double fx0, double fy0, double far, double* nodes,
        Py_ssize_t ldn, double* f, double* g, Py_ssize_t* k, double* line) nogil
    void _combine_row "co2scan_combine_row"(double* peak, double* dose, unsigned char* sampled,
                                             const double* line_peak, const double* line_dose,
                                             const Py_ssize_t* k, const double* f,
                                             Py_ssize_t n) nogil
    void _taylor_box "co2scan_taylor_box"(
        double* acc, Py_ssize_t stride, Py_ssize_t nr, Py_ssize_t nc, const double* coef,
        Py_ssize_t col0, Py_ssize_t row0, double x0, double y0, double cell, double xc,
        double yc, double* u, double* col) nogil
    void _sample_row "co2scan_sample_row"(double* peak, const double* acc, const double* fresh,
                                          double* prev, const double* until, double* hot,
                                          double* span, Py_ssize_t n, double ts,
                                          double t_prev) nogil


#: Blocks per chunk: far-grid states are produced one chunk ahead of the windows.
DEF CHUNK_BLOCKS = 8
#: The same, for the tests that compare the kernels across chunk boundaries.
chunk_blocks = CHUNK_BLOCKS
#: Far-grid blocks a window may sample ahead of its own, at most CHUNK_BLOCKS: the windows of a
#: chunk run while the chunk after it is ready (as controller.thermal_ref.LOOKAHEAD).
DEF LOOKAHEAD = 8
lookahead = LOOKAHEAD
#: Windows a thread takes at a time from the chunk's shared counter.
DEF WINDOW_GRAIN = 8
#: Snapshots of the far grid per block (as controller.thermal_ref.SNAPS_PER_BLOCK).
DEF SNAPS_PER_BLOCK = 4
snaps_per_block = SNAPS_PER_BLOCK
#: A later spot takes over a cell's damage integral only if the cell lies this many cells
#: inside its window (as controller.thermal_ref.COVER_MARGIN).
DEF COVER_MARGIN = 1e-6
#: A sharp spot whose width grows by at most this factor over a damage sample's interval is
#: counted at the interval's ends (as controller.thermal_ref.RESOLVED_RATIO).
DEF RESOLVED_RATIO = 4.0
#: A sharp spot at least this many times rho^2 wide enters a damage sample as a Taylor sum about
#: the centre of the first damage box (as controller.thermal_ref.DAMAGE_TAYLOR_RATIO).
DEF DAMAGE_TAYLOR_RATIO = 16.0
DEF INV_E = 0.36787944117144233  # exp(-1)
# The DEFs above as Python names: tests/test_kernel_constants.py checks each against the
# reference (thermal_ref.COVER_MARGIN...; inv_e against math.exp(-1)).
cover_margin = COVER_MARGIN
resolved_ratio = RESOLVED_RATIO
damage_taylor_ratio = DAMAGE_TAYLOR_RATIO
inv_e = INV_E


cdef struct Geo:
    double x0, y0, cell, fx0, fy0, far, window, kappa4, t0, block, handover
    double ratio, smooth_s, snap_s, damage_s, reach_log, bg_ratio, loss_scale
    double ln_a, ea_r, base_k, floor_k, rate_per_k
    Py_ssize_t nx, ny, nfx, nfy, n_blocks, n_table, n_rate
    const double* table
    const double* rate_table


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
    g.damage_s = layout.damage_s_um2
    g.bg_ratio, g.loss_scale = layout.background_ratio, layout.loss_per_sqrt_s
    g.ln_a, g.ea_r = layout.rate_ln_a, layout.rate_ea_r_k
    g.base_k, g.floor_k = layout.rate_base_k, layout.rate_floor_k
    cdef const double[::1] table = layout.loss_table
    cdef const double[::1] rate_table = layout.rate_table
    if table.shape[0] < 2 or rate_table.shape[0] < 2:  # every lookup reads two adjacent nodes
        raise ValueError(f"layout tables need at least 2 nodes (loss_table has "
                         f"{table.shape[0]}, rate_table {rate_table.shape[0]})")
    g.table, g.n_table = &table[0], table.shape[0]
    g.rate_table, g.n_rate = &rate_table[0], rate_table.shape[0]
    g.rate_per_k = layout.rate_per_k
    return g


cdef inline double _depth(const Geo* g, double age) noexcept nogil:
    """Share of a spot's heat still in the slab at this age (table, as thermal_ref)."""
    return _depth_of(age, g.loss_scale, g.table, g.n_table)


cdef inline double _min(double a, double b) noexcept nogil:
    return a if a < b else b


cdef inline double _max(double a, double b) noexcept nogil:
    """Inline max (libm fmax is an out-of-line call without -ffast-math)."""
    return a if a > b else b


cdef double _EXP2[128]


def _fill_exp2():
    """_EXP2[j] = 2^(j/128), correctly rounded."""
    from decimal import Decimal, localcontext
    with localcontext() as ctx:
        ctx.prec = 40
        for j in range(128):
            _EXP2[j] = float(Decimal(2) ** (Decimal(j) / 128))


_fill_exp2()


cdef inline double _exp(double x) noexcept nogil:
    """exp(x) inline, for the hot loops: co2scan_exp (a table of 2^(j/128) and a degree-5
    polynomial, a few ulp) in [-708, 709], libm's exp outside."""
    return _exp_any(x, &_EXP2[0])


def fast_exp(const double[::1] x):
    """The kernels' inline exp on an array (tests compare it with numpy)."""
    out = np.empty(x.shape[0])
    cdef double[::1] o = out
    cdef Py_ssize_t k
    for k in range(x.shape[0]):
        o[k] = _exp(x[k])
    return out


def set_simd(bint on):
    """Use the hand-written SIMD loops at the highest level the CPU has (on, the default) or
    their portable twins (off; the tests compare them). Returns whether they were in use."""
    return _set_simd(on) != 0


def set_simd_level(int level):
    """Use the hand-written loops of this level: 0 portable, 1 AVX2, 2 AVX-512 (lowered to
    the highest the CPU has; the tests compare the levels). Returns the previous level."""
    return _set_simd_level(level)


def simd_level_max():
    """The highest level of hand-written loops this CPU runs (see set_simd_level)."""
    return _simd_max()


set_simd(True)


cdef inline double _rate(const Geo* g, double rise) noexcept nogil:
    """Arrhenius damage rate (1/s) at this rise; 0 at or below the floor rise; from the floor
    on linear between the nodes of the rate table, exact above it (as thermal_ref)."""
    cdef double pos
    cdef Py_ssize_t k
    if not (rise > g.floor_k):
        return 0.0
    pos = (rise - g.floor_k) * g.rate_per_k
    if pos < g.n_rate - 1:
        k = <Py_ssize_t>pos
        return g.rate_table[k] + (pos - k) * (g.rate_table[k + 1] - g.rate_table[k])
    return _exp(g.ln_a - g.ea_r / (g.base_k + rise))


def damage_rate(const double[::1] rise, layout):
    """The kernels' damage rate on an array (tests compare it with thermal_ref)."""
    cdef Geo g = _geo(layout)
    cdef const double[::1] rate_table = layout.rate_table  # keeps g.rate_table alive
    out = np.empty(rise.shape[0])
    cdef double[::1] o = out
    cdef Py_ssize_t k
    for k in range(rise.shape[0]):
        o[k] = _rate(&g, rise[k])
    return out


cdef inline double _boundary(const Geo* g, Py_ssize_t b) noexcept nogil:
    return g.t0 + b * g.block


cdef inline double _snap_time(const Geo* g, Py_ssize_t k) noexcept nogil:
    """Snapshot k's time: SNAPS_PER_BLOCK a block, the first at its start (k >= 0)."""
    return (_boundary(g, k // SNAPS_PER_BLOCK)
            + (k % SNAPS_PER_BLOCK) * (g.block / SNAPS_PER_BLOCK))


cdef inline double _held_width(const Geo* g, double tj, double s0j, double ts) noexcept nogil:
    """A spot's width at snapshot time ts, as _snapshot and _hold test it against snap_s."""
    return s0j + g.kappa4 * (ts - tj)


cdef inline double _hold(const Geo* g, double tj, double s0j) noexcept nogil:
    """A spot's hold: the first snapshot that holds it (width snap_s, by _snapshot's test:
    where the quotient falls on a snapshot, rounding may put the width there a step either
    side of snap_s)."""
    cdef Py_ssize_t k = <Py_ssize_t>ceil((tj + (g.snap_s - s0j) / g.kappa4 - g.t0)
                                         / (g.block / SNAPS_PER_BLOCK))
    while _held_width(g, tj, s0j, _snap_time(g, k)) < g.snap_s:
        k += 1
    while k > 0 and _held_width(g, tj, s0j, _snap_time(g, k - 1)) >= g.snap_s:
        k -= 1
    return _snap_time(g, k)


def hold_time(double tj, double s0j, layout):
    """_hold, for the tests: the time of the first snapshot that holds a spot fired at tj."""
    cdef Geo g = _geo(layout)  # (its tables are not read)
    return _hold(&g, tj, s0j)


cdef inline Py_ssize_t _reflect(Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    """Index k of a line of n nodes folded back at its edges (reflecting), as often as it
    takes: a spot whose reach spans more than the far grid (a wide lesion on a small plan)
    folds more than once (as thermal_ref._fold)."""
    if 0 <= k < n:
        return k
    k = k % (2 * n)  # (C's remainder: at most 0 for k < 0)
    if k < 0:
        k += 2 * n
    return k if k < n else 2 * n - 1 - k


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


cdef void _blur_row(const double* src, double* dst, Py_ssize_t n, Py_ssize_t k_modes,
                    const double[::1] taps) noexcept nogil:
    """1-D heat-kernel convolution of one row of nodes (k_modes values each, interleaved);
    reflect only at the edges. The interior is one contiguous loop per tap (vectorised)."""
    cdef Py_ssize_t half = taps.shape[0] // 2, k, q, c, m, lo, hi
    for q in range(n * k_modes):
        dst[q] = 0.0
    lo, hi = half, n - half
    if hi < lo:
        hi = lo
    for k in range(taps.shape[0]):
        _axpy(&dst[lo * k_modes], &src[(lo + k - half) * k_modes], (hi - lo) * k_modes, taps[k])
    for c in range(n):
        if lo <= c < hi:
            continue
        for k in range(taps.shape[0]):
            for m in range(k_modes):
                dst[c * k_modes + m] += taps[k] * src[_reflect(c + k - half, n) * k_modes + m]


cdef void _blur(const double[:, :, ::1] src, double[:, :, ::1] dst, double[:, :, ::1] tmp,
                double[:, ::1] total, const double[::1] taps,
                const double[::1] decay) noexcept nogil:
    """One block of every far-grid mode: separable heat-kernel step with reflecting
    (heat-keeping) edges, then each mode's depth decay; ``total`` gets the sum of the modes."""
    cdef Py_ssize_t ny = src.shape[0], nx = src.shape[1], km = src.shape[2], r, q, k, c, m
    cdef Py_ssize_t half = taps.shape[0] // 2, width = nx * km
    cdef double tap, acc
    cdef const double* above
    cdef double* out
    for r in range(ny):
        _blur_row(&src[r, 0, 0], &tmp[r, 0, 0], nx, km, taps)
    for r in range(ny):
        out = &dst[r, 0, 0]
        above = &tmp[_reflect(r - half, ny), 0, 0]
        tap = taps[0]
        for q in range(width):
            out[q] = tap * above[q]
        for k in range(1, taps.shape[0]):
            _axpy(out, &tmp[_reflect(r + k - half, ny), 0, 0], width, taps[k])
        for c in range(nx):
            acc = 0.0
            for m in range(km):
                out[c * km + m] *= decay[m]
                acc = acc + out[c * km + m]
            total[r, c] = acc


cdef void _weights(double centre, double reach, double s, double origin, double step,
                   Py_ssize_t* first, Py_ssize_t* count, double[::1] w) noexcept nogil:
    """Gaussian node weights over the reach, normalised to sum 1 (unfolded indices)."""
    cdef Py_ssize_t k
    cdef double total = 0.0, d
    first[0] = <Py_ssize_t>ceil((centre - reach - origin) / step)
    count[0] = <Py_ssize_t>floor((centre + reach - origin) / step) - first[0] + 1
    for k in range(count[0]):
        d = origin + (first[0] + k) * step - centre
        w[k] = _exp(-(d * d) / s)
        total = total + w[k]
    for k in range(count[0]):
        w[k] = w[k] / total


cdef void _deposit(const Geo* g, double[:, :, ::1] far, double[:, ::1] total, Py_ssize_t b,
                   const double[::1] x,
                   const double[::1] y, const double[::1] t, const double[::1] e,
                   const double[::1] s0, const double[::1] mode_weight,
                   const double[::1] mode_decay, double[::1] wx, double[::1] wy,
                   double[::1] wq, double[::1] mw, double[::1] wxm) noexcept nogil:
    """Add the spots that age past the hand-over during block b, at t_{b+1}, split over the
    modes by their weights at that age (and to ``total``, the sum of the modes). ``wxm``:
    scratch for the column and mode weights repeated over a row (2 x columns x modes)."""
    cdef double t1 = _boundary(g, b + 1), s, reach, amount, age, wyx, mode_sum
    cdef Py_ssize_t j, a, q, m, fx, nxw, fy, nyw, row, col, km = mode_weight.shape[0]
    cdef bint inside
    for j in range(_first_ge(t, _boundary(g, b) - g.handover), _first_ge(t, t1 - g.handover)):
        age = t1 - t[j]
        s = s0[j] + g.kappa4 * age
        reach = sqrt(s * g.reach_log)
        _weights(x[j], reach, s, g.fx0, g.far, &fx, &nxw, wx)
        _weights(y[j], reach, s, g.fy0, g.far, &fy, &nyw, wy)
        amount = e[j] / (g.far * g.far)
        mode_sum = 0.0
        for m in range(km):
            mw[m] = mode_weight[m] * _exp(-mode_decay[m] * age)
            mode_sum = mode_sum + mw[m]
        inside = fx >= 0 and fx + nxw <= g.nfx  # no column folded back at an edge
        if inside:  # the far grid's row segment [fx, fx + nxw) x modes is contiguous
            for q in range(nxw):
                for m in range(km):
                    wxm[q * km + m], wxm[(nxw + q) * km + m] = wx[q], mw[m]
        for a in range(nyw):
            row = _reflect(fy + a, g.nfy)
            if inside:
                for q in range(nxw):
                    wq[q] = amount * wy[a] * wx[q]
                _deposit_row(&far[row, fx, 0], &wxm[0], &wxm[nxw * km], nxw * km,
                             amount * wy[a])
                _axpy(&total[row, fx], &wq[0], nxw, mode_sum)
                continue
            for q in range(nxw):
                col = _reflect(fx + q, g.nfx)
                wyx = amount * wy[a] * wx[q]
                for m in range(km):
                    far[row, col, m] += wyx * mw[m]
                total[row, col] += wyx * mode_sum


cdef void _snapshot(const Geo* g, const double[:, ::1] start, const double[:, ::1] end,
                    double frac, double[:, ::1] total, double[:, ::1] far_peak,
                    double[:, ::1] far_dose, double[:, ::1] far_prev, Py_ssize_t k,
                    const double[::1] x, const double[::1] y, const double[::1] t,
                    const double[::1] e, const double[::1] s0, double[::1] ex,
                    double[::1] ey) noexcept nogil:
    """Snapshot k: the far grid (frac of the way from its block's start to its end, as the
    background routine reads it) plus the near spots it resolves, into the far peak map; the
    damage integral since the snapshot before, at the larger of its two ends' rises (``ex``,
    ``ey``: scratch of at least nfx and nfy)."""
    cdef double tb = _snap_time(g, k), s, reach, amp
    cdef double lo_t = _boundary(g, k // SNAPS_PER_BLOCK) - g.handover
    cdef Py_ssize_t j, r, c, c0, c1, r0, r1
    for r in range(g.nfy):
        for c in range(g.nfx):
            total[r, c] = (1.0 - frac) * start[r, c] + frac * end[r, c]
    for j in range(_first_ge(t, lo_t), _first_ge(t, tb)):
        s = _held_width(g, t[j], s0[j], tb)
        if s < g.snap_s:
            continue
        reach = sqrt(s * g.reach_log)
        c0 = <Py_ssize_t>ceil((x[j] - reach - g.fx0) / g.far)
        c1 = <Py_ssize_t>floor((x[j] + reach - g.fx0) / g.far) + 1
        r0 = <Py_ssize_t>ceil((y[j] - reach - g.fy0) / g.far)
        r1 = <Py_ssize_t>floor((y[j] + reach - g.fy0) / g.far) + 1
        c0, r0 = max(c0, 0), max(r0, 0)
        c1, r1 = min(c1, g.nfx), min(r1, g.nfy)
        amp = e[j] / (M_PI * s) * _depth(g, tb - t[j])
        _node_gauss(&ex[0], c1 - c0, g.fx0, g.far, c0, x[j], s, 1.0, &_EXP2[0])
        _node_gauss(&ey[0], r1 - r0, g.fy0, g.far, r0, y[j], s, amp, &_EXP2[0])
        for r in range(r0, r1):
            _axpy(&total[r, c0], &ex[0], c1 - c0, ey[r - r0])
    for r in range(g.nfy):
        for c in range(g.nfx):
            if total[r, c] > far_peak[r, c]:
                far_peak[r, c] = total[r, c]
            if k > 0:
                far_dose[r, c] += (_rate(g, _max(total[r, c], far_prev[r, c]))
                                   * (g.block / SNAPS_PER_BLOCK))
            far_prev[r, c] = total[r, c]


cdef struct Window:
    double xi, yi
    Py_ssize_t c0, c1, r0, r1


cdef inline bint _in_reach(const Geo* g, const Window* w, double dx, double dy,
                           double s) noexcept nogil:
    """Does a Gaussian of width s centred (dx, dy) from the window centre reach the window
    above the cut-off?"""
    cdef double reach2 = s * g.reach_log
    cdef double ax = fabs(dx) - g.window, ay = fabs(dy) - g.window
    return not ((ax > 0.0 and ax * ax > reach2) or (ay > 0.0 and ay * ay > reach2))


cdef inline double _reach_measure(const Geo* g, double dx, double dy) noexcept nogil:
    """The squared distance (max-norm) beyond the window of a spot centred (dx, dy) from the
    window centre: a Gaussian of width s reaches the window (``_in_reach``) unless this
    exceeds s x reach_log."""
    cdef double ax = fabs(dx) - g.window, ay = fabs(dy) - g.window
    return _max(ax * ax if ax > 0.0 else 0.0, ay * ay if ay > 0.0 else 0.0)


#: Gaussians whose outer products are added to a window's map in one pass (a multiple of 8:
#: their factors are computed four or eight at a time).
DEF OUTER_BATCH = 16

#: Doubles of a thread's buffer per spot for its windows' sharp spots (_window: 24 and a bit),
#: and a constant SHARP_EXTRA more.
DEF SHARP_PER_SPOT = 25
DEF SHARP_EXTRA = 96


cdef struct Batch:
    # Exact Gaussians on the window's rows ra..ra+nr-1 and columns ca..ca+nc-1 of one map
    # (target: its cell [ra, ca], stride: its row length), added in batches of OUTER_BATCH:
    # each one's offsets from the first column and row (dx, dy), width and amplitude; at the
    # flush their column factors into gx and row factors into gy (ld apart).
    # (_batch_heat: the first cell's centre bx, by, and each one's heat in amp and age; the
    # amplitudes at the flush, _batch_flush_heat.)
    double* target
    Py_ssize_t stride, ra, ca, nr, nc, n, ld
    double step, bx, by
    double dx[OUTER_BATCH]
    double dy[OUTER_BATCH]
    double s[OUTER_BATCH]
    double amp[OUTER_BATCH]
    double age[OUTER_BATCH]
    double* gx
    double* gy


cdef inline void _batch_open(Batch* bt, double* acc, Py_ssize_t ld, Py_ssize_t ra,
                             Py_ssize_t rb, Py_ssize_t ca, Py_ssize_t cb,
                             double step) noexcept nogil:
    """Start adding Gaussians to acc's rows ra..rb-1 and columns ca..cb-1 (cells step
    apart; acc's rows ld apart)."""
    bt.target, bt.stride = acc + ra * ld + ca, ld
    bt.ra, bt.ca, bt.nr, bt.nc, bt.n, bt.step = ra, ca, rb - ra, cb - ca, 0, step


cdef inline void _batch_add(Batch* bt, const double* dx, const double* dy, const double* s,
                            const double* amp, Py_ssize_t n) noexcept nogil:
    """Add n (at most OUTER_BATCH) Gaussians onto the batch's cells: their factors, then
    their outer products, in order."""
    _gauss_factors(bt.gx, bt.gy, bt.ld, dx, dy, s, amp, n, bt.step, bt.nc, bt.nr, &_EXP2[0])
    _outer_sum(bt.target, bt.stride, bt.gy, bt.gx, bt.ld, n, bt.nr, bt.nc)


cdef inline void _batch_flush(Batch* bt) noexcept nogil:
    """Add the Gaussians collected so far, in the order they came."""
    if bt.n > 0:
        _batch_add(bt, &bt.dx[0], &bt.dy[0], &bt.s[0], &bt.amp[0], bt.n)
        bt.n = 0


cdef inline void _batch_gaussian(const Geo* g, const Window* w, Batch* bt, double dx,
                                 double dy, double s, double amp) noexcept nogil:
    """Exact Gaussian amp exp(-d^2 / s) centred (dx, dy) from the window centre, onto the
    batch's cells (added when the batch is full or flushed)."""
    bt.dx[bt.n] = g.x0 + (w.c0 + bt.ca + 0.5) * g.cell - (w.xi + dx)
    bt.dy[bt.n] = g.y0 + (w.r0 + bt.ra + 0.5) * g.cell - (w.yi + dy)
    bt.s[bt.n], bt.amp[bt.n] = s, amp
    bt.n += 1
    if bt.n == OUTER_BATCH:
        _batch_flush(bt)


cdef inline void _batch_base(const Geo* g, const Window* w, Batch* bt) noexcept nogil:
    """The centre of the batch's first cell (after _batch_open), for _batch_heat."""
    bt.bx = g.x0 + (w.c0 + bt.ca + 0.5) * g.cell
    bt.by = g.y0 + (w.r0 + bt.ra + 0.5) * g.cell


cdef inline void _batch_flush_heat(const Geo* g, Batch* bt) noexcept nogil:
    """_batch_flush of a batch filled by _batch_heat: its amplitudes first (in place)."""
    if bt.n > 0:
        _amplitudes(&bt.amp[0], &bt.s[0], &bt.age[0], bt.n, g.loss_scale, g.table, g.n_table)
        _batch_flush(bt)


cdef inline void _batch_heat(const Geo* g, Batch* bt, double px, double py, double s,
                             double heat, double age) noexcept nogil:
    """_batch_gaussian(g, w, bt, dx, dy, s, heat / (pi s) x depth(age)), the centre given as
    px = w.xi + dx, py = w.yi + dy (after _batch_base); the amplitudes at the flush, a batch
    at a time (_batch_flush_heat: the same values)."""
    bt.dx[bt.n] = bt.bx - px
    bt.dy[bt.n] = bt.by - py
    bt.s[bt.n], bt.amp[bt.n], bt.age[bt.n] = s, heat, age
    bt.n += 1
    if bt.n == OUTER_BATCH:
        _batch_flush_heat(g, bt)


cdef inline Py_ssize_t _block_of(const Geo* g, Py_ssize_t b, double ts) noexcept nogil:
    """The far-grid block holding ts for a window of block b, at most LOOKAHEAD - 1 ahead (as
    thermal_ref._Run.block_of)."""
    cdef Py_ssize_t bs = b
    while bs < b + LOOKAHEAD - 1 and ts >= _boundary(g, bs + 1):
        bs += 1
    return bs


# The background routine's near spots as records, written by co2scan_near for each window:
# each one's time, s0, heat, offset from the window centre (centre minus spot, as _add_term
# lists it) and reach measure (as _reach_measure) in contiguous rows, so that each call scans
# them in order instead of gathering them by index from the pass's arrays.
cdef extern from *:
    """
    typedef struct {
        double *t, *s0, *e, *dx, *dy, *m;
        Py_ssize_t n;
    } co2scan_recs_t;

    /* a, b, c, d, e at column k of rows ld apart (a term's five values: offset, width, heat,
       age; also the damage samples' pass, co2scan_dpass, further down the module) */
    static inline void co2scan_put5(double *rows, Py_ssize_t ld, Py_ssize_t k, double a,
                                    double b, double c, double d, double e) {
        rows[k] = a, rows[ld + k] = b, rows[2 * ld + k] = c, rows[3 * ld + k] = d;
        rows[4 * ld + k] = e;
    }

    /* The background routine's list pass over r's n spots at ts: the ones handed over
       (t < lo_t) taken out in place (the others' order kept); the ones fired by ts and in
       reach (not m > s reach_log, s = s0 + k4 (ts - t): as _in_reach wherever s reach_log
       is not negative, which the parameters' validation ensures: cutoff_rel <= 0.1 makes
       reach_log positive, and widths are positive) listed as terms
       (centre minus spot dx, dy; width s; heat; age ts - t), the sharp ones (s < smooth_s)
       in terms' rows 5-9, the others in rows 0-4 (rows ld apart), each list in its order. */
    static void co2scan_bg_terms_any(co2scan_recs_t *r, double lo_t, double ts, double k4,
                                     double reach_log, double smooth_s, double *terms,
                                     Py_ssize_t ld, Py_ssize_t *n_sharp, Py_ssize_t *n_smooth) {
        double *rt = r->t, *rs0 = r->s0, *re = r->e, *rdx = r->dx, *rdy = r->dy, *rm = r->m;
        double *smooth = terms, *sharp = terms + 5 * ld;
        Py_ssize_t n = r->n, kept = 0, nsh = 0, nsm = 0;
        for (Py_ssize_t q = 0; q < n; q++) {
            double tj = rt[q];
            if (tj < lo_t)
                continue;  /* handed over: out of the list */
            if (kept != q) {
                rt[kept] = tj, rs0[kept] = rs0[q], re[kept] = re[q];
                rdx[kept] = rdx[q], rdy[kept] = rdy[q], rm[kept] = rm[q];
            }
            kept++;
            if (tj > ts)
                continue;
            double s = rs0[q] + k4 * (ts - tj);
            if (rm[q] > s * reach_log)
                continue;  /* cut off at ts */
            if (s < smooth_s)
                co2scan_put5(sharp, ld, nsh++, rdx[q], rdy[q], s, re[q], ts - tj);
            else
                co2scan_put5(smooth, ld, nsm++, rdx[q], rdy[q], s, re[q], ts - tj);
        }
        r->n = kept;
        *n_sharp = nsh, *n_smooth = nsm;
    }

    #ifdef CO2SCAN_AVX512
    /* Stores the lanes of v in mask, in order, at p (room for 8 if room, else only theirs).
       Also used further down the module (the near-spot scan, the damage samples' pass). */
    __attribute__((target("avx512f,avx512dq,avx512vl,popcnt"))) static inline void
    co2scan_put8_pd(double *p, __m512d v, __mmask8 mask, int room) {
        __m512d c = _mm512_maskz_compress_pd(mask, v);
        if (room)
            _mm512_storeu_pd(p, c);
        else
            _mm512_mask_storeu_pd(p, (__mmask8)((1u << _mm_popcnt_u32(mask)) - 1), c);
    }

    /* The lanes of a, b, c, d, e in mask, in order, at column k of rows ld apart (room for
       eight if the rows hold at least k + 8 columns, else only theirs); returns the new k.
       (Also the damage samples' pass, co2scan_dpass, further down the module.) */
    __attribute__((target("avx512f,avx512dq,avx512vl,popcnt"))) static inline Py_ssize_t
    co2scan_put5x8(double *rows, Py_ssize_t ld, Py_ssize_t k, __mmask8 mask, __m512d a,
                   __m512d b, __m512d c, __m512d d, __m512d e) {
        int room = k + 8 <= ld;
        co2scan_put8_pd(rows + k, a, mask, room);
        co2scan_put8_pd(rows + ld + k, b, mask, room);
        co2scan_put8_pd(rows + 2 * ld + k, c, mask, room);
        co2scan_put8_pd(rows + 3 * ld + k, d, mask, room);
        co2scan_put8_pd(rows + 4 * ld + k, e, mask, room);
        return k + _mm_popcnt_u32(mask);
    }

    /* co2scan_bg_terms_any eight spots at a time (the same comparisons and arithmetic). */
    __attribute__((target("avx512f,avx512dq,avx512vl,popcnt"))) static void
    co2scan_bg_terms_avx512(co2scan_recs_t *r, double lo_t, double ts, double k4,
                            double reach_log, double smooth_s, double *terms, Py_ssize_t ld,
                            Py_ssize_t *n_sharp, Py_ssize_t *n_smooth) {
        const __m512d vlo = _mm512_set1_pd(lo_t), vts = _mm512_set1_pd(ts);
        const __m512d vk4 = _mm512_set1_pd(k4), vrl = _mm512_set1_pd(reach_log);
        const __m512d vsm = _mm512_set1_pd(smooth_s);
        double *rt = r->t, *rs0 = r->s0, *re = r->e, *rdx = r->dx, *rdy = r->dy, *rm = r->m;
        double *smooth = terms, *sharp = terms + 5 * ld;
        Py_ssize_t n = r->n, kept = 0, nsh = 0, nsm = 0;
        for (Py_ssize_t k = 0; k < n; k += 8) {
            __mmask8 in = n - k >= 8 ? 0xFF : (__mmask8)((1u << (n - k)) - 1);
            __m512d t = _mm512_maskz_loadu_pd(in, rt + k);
            __mmask8 keep = in & _mm512_cmp_pd_mask(t, vlo, _CMP_NLT_UQ);
            __mmask8 fired = keep & _mm512_cmp_pd_mask(t, vts, _CMP_NGT_UQ);
            __m512d s0 = _mm512_maskz_loadu_pd(in, rs0 + k);
            __m512d m = _mm512_maskz_loadu_pd(in, rm + k);
            __m512d age = _mm512_sub_pd(vts, t);
            __m512d s = _mm512_add_pd(s0, _mm512_mul_pd(vk4, age));
            __mmask8 use = fired & _mm512_cmp_pd_mask(m, _mm512_mul_pd(s, vrl), _CMP_NGT_UQ);
            __mmask8 sh = use & _mm512_cmp_pd_mask(s, vsm, _CMP_LT_OQ);
            __mmask8 sm = use & (__mmask8)~sh;
            __m512d e = _mm512_maskz_loadu_pd(in, re + k);
            __m512d dx = _mm512_maskz_loadu_pd(in, rdx + k);
            __m512d dy = _mm512_maskz_loadu_pd(in, rdy + k);
            if (keep != in || kept != k) {  /* compact (all eight lanes loaded already) */
                int room = k + 8 <= n;
                co2scan_put8_pd(rt + kept, t, keep, room);
                co2scan_put8_pd(rs0 + kept, s0, keep, room);
                co2scan_put8_pd(re + kept, e, keep, room);
                co2scan_put8_pd(rdx + kept, dx, keep, room);
                co2scan_put8_pd(rdy + kept, dy, keep, room);
                co2scan_put8_pd(rm + kept, m, keep, room);
            }
            kept += _mm_popcnt_u32(keep);
            if (sh)
                nsh = co2scan_put5x8(sharp, ld, nsh, sh, dx, dy, s, e, age);
            if (sm)
                nsm = co2scan_put5x8(smooth, ld, nsm, sm, dx, dy, s, e, age);
        }
        r->n = kept;
        *n_sharp = nsh, *n_smooth = nsm;
    }
    #endif

    static inline void co2scan_bg_terms(co2scan_recs_t *r, double lo_t, double ts, double k4,
                                        double reach_log, double smooth_s, double *terms,
                                        Py_ssize_t ld, Py_ssize_t *n_sharp,
                                        Py_ssize_t *n_smooth) {
        CO2SCAN_SIMD512(co2scan_bg_terms, r, lo_t, ts, k4, reach_log, smooth_s, terms, ld,
                        n_sharp, n_smooth);
    }
    """
    ctypedef struct Recs "co2scan_recs_t":
        double* t
        double* s0
        double* e
        double* dx
        double* dy
        double* m
        Py_ssize_t n
    void _bg_terms "co2scan_bg_terms"(Recs* r, double lo_t, double ts, double k4,
                                      double reach_log, double smooth_s, double* terms,
                                      Py_ssize_t ld, Py_ssize_t* n_sharp,
                                      Py_ssize_t* n_smooth) nogil


cdef inline void _recs(Recs* r, double* base, Py_ssize_t ld, Py_ssize_t n) noexcept nogil:
    """r: the n records in the 6 rows ld apart from base (as co2scan_near writes them)."""
    r.t, r.s0, r.e = base, base + ld, base + 2 * ld
    r.dx, r.dy, r.m, r.n = base + 3 * ld, base + 4 * ld, base + 5 * ld, n


cdef void _background(const Geo* g, const Window* w, double ts, Py_ssize_t b,
                      const double[:, :, :, ::1] cur, const double[:, :, :, ::1] blur,
                      Recs* near, double* acc, double* nodes, Py_ssize_t ld,
                      Py_ssize_t* kx, double* ex, double* ey, double* line,
                      double* terms, Py_ssize_t ld_t, Batch* bt, Py_ssize_t ra, Py_ssize_t rb,
                      Py_ssize_t ca, Py_ssize_t cb) noexcept nogil:
    """Far grid (linear in time within its block) plus the background near spots in reach at
    ts: exact Gaussians while sharp, a 2nd-order Taylor sum about the window centre once
    smooth. Into acc on the window's rows ra..rb-1 and columns ca..cb-1 (``line``, ``terms``,
    ``bt``'s buffers: scratch; acc's and nodes' rows ld apart, terms' ld_t apart). The near
    spots in ``near`` (records, co2scan_near); those handed over by ts (fired before its block's
    hand-over) are taken out of it, in place (near.n updated, the others' order kept): a
    list's calls come at nondecreasing ts, each later one would skip them too."""
    cdef Py_ssize_t q, n_smooth, n_sharp
    cdef Py_ssize_t bs = _block_of(g, b, ts), cc = bs // CHUNK_BLOCKS
    cdef double frac = (ts - _boundary(g, bs)) / g.block, lo_t = _boundary(g, bs) - g.handover
    # the block's far grid at its start and one block later (pointers: a memoryview slice
    # would take and release a reference, atomically, at every call)
    cdef const double* start = &cur[cc % 3, bs - cc * CHUNK_BLOCKS, 0, 0]
    cdef const double* end = &blur[cc % 3, bs - cc * CHUNK_BLOCKS, 0, 0]
    # Far nodes around the box at ts, then bilinear per cell (nodes, ex, ey, kx, line:
    # scratch).
    _far_box(acc + ra * ld + ca, ld, rb - ra, cb - ca, start, end, cur.shape[3], frac,
             w.c0 + ca, w.r0 + ra, g.x0, g.y0, g.cell, g.fx0, g.fy0, g.far, nodes,
             ld, ex + ca, ey + ca, &kx[ca], line)
    # Each spot's offsets, width, heat and age into ``terms``: the smooth ones (width at least
    # smooth_s) in rows 0-4, the sharp ones in rows 5-9, each list in its order; the sharp
    # ones' amplitudes in one vectorised pass (heat -> amplitude in place) and their exact
    # Gaussians; then the smooth ones' Taylor sum.
    # (co2scan_bg_terms: the handed-over ones taken out; those not yet fired at ts or cut
    # off at ts, listed at the window's end, skipped)
    _bg_terms(near, lo_t, ts, g.kappa4, g.reach_log, g.smooth_s, terms, ld_t, &n_sharp,
              &n_smooth)
    _amplitudes(terms + 8 * ld_t, terms + 7 * ld_t, terms + 9 * ld_t, n_sharp, g.loss_scale,
                g.table, g.n_table)
    _batch_open(bt, acc, ld, ra, rb, ca, cb, g.cell)
    for q in range(n_sharp):
        _batch_gaussian(g, w, bt, -terms[5 * ld_t + q], -terms[6 * ld_t + q],
                        terms[7 * ld_t + q], terms[8 * ld_t + q])
    _batch_flush(bt)
    _taylor_add(g, w, terms, ld_t, 0, n_smooth, w.xi, w.yi, acc, ld, ex, ey, ra, rb, ca, cb)


cdef inline Py_ssize_t _add_term(double* terms, Py_ssize_t ld, Py_ssize_t row0, Py_ssize_t n,
                                 double dx, double dy, double s, double heat,
                                 double age) noexcept nogil:
    """List a smooth spot in terms' rows row0..row0 + 4 (ld apart; offset from the expansion
    centre, centre minus spot; width; heat; age) at position n; returns n + 1."""
    cdef double* col = terms + row0 * ld + n
    col[0], col[ld], col[2 * ld] = dx, dy, s
    col[3 * ld], col[4 * ld] = heat, age
    return n + 1


cdef void _taylor_add(const Geo* g, const Window* w, double* terms, Py_ssize_t ld_t,
                      Py_ssize_t row0, Py_ssize_t n, double xc, double yc, double* acc,
                      Py_ssize_t ld, double* ex, double* ey, Py_ssize_t ra, Py_ssize_t rb,
                      Py_ssize_t ca, Py_ssize_t cb) noexcept nogil:
    """Add the 2nd-order Taylor sum about (xc, yc) of the n smooth spots listed in terms'
    rows row0..row0 + 4 (ld_t apart; as _add_term; heat -> amplitude in place, signed heat
    allowed) to acc (rows ld apart) on the window's rows ra..rb-1 and columns ca..cb-1
    (``ex``, ``ey``: scratch)."""
    cdef double coef[6]
    cdef double* row = terms + row0 * ld_t
    if n == 0:
        return
    _amplitudes(row + 3 * ld_t, row + 2 * ld_t, row + 4 * ld_t, n, g.loss_scale,
                g.table, g.n_table)
    _taylor_sums(coef, row, row + ld_t, row + 2 * ld_t, row + 3 * ld_t, n, &_EXP2[0])
    _taylor_box(acc + ra * ld + ca, ld, rb - ra, cb - ca, coef, w.c0 + ca, w.r0 + ra, g.x0,
                g.y0, g.cell, xc, yc, ex + ca, ey + ca)


cdef inline bint _within(double origin, double cell, Py_ssize_t first, Py_ssize_t k,
                         double centre, double inner) noexcept nogil:
    """Is the centre of cell first + k (of a line starting at origin) within inner of
    centre?"""
    return fabs(origin + (first + k + 0.5) * cell - centre) <= inner


cdef inline void _covered(double origin, double cell, Py_ssize_t first, Py_ssize_t n,
                          double centre, double inner, Py_ssize_t* lo,
                          Py_ssize_t* hi) noexcept nogil:
    """The cells first + k, k < n, whose centres lie within inner of centre: k in [lo, hi)
    (a run: the centres are in order). The closed form's ends are checked with _within, so
    the run is exactly the cells that test passes (as a scan of every cell would find)."""
    cdef Py_ssize_t a = <Py_ssize_t>ceil((centre - inner - origin) / cell - first - 0.5)
    cdef Py_ssize_t b = <Py_ssize_t>floor((centre + inner - origin) / cell - first - 0.5) + 1
    a = min(max(a, 0), n)
    b = min(max(b, a), n)
    while a > 0 and _within(origin, cell, first, a - 1, centre, inner):
        a -= 1
    while a < b and not _within(origin, cell, first, a, centre, inner):
        a += 1
    if b < a:
        b = a
    while b < n and _within(origin, cell, first, b, centre, inner):
        b += 1
    while b > a and not _within(origin, cell, first, b - 1, centre, inner):
        b -= 1
    lo[0], hi[0] = a, b


cdef inline void _sample_window(const Geo* g, double* peak, double* dose, const double* acc,
                                const double* fresh, double* prev, const double* until,
                                double* hot, double* span, Py_ssize_t n, double ts,
                                double t_prev, bint started) noexcept nogil:
    """One sample of n consecutive cells: peak, previous sample, and (after the first
    sample) the damage integral of the interval since t_prev."""
    _sample_row(peak, acc, fresh, prev, until, hot, span, n, ts, t_prev)
    if started:
        _dose(g, dose, hot, span, n)


cdef inline void _dose(const Geo* g, double* dose, const double* hot, const double* span,
                       Py_ssize_t n) noexcept nogil:
    """Add each cell's damage rate at hot times its span to dose."""
    cdef Py_ssize_t c
    if _dose_row(dose, hot, span, n, g.floor_k, g.rate_per_k, g.rate_table, g.n_rate):
        for c in range(n):  # beyond the table (rare): the exact rate
            if (span[c] > 0.0 and hot[c] > g.floor_k
                    and (hot[c] - g.floor_k) * g.rate_per_k >= g.n_rate - 1):
                dose[c] += _rate(g, hot[c]) * span[c]


cdef void _add_bounds(const Geo* g, const Window* w, double* out, Py_ssize_t ld_o,
                      Py_ssize_t ra, Py_ssize_t rb, Py_ssize_t ca, Py_ssize_t cb, double xj,
                      double yj, double s_a, double s_b, double amp, bint fresh, double* gx,
                      double* gy, Py_ssize_t ld) noexcept nogil:
    """Add spot j's largest rise over [ta, tb] to the cells of out's box (rows ld_o apart; as
    thermal_ref._Run.damage_sample): its Gaussian of width clamp(d^2, s_a, s_b) at the depth
    factor of the interval's start; a spot fired within the interval not on the cells its own
    window takes over (fresh: fired within it). s_a, s_b: its widths at the interval's ends;
    amp: its heat / pi x the depth factor at the start. The Gaussians of widths s_a and s_b
    from their column and row factors (``gx``, ``gy``: scratch of 4 rows ld apart each, a
    batch's factor buffers between its flushes)."""
    cdef double inner = g.window - COVER_MARGIN * g.cell
    cdef double dx0 = g.x0 + (w.c0 + ca + 0.5) * g.cell - xj
    cdef double dy0 = g.y0 + (w.r0 + ra + 0.5) * g.cell - yj
    cdef double amp_e = amp * INV_E
    cdef double d0[2]
    cdef double e0[2]
    cdef double widths[2]
    cdef double amps[2]
    d0[0] = d0[1] = dx0
    e0[0] = e0[1] = dy0
    widths[0], widths[1] = s_a, s_b
    amps[0], amps[1] = amp / s_a, amp / s_b
    _gauss_factors(gx, gy, ld, &d0[0], &e0[0], &widths[0], &amps[0], 2, g.cell, cb - ca,
                   rb - ra, &_EXP2[0])
    _bound_rows(out + ra * ld_o + ca, ld_o, gx, gx + ld, gy, gy + ld, rb - ra, cb - ca, dx0,
                dy0, g.cell, s_a, s_b, amp_e, inner, fresh)


cdef struct Rect:
    double x_lo, x_hi, y_lo, y_hi


cdef inline void _box_d2(const Rect* r, double x, double y, double* near2,
                         double* far2) noexcept nogil:
    """Squared distances from (x, y) to the rectangle's nearest and farthest points (as
    thermal_ref._box_distances)."""
    cdef double nx = _max(_max(r.x_lo - x, x - r.x_hi), 0.0)
    cdef double ny = _max(_max(r.y_lo - y, y - r.y_hi), 0.0)
    cdef double fx = _max(fabs(x - r.x_lo), fabs(x - r.x_hi))
    cdef double fy = _max(fabs(y - r.y_lo), fabs(y - r.y_hi))
    near2[0], far2[0] = nx * nx + ny * ny, fx * fx + fy * fy


cdef inline void _bound(const Geo* g, const Window* w, Batch* bt, double* out,
                        Py_ssize_t ld, Py_ssize_t ra, Py_ssize_t rb, Py_ssize_t ca,
                        Py_ssize_t cb, double xj, double yj, double tj, double s0j, double ej,
                        double ta, double tb) noexcept nogil:
    """Spot j's largest rise over [ta, tb] onto out's box: one Gaussian (the batch bt, whose
    target is out) where the box lies wholly on one side of the pulse's peak (d^2 <= s_a
    everywhere: falling, its width at ta; d^2 >= s_b everywhere: rising, at tb), else cell by
    cell (_add_bounds)."""
    cdef double age_a = _max(ta - tj, 0.0), s_a = s0j + g.kappa4 * age_a
    cdef double s_b = s0j + g.kappa4 * (tb - tj), amp = ej / M_PI * _depth(g, age_a)
    cdef double near2, far2
    cdef Rect live
    live.x_lo, live.x_hi = g.x0 + (w.c0 + ca + 0.5) * g.cell, g.x0 + (w.c0 + cb - 0.5) * g.cell
    live.y_lo, live.y_hi = g.y0 + (w.r0 + ra + 0.5) * g.cell, g.y0 + (w.r0 + rb - 0.5) * g.cell
    _box_d2(&live, xj, yj, &near2, &far2)
    if tj <= ta and far2 <= s_a:
        _batch_gaussian(g, w, bt, xj - w.xi, yj - w.yi, s_a, amp / s_a)
    elif tj <= ta and near2 >= s_b:
        _batch_gaussian(g, w, bt, xj - w.xi, yj - w.yi, s_b, amp / s_b)
    else:
        _add_bounds(g, w, out, ld, ra, rb, ca, cb, xj, yj, s_a, s_b, amp, tj > ta, bt.gx,
                    bt.gy, bt.ld)


cdef inline void _sample_bounded(const Geo* g, double* peak, double* dose, const double* acc,
                                 const double* bound, const double* until, double* span,
                                 Py_ssize_t n, double ts, double t_prev) noexcept nogil:
    """One damage sample of n consecutive cells: the peak from acc, and the interval since
    t_prev at the bound of its largest rise."""
    _bounded_row(peak, acc, until, span, n, ts, t_prev)
    _dose(g, dose, bound, span, n)


# The second near-spot scan of a window (see _window): each spot of the buckets in its span
# fired by t_end and within reach at the last sample, into the lists it belongs to, in bucket
# order. The AVX2 and AVX-512 paths test 4 or 8 spots at once along a row of buckets (one run
# of items: its spots fired after t_end are masked out instead of ending each bucket's scan)
# and append each list's share with a compress (under AVX2, a permutation); the same
# comparisons of the same values: the same lists. The slow and background lists are written
# as the background routine's records (co2scan_recs_t: time, s0, heat, offset, reach
# measure), from the buckets' rows, instead of as indices to gather from.
cdef extern from *:
    """
    typedef struct {
        double t_end, t_i, t_mid, lo_next, k4, reach_log, window, near, xi, yi, bg_s;
        double x_lo, x_hi, y_lo, y_hi;  /* the window's box of cell centres */
        Py_ssize_t *list[5];  /* late, slow, damage sharp, background, peak sharp */
        Py_ssize_t n[5];      /* their lengths (of lists 1 and 3: of their records) */
        Py_ssize_t cap;       /* each list's room */
        /* the slow and the background list (list[1], list[3] unused) as records for the
           background routine (co2scan_recs_t): rows t, s0, e, dx, dy, m of each, ld_out
           apart from out[0] (slow) and out[1] (background) */
        double *out[2];
        Py_ssize_t ld_out;
        /* the buckets: rows by0..by1-1, columns bx0..bx1-1 of nbx (start, items as Buckets);
           the items' t, s0, x, y, e: rec[k], rec[ld + k], ..., rec[4 ld + k] */
        const Py_ssize_t *start, *items;
        const double *rec;
        Py_ssize_t ld, nbx, bx0, bx1, by0, by1;
    } co2scan_near_t;

    /* A spot's record (co2scan_recs_t's rows: t, s0, e, offset, reach measure) at position n of
       the rows from out. */
    static inline void co2scan_near_rec(double *out, Py_ssize_t ld, Py_ssize_t n, double t,
                                        double s0, double e, double dx, double dy, double m) {
        out[n] = t, out[ld + n] = s0, out[2 * ld + n] = e;
        out[3 * ld + n] = dx, out[4 * ld + n] = dy, out[5 * ld + n] = m;
    }

    static void co2scan_near_any(co2scan_near_t *p) {
        const double *rt = p->rec, *rs0 = p->rec + p->ld, *rx = p->rec + 2 * p->ld;
        const double *ry = p->rec + 3 * p->ld, *re = p->rec + 4 * p->ld;
        Py_ssize_t *l0 = p->list[0], *l2 = p->list[2], *l4 = p->list[4];
        double *o1 = p->out[0], *o3 = p->out[1];
        Py_ssize_t n0 = p->n[0], n1 = p->n[1], n2 = p->n[2], n3 = p->n[3], n4 = p->n[4];
        Py_ssize_t ldo = p->ld_out;
        for (Py_ssize_t by = p->by0; by < p->by1; by++)
            for (Py_ssize_t b = by * p->nbx + p->bx0; b < by * p->nbx + p->bx1; b++)
                for (Py_ssize_t k = p->start[b]; k < p->start[b + 1]; k++) {
                    double tj = rt[k];
                    if (tj > p->t_end)
                        break;  /* (a bucket lists its spots in firing order) */
                    double s0j = rs0[k], xj = rx[k], yj = ry[k];
                    double s = s0j + p->k4 * (p->t_end - tj);  /* its width at the last sample */
                    double reach2 = s * p->reach_log;  /* in reach: as _in_reach */
                    double ax = fabs(xj - p->xi) - p->window, ay = fabs(yj - p->yi) - p->window;
                    if ((ax > 0.0 && ax * ax > reach2) || (ay > 0.0 && ay * ay > reach2))
                        continue;
                    Py_ssize_t j = p->items[k];
                    /* fired since i, its window overlapping: may take cells over */
                    if (tj >= p->lo_next && tj >= p->t_i && fabs(xj - p->xi) <= p->near
                            && fabs(yj - p->yi) <= p->near)
                        l0[n0++] = j;
                    /* Damage samples: slow if handed over or if its rise is monotone on the
                       window over them (it does not peak on the box: its nearest point
                       within sqrt(s), its farthest beyond the width at t_mid), else sharp. */
                    double nx = p->x_lo - xj > xj - p->x_hi ? p->x_lo - xj : xj - p->x_hi;
                    double ny = p->y_lo - yj > yj - p->y_hi ? p->y_lo - yj : yj - p->y_hi;
                    double fx = fabs(xj - p->x_lo) > fabs(xj - p->x_hi) ? fabs(xj - p->x_lo)
                                                                        : fabs(xj - p->x_hi);
                    double fy = fabs(yj - p->y_lo) > fabs(yj - p->y_hi) ? fabs(yj - p->y_lo)
                                                                        : fabs(yj - p->y_hi);
                    nx = nx > 0.0 ? nx : 0.0;
                    ny = ny > 0.0 ? ny : 0.0;
                    int pulsing = nx * nx + ny * ny <= s
                                  && fx * fx + fy * fy >= s0j + p->k4 * (p->t_mid - tj);
                    /* its record: offset (centre minus spot, as _add_term) and reach measure
                       (as _reach_measure) */
                    double ej = re[k], dxj = p->xi - xj, dyj = p->yi - yj;
                    double mx = ax > 0.0 ? ax * ax : 0.0, my = ay > 0.0 ? ay * ay : 0.0;
                    double m = mx > my ? mx : my;
                    if (tj < p->lo_next || !pulsing)
                        co2scan_near_rec(o1, ldo, n1++, tj, s0j, ej, dxj, dyj, m);
                    else
                        l2[n2++] = j;
                    /* Peak samples: background if old, else sharp (later ones fire after
                       them) */
                    if (tj < p->lo_next
                            || (tj < p->t_i && s0j + p->k4 * (p->t_i - tj) >= p->bg_s))
                        co2scan_near_rec(o3, ldo, n3++, tj, s0j, ej, dxj, dyj, m);
                    else if (tj <= p->t_mid)
                        l4[n4++] = j;
                }
        p->n[0] = n0, p->n[1] = n1, p->n[2] = n2, p->n[3] = n3, p->n[4] = n4;
    }

    #ifdef CO2SCAN_AVX2
    /* Lane selections for a 4-bit mask: the 32-bit halves of the selected 64-bit lanes first. */
    static const int co2scan_pack4[16][8] = {
        {0, 1, 0, 1, 0, 1, 0, 1}, {0, 1, 0, 1, 0, 1, 0, 1}, {2, 3, 0, 1, 0, 1, 0, 1},
        {0, 1, 2, 3, 0, 1, 0, 1}, {4, 5, 0, 1, 0, 1, 0, 1}, {0, 1, 4, 5, 0, 1, 0, 1},
        {2, 3, 4, 5, 0, 1, 0, 1}, {0, 1, 2, 3, 4, 5, 0, 1}, {6, 7, 0, 1, 0, 1, 0, 1},
        {0, 1, 6, 7, 0, 1, 0, 1}, {2, 3, 6, 7, 0, 1, 0, 1}, {0, 1, 2, 3, 6, 7, 0, 1},
        {4, 5, 6, 7, 0, 1, 0, 1}, {0, 1, 4, 5, 6, 7, 0, 1}, {2, 3, 4, 5, 6, 7, 0, 1},
        {0, 1, 2, 3, 4, 5, 6, 7}};

    /* Appends the spots j of the lanes in mask to list (n long, room for cap): returns its
       new length. */
    __attribute__((target("avx2,popcnt"))) static inline Py_ssize_t co2scan_near_put4(
            Py_ssize_t *list, Py_ssize_t n, Py_ssize_t cap, __m256i j, int mask) {
        __m256i v = _mm256_permutevar8x32_epi32(
            j, _mm256_loadu_si256((const __m256i *)co2scan_pack4[mask]));
        int count = _mm_popcnt_u32((unsigned)mask);
        if (n + 4 <= cap)
            _mm256_storeu_si256((__m256i *)(list + n), v);
        else {
            Py_ssize_t w[4];
            _mm256_storeu_si256((__m256i *)w, v);
            for (int k = 0; k < count; k++)
                list[n + k] = w[k];
        }
        return n + count;
    }

    /* co2scan_near_rec for the lanes in mask (their records appended to the rows from out,
       ld apart, each n long with room for cap): returns the new length. */
    __attribute__((target("avx2,popcnt"))) static inline Py_ssize_t co2scan_near_recs4(
            double *out, Py_ssize_t ld, Py_ssize_t n, Py_ssize_t cap, int mask, __m256d t,
            __m256d s0, __m256d e, __m256d dx, __m256d dy, __m256d m) {
        __m256i sel = _mm256_loadu_si256((const __m256i *)co2scan_pack4[mask]);
        __m256d v[6] = {t, s0, e, dx, dy, m};
        int count = _mm_popcnt_u32((unsigned)mask);
        for (int r = 0; r < 6; r++) {
            __m256d c = _mm256_castsi256_pd(
                _mm256_permutevar8x32_epi32(_mm256_castpd_si256(v[r]), sel));
            if (n + 4 <= cap)
                _mm256_storeu_pd(out + r * ld + n, c);
            else {
                double w[4];
                _mm256_storeu_pd(w, c);
                for (int k = 0; k < count; k++)
                    out[r * ld + n + k] = w[k];
            }
        }
        return n + count;
    }

    /* co2scan_near_any four spots at a time. */
    __attribute__((target("avx2,popcnt"))) static void co2scan_near_avx2(co2scan_near_t *p) {
        const __m256d t_end = _mm256_set1_pd(p->t_end), t_i = _mm256_set1_pd(p->t_i);
        const __m256d t_mid = _mm256_set1_pd(p->t_mid), lo_next = _mm256_set1_pd(p->lo_next);
        const __m256d k4 = _mm256_set1_pd(p->k4), reach_log = _mm256_set1_pd(p->reach_log);
        const __m256d window = _mm256_set1_pd(p->window), near = _mm256_set1_pd(p->near);
        const __m256d xi = _mm256_set1_pd(p->xi), yi = _mm256_set1_pd(p->yi);
        const __m256d bg_s = _mm256_set1_pd(p->bg_s), zero = _mm256_setzero_pd();
        const __m256d x_lo = _mm256_set1_pd(p->x_lo), x_hi = _mm256_set1_pd(p->x_hi);
        const __m256d y_lo = _mm256_set1_pd(p->y_lo), y_hi = _mm256_set1_pd(p->y_hi);
        const __m256d sign = _mm256_set1_pd(-0.0);
        const __m256i lane = _mm256_set_epi64x(3, 2, 1, 0);
        const double *rt = p->rec, *rs0 = p->rec + p->ld, *rx = p->rec + 2 * p->ld;
        const double *ry = p->rec + 3 * p->ld, *re = p->rec + 4 * p->ld;
        Py_ssize_t *l0 = p->list[0], *l2 = p->list[2], *l4 = p->list[4], cap = p->cap;
        double *o1 = p->out[0], *o3 = p->out[1];
        Py_ssize_t n0 = p->n[0], n1 = p->n[1], n2 = p->n[2], n3 = p->n[3], n4 = p->n[4];
        Py_ssize_t ldo = p->ld_out;
        for (Py_ssize_t by = p->by0; by < p->by1 && p->bx0 < p->bx1; by++) {
            Py_ssize_t hi = p->start[by * p->nbx + p->bx1];
            for (Py_ssize_t k = p->start[by * p->nbx + p->bx0]; k < hi; k += 4) {
                __m256i in = _mm256_cmpgt_epi64(_mm256_set1_epi64x(hi - k), lane);
                __m256d t = _mm256_maskload_pd(rt + k, in);
                int valid = _mm256_movemask_pd(_mm256_castsi256_pd(in))
                            & ~_mm256_movemask_pd(_mm256_cmp_pd(t, t_end, _CMP_GT_OQ));
                __m256d s0 = _mm256_maskload_pd(rs0 + k, in);
                __m256d x = _mm256_maskload_pd(rx + k, in);
                __m256d y = _mm256_maskload_pd(ry + k, in);
                __m256d s = _mm256_add_pd(s0, _mm256_mul_pd(k4, _mm256_sub_pd(t_end, t)));
                __m256d reach2 = _mm256_mul_pd(s, reach_log);
                __m256d adx = _mm256_andnot_pd(sign, _mm256_sub_pd(x, xi));
                __m256d ady = _mm256_andnot_pd(sign, _mm256_sub_pd(y, yi));
                __m256d ax = _mm256_sub_pd(adx, window), ay = _mm256_sub_pd(ady, window);
                __m256d out = _mm256_or_pd(
                    _mm256_and_pd(_mm256_cmp_pd(ax, zero, _CMP_GT_OQ),
                                  _mm256_cmp_pd(_mm256_mul_pd(ax, ax), reach2, _CMP_GT_OQ)),
                    _mm256_and_pd(_mm256_cmp_pd(ay, zero, _CMP_GT_OQ),
                                  _mm256_cmp_pd(_mm256_mul_pd(ay, ay), reach2, _CMP_GT_OQ)));
                int reach = valid & ~_mm256_movemask_pd(out);
                if (!reach)
                    continue;
                __m256i j = _mm256_maskload_epi64((const long long *)(p->items + k), in);
                __m256d handed = _mm256_cmp_pd(t, lo_next, _CMP_LT_OQ);
                __m256d late = _mm256_and_pd(
                    _mm256_and_pd(_mm256_cmp_pd(t, lo_next, _CMP_GE_OQ),
                                  _mm256_cmp_pd(t, t_i, _CMP_GE_OQ)),
                    _mm256_and_pd(_mm256_cmp_pd(adx, near, _CMP_LE_OQ),
                                  _mm256_cmp_pd(ady, near, _CMP_LE_OQ)));
                __m256d nx = _mm256_max_pd(
                    _mm256_max_pd(_mm256_sub_pd(x_lo, x), _mm256_sub_pd(x, x_hi)), zero);
                __m256d ny = _mm256_max_pd(
                    _mm256_max_pd(_mm256_sub_pd(y_lo, y), _mm256_sub_pd(y, y_hi)), zero);
                __m256d fx = _mm256_max_pd(_mm256_andnot_pd(sign, _mm256_sub_pd(x, x_lo)),
                                           _mm256_andnot_pd(sign, _mm256_sub_pd(x, x_hi)));
                __m256d fy = _mm256_max_pd(_mm256_andnot_pd(sign, _mm256_sub_pd(y, y_lo)),
                                           _mm256_andnot_pd(sign, _mm256_sub_pd(y, y_hi)));
                __m256d near2 = _mm256_add_pd(_mm256_mul_pd(nx, nx), _mm256_mul_pd(ny, ny));
                __m256d far2 = _mm256_add_pd(_mm256_mul_pd(fx, fx), _mm256_mul_pd(fy, fy));
                __m256d s_mid = _mm256_add_pd(s0, _mm256_mul_pd(k4, _mm256_sub_pd(t_mid, t)));
                __m256d pulsing = _mm256_and_pd(_mm256_cmp_pd(near2, s, _CMP_LE_OQ),
                                                _mm256_cmp_pd(far2, s_mid, _CMP_GE_OQ));
                int slow = _mm256_movemask_pd(handed) | ~_mm256_movemask_pd(pulsing);
                __m256d s_i = _mm256_add_pd(s0, _mm256_mul_pd(k4, _mm256_sub_pd(t_i, t)));
                int bg = _mm256_movemask_pd(_mm256_or_pd(handed, _mm256_and_pd(
                    _mm256_cmp_pd(t, t_i, _CMP_LT_OQ), _mm256_cmp_pd(s_i, bg_s, _CMP_GE_OQ))));
                int sharp = ~bg & _mm256_movemask_pd(_mm256_cmp_pd(t, t_mid, _CMP_LE_OQ));
                n0 = co2scan_near_put4(l0, n0, cap, j, reach & _mm256_movemask_pd(late));
                n2 = co2scan_near_put4(l2, n2, cap, j, reach & ~slow);
                n4 = co2scan_near_put4(l4, n4, cap, j, reach & sharp);
                if (reach & (slow | bg)) {  /* records: as co2scan_near_any */
                    __m256d e = _mm256_maskload_pd(re + k, in);
                    __m256d dx = _mm256_sub_pd(xi, x), dy = _mm256_sub_pd(yi, y);
                    __m256d mx = _mm256_max_pd(ax, zero), my = _mm256_max_pd(ay, zero);
                    __m256d m = _mm256_max_pd(_mm256_mul_pd(mx, mx), _mm256_mul_pd(my, my));
                    if (reach & slow)
                        n1 = co2scan_near_recs4(o1, ldo, n1, cap, reach & slow, t, s0, e, dx,
                                                dy, m);
                    if (reach & bg)
                        n3 = co2scan_near_recs4(o3, ldo, n3, cap, reach & bg, t, s0, e, dx,
                                                dy, m);
                }
            }
        }
        p->n[0] = n0, p->n[1] = n1, p->n[2] = n2, p->n[3] = n3, p->n[4] = n4;
    }
    #endif

    #ifdef CO2SCAN_AVX512
    /* co2scan_near_put4 for eight lanes. */
    __attribute__((target("avx512f,avx512dq,avx512vl,popcnt"))) static inline Py_ssize_t
    co2scan_near_put8(Py_ssize_t *list, Py_ssize_t n, Py_ssize_t cap, __m512i j,
                      __mmask8 mask) {
        __m512i v = _mm512_maskz_compress_epi64(mask, j);
        int count = _mm_popcnt_u32(mask);
        if (n + 8 <= cap)
            _mm512_storeu_si512(list + n, v);
        else
            _mm512_mask_storeu_epi64(list + n, (__mmask8)((1u << count) - 1), v);
        return n + count;
    }

    /* The records of the spots in mask (t, s0, e, dx, dy, m), in order, appended at n of the
       rows ld apart from out (room for cap); returns the new length. */
    __attribute__((target("avx512f,avx512dq,avx512vl,popcnt"))) static inline Py_ssize_t
    co2scan_near_recs8(double *out, Py_ssize_t ld, Py_ssize_t n, Py_ssize_t cap,
                       __mmask8 mask, __m512d t, __m512d s0, __m512d e, __m512d dx,
                       __m512d dy, __m512d m) {
        int room = n + 8 <= cap;
        co2scan_put8_pd(out + n, t, mask, room);
        co2scan_put8_pd(out + ld + n, s0, mask, room);
        co2scan_put8_pd(out + 2 * ld + n, e, mask, room);
        co2scan_put8_pd(out + 3 * ld + n, dx, mask, room);
        co2scan_put8_pd(out + 4 * ld + n, dy, mask, room);
        co2scan_put8_pd(out + 5 * ld + n, m, mask, room);
        return n + _mm_popcnt_u32(mask);
    }

    /* co2scan_near_any eight spots at a time. */
    __attribute__((target("avx512f,avx512dq,avx512vl,popcnt"))) static void
    co2scan_near_avx512(co2scan_near_t *p) {
        const __m512d t_end = _mm512_set1_pd(p->t_end), t_i = _mm512_set1_pd(p->t_i);
        const __m512d t_mid = _mm512_set1_pd(p->t_mid), lo_next = _mm512_set1_pd(p->lo_next);
        const __m512d k4 = _mm512_set1_pd(p->k4), reach_log = _mm512_set1_pd(p->reach_log);
        const __m512d window = _mm512_set1_pd(p->window), near = _mm512_set1_pd(p->near);
        const __m512d xi = _mm512_set1_pd(p->xi), yi = _mm512_set1_pd(p->yi);
        const __m512d bg_s = _mm512_set1_pd(p->bg_s), zero = _mm512_setzero_pd();
        const __m512d x_lo = _mm512_set1_pd(p->x_lo), x_hi = _mm512_set1_pd(p->x_hi);
        const __m512d y_lo = _mm512_set1_pd(p->y_lo), y_hi = _mm512_set1_pd(p->y_hi);
        const double *rt = p->rec, *rs0 = p->rec + p->ld, *rx = p->rec + 2 * p->ld;
        const double *ry = p->rec + 3 * p->ld, *re = p->rec + 4 * p->ld;
        Py_ssize_t *l0 = p->list[0], *l2 = p->list[2], *l4 = p->list[4], cap = p->cap;
        double *o1 = p->out[0], *o3 = p->out[1];
        Py_ssize_t n0 = p->n[0], n1 = p->n[1], n2 = p->n[2], n3 = p->n[3], n4 = p->n[4];
        Py_ssize_t ldo = p->ld_out;
        for (Py_ssize_t by = p->by0; by < p->by1 && p->bx0 < p->bx1; by++) {
            Py_ssize_t hi = p->start[by * p->nbx + p->bx1];
            for (Py_ssize_t k = p->start[by * p->nbx + p->bx0]; k < hi; k += 8) {
                __mmask8 in = hi - k >= 8 ? 0xFF : (__mmask8)((1u << (hi - k)) - 1);
                __m512d t = _mm512_maskz_loadu_pd(in, rt + k);
                __mmask8 valid = in & (__mmask8)~_mm512_cmp_pd_mask(t, t_end, _CMP_GT_OQ);
                __m512d s0 = _mm512_maskz_loadu_pd(in, rs0 + k);
                __m512d x = _mm512_maskz_loadu_pd(in, rx + k);
                __m512d y = _mm512_maskz_loadu_pd(in, ry + k);
                __m512d s = _mm512_add_pd(s0, _mm512_mul_pd(k4, _mm512_sub_pd(t_end, t)));
                __m512d reach2 = _mm512_mul_pd(s, reach_log);
                __m512d adx = _mm512_abs_pd(_mm512_sub_pd(x, xi));
                __m512d ady = _mm512_abs_pd(_mm512_sub_pd(y, yi));
                __m512d ax = _mm512_sub_pd(adx, window), ay = _mm512_sub_pd(ady, window);
                __mmask8 out = (_mm512_cmp_pd_mask(ax, zero, _CMP_GT_OQ)
                                & _mm512_cmp_pd_mask(_mm512_mul_pd(ax, ax), reach2, _CMP_GT_OQ))
                               | (_mm512_cmp_pd_mask(ay, zero, _CMP_GT_OQ)
                                  & _mm512_cmp_pd_mask(_mm512_mul_pd(ay, ay), reach2,
                                                       _CMP_GT_OQ));
                __mmask8 reach = valid & (__mmask8)~out;
                if (!reach)
                    continue;
                __m512i j = _mm512_maskz_loadu_epi64(in, p->items + k);
                __mmask8 handed = _mm512_cmp_pd_mask(t, lo_next, _CMP_LT_OQ);
                __mmask8 late = _mm512_cmp_pd_mask(t, lo_next, _CMP_GE_OQ)
                                & _mm512_cmp_pd_mask(t, t_i, _CMP_GE_OQ)
                                & _mm512_cmp_pd_mask(adx, near, _CMP_LE_OQ)
                                & _mm512_cmp_pd_mask(ady, near, _CMP_LE_OQ);
                __m512d nx = _mm512_max_pd(
                    _mm512_max_pd(_mm512_sub_pd(x_lo, x), _mm512_sub_pd(x, x_hi)), zero);
                __m512d ny = _mm512_max_pd(
                    _mm512_max_pd(_mm512_sub_pd(y_lo, y), _mm512_sub_pd(y, y_hi)), zero);
                __m512d fx = _mm512_max_pd(_mm512_abs_pd(_mm512_sub_pd(x, x_lo)),
                                           _mm512_abs_pd(_mm512_sub_pd(x, x_hi)));
                __m512d fy = _mm512_max_pd(_mm512_abs_pd(_mm512_sub_pd(y, y_lo)),
                                           _mm512_abs_pd(_mm512_sub_pd(y, y_hi)));
                __m512d near2 = _mm512_add_pd(_mm512_mul_pd(nx, nx), _mm512_mul_pd(ny, ny));
                __m512d far2 = _mm512_add_pd(_mm512_mul_pd(fx, fx), _mm512_mul_pd(fy, fy));
                __m512d s_mid = _mm512_add_pd(s0, _mm512_mul_pd(k4, _mm512_sub_pd(t_mid, t)));
                __mmask8 pulsing = _mm512_cmp_pd_mask(near2, s, _CMP_LE_OQ)
                                   & _mm512_cmp_pd_mask(far2, s_mid, _CMP_GE_OQ);
                __mmask8 slow = handed | (__mmask8)~pulsing;
                __m512d s_i = _mm512_add_pd(s0, _mm512_mul_pd(k4, _mm512_sub_pd(t_i, t)));
                __mmask8 bg = handed | (_mm512_cmp_pd_mask(t, t_i, _CMP_LT_OQ)
                                        & _mm512_cmp_pd_mask(s_i, bg_s, _CMP_GE_OQ));
                __mmask8 sharp = (__mmask8)~bg & _mm512_cmp_pd_mask(t, t_mid, _CMP_LE_OQ);
                n0 = co2scan_near_put8(l0, n0, cap, j, reach & late);
                n2 = co2scan_near_put8(l2, n2, cap, j, reach & (__mmask8)~slow);
                n4 = co2scan_near_put8(l4, n4, cap, j, reach & sharp);
                __mmask8 slow_r = reach & slow, bg_r = reach & bg;
                if (slow_r | bg_r) {  /* records: as co2scan_near_any */
                    __m512d e = _mm512_maskz_loadu_pd(in, re + k);
                    __m512d dx = _mm512_sub_pd(xi, x), dy = _mm512_sub_pd(yi, y);
                    __m512d mx = _mm512_max_pd(ax, zero), my = _mm512_max_pd(ay, zero);
                    __m512d m = _mm512_max_pd(_mm512_mul_pd(mx, mx), _mm512_mul_pd(my, my));
                    if (slow_r)
                        n1 = co2scan_near_recs8(o1, ldo, n1, cap, slow_r, t, s0, e, dx, dy, m);
                    if (bg_r)
                        n3 = co2scan_near_recs8(o3, ldo, n3, cap, bg_r, t, s0, e, dx, dy, m);
                }
            }
        }
        p->n[0] = n0, p->n[1] = n1, p->n[2] = n2, p->n[3] = n3, p->n[4] = n4;
    }
    #endif

    static inline void co2scan_near(co2scan_near_t *p) {
        CO2SCAN_SIMD3(co2scan_near, p);
    }
    """
    ctypedef struct Near "co2scan_near_t":
        double t_end, t_i, t_mid, lo_next, k4, reach_log, window, near, xi, yi, bg_s
        double x_lo, x_hi, y_lo, y_hi
        Py_ssize_t* list[5]
        Py_ssize_t n[5]
        Py_ssize_t cap
        double* out[2]
        Py_ssize_t ld_out
        const Py_ssize_t* start
        const Py_ssize_t* items
        const double* rec
        Py_ssize_t ld, nbx, bx0, bx1, by0, by1
    void _near "co2scan_near"(Near* p) nogil


# A damage sample's pass over the window's sharp spots (see _window): each one's part at ts
# classified and listed, in order: resolved ones exact (at_heat: as _batch_heat takes them)
# or in the Taylor sum (terms' rows 0-4), the others to bound (their positions); and those
# entering or leaving the start's sum (from_heat, terms' rows 5-9). The AVX-512 path
# classifies eight spots at once with the same comparisons and arithmetic, and appends each
# list's share by a compress: the same lists. Spots handed over stay in the arrays (a later
# pass finds them not live and not live before, and lists nothing for them).
cdef extern from *:
    """
    typedef struct {
        const double *t, *s0, *e, *x, *y, *px, *py, *m;  /* the spots, n of them */
        unsigned char *live;  /* in reach and not handed over at the last pass: bit q % 8 of
                                 byte q / 8 */
        Py_ssize_t n;
        double ts, t_prev, lo_ts, k4, reach_log, taylor_s, box_x, box_y, bx, by;
        double resolved;  /* RESOLVED_RATIO */
        int reuse;  /* the start's sum is the last pass's (live read), else none (0) */
        /* at_heat, from_heat: 5 rows ld_h apart (offset from bx, by, width, heat, age);
           terms: 10 rows ld_t apart (rows 0-4 at ts, 5-9 at t_prev); bnd: positions */
        double *at_heat, *from_heat, *terms;
        Py_ssize_t ld_h, ld_t;
        Py_ssize_t *bnd;
        Py_ssize_t n_at_heat, n_at, n_from_heat, n_from, n_bnd;  /* out */
    } co2scan_dpass_t;

    static void co2scan_dpass_any(co2scan_dpass_t *p) {
        const double ts = p->ts, t_prev = p->t_prev, lo_ts = p->lo_ts, k4 = p->k4;
        const double reach_log = p->reach_log, taylor_s = p->taylor_s;
        Py_ssize_t n_ah = 0, n_at = 0, n_fh = 0, n_ft = 0, n_bnd = 0;
        for (Py_ssize_t q = 0; q < p->n; q++) {
            double tj = p->t[q];
            if (tj > ts)  /* not yet fired */
                continue;
            double s = p->s0[q] + k4 * (ts - tj);
            int live = tj >= lo_ts && !(p->m[q] > s * reach_log);
            unsigned char bit = (unsigned char)(1u << (q & 7));
            int in_prev = p->reuse && (p->live[q >> 3] & bit);
            double a = t_prev - tj;
            double s_a = p->s0[q] + k4 * (a > 0.0 ? a : 0.0);
            int resolved = 0;
            if (live) {  /* not in the far grid at ts, and within reach */
                resolved = tj <= t_prev && s <= p->resolved * s_a;
                if (!resolved)
                    p->bnd[n_bnd++] = q;
                else if (s < taylor_s)
                    co2scan_put5(p->at_heat, p->ld_h, n_ah++, p->bx - p->px[q],
                                 p->by - p->py[q], s, p->e[q], ts - tj);
                else
                    co2scan_put5(p->terms, p->ld_t, n_at++, p->box_x - p->x[q],
                                 p->box_y - p->y[q], s, p->e[q], ts - tj);
            }
            if (resolved != in_prev) {  /* add it at the start, or take it out */
                double heat = (resolved ? 1.0 : -1.0) * p->e[q];
                if (s_a < taylor_s)
                    co2scan_put5(p->from_heat, p->ld_h, n_fh++, p->bx - p->px[q],
                                 p->by - p->py[q], s_a, heat, t_prev - tj);
                else
                    co2scan_put5(p->terms + 5 * p->ld_t, p->ld_t, n_ft++, p->box_x - p->x[q],
                                 p->box_y - p->y[q], s_a, heat, t_prev - tj);
            }
            if (live)
                p->live[q >> 3] |= bit;
            else
                p->live[q >> 3] &= (unsigned char)~bit;
        }
        p->n_at_heat = n_ah, p->n_at = n_at, p->n_from_heat = n_fh, p->n_from = n_ft;
        p->n_bnd = n_bnd;
    }

    #ifdef CO2SCAN_AVX512
    /* co2scan_dpass_any eight spots at a time (the same comparisons and arithmetic). */
    __attribute__((target("avx512f,avx512dq,avx512vl,popcnt"))) static void
    co2scan_dpass_avx512(co2scan_dpass_t *p) {
        const __m512d vts = _mm512_set1_pd(p->ts), vtp = _mm512_set1_pd(p->t_prev);
        const __m512d vlo = _mm512_set1_pd(p->lo_ts), vk4 = _mm512_set1_pd(p->k4);
        const __m512d vrl = _mm512_set1_pd(p->reach_log), vtay = _mm512_set1_pd(p->taylor_s);
        const __m512d vbx = _mm512_set1_pd(p->bx), vby = _mm512_set1_pd(p->by);
        const __m512d vcx = _mm512_set1_pd(p->box_x), vcy = _mm512_set1_pd(p->box_y);
        const __m512d ratio = _mm512_set1_pd(p->resolved), zero = _mm512_setzero_pd();
        const __m512d plus = _mm512_set1_pd(1.0), minus = _mm512_set1_pd(-1.0);
        const __m512i iota = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
        double *terms_from = p->terms + 5 * p->ld_t;
        Py_ssize_t n = p->n, n_ah = 0, n_at = 0, n_fh = 0, n_ft = 0, n_bnd = 0;
        for (Py_ssize_t k = 0; k < n; k += 8) {
            __mmask8 in = n - k >= 8 ? 0xFF : (__mmask8)((1u << (n - k)) - 1);
            __m512d t = _mm512_maskz_loadu_pd(in, p->t + k);
            __mmask8 fired = _mm512_mask_cmp_pd_mask(in, t, vts, _CMP_NGT_UQ);
            unsigned char was = p->live[k >> 3];
            if (!fired)
                continue;
            __m512d s0 = _mm512_maskz_loadu_pd(in, p->s0 + k);
            __m512d m = _mm512_maskz_loadu_pd(in, p->m + k);
            __m512d age = _mm512_sub_pd(vts, t);
            __m512d s = _mm512_add_pd(s0, _mm512_mul_pd(vk4, age));
            __mmask8 live = _mm512_mask_cmp_pd_mask(fired, t, vlo, _CMP_GE_OQ)
                & _mm512_cmp_pd_mask(m, _mm512_mul_pd(s, vrl), _CMP_NGT_UQ);
            __mmask8 in_prev = p->reuse ? (__mmask8)(was & fired) : 0;
            __m512d age_p = _mm512_sub_pd(vtp, t);
            __m512d s_a = _mm512_add_pd(s0, _mm512_mul_pd(vk4, _mm512_max_pd(age_p, zero)));
            __mmask8 resolved = _mm512_mask_cmp_pd_mask(live, t, vtp, _CMP_LE_OQ)
                & _mm512_cmp_pd_mask(s, _mm512_mul_pd(ratio, s_a), _CMP_LE_OQ);
            __mmask8 bnd = live & (__mmask8)~resolved;
            __mmask8 narrow = _mm512_cmp_pd_mask(s, vtay, _CMP_LT_OQ);
            __mmask8 change = (__mmask8)(resolved ^ in_prev);
            __mmask8 narrow_a = _mm512_cmp_pd_mask(s_a, vtay, _CMP_LT_OQ);
            p->live[k >> 3] = (unsigned char)((was & (unsigned char)~fired) | live);
            if (bnd) {
                __m512i pos = _mm512_add_epi64(_mm512_set1_epi64(k), iota);
                __m512i c = _mm512_maskz_compress_epi64(bnd, pos);
                _mm512_mask_storeu_epi64(p->bnd + n_bnd,
                                         (__mmask8)((1u << _mm_popcnt_u32(bnd)) - 1), c);
                n_bnd += _mm_popcnt_u32(bnd);
            }
            if (!(resolved | change))
                continue;
            __m512d e = _mm512_maskz_loadu_pd(in, p->e + k);
            /* the start's heat: added (resolved now) or taken out */
            __m512d e_from = _mm512_mul_pd(_mm512_mask_blend_pd(resolved, minus, plus), e);
            if (resolved & narrow || change & narrow_a) {
                __m512d dx = _mm512_sub_pd(vbx, _mm512_maskz_loadu_pd(in, p->px + k));
                __m512d dy = _mm512_sub_pd(vby, _mm512_maskz_loadu_pd(in, p->py + k));
                if (resolved & narrow)
                    n_ah = co2scan_put5x8(p->at_heat, p->ld_h, n_ah, resolved & narrow, dx,
                                          dy, s, e, age);
                if (change & narrow_a)
                    n_fh = co2scan_put5x8(p->from_heat, p->ld_h, n_fh, change & narrow_a, dx,
                                          dy, s_a, e_from, age_p);
            }
            if (resolved & (__mmask8)~narrow || change & (__mmask8)~narrow_a) {
                __m512d dx = _mm512_sub_pd(vcx, _mm512_maskz_loadu_pd(in, p->x + k));
                __m512d dy = _mm512_sub_pd(vcy, _mm512_maskz_loadu_pd(in, p->y + k));
                if (resolved & (__mmask8)~narrow)
                    n_at = co2scan_put5x8(p->terms, p->ld_t, n_at, resolved & (__mmask8)~narrow,
                                          dx, dy, s, e, age);
                if (change & (__mmask8)~narrow_a)
                    n_ft = co2scan_put5x8(terms_from, p->ld_t, n_ft,
                                          change & (__mmask8)~narrow_a, dx, dy, s_a, e_from,
                                          age_p);
            }
        }
        p->n_at_heat = n_ah, p->n_at = n_at, p->n_from_heat = n_fh, p->n_from = n_ft;
        p->n_bnd = n_bnd;
    }
    #endif

    static inline void co2scan_dpass(co2scan_dpass_t *p) {
        CO2SCAN_SIMD512(co2scan_dpass, p);
    }
    """
    ctypedef struct DPass "co2scan_dpass_t":
        const double* t
        const double* s0
        const double* e
        const double* x
        const double* y
        const double* px
        const double* py
        const double* m
        unsigned char* live
        Py_ssize_t n
        double ts, t_prev, lo_ts, k4, reach_log, taylor_s, box_x, box_y, bx, by
        double resolved
        int reuse
        double* at_heat
        double* from_heat
        double* terms
        Py_ssize_t ld_h, ld_t
        Py_ssize_t* bnd
        Py_ssize_t n_at_heat, n_at, n_from_heat, n_from, n_bnd
    void _dpass "co2scan_dpass"(DPass* p) nogil


cdef inline void _heat_run(const Geo* g, Batch* bt, double* h, Py_ssize_t ld,
                           Py_ssize_t n) noexcept nogil:
    """_batch_heat of the n spots in h's 5 rows ld apart (offset from the batch's first cell,
    centre minus spot; width; heat; age), then _batch_flush_heat (bt open and empty): the
    same batches of OUTER_BATCH, read where they lie (heat -> amplitude in place)."""
    cdef Py_ssize_t o, m
    for o in range(0, n, OUTER_BATCH):
        m = min(n - o, OUTER_BATCH)
        _amplitudes(h + 3 * ld + o, h + 2 * ld + o, h + 4 * ld + o, m, g.loss_scale, g.table,
                    g.n_table)
        _batch_add(bt, h + o, h + ld + o, h + 2 * ld + o, h + 3 * ld + o, m)


cdef struct Buckets:
    double x0, y0, size, max_s0
    Py_ssize_t nbx, nby
    const Py_ssize_t* start
    const Py_ssize_t* items
    # the items' times, s0, x, y and heat in bucket order (planes ld apart): the scans read
    # them in order instead of gathering them by index
    const double* rec
    Py_ssize_t ld


cdef inline void _bucket_span(const Buckets* bk, double xc, double yc, double reach,
                              Py_ssize_t* bx0, Py_ssize_t* bx1, Py_ssize_t* by0,
                              Py_ssize_t* by1) noexcept nogil:
    """The buckets within reach of (xc, yc): columns [bx0, bx1), rows [by0, by1)."""
    bx0[0] = max(<Py_ssize_t>floor((xc - reach - bk.x0) / bk.size), 0)
    bx1[0] = min(<Py_ssize_t>floor((xc + reach - bk.x0) / bk.size) + 1, bk.nbx)
    by0[0] = max(<Py_ssize_t>floor((yc - reach - bk.y0) / bk.size), 0)
    by1[0] = min(<Py_ssize_t>floor((yc + reach - bk.y0) / bk.size) + 1, bk.nby)


cdef void _window(const Geo* g, const Buckets* bk, Py_ssize_t i, Py_ssize_t b,
                  const double[:, :, :, ::1] cur, const double[:, :, :, ::1] blur,
                  const double[::1] x,
                  const double[::1] y, const double[::1] t, const double[::1] e,
                  const double[::1] s0, double[:, ::1] fine, double[:, ::1] dose,
                  double* scratch, Py_ssize_t width, Py_ssize_t* cand, Py_ssize_t ld_c,
                  double* terms, Py_ssize_t ld_t, double* ex, double* ey, double* gauss,
                  Py_ssize_t ld_g, double* sharp, double* recs,
                  unsigned char* row_lock, const double* held) noexcept nogil:
    """Sample the temperature around spot i at its log-spaced times after firing: the peak,
    and the damage integral of each cell until a later window takes the cell over (see
    controller.thermal_ref._Run.window, which this mirrors loop for loop).

    The thread's scratch as pointers (a memoryview slice would take and release a reference,
    atomically, on an object the threads share): ``scratch``, 12 planes of width x width
    doubles; ``cand``, ``terms``: 5 and 10 rows ld_c and ld_t apart; ``ex``, ``ey``: rows.
    ``gauss``: 4 rows ld_g apart of OUTER_BATCH x ld_g / OUTER_BATCH (a multiple of 16) doubles,
    the Gaussians' factors before their outer products are added. ``sharp``: SHARP_PER_SPOT
    doubles per spot of the pass and SHARP_EXTRA more, the window's sharp spots gathered.
    ``recs``: 12 rows ld_c apart, the background routine's spots' records (slow: rows 0-5,
    bg: rows 6-11).
    ``held``: each spot's hold (_hold), computed once for the pass.

    Peak samples (to the first width >= 2 window^2): the young near spots (sharp) are exact at
    every sample; the far grid and the older near spots (background) are evaluated at the
    first and the last peak sample and interpolated in time. Damage samples beyond: the far
    grid and every spot fired before i are evaluated at each sample (background routine), the
    spots fired since exactly, on the box of the cells still integrating. The window's peaks
    and damage integrals are gathered in scratch and merged into the maps (shared by the
    threads) at the end, each row under its lock (``row_lock``, one per map row).
    """
    cdef Window w
    cdef double s_peak = 2.0 * g.window * g.window, s_i = s0[i], s_last, ts, t_last, s, frac
    cdef double s_prev = 0.0, inner = g.window - COVER_MARGIN * g.cell, until_max, tj
    cdef double bg_s, lo_t = _boundary(g, b) - g.handover, reach, s_mid, t_mid
    cdef double lo_next = _boundary(g, b + 1) - g.handover  # exactly as thermal_ref
    cdef double t_prev = 0.0
    cdef bint started = False, any_fresh, fresh_j
    cdef Py_ssize_t j, q, r, c, n_sharp = 0, n_bg = 0, nr, nc, bx, by, bx0, bx1, by0, by1
    cdef Py_ssize_t ra, rb, ca, cb, n_late = 0, n_ext, item
    cdef Py_ssize_t n_ladc = 0, k_base, n_slow = 0, n_dsharp = 0, n_bnd, n_at, n_from
    cdef bint slow_ready = False, reuse = False
    cdef double box_x = 0.0, box_y = 0.0, taylor_s = 0.0
    cdef Rect box
    cdef Near near
    cdef Recs bg_near, slow_near  # the background routine's spots, packed
    cdef double ext_ratio, t_end, cap = _boundary(g, b + LOOKAHEAD), s_base, ax, ay, hold, d2
    cdef double lo_ts = 0.0, k4 = g.kappa4, reach_log = g.reach_log, dxj, dyj
    # The damage samples' sharp spots, gathered once (time, s0, heat, position, centre as
    # _batch_gaussian sees it, reach measure: _in_reach at width s is reach_m <= s reach_log),
    # whether each was live at the last sample (a bit per spot; spots handed over stay in the
    # arrays and are listed for nothing); the peak samples' sharp spots likewise
    # (time, s0, heat, centre, reach measure): in the thread's buffer ``sharp``, with the
    # damage samples' exact spots listed (two lists of 5 rows, as _heat_run reads them).
    cdef double* p_t
    cdef double* p_s0
    cdef double* p_e
    cdef double* p_px
    cdef double* p_py
    cdef double* p_m
    cdef double* d_t
    cdef double* d_s0
    cdef double* d_e
    cdef double* d_x
    cdef double* d_y
    cdef double* d_px
    cdef double* d_py
    cdef double* d_m
    cdef unsigned char* was_live
    cdef DPass dp  # a damage sample's pass over them (co2scan_dpass)
    cdef Py_ssize_t k, n_run
    cdef const double* src
    cdef Py_ssize_t plane = width * width  # scratch's planes, each of rows width apart
    cdef double* acc = scratch
    cdef double* first = scratch + plane
    cdef double* mid = scratch + 2 * plane
    cdef double* nodes = scratch + 3 * plane
    cdef double* prev = scratch + 4 * plane
    cdef double* until = scratch + 5 * plane
    cdef double* fresh = scratch + 6 * plane
    cdef double* spare = scratch + 7 * plane
    cdef double* win_peak = scratch + 8 * plane  # merged at the end
    cdef double* win_dose = scratch + 9 * plane
    # The larger ends of each cell's interval, and its spans (a row at a time, or the whole
    # window as one run of rows, padding columns included, for the peak samples).
    cdef double* hot = scratch + 10 * plane
    cdef double* span = scratch + 11 * plane
    cdef double* line = spare  # the background's far-node values along a row
    cdef double* row_until = spare + width
    cdef double* col_until = spare + 2 * width
    cdef Py_ssize_t* kx = cand + ld_c
    cdef Batch bt, bt_fresh  # exact Gaussians onto acc (and the background's maps), onto fresh
    bt.ld = bt_fresh.ld = ld_g // OUTER_BATCH
    bt.gx, bt.gy = gauss, gauss + ld_g
    bt_fresh.gx, bt_fresh.gy = gauss + 2 * ld_g, gauss + 3 * ld_g
    w.xi, w.yi = x[i], y[i]
    _cell_span(w.xi - g.window, w.xi + g.window, g.x0, g.cell, g.nx, &w.c0, &w.c1)
    _cell_span(w.yi - g.window, w.yi + g.window, g.y0, g.cell, g.ny, &w.r0, &w.r1)
    nr, nc = w.r1 - w.r0, w.c1 - w.c0
    box.x_lo, box.x_hi = g.x0 + (w.c0 + 0.5) * g.cell, g.x0 + (w.c1 - 0.5) * g.cell
    box.y_lo, box.y_hi = g.y0 + (w.r0 + 0.5) * g.cell, g.y0 + (w.r1 - 0.5) * g.cell
    # The window's rows of the maps are far apart in memory: fetch them now, while
    # the near spots and the background are computed.
    for r in range(nr):
        for c in range(0, nc, 8):
            __builtin_prefetch(&fine[w.r0 + r, w.c0 + c], 1, 3)
            __builtin_prefetch(&dose[w.r0 + r, w.c0 + c], 1, 3)
        __builtin_prefetch(&fine[w.r0 + r, w.c1 - 1], 1, 3)
        __builtin_prefetch(&dose[w.r0 + r, w.c1 - 1], 1, 3)
    s_mid = s_i
    while s_mid < s_peak:
        s_mid = s_mid * g.ratio
    # Damage samples: the fewest that reach damage_s at ratio at most q^3, evenly spaced.
    n_ext, ext_ratio = 0, g.ratio
    if s_mid < g.damage_s:
        n_ext = <Py_ssize_t>ceil(log(g.damage_s / s_mid) / log(g.ratio * g.ratio * g.ratio))
        ext_ratio = pow(g.damage_s / s_mid, 1.0 / n_ext)
    s_last = s_mid
    for q in range(n_ext):
        s_last = s_last * ext_ratio
    t_mid = t[i] + (s_mid - s0[i]) / g.kappa4
    t_last = t[i] + (s_last - s0[i]) / g.kappa4
    bg_s = g.bg_ratio * (s_mid - s0[i])
    # The end of the samples (as thermal_ref._Run.extended_end): later if a spot fired after i
    # and before it sends a pulse that peaks on the window after it, before the snapshots
    # could resolve it. Candidates from the buckets, in firing order. (A bucket lists its
    # spots in firing order: the scan below stops at the first one fired too late.)
    reach = g.window + sqrt(_max(g.snap_s, bk.max_s0) + g.kappa4 * g.block)
    _bucket_span(bk, w.xi, w.yi, reach, &bx0, &bx1, &by0, &by1)
    for by in range(by0, by1):
        for bx in range(by * bk.nbx + bx0, by * bk.nbx + bx1):
            # the bucket's spots after i (a search: its list is in firing order, i.e. in
            # index order) fired before cap, into cand[3]; then merged from the back into the
            # sorted list cand[4]
            item, k = bk.start[bx], bk.start[bx + 1]
            while item < k:
                q = (item + k) // 2
                if bk.items[q] <= i:
                    item = q + 1
                else:
                    k = q
            n_run = 0
            for item in range(item, bk.start[bx + 1]):
                if bk.rec[item] >= cap:
                    break
                cand[3 * ld_c + n_run] = bk.items[item]
                n_run += 1
            k, q = n_ladc - 1, n_ladc + n_run - 1
            n_ladc += n_run
            while n_run > 0:
                if k >= 0 and cand[4 * ld_c + k] > cand[3 * ld_c + n_run - 1]:
                    cand[4 * ld_c + q] = cand[4 * ld_c + k]
                    k -= 1
                else:
                    cand[4 * ld_c + q] = cand[3 * ld_c + n_run - 1]
                    n_run -= 1
                q -= 1
    # its own spot: until the snapshots hold it (the block before counts at its larger end)
    hold = held[i]
    t_end = _max(t_last, hold if hold < cap else cap)
    for q in range(n_ladc):
        j = cand[4 * ld_c + q]
        if t[j] >= t_end:
            break
        ax = _max(fabs(x[j] - w.xi) - g.window, 0.0)
        ay = _max(fabs(y[j] - w.yi) - g.window, 0.0)
        d2 = ax * ax + ay * ay
        if t[j] + (d2 - s0[j]) / g.kappa4 > t_end:  # (most peak before: no hold needed)
            hold = held[j]
            if d2 <= s0[j] + g.kappa4 * (hold - t[j]):
                t_end = _max(t_end, hold if hold < cap else cap)
    # Near spots within reach at the last (widest) sample, from the buckets within the widest
    # reach. Peak samples: background if old, else sharp. Damage samples: slow if handed over
    # or not pulsing on the window, else sharp; later ones also in the hand-over list.
    reach = g.window + sqrt((bk.max_s0 + g.kappa4 * (t_end - lo_t)) * g.reach_log)
    _bucket_span(bk, w.xi, w.yi, reach, &bx0, &bx1, &by0, &by1)
    near.t_end, near.t_i, near.t_mid, near.lo_next, near.bg_s = t_end, t[i], t_mid, lo_next, bg_s
    near.k4, near.reach_log, near.window, near.near = (g.kappa4, g.reach_log, g.window,
                                                       2.0 * g.window + g.cell)
    near.xi, near.yi = w.xi, w.yi
    near.x_lo, near.x_hi, near.y_lo, near.y_hi = box.x_lo, box.x_hi, box.y_lo, box.y_hi
    near.list[0], near.list[1], near.list[2] = cand + 2 * ld_c, NULL, cand + 4 * ld_c
    near.list[3], near.list[4], near.cap = NULL, cand, ld_c
    near.out[0], near.out[1], near.ld_out = recs, recs + 6 * ld_c, ld_c
    for q in range(5):
        near.n[q] = 0
    near.start, near.items, near.rec, near.ld, near.nbx = bk.start, bk.items, bk.rec, bk.ld, bk.nbx
    near.bx0, near.bx1, near.by0, near.by1 = bx0, bx1, by0, by1
    _near(&near)
    n_late, n_slow, n_dsharp, n_bg, n_sharp = near.n[0], near.n[1], near.n[2], near.n[3], near.n[4]
    # n_dsharp, n_sharp <= the pass's spots: 8 n_dsharp + 6 n_sharp + 2 x 5 (n_dsharp + 8)
    # doubles and n_dsharp / 8 + 1 bytes fit in SHARP_PER_SPOT doubles per spot and
    # SHARP_EXTRA more
    d_t = sharp
    p_t = d_t + 8 * n_dsharp
    dp.ld_h = n_dsharp + 8  # (room for eight lanes past the last)
    dp.at_heat = p_t + 6 * n_sharp
    dp.from_heat = dp.at_heat + 5 * dp.ld_h
    # the background routine's spots (damage samples: slow; peak samples: bg), as records
    _recs(&slow_near, recs, ld_c, n_slow)
    _recs(&bg_near, recs + 6 * ld_c, ld_c, n_bg)
    was_live = <unsigned char*>(dp.from_heat + 5 * dp.ld_h)
    p_s0, p_e, p_px, p_py, p_m = (p_t + n_sharp, p_t + 2 * n_sharp, p_t + 3 * n_sharp,
                                  p_t + 4 * n_sharp, p_t + 5 * n_sharp)
    for q in range(n_sharp):
        j = cand[q]
        p_t[q], p_s0[q], p_e[q] = t[j], s0[j], e[j]
        dxj, dyj = x[j] - w.xi, y[j] - w.yi
        p_px[q], p_py[q] = w.xi + dxj, w.yi + dyj
        p_m[q] = _reach_measure(g, dxj, dyj)
    d_s0, d_e, d_x, d_y = d_t + n_dsharp, d_t + 2 * n_dsharp, d_t + 3 * n_dsharp, d_t + 4 * n_dsharp
    d_px, d_py, d_m = d_t + 5 * n_dsharp, d_t + 6 * n_dsharp, d_t + 7 * n_dsharp
    for q in range(n_dsharp):
        j = cand[4 * ld_c + q]
        d_t[q], d_s0[q], d_e[q], d_x[q], d_y[q] = t[j], s0[j], e[j], x[j], y[j]
        dxj, dyj = x[j] - w.xi, y[j] - w.yi
        d_px[q], d_py[q] = w.xi + dxj, w.yi + dyj
        d_m[q] = _reach_measure(g, dxj, dyj)
    for q in range(n_dsharp // 8 + 1):
        was_live[q] = 0
    dp.t, dp.s0, dp.e, dp.x, dp.y, dp.px, dp.py, dp.m = d_t, d_s0, d_e, d_x, d_y, d_px, d_py, d_m
    dp.live, dp.n, dp.k4, dp.reach_log = was_live, n_dsharp, k4, reach_log
    dp.resolved = RESOLVED_RATIO
    dp.terms, dp.ld_t, dp.bnd = terms, ld_t, cand + 2 * ld_c
    _background(g, &w, t[i], b, cur, blur, &bg_near, first, nodes, width, kx, ex, ey, line,
                terms, ld_t, &bt, 0, nr, 0, nc)
    if t_mid > t[i]:
        _background(g, &w, t_mid, b, cur, blur, &bg_near, mid, nodes, width, kx, ex, ey, line,
                    terms, ld_t, &bt, 0, nr, 0, nc)
    # Each cell's damage integral ends where the first later spot whose window covers it
    # fires (that window takes over), else at the last sample.
    for r in range(nr):
        for c in range(width):  # padding columns never integrate
            until[r * width + c] = t_end if c < nc else -INFINITY
    for q in range(n_late):
        j = cand[2 * ld_c + q]
        tj = t[j]
        if not (tj > t[i] or (tj == t[i] and j > i)):
            continue
        # The covered cells form a box: its columns, then its rows.
        _covered(g.x0, g.cell, w.c0, nc, x[j], inner, &ca, &cb)
        _covered(g.y0, g.cell, w.r0, nr, y[j], inner, &ra, &rb)
        for r in range(ra, rb):
            for c in range(ca, cb):
                if tj < until[r * width + c]:
                    until[r * width + c] = tj
    # The latest hand-over of each row and of each column: the box of the cells still
    # integrating after a time is the span of the rows and of the columns whose latest is after it.
    for c in range(nc):
        col_until[c] = t[i]
    until_max = t[i]
    for r in range(nr):
        tj = t[i]  # the row's latest
        for c in range(nc):
            tj = _max(tj, until[r * width + c])
            col_until[c] = _max(col_until[c], until[r * width + c])
        row_until[r] = tj
        until_max = _max(until_max, tj)
    for r in range(nr):
        for c in range(nc):
            win_peak[r * width + c], win_dose[r * width + c] = -1.0, 0.0
    ra, rb, ca, cb = 0, nr, 0, nc
    ts = t[i]
    s_base, k_base = s_i, 0
    while True:
        if started and s_prev >= s_peak:
            if t_prev >= until_max:
                break
            # Damage sample: only the cells still integrating (until > t_prev), their box.
            ra, rb, ca, cb = nr, 0, nc, 0
            for r in range(nr):
                if row_until[r] > t_prev:
                    ra, rb = min(ra, r), r + 1
            for c in range(nc):
                if col_until[c] > t_prev:
                    ca, cb = min(ca, c), c + 1
            # The slow part at this sample (and, at the first one, at the last peak sample:
            # first, free after the peak samples, keeps it), each sharp spot exact for the
            # peak and at its largest over the interval for the damage (mid).
            # From the second damage sample on, the start's sum comes from the last sample's
            # full value (prev): its spots that are not resolved now taken out, the resolved
            # ones it left out (out of reach then) added.
            reuse = slow_ready
            if not slow_ready:
                # later boxes lie inside this one: its centre and half-diagonal rho
                box_x = g.x0 + (w.c0 + 0.5 * (ca + cb - 1) + 0.5) * g.cell
                box_y = g.y0 + (w.r0 + 0.5 * (ra + rb - 1) + 0.5) * g.cell
                taylor_s = DAMAGE_TAYLOR_RATIO * (((cb - ca - 1) * 0.5 * g.cell) ** 2
                                                  + ((rb - ra - 1) * 0.5 * g.cell) ** 2)
                _background(g, &w, t_prev, b, cur, blur, &slow_near, first, nodes, width, kx,
                            ex, ey, line, terms, ld_t, &bt, ra, rb, ca, cb)
                slow_ready = True
            _background(g, &w, ts, b, cur, blur, &slow_near, acc, nodes, width, kx, ex, ey,
                        line, terms, ld_t, &bt, ra, rb, ca, cb)
            # Sharp spots resolved by the interval (width grown at most RESOLVED_RATIO) at its
            # ends, with the slow part (fresh: at t_prev, acc: at ts); then the others
            # exact at ts for the peak and at their largest over the interval (mid).
            # The start's sum begins as the slow part at t_prev (first, at the first damage
            # sample; not read again) or the last sample's whole sum (prev): a row at a time.
            src = prev if reuse else first
            for r in range(ra, rb):
                memcpy(&fresh[r * width + ca], src + r * width + ca, (cb - ca) * sizeof(double))
            lo_ts = _boundary(g, _block_of(g, b, ts)) - g.handover
            # Each spot exact, or once at least taylor_s wide in a Taylor sum about the box's
            # centre: those at ts listed in terms' rows 0-4, at t_prev in rows 5-9. The
            # others (not resolved) listed in cand[2] (free once the hand-overs are known).
            # In the last sample's sum (prev): in reach and not handed over then (was_live);
            # a spot handed over (fired before lo_ts) is in no later sum: it drops out. (lo_ts
            # never decreases over a window's damage samples, as ts grows: a spot handed over
            # stays so, and the pass lists nothing for it again.)
            _batch_open(&bt, acc, width, ra, rb, ca, cb, g.cell)
            _batch_base(g, &w, &bt)
            _batch_open(&bt_fresh, fresh, width, ra, rb, ca, cb, g.cell)
            # (co2scan_dpass: the spots exact at ts into bt's list, at t_prev into bt_fresh's,
            # both as offsets from bt's first cell, which is bt_fresh's too: the same box; the
            # Taylor sums' into terms' rows 0-4 and 5-9, those to bound into cand[2])
            dp.ts, dp.t_prev, dp.lo_ts, dp.reuse = ts, t_prev, lo_ts, reuse
            dp.taylor_s, dp.box_x, dp.box_y, dp.bx, dp.by = taylor_s, box_x, box_y, bt.bx, bt.by
            _dpass(&dp)
            n_bnd, n_at, n_from = dp.n_bnd, dp.n_at, dp.n_from
            _heat_run(g, &bt, dp.at_heat, dp.ld_h, dp.n_at_heat)
            _heat_run(g, &bt_fresh, dp.from_heat, dp.ld_h, dp.n_from_heat)
            _taylor_add(g, &w, terms, ld_t, 0, n_at, box_x, box_y, acc, width, ex, ey, ra, rb,
                        ca, cb)
            _taylor_add(g, &w, terms, ld_t, 5, n_from, box_x, box_y, fresh, width, ex, ey, ra,
                        rb, ca, cb)
            for r in range(ra, rb):
                for c in range(ca, cb):
                    mid[r * width + c] = _max(fresh[r * width + c], acc[r * width + c])
            _batch_open(&bt, acc, width, ra, rb, ca, cb, g.cell)
            _batch_base(g, &w, &bt)
            _batch_open(&bt_fresh, mid, width, ra, rb, ca, cb, g.cell)
            n_at = 0
            for k in range(n_bnd):
                q = cand[2 * ld_c + k]
                tj = d_t[q]
                s = d_s0[q] + k4 * (ts - tj)
                if s < taylor_s:
                    _batch_heat(g, &bt, d_px[q], d_py[q], s, d_e[q], ts - tj)
                else:
                    n_at = _add_term(terms, ld_t, 0, n_at, box_x - d_x[q], box_y - d_y[q], s,
                                     d_e[q], ts - tj)
                _bound(g, &w, &bt_fresh, mid, width, ra, rb, ca, cb, d_x[q], d_y[q], tj, d_s0[q],
                       d_e[q], t_prev, ts)
            _batch_flush_heat(g, &bt)
            _batch_flush(&bt_fresh)
            _taylor_add(g, &w, terms, ld_t, 0, n_at, box_x, box_y, acc, width, ex, ey, ra, rb,
                        ca, cb)
            for r in range(ra, rb):
                _sample_bounded(g, &win_peak[r * width + ca], &win_dose[r * width + ca],
                                &acc[r * width + ca], &mid[r * width + ca],
                                &until[r * width + ca], span, cb - ca, ts, t_prev)
                # this sample's whole sum, for the next
                memcpy(&prev[r * width + ca], &acc[r * width + ca], (cb - ca) * sizeof(double))
        else:
            frac = (ts - t[i]) / (t_mid - t[i]) if t_mid > t[i] else 0.0
            _lerp(acc, first, mid, (nr - 1) * width + nc, frac)
            any_fresh = False
            _batch_open(&bt, acc, width, ra, rb, ca, cb, g.cell)
            _batch_base(g, &w, &bt)
            _batch_open(&bt_fresh, fresh, width, ra, rb, ca, cb, g.cell)
            _batch_base(g, &w, &bt_fresh)
            for q in range(n_sharp):
                tj = p_t[q]
                if tj > ts:
                    continue
                s = p_s0[q] + k4 * (ts - tj)
                if not (p_m[q] > s * reach_log):  # in reach
                    fresh_j = started and tj > t_prev  # fired within this interval
                    if fresh_j and not any_fresh:
                        any_fresh = True
                        for r in range(ra, rb):
                            for c in range(ca, cb):
                                fresh[r * width + c] = 0.0
                    _batch_heat(g, &bt_fresh if fresh_j else &bt, p_px[q], p_py[q], s, p_e[q],
                                ts - tj)
            _batch_flush_heat(g, &bt)
            _batch_flush_heat(g, &bt_fresh)
            # the whole window (peak samples come before any damage sample) as one run
            _sample_window(g, win_peak, win_dose, acc,
                           fresh if any_fresh else NULL, prev, until, hot,
                           span, (nr - 1) * width + nc, ts, t_prev, started)
        t_prev, s_prev, started = ts, s_i, True
        if s_i < s_peak:
            s_i = s_i * g.ratio
            if s_i >= s_peak:
                s_base, k_base = s_i, 0
            ts = t[i] + (s_i - s0[i]) / g.kappa4
            continue
        # Damage samples: ratio ext_ratio to damage_s, then q to t_end, the last one at t_end
        # (as thermal_ref).
        if k_base < n_ext:
            s_base = s_base * ext_ratio
            k_base += 1
            ts = t[i] + (s_base - s0[i]) / g.kappa4
        elif t_prev < t_end:
            s_base = s_base * g.ratio
            ts = t[i] + (s_base - s0[i]) / g.kappa4
            if ts > t_end:
                ts = t_end
        else:
            break
    for r in range(nr):
        _lock(&row_lock[w.r0 + r])
        _merge_row(&fine[w.r0 + r, w.c0], &dose[w.r0 + r, w.c0], win_peak + r * width,
                   win_dose + r * width, nc)
        _unlock(&row_lock[w.r0 + r])


cdef void _fill_buckets(const Buckets* bk, Py_ssize_t lo, Py_ssize_t hi, const double[::1] x,
                        const double[::1] y, const double[::1] t, const double[::1] s0,
                        const double[::1] e,
                        Py_ssize_t[::1] start, Py_ssize_t[::1] items,
                        double[:, ::1] rec) noexcept nogil:
    """Counting sort of spots lo..hi-1 into square buckets (row-major, CSR in start/items),
    their t, s0, x, y and e in the same order in rec's rows."""
    cdef Py_ssize_t j, k, n = bk.nbx * bk.nby
    for k in range(n + 1):
        start[k] = 0
    for j in range(lo, hi):
        start[_bucket(bk, x[j], y[j]) + 1] += 1
    for k in range(n):
        start[k + 1] += start[k]
    for j in range(lo, hi):
        k = _bucket(bk, x[j], y[j])
        items[start[k]] = j
        rec[0, start[k]], rec[1, start[k]] = t[j], s0[j]
        rec[2, start[k]], rec[3, start[k]] = x[j], y[j]
        rec[4, start[k]] = e[j]
        start[k] += 1
    for k in range(n, 0, -1):
        start[k] = start[k - 1]
    start[0] = 0


cdef inline Py_ssize_t _bucket(const Buckets* bk, double x, double y) noexcept nogil:
    cdef Py_ssize_t bx = <Py_ssize_t>floor((x - bk.x0) / bk.size)
    cdef Py_ssize_t by = <Py_ssize_t>floor((y - bk.y0) / bk.size)
    return min(max(by, 0), bk.nby - 1) * bk.nbx + min(max(bx, 0), bk.nbx - 1)


cdef void _combine(const Geo* g, double[:, ::1] fine, const double[:, ::1] far_peak,
                   double[:, ::1] dose, const double[:, ::1] far_dose,
                   unsigned char[:, ::1] sampled, Py_ssize_t[::1] col_node,
                   double[::1] col_frac, double[:, :, ::1] lines) noexcept nogil:
    """Peak map: the larger of the windows' samples and the interpolated far snapshots;
    damage map: the windows' integrals plus the interpolated far integral. Marks the cells
    some window sampled (the others stay -1 until then). The far grids are interpolated
    bilinearly: to the row first (``lines``: a row of far nodes per thread and grid), then
    along it.
    """
    cdef Py_ssize_t r, c, k, ky, k0, k1
    cdef double py, fy, fx
    cdef double* line_peak
    cdef double* line_dose
    for c in range(g.nx):
        fx = (g.x0 + (c + 0.5) * g.cell - g.fx0) / g.far
        col_node[c] = <Py_ssize_t>floor(fx)
        col_frac[c] = fx - col_node[c]
    k0, k1 = col_node[0], col_node[g.nx - 1] + 2
    for r in prange(g.ny, schedule="static"):
        line_peak = &lines[threadid(), 0, 0]
        line_dose = &lines[threadid(), 1, 0]
        py = (g.y0 + (r + 0.5) * g.cell - g.fy0) / g.far
        ky = <Py_ssize_t>floor(py)
        fy = py - ky
        for k in range(k0, k1):
            line_peak[k] = (1.0 - fy) * far_peak[ky, k] + fy * far_peak[ky + 1, k]
            line_dose[k] = (1.0 - fy) * far_dose[ky, k] + fy * far_dose[ky + 1, k]
        _combine_row(&fine[r, 0], &dose[r, 0], &sampled[r, 0], line_peak, line_dose,
                     &col_node[0], &col_frac[0], g.nx)


cdef struct Chunk:
    Py_ssize_t blocks, n_buckets, aged
    double horizon


cdef void _produce(const Geo* g, Chunk* ch, const Buckets* bk, Py_ssize_t first_block,
                   double[:, :, :, ::1] modes, double[:, :, ::1] tmp,
                   double[:, :, ::1] slot_cur, double[:, :, ::1] slot_blur,
                   Py_ssize_t[:, ::1] slot_start, Py_ssize_t[:, ::1] slot_items,
                   double[:, :, ::1] slot_rec,
                   double[:, ::1] far_peak, double[:, ::1] far_dose, double[:, ::1] far_prev,
                   double[:, ::1] total, const double[::1] taps,
                   const double[::1] block_decay, const double[::1] mode_weight,
                   const double[::1] mode_decay, double[::1] wx, double[::1] wy,
                   double[::1] wq, double[::1] mw, double[::1] wxm, const double[::1] x,
                   const double[::1] y, const double[::1] t, const double[::1] e,
                   const double[::1] s0) noexcept nogil:
    """Far-grid states (sums of the modes at each block boundary, with its deposits, and one
    block later, before the next deposits), snapshots and near-spot buckets of a chunk of
    blocks. Slot k holds block first_block + k; the caller fills slot 0 (zero at the start,
    else the previous chunk's last slot)."""
    cdef Py_ssize_t k, b, q
    cdef Buckets local = bk[0]
    for k in range(ch.blocks + 1):
        b = first_block + k
        if k > 0:
            # modes[aged] is one block past b - 1: add the spots handed over then, and age it.
            slot_cur[k, :, :] = slot_blur[k - 1]
            _deposit(g, modes[ch.aged], slot_cur[k], b - 1, x, y, t, e, s0, mode_weight,
                     mode_decay, wx, wy, wq, mw, wxm)
            _blur(modes[ch.aged], modes[1 - ch.aged], tmp, slot_blur[k], taps, block_decay)
            ch.aged = 1 - ch.aged
        if k < ch.blocks and b < g.n_blocks:
            for q in range(SNAPS_PER_BLOCK):
                _snapshot(g, slot_cur[k], slot_blur[k], q / <double>SNAPS_PER_BLOCK, total,
                          far_peak, far_dose, far_prev, b * SNAPS_PER_BLOCK + q, x, y, t, e,
                          s0, wx, wy)
            local.start, local.items = &slot_start[k, 0], &slot_items[k, 0]
            _fill_buckets(&local, _first_ge(t, _boundary(g, b) - g.handover),
                          _first_gt(t, _boundary(g, b + 1) + ch.horizon), x, y, t, s0, e,
                          slot_start[k], slot_items[k], slot_rec[k])


# The two full-resolution maps (50 MB each for a 2,500 x 2,500 map) and the far-grid states
# are faulted in before the windows run, in parallel (a 2 MiB-aligned part of each per
# thread): the kernel zeroes a page on its first touch; left to the windows, the damage map's
# pages were faulted in (and zeroed) one by one during the pass, inside the merge under a row
# lock, while the other thread waited.
cdef extern from *:
    """
    #if defined(__linux__)
    #include <sys/mman.h>
    #include <unistd.h>
    #if !defined(MADV_POPULATE_WRITE)
    #define MADV_POPULATE_WRITE 23  /* Linux 5.14 */
    #endif
    #endif

    /* Part `part` of `parts` of the bytes [p, p + n): cut at 2 MiB (huge page) addresses, so
       that no two threads fault in the same huge page. */
    static void co2scan_part(char *p, size_t n, Py_ssize_t part, Py_ssize_t parts,
                             char **lo, char **hi) {
        const uintptr_t huge = (uintptr_t)1 << 21, a = (uintptr_t)p, b = a + n;
        uintptr_t l = a + n / parts * part, u = a + n / parts * (part + 1);
        l = part == 0 ? a : (l + huge - 1) & ~(huge - 1);
        u = part + 1 == parts ? b : (u + huge - 1) & ~(huge - 1);
        *lo = (char *)(l < b ? l : b);
        *hi = (char *)(u < b ? u : b);
    }

    /* Fault in the pages wholly inside [lo, hi) now, contents unchanged: one
       madvise(MADV_POPULATE_WRITE) (the kernel zeroes fresh pages), else by writing each
       page's first byte back. */
    static void co2scan_prefault(char *lo, char *hi) {
    #if defined(__linux__)
        const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t l = ((uintptr_t)lo + page - 1) & ~(page - 1), u = (uintptr_t)hi & ~(page - 1);
        if (u <= l || madvise((void *)l, u - l, MADV_POPULATE_WRITE) == 0)
            return;
        for (; l < u; l += page)
            *(volatile char *)l = *(volatile char *)l;
    #else
        (void)lo;
        (void)hi;
    #endif
    }

    /* Part `part` of `parts` of the buffers before the windows: fine (`cells` doubles) set
       to -1 (written, which faults its pages in), the `n` others ([start, start + size))
       faulted in, contents unchanged. */
    static void co2scan_first_touch(double *fine, Py_ssize_t cells, char **start,
                                    const size_t *size, int n, Py_ssize_t part,
                                    Py_ssize_t parts) {
        char *lo, *hi;
        co2scan_part((char *)fine, (size_t)cells * sizeof(double), part, parts, &lo, &hi);
        double *f = fine + (lo - (char *)fine + sizeof(double) - 1) / sizeof(double);
        for (double *end = fine + (hi - (char *)fine + sizeof(double) - 1) / sizeof(double);
                f < end; f++)
            *f = -1.0;
        for (int k = 0; k < n; k++) {
            co2scan_part(start[k], size[k], part, parts, &lo, &hi);
            co2scan_prefault(lo, hi);
        }
    }
    """
    void _first_touch "co2scan_first_touch"(double* fine, Py_ssize_t cells, char** start,
                                             const size_t* size, int n, Py_ssize_t part,
                                             Py_ssize_t parts) nogil


def _sparse_zeros(shape, dtype=np.float64):
    """A zero array in a mapping of its own, in 4 KiB pages: the system zeroes only the
    pages written. For the lists sized for every spot of which a window uses the first few
    thousand entries (cand, terms, sharp, recs: 83 MB at 100,000 spots on two threads), and
    the buckets' (b_items, b_rec: 8 MB, for the most spots a block's buckets hold): numpy
    asks for 2 MiB pages for arrays of 4 MB or more, each zeroed in full when one entry in it
    is written, and calloc clears every byte of a reused heap block (where glibc serves such
    sizes once a block that size has been freed)."""
    count = int(np.prod(shape))
    if not hasattr(mmap, "MAP_PRIVATE"):
        return np.zeros(shape, dtype)
    buf = mmap.mmap(-1, max(count * np.dtype(dtype).itemsize, 1), flags=mmap.MAP_PRIVATE)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):  # (transparent_hugepage "always")
        try:
            buf.madvise(mmap.MADV_NOHUGEPAGE)
        except OSError:  # a system without huge pages refuses the hint (EINVAL): no matter
            pass
    return np.frombuffer(buf, dtype, count).reshape(shape)


def peak_rise(const double[::1] x, const double[::1] y, const double[::1] t,
              const double[::1] e, const double[::1] s0, layout):
    """Windowed superposition plus far grid; spots sorted by ``t``.

    Returns (peak rise map on the fine grid, damage-integral map on the fine grid, far grid
    at the end holding the heat still in the slab, map of the cells some window sampled);
    see controller.thermal_ref.peak_rise.
    Blocks run in chunks: thread 0 produces the far-grid states of the next chunk while the
    other threads sample the windows of this one, then joins them (one barrier per chunk).
    """
    cdef Geo g = _geo(layout)
    cdef const double[::1] taps = layout.taps
    cdef const double[::1] mode_weight = layout.mode_weight
    cdef const double[::1] mode_decay = layout.mode_decay_per_s
    cdef const double[::1] block_decay = np.exp(-np.asarray(mode_decay) * layout.block_s)
    cdef const double[::1] table = layout.loss_table  # keeps g.table alive
    cdef const double[::1] rate_table = layout.rate_table  # and g.rate_table
    cdef int n_threads = openmp.omp_get_max_threads()
    cdef Py_ssize_t n = x.shape[0], km = mode_weight.shape[0]
    cdef Chunk ch
    ch.blocks = CHUNK_BLOCKS
    ch.aged = 0
    ch.horizon = _max(g.ratio * _max(2.0 * g.window * g.window, g.damage_s) / g.kappa4,
                      (LOOKAHEAD - 1) * g.block)
    shape = (g.nfy, g.nfx)
    # One peak map and one damage map for all threads: windows merge into them a row at a
    # time, under the row's lock.
    fine_np = np.empty((g.ny, g.nx))  # -1 and faulted in by _first_touch
    dose_np = np.zeros((g.ny, g.nx))
    row_lock_np = np.zeros(g.ny, dtype=np.uint8)
    cdef unsigned char[::1] row_lock = row_lock_np
    cdef double[:, ::1] fine = fine_np, dose = dose_np
    cdef double[:, ::1] far_peak = np.zeros(shape), total = np.zeros(shape)
    cdef double[:, ::1] far_dose = np.zeros(shape), far_prev = np.zeros(shape)
    cdef double[:, :, :, ::1] modes = np.zeros((2, g.nfy, g.nfx, km))
    cdef double[:, :, ::1] tmp = np.zeros((g.nfy, g.nfx, km))
    cdef double[:, :, :, ::1] cur = np.zeros((3, ch.blocks + 1, g.nfy, g.nfx))
    cdef double[:, :, :, ::1] blur = np.zeros((3, ch.blocks + 1, g.nfy, g.nfx))
    width = int(2.0 * g.window / g.cell) + 3
    cdef double[:, :, :, ::1] scratch = np.zeros((n_threads, 12, width, width))
    # a line's nodes or cells: the far grid's, a window's, and the most nodes a deposit
    # weighs (within its reach at the hand-over, a block late at most: _weights)
    deposit = 2.0 * math.sqrt((float(np.max(s0)) + g.kappa4 * (g.handover + g.block))
                              * g.reach_log) / g.far
    longest = max(g.nfx, g.nfy, width, int(deposit) + 3) + 1  # count <= floor(deposit) + 1,
    # + 2 for rounding
    cdef double[:, ::1] ex = np.zeros((n_threads, longest)), ey = np.zeros((n_threads, longest))
    cdef double[::1] pwx = np.zeros(longest), pwy = np.zeros(longest), pwq = np.zeros(longest)
    cdef double[::1] mw = np.zeros(km), wxm = np.zeros(2 * longest * km)
    cdef Py_ssize_t[:, :, ::1] cand = _sparse_zeros((n_threads, 5, max(n, width)), np.intp)
    cdef double[:, :, ::1] terms = _sparse_zeros((n_threads, 10, max(n, width)))
    cdef double[:, ::1] sharp = _sparse_zeros((n_threads, SHARP_PER_SPOT * n + SHARP_EXTRA))
    # each spot's hold (_hold), for the windows' ends: once for the pass, not per window
    cdef double[::1] held = np.empty(max(n, 1))
    cdef Py_ssize_t j
    # the background routine's records: a window's slow and bg lists, 6 rows each, as cand's
    cdef double[:, :, ::1] recs = _sparse_zeros((n_threads, 12, max(n, width)))
    cdef double[:, :, ::1] gauss = np.zeros((n_threads, 4, OUTER_BATCH * 16 * ((width + 15) // 16)))
    # Buckets of the spots that can be near spots of one block's windows.
    cdef Buckets bk
    bk.size = max(4.0 * g.window, g.far)
    bk.x0, bk.y0, bk.max_s0 = np.min(x), np.min(y), np.max(s0)
    bk.nbx = int((np.max(x) - bk.x0) / bk.size) + 1
    bk.nby = int((np.max(y) - bk.y0) / bk.size) + 1
    cdef Py_ssize_t[:, :, ::1] b_start = np.zeros((3, ch.blocks, bk.nbx * bk.nby + 1),
                                                  dtype=np.intp)
    cdef Py_ssize_t b_most = 1, bb  # the most spots a block's buckets hold (as _produce)
    for bb in range(g.n_blocks):
        b_most = max(b_most, _first_gt(t, _boundary(&g, bb + 1) + ch.horizon)
                     - _first_ge(t, _boundary(&g, bb) - g.handover))
    cdef Py_ssize_t[:, :, ::1] b_items = _sparse_zeros((3, ch.blocks, b_most), np.intp)
    cdef double[:, :, :, ::1] b_rec = _sparse_zeros((3, ch.blocks, 5, b_most))
    cdef Py_ssize_t[::1] block_first = np.zeros(g.n_blocks + 2, dtype=np.intp)
    cdef Py_ssize_t[::1] col_node = np.zeros(g.nx, dtype=np.intp)
    cdef double[::1] col_frac = np.zeros(g.nx)
    cdef double[:, :, ::1] lines = np.zeros((n_threads, 2, g.nfx))
    sampled_np = np.empty((g.ny, g.nx), dtype=np.bool_)  # every cell set by _combine
    cdef unsigned char[:, ::1] sampled = sampled_np.view(np.uint8)
    cdef Py_ssize_t c, i = 0, b = 0, k = 0, lo, hi, slot, part
    cdef Py_ssize_t n_chunks = (g.n_blocks + ch.blocks - 1) // ch.blocks
    cdef Buckets mine
    cdef int tid
    # The windows' shared counter (assigned only outside the parallel block: an assignment
    # inside would make it private to each thread, and every thread would run every window),
    # and a run's first window.
    cdef Py_ssize_t next_window, first = 0
    # faulted in with fine, in parallel: dose (zero), sampled (set in full by _combine), the
    # far-grid states and modes (zero)
    cdef char* touch_start[6]
    cdef size_t touch_size[6]
    touch_start[:] = [<char*>&dose[0, 0], <char*>&sampled[0, 0], <char*>&cur[0, 0, 0, 0],
                      <char*>&blur[0, 0, 0, 0], <char*>&modes[0, 0, 0, 0], <char*>&tmp[0, 0, 0]]
    touch_size[:] = [dose.nbytes, sampled.nbytes, cur.nbytes, blur.nbytes, modes.nbytes,
                     tmp.nbytes]
    with nogil:
        for part in prange(n_threads, schedule="static", chunksize=1):
            _first_touch(&fine[0, 0], g.ny * g.nx, touch_start, touch_size, 6, part, n_threads)
            for j in range(n * part // n_threads, n * (part + 1) // n_threads):
                held[j] = _hold(&g, t[j], s0[j])
        for b in range(g.n_blocks + 2):
            block_first[b] = _first_ge(t, _boundary(&g, b))
        # Chunk cc lives in slot cc % 3. The windows of chunk c run once chunk c + 1 is ready
        # (they sample up to LOOKAHEAD <= CHUNK_BLOCKS blocks ahead), while thread 0 produces
        # chunk c + 2.
        for c in range(2):
            if c > 0:
                cur[c, 0] = cur[c - 1, ch.blocks]
                blur[c, 0] = blur[c - 1, ch.blocks]
            _produce(&g, &ch, &bk, c * ch.blocks, modes, tmp, cur[c], blur[c], b_start[c],
                     b_items[c], b_rec[c], far_peak, far_dose, far_prev, total, taps,
                     block_decay, mode_weight, mode_decay, pwx, pwy, pwq, mw, wxm, x, y, t, e,
                     s0)
        for c in range(n_chunks):
            slot = c % 3
            lo = block_first[c * ch.blocks]
            hi = block_first[min((c + 1) * ch.blocks, g.n_blocks)]
            next_window = lo
            with parallel():
                tid = threadid()
                if tid == 0 and c + 2 <= n_chunks:
                    cur[(c + 2) % 3, 0] = cur[(c + 1) % 3, ch.blocks]
                    blur[(c + 2) % 3, 0] = blur[(c + 1) % 3, ch.blocks]
                    _produce(&g, &ch, &bk, (c + 2) * ch.blocks, modes, tmp, cur[(c + 2) % 3],
                             blur[(c + 2) % 3], b_start[(c + 2) % 3], b_items[(c + 2) % 3],
                             b_rec[(c + 2) % 3],
                             far_peak, far_dose, far_prev, total, taps, block_decay,
                             mode_weight, mode_decay, pwx, pwy, pwq, mw, wxm, x, y, t, e, s0)
                # The windows in runs of WINDOW_GRAIN, taken in turn from the shared counter
                # (not a prange: GCC starts an omp for whose variables are both firstprivate
                # and lastprivate, as Cython declares them, with a barrier, which kept the
                # other threads waiting while thread 0 produced). They now run while thread 0
                # produces chunk c + 2: they read slots c and c + 1 (a window at most
                # LOOKAHEAD <= CHUNK_BLOCKS blocks ahead), _produce writes slot c + 2 and its
                # own far-grid scratch.
                while True:
                    first = _take(&next_window, WINDOW_GRAIN)
                    if first >= hi:
                        break
                    for i in range(first, min(first + WINDOW_GRAIN, hi)):
                        b = c * ch.blocks
                        while block_first[b + 1] <= i:
                            b = b + 1
                        k = b - c * ch.blocks
                        mine = bk
                        mine.start, mine.items = &b_start[slot, k, 0], &b_items[slot, k, 0]
                        mine.rec, mine.ld = &b_rec[slot, k, 0, 0], b_rec.shape[3]
                        # the thread's scratch by pointers (no memoryview slices: each would
                        # take and release a reference, atomically, on an object both threads
                        # use)
                        _window(&g, &mine, i, b, cur, blur, x, y, t, e, s0, fine, dose,
                                &scratch[tid, 0, 0, 0], scratch.shape[3], &cand[tid, 0, 0],
                                cand.shape[2], &terms[tid, 0, 0], terms.shape[2],
                                &ex[tid, 0], &ey[tid, 0], &gauss[tid, 0, 0],
                                gauss.shape[2], &sharp[tid, 0], &recs[tid, 0, 0],
                                &row_lock[0], &held[0])
        # The last snapshot, at the end of the last block, and the heat left at the end.
        k = g.n_blocks - (n_chunks - 1) * ch.blocks
        slot = (n_chunks - 1) % 3
        _snapshot(&g, cur[slot, k], cur[slot, k], 0.0, total, far_peak, far_dose, far_prev,
                  g.n_blocks * SNAPS_PER_BLOCK, x, y, t, e, s0, pwx, pwy)
        _combine(&g, fine, far_peak, dose, far_dose, sampled, col_node, col_frac, lines)
    return fine_np, dose_np, np.array(cur[slot, k]), sampled_np
