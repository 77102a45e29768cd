# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: annotation_typing=False
"""Compiled delivered reports; the pure-Python reference is :mod:`sim_hw.reports_ref`
(tests/test_sim_reports_kernel.py checks both give the same bytes and values).

The frames of a fired chunk are built without the interpreter lock, so the host side of an
in-process link may run meanwhile (a chunk of up to ~4k spots is some 25 µs; in-process
streaming measured the same with the lock released or held, bench/bench_drivers.py). Bounds
checks are off: the record buffer's length is checked against ``pending`` and the number of
times on entry, and the output holds a largest frame per report (at most one report per
spot, plus one for the records pending before).
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.math cimport isnan, NAN
from libc.stdint cimport uint8_t
from libc.stdlib cimport free, malloc

from drivers.protocol._framing cimport frame_into
from drivers.protocol.messages import DELIVERED_DTYPE, MAX_WIRE_FRAME, PROTOCOL_VERSION

from sim_hw import reports_ref
from sim_hw.reports_ref import DELIVERED, DELIVERED_MAX_AGE_S, DELIVERED_MAX_SPOTS

cdef enum:
    RECORD_SIZE = 8
    MAX_SPOTS = 64
    # a report's wire frame: 4 + 64 * 8 payload bytes, header, CRC, COBS and delimiters
    REPORT_FRAME_CAPACITY = 544

assert DELIVERED_DTYPE.itemsize == RECORD_SIZE and DELIVERED_MAX_SPOTS == MAX_SPOTS
assert DELIVERED.struct.size == 4 and DELIVERED.struct.format == "<HH"
assert 2 + 6 + 4 + 4 + MAX_SPOTS * RECORD_SIZE + 3 <= REPORT_FRAME_CAPACITY <= MAX_WIRE_FRAME
# As Python names: tests/test_kernel_constants.py checks them against the reference.
record_size = RECORD_SIZE
max_spots = MAX_SPOTS
cdef double MAX_AGE_S = DELIVERED_MAX_AGE_S
cdef int TYPE_ID = DELIVERED.type_id, VERSION = PROTOCOL_VERSION


def delivered_reports(records, times_s, Py_ssize_t pending, flush_at_s, Py_ssize_t credits,
                      Py_ssize_t seq):
    """As :func:`sim_hw.reports_ref.delivered_reports`; ``times_s`` a contiguous float64
    array. Inputs outside what the device produces (a record buffer of another length, credits
    beyond u16) go to the reference."""
    cdef const uint8_t[::1] data = records
    cdef const double[::1] times = times_s
    cdef Py_ssize_t total = times.shape[0], first = 0, count = pending, start = 0, end, limit
    cdef Py_ssize_t reports = 0, size = 0
    cdef double flush = NAN if flush_at_s is None else flush_at_s
    cdef uint8_t head[4]
    cdef uint8_t* out
    if (not 0 <= pending < MAX_SPOTS or data.shape[0] != (pending + total) * RECORD_SIZE
            or credits < 0 or credits + total > 0xFFFF):
        return reports_ref.delivered_reports(records, times_s, pending, flush_at_s, credits, seq)
    out = <uint8_t*>malloc((total + 1) * REPORT_FRAME_CAPACITY)
    if out == NULL:
        raise MemoryError()
    try:
        with nogil:
            while start < total:
                if isnan(flush):
                    flush = times[start] + MAX_AGE_S
                limit = start + MAX_SPOTS - count
                end = start
                while end < limit and end < total and times[end] < flush:
                    end += 1  # min(limit, bisect_left(times, flush, start)): times ascend
                count += end - start
                credits += end - start
                if end < total or count >= MAX_SPOTS:
                    head[0], head[1] = count & 0xFF, count >> 8
                    head[2], head[3] = credits & 0xFF, credits >> 8
                    size += frame_into(VERSION, TYPE_ID, (seq + reports) & 0xFFFF, head, 4,
                                       &data[0] + first * RECORD_SIZE, count * RECORD_SIZE,
                                       out + size)
                    reports += 1
                    first += count
                    count = 0
                    flush = NAN
                start = end
        wire = PyBytes_FromStringAndSize(<char*>out, size)
    finally:
        free(out)
    return wire, reports, first, None if isnan(flush) else flush
