# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: annotation_typing=False
# distutils: libraries = z
"""Compiled frame encoding and checking; the pure-Python reference is
:mod:`drivers.protocol.framing_ref`.

Same bytes and frames as the reference (tests/test_protocol_framing_kernels.py compares them
on random and malformed input). A frame that fails any check here is handed to the reference,
which raises its own error: untrusted input gets exactly the reference's ``FrameError``.
Frames of at least :data:`NOGIL_MIN_BYTES` are checked and encoded without the interpreter
lock, so the other side of an in-process link runs meanwhile.

Bounds checks are off: every index stays below a length checked on entry (``MAX_WIRE_FRAME``,
``MAX_PAYLOAD``) and the buffers are sized for the largest legal frame.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint32_t
from libc.string cimport memchr, memcpy

from drivers.protocol import framing_ref
from drivers.protocol.framing_ref import MIN_FRAME, RawFrame
from drivers.protocol.messages import MAX_FRAME, MAX_PAYLOAD, MAX_WIRE_FRAME

cdef enum:
    HEADER_SIZE = 6
    CRC_SIZE = 4
    # buffers: one raw frame, one wire frame (COBS with both delimiters)
    RAW_CAPACITY = 4106
    WIRE_CAPACITY = 4126
    # frames from this size on are worked on without the interpreter lock
    NOGIL_MIN_BYTES = 1024
    MIN_FRAME_SIZE = HEADER_SIZE + CRC_SIZE

assert RAW_CAPACITY == MAX_FRAME and WIRE_CAPACITY >= MAX_WIRE_FRAME  # with delimiters
assert MIN_FRAME_SIZE == MIN_FRAME

cdef extern from "zlib.h" nogil:
    unsigned long zlib_crc32 "crc32"(unsigned long crc, const unsigned char* buf,
                                      unsigned int size)


cdef inline uint32_t _word(const uint8_t* p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint32_t crc32(const uint8_t* data, Py_ssize_t size) noexcept nogil:
    """``zlib.crc32(data)``: the same zlib routine, called without the interpreter lock
    (``size`` is at most a raw frame, RAW_CAPACITY bytes)."""
    return <uint32_t>zlib_crc32(0, data, <unsigned int>size)


cdef Py_ssize_t _cobs_encode(const uint8_t* src, Py_ssize_t size, uint8_t* dst) noexcept nogil:
    """``cobs.encode`` (PyPI cobs: no empty block after a full one at the end) into ``dst``
    (room for ``size + size // 254 + 1`` bytes); returns the length."""
    cdef Py_ssize_t code_at = 0, out = 1, i = 0, run, limit
    cdef const uint8_t* zero
    while True:
        limit = size - i if size - i < 254 else 254
        zero = <const uint8_t*>memchr(src + i, 0, limit)
        run = limit if zero == NULL else zero - (src + i)
        memcpy(dst + out, src + i, run)
        out += run
        i += run
        if run == 254:  # a full block: no zero follows it
            dst[code_at] = 0xFF
            if i == size:
                return out
        else:  # a zero follows, or the input ends
            dst[code_at] = run + 1
            if i == size:
                return out
            i += 1
        code_at = out
        out += 1


cdef Py_ssize_t _cobs_decode(const uint8_t* src, Py_ssize_t size, uint8_t* dst) noexcept nogil:
    """``cobs.decode`` into ``dst`` (room for ``size`` bytes) of an input that ``cobs.encode``
    gives back unchanged; the length, or -1 where ``cobs.decode`` raises (a zero byte, a block
    running past the end) or the encoding is not canonical. The one decodable non-canonical
    form is an empty last block after a full one: the encoder never writes it."""
    cdef Py_ssize_t i = 0, out = 0, data
    cdef uint8_t code, previous = 0
    while i < size:
        code = src[i]
        data = code - 1
        if code == 0 or i + code > size or memchr(src + i + 1, 0, data) != NULL:
            return -1
        memcpy(dst + out, src + i + 1, data)
        out += data
        i += code
        if i < size:
            if code < 0xFF:
                dst[out] = 0
                out += 1
        elif code == 1 and previous == 0xFF:
            return -1
        previous = code
    return out


cdef Py_ssize_t frame_into(uint8_t version, uint8_t type_id, Py_ssize_t seq,
                           const uint8_t* head, Py_ssize_t head_size,
                           const uint8_t* tail, Py_ssize_t tail_size,
                           uint8_t* out) noexcept nogil:
    """Write the wire bytes of one frame whose payload is ``head`` then ``tail`` (together
    at most MAX_PAYLOAD bytes) to ``out`` (room for MAX_WIRE_FRAME + 2); returns the length."""
    cdef uint8_t raw[RAW_CAPACITY]
    cdef Py_ssize_t size = head_size + tail_size, end = HEADER_SIZE + size
    cdef uint32_t crc
    raw[0] = version
    raw[1] = type_id
    raw[2] = seq & 0xFF
    raw[3] = (seq >> 8) & 0xFF
    raw[4] = size & 0xFF
    raw[5] = size >> 8
    memcpy(raw + HEADER_SIZE, head, head_size)
    memcpy(raw + HEADER_SIZE + head_size, tail, tail_size)
    crc = crc32(raw, end)
    raw[end] = crc & 0xFF
    raw[end + 1] = (crc >> 8) & 0xFF
    raw[end + 2] = (crc >> 16) & 0xFF
    raw[end + 3] = crc >> 24
    out[0] = 0
    size = 1 + _cobs_encode(raw, end + CRC_SIZE, out + 1)
    out[size] = 0
    return size + 1


cdef bint _check_frame(const uint8_t* encoded, Py_ssize_t length, uint8_t* raw) noexcept nogil:
    """Decode ``encoded`` (1..MAX_WIRE_FRAME bytes) into ``raw`` (as large): True when the
    reference would accept it (COBS decodes, canonically; length within bounds; CRC and
    length field agree)."""
    cdef Py_ssize_t size = _cobs_decode(encoded, length, raw), end
    if not MIN_FRAME_SIZE <= size <= RAW_CAPACITY:
        return False
    end = size - CRC_SIZE
    return crc32(raw, end) == _word(raw + end) and (raw[4] | (raw[5] << 8)) == end - HEADER_SIZE


cdef object _new_tuple = tuple.__new__  # RawFrame(...) without its Python-level __new__


cdef inline bint _get_bytes(object data, Py_buffer* buffer):
    """The bytes of ``data`` (a contiguous buffer); False for anything else."""
    try:
        PyObject_GetBuffer(data, buffer, PyBUF_SIMPLE)
    except (TypeError, ValueError, BufferError):
        return False
    return True


def encode_frame(type_id: int, seq: int, payload: bytes, version: int = 1) -> bytes:
    """Wire bytes of one frame: 0x00, COBS(raw frame), 0x00 (as the reference)."""
    cdef Py_buffer buffer
    cdef uint8_t out[WIRE_CAPACITY]
    cdef Py_ssize_t size, length
    cdef uint8_t c_version, c_type
    cdef Py_ssize_t c_seq
    if (not isinstance(type_id, int) or not isinstance(version, int) or not isinstance(seq, int)
            or not 0 <= type_id <= 0xFF or not 0 <= version <= 0xFF
            or not _get_bytes(payload, &buffer)):
        return framing_ref.encode_frame(type_id, seq, payload, version)  # or its error
    try:
        length = buffer.len
        if length > MAX_PAYLOAD:
            return framing_ref.encode_frame(type_id, seq, payload, version)  # FrameError
        c_version, c_type, c_seq = version, type_id, seq & 0xFFFF
        if length >= NOGIL_MIN_BYTES:
            with nogil:
                size = frame_into(c_version, c_type, c_seq, <const uint8_t*>buffer.buf, length,
                                  NULL, 0, out)
        else:
            size = frame_into(c_version, c_type, c_seq, <const uint8_t*>buffer.buf, length,
                              NULL, 0, out)
    finally:
        PyBuffer_Release(&buffer)
    return PyBytes_FromStringAndSize(<char*>out, size)


def decode_frame(encoded: bytes) -> RawFrame:
    """Check and unpack one COBS-encoded frame (without its delimiter), as the reference."""
    cdef Py_buffer buffer
    cdef uint8_t raw[WIRE_CAPACITY]  # COBS decodes to at most its input's length
    cdef Py_ssize_t length, end
    cdef bint ok = False
    if not _get_bytes(encoded, &buffer):
        return framing_ref.decode_frame(encoded)
    try:
        length = buffer.len
        if length >= NOGIL_MIN_BYTES and length <= MAX_WIRE_FRAME:
            with nogil:
                ok = _check_frame(<const uint8_t*>buffer.buf, length, raw)
        elif 0 < length < NOGIL_MIN_BYTES:
            ok = _check_frame(<const uint8_t*>buffer.buf, length, raw)
    finally:
        PyBuffer_Release(&buffer)
    if not ok:
        return framing_ref.decode_frame(encoded)  # raises the reference's FrameError
    end = raw[4] | (raw[5] << 8)
    return _new_tuple(RawFrame, (raw[0], raw[1], raw[2] | (raw[3] << 8),
                                 PyBytes_FromStringAndSize(<char*>raw + HEADER_SIZE, end)))
