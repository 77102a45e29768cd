# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: annotation_typing=False
"""Compiled scans of a message's records; the numpy references are
:mod:`drivers.protocol.records_ref` (tests/test_protocol_records_kernels.py compares
them). Records that are not a contiguous array of their definition's dtype go to the
reference. Bounds checks are off: offsets come from the dtype, rows from the array's length.

The scans keep the interpreter lock: a message holds at most 255 records, a few microseconds'
work, and handing the lock to another thread for that would cost more than it frees.
"""

import numpy as np

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int64_t, uint8_t

from drivers.protocol import records_ref

cdef enum:
    MAX_FIELDS = 16

#: (definition name, field names) -> (names, offsets, sizes, signed) of the integer fields
_LAYOUTS = {}


def _layout(definition, names):
    key = (definition.name, names)
    layout = _LAYOUTS.get(key)
    if layout is None:
        dtype = definition.record_dtype
        names = names or dtype.names
        fields = [dtype.fields[name] for name in names]
        if len(fields) > MAX_FIELDS or any(
                f[0].kind not in "iu" or f[0].itemsize not in (1, 2, 4)
                or f[0].byteorder == ">" for f in fields):
            layout = False  # not integers of at most 32 bits, little-endian: the reference
        else:
            layout = (tuple(names), [f[1] for f in fields], [f[0].itemsize for f in fields],
                      [f[0].kind == "i" for f in fields])
        _LAYOUTS[key] = layout
    return layout


cdef inline int64_t _field(const uint8_t* p, int size, bint signed) noexcept nogil:
    if size == 1:
        return <signed char>p[0] if signed else p[0]
    if size == 2:
        return <short>(p[0] | (p[1] << 8)) if signed else (p[0] | (p[1] << 8))
    cdef unsigned int word = p[0] | (p[1] << 8) | (p[2] << 16) | (<unsigned int>p[3] << 24)
    return <int>word if signed else word


cdef void _extremes(const uint8_t* data, Py_ssize_t count, Py_ssize_t itemsize, int size,
                    bint signed, int64_t* low, int64_t* high) noexcept nogil:
    """(lowest, highest) of one field (``data`` at its first record), one size per loop."""
    cdef Py_ssize_t i
    cdef int64_t value, lo = _field(data, size, signed), hi = lo
    for i in range(1, count):
        value = _field(data + i * itemsize, size, signed)
        lo = value if value < lo else lo
        hi = value if value > hi else hi
    low[0], high[0] = lo, hi


def record_extremes(definition, records, names=None):
    """As :func:`drivers.protocol.records_ref.record_extremes`, one pass per field."""
    layout = _layout(definition, names)
    if (layout is False or not len(records) or records.dtype != definition.record_dtype
            or not records.flags.c_contiguous):
        return records_ref.record_extremes(definition, records, names)
    names, offsets, sizes, signs = layout
    cdef Py_buffer buffer
    cdef const uint8_t* data
    cdef Py_ssize_t count = len(records), itemsize = records.dtype.itemsize
    cdef int nfields = len(names), k
    cdef int offset[MAX_FIELDS]
    cdef int size[MAX_FIELDS]
    cdef bint signed[MAX_FIELDS]
    cdef int64_t low[MAX_FIELDS]
    cdef int64_t high[MAX_FIELDS]
    for k in range(nfields):
        offset[k], size[k], signed[k] = offsets[k], sizes[k], signs[k]
    PyObject_GetBuffer(records, &buffer, PyBUF_SIMPLE)
    try:
        data = <const uint8_t*>buffer.buf
        for k in range(nfields):  # one loop per field, its size and sign fixed
            if size[k] == 1:
                _extremes(data + offset[k], count, itemsize, 1, signed[k], &low[k], &high[k])
            elif size[k] == 2:
                _extremes(data + offset[k], count, itemsize, 2, signed[k], &low[k], &high[k])
            else:
                _extremes(data + offset[k], count, itemsize, 4, signed[k], &low[k], &high[k])
    finally:
        PyBuffer_Release(&buffer)
    return {names[k]: (low[k], high[k]) for k in range(nfields)}


#: record dtype -> whether it starts with a little-endian u32 ``index`` (the compiled scan)
_INDEX_FIRST = {}


def _index_first(dtype):
    known = _INDEX_FIRST.get(dtype)
    if known is None:
        known = _INDEX_FIRST[dtype] = (
            dtype.names is not None and "index" in dtype.names
            and dtype.fields["index"][1] == 0 and dtype["index"] == np.dtype("<u4"))
    return known


def first_out_of_sequence(records, first):
    """As :func:`drivers.protocol.records_ref.first_out_of_sequence`, for u32 indices at offset 0."""
    if (not _index_first(records.dtype) or not records.flags.c_contiguous
            or not 0 <= first < 1 << 62):
        return records_ref.first_out_of_sequence(records, first)
    cdef Py_buffer buffer
    cdef const uint8_t* p
    cdef Py_ssize_t count = len(records), itemsize = records.dtype.itemsize, i, wrong = -1
    cdef int64_t expected = first
    PyObject_GetBuffer(records, &buffer, PyBUF_SIMPLE)
    try:
        for i in range(count):
            p = <const uint8_t*>buffer.buf + i * itemsize
            if (p[0] | (p[1] << 8) | (p[2] << 16) | (<int64_t>p[3] << 24)) != expected + i:
                wrong = i
                break
    finally:
        PyBuffer_Release(&buffer)
    return wrong
