# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled fire times of buffered spots; the numpy reference is
:func:`sim_hw.firing_ref.fire_times` (tests/test_sim_firing_kernel.py checks the values are
equal bit for bit: the same IEEE operations in the same order, the sum sequential like
numpy's cumsum). Bounds checks are off: every length is checked on entry.
"""

import numpy as np

from libc.math cimport ceil
from libc.stdint cimport int64_t, uint8_t, uint16_t

from drivers.protocol.messages import GALVO_FULL_SCALE_LSB

cdef double FULL_SCALE_LSB = GALVO_FULL_SCALE_LSB


def fire_times(double first_s, const int64_t[:] mirror_x, const int64_t[:] mirror_y,
               const uint16_t[:] pulse_us, const uint8_t[:] stack, double period_s,
               galvo) -> np.ndarray:
    """As :func:`sim_hw.firing_ref.fire_times`, in one pass without the GIL."""
    cdef Py_ssize_t count = mirror_x.shape[0], i
    cdef int64_t field_size_um = galvo.calibration.field_size_um, settle_us = galvo.settle_us
    cdef int64_t move_lsb, dy, jump_us
    cdef double speed = galvo.speed_um_per_ms, t, busy_s
    if count == 0 or mirror_y.shape[0] != count or pulse_us.shape[0] != count - 1 \
            or stack.shape[0] != count - 1:
        raise ValueError(f"{count} and {mirror_y.shape[0]} positions, {pulse_us.shape[0]} "
                         f"pulses and {stack.shape[0]} stacks: expected n, n, n - 1, n - 1")
    times = np.empty(count, np.float64)
    cdef double[::1] out = times
    with nogil:
        t = out[0] = first_s
        for i in range(1, count):
            move_lsb = mirror_x[i] - mirror_x[i - 1]
            move_lsb = -move_lsb if move_lsb < 0 else move_lsb
            dy = mirror_y[i] - mirror_y[i - 1]
            dy = -dy if dy < 0 else dy
            move_lsb = dy if dy > move_lsb else move_lsb
            if move_lsb == 0:
                jump_us = 0
            else:  # as Galvo._travel_us: float64 µm, then whole µs
                jump_us = <int64_t>ceil((<double>(move_lsb * field_size_um) / FULL_SCALE_LSB)
                                        * 1000.0 / speed) + settle_us
            busy_s = (<double>(<int64_t>pulse_us[i - 1] * stack[i - 1])) / 1e6 + jump_us / 1e6
            t += busy_s if busy_s > period_s else period_s
            out[i] = t
    return times
