# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled ground-truth rows of fired spots; the numpy reference is
:func:`sim_hw.truth.fired_rows_reference` (tests/test_sim_truth_kernel.py compares them).

Byte offsets are those of SPOT_DTYPE and TRUTH_DTYPE, which :mod:`sim_hw.truth` asserts.
Bounds checks are off: every length is checked on entry. The rows are written without the GIL.
"""

import sys

from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.string cimport memcpy

cdef enum:
    SPOT_SIZE = 16
    TRUTH_SIZE = 28
    COMMON = 15  # index, x_lsb, y_lsb, energy_uj, pulse_us, stack: same bytes in both
    MEASURED_AT = 15
    TIME_AT = 19
    PASS_AT = 27

# As Python names: tests/test_kernel_constants.py checks them against the dtypes' layouts.
spot_size = SPOT_SIZE
truth_size = TRUTH_SIZE
common = COMMON
measured_at = MEASURED_AT
time_at = TIME_AT
pass_at = PASS_AT

assert sys.byteorder == "little"  # float64 and the measured u32 are copied as native bytes


def fill_fired_rows(uint8_t[::1] out, const uint8_t[::1] spots, const int64_t[::1] measured_uj,
                    const double[::1] time_s, uint8_t pass_index) -> None:
    """Write the TRUTH_DTYPE rows (``out``, as bytes) of fired SPOT records (``spots``, as
    bytes) with their monitor readings (0..2**32-1) and fire times."""
    cdef Py_ssize_t count = measured_uj.shape[0], i
    cdef uint8_t* row
    cdef uint32_t measured
    if (time_s.shape[0] != count or spots.shape[0] != count * SPOT_SIZE
            or out.shape[0] != count * TRUTH_SIZE):
        raise ValueError(f"{count} readings, {time_s.shape[0]} times, "
                         f"{spots.shape[0]} record bytes, {out.shape[0]} row bytes")
    with nogil:
        for i in range(count):
            row = &out[i * TRUTH_SIZE]
            memcpy(row, &spots[i * SPOT_SIZE], COMMON)
            measured = <uint32_t>measured_uj[i]
            memcpy(row + MEASURED_AT, &measured, 4)
            memcpy(row + TIME_AT, &time_s[i], 8)
            row[PASS_AT] = pass_index
