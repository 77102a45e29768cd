# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: annotation_typing=False
# distutils: libraries = z
"""Compiled frame encoding and checking; the pure-Python reference is
:mod:`drivers.protocol.framing_ref`.

Same bytes and frames as the reference (tests/test_protocol_framing_kernels.py compares them
on random and malformed input). A frame that fails any check here is handed to the reference,
which raises its own error: untrusted input gets exactly the reference's ``FrameError``.
A chunk of at least :data:`NOGIL_MIN_BYTES` fed to :class:`FrameDecoder` is checked without
the interpreter lock, so the other side of an in-process link runs meanwhile; a single frame
(at most 4 KiB, a few microseconds) is not: handing the lock over would cost more than that.

Bounds checks are off: every index stays below a length checked on entry (``MAX_WIRE_FRAME``,
``MAX_PAYLOAD``) and the buffers are sized for the largest legal frame.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint8_t, uint32_t
from libc.string cimport memchr, memcpy

from drivers.protocol import framing_ref
from drivers.protocol.errors import FrameError
from drivers.protocol.framing_ref import MIN_FRAME, RawFrame
from drivers.protocol.messages import MAX_FRAME, MAX_PAYLOAD, MAX_WIRE_FRAME

cdef enum:
    HEADER_SIZE = 6
    CRC_SIZE = 4
    # buffers: one raw frame, one wire frame (COBS with both delimiters)
    RAW_CAPACITY = 4106
    WIRE_CAPACITY = 4126
    # FrameDecoder chunks from this size on are checked without the interpreter lock
    NOGIL_MIN_BYTES = 16384
    MIN_FRAME_SIZE = HEADER_SIZE + CRC_SIZE
    MAX_WIRE_FRAME_SIZE = 4126  # MAX_WIRE_FRAME: longest legal part between delimiters

assert RAW_CAPACITY == MAX_FRAME and WIRE_CAPACITY >= MAX_WIRE_FRAME  # with delimiters
assert MIN_FRAME_SIZE == MIN_FRAME and MAX_WIRE_FRAME_SIZE == MAX_WIRE_FRAME
# As Python names: tests/test_kernel_constants.py checks them against messages and framing_ref
# (the asserts above go with python -O).
header_size = HEADER_SIZE
crc_size = CRC_SIZE
raw_capacity = RAW_CAPACITY
min_frame_size = MIN_FRAME_SIZE
max_wire_frame_size = MAX_WIRE_FRAME_SIZE

cdef extern from "zlib.h" nogil:
    unsigned long zlib_crc32 "crc32"(unsigned long crc, const unsigned char* buf,
                                      unsigned int size)


cdef inline uint32_t _word(const uint8_t* p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint32_t crc32(const uint8_t* data, Py_ssize_t size) noexcept nogil:
    """``zlib.crc32(data)``: the same zlib routine, called without the interpreter lock
    (``size`` is at most a raw frame, RAW_CAPACITY bytes)."""
    return <uint32_t>zlib_crc32(0, data, <unsigned int>size)


cdef Py_ssize_t _cobs_encode_blocks(const uint8_t* src, Py_ssize_t size,
                                    uint8_t* dst) noexcept nogil:
    """:func:`_cobs_encode` byte by byte, full blocks included."""
    cdef Py_ssize_t code_at = 0, out = 1, i
    cdef uint8_t byte, code = 1
    cdef bint after_full = False
    for i in range(size):
        byte = src[i]
        if byte == 0:
            dst[code_at] = code
            code_at = out
            out += 1
            code = 1
            after_full = False
        else:
            dst[out] = byte
            out += 1
            code += 1
            after_full = False
            if code == 0xFF:  # a full block: no zero follows it
                dst[code_at] = 0xFF
                code_at = out
                out += 1
                code = 1
                after_full = True
    if after_full:  # the input ended with a full block: no empty block after it
        return out - 1
    dst[code_at] = code
    return out


cdef Py_ssize_t _cobs_encode(const uint8_t* src, Py_ssize_t size, uint8_t* dst) noexcept nogil:
    """``cobs.encode`` (PyPI cobs: no empty block after a full one at the end) into ``dst``
    (room for ``size + size // 254 + 1`` bytes); returns the length.

    Without a run of 254 non-zero bytes (a full block) the output is a code byte, then the
    input with each zero replaced by the distance to the next zero (or past the end): one
    copy, then one look at each byte. Frames carry many short runs (spot records), where a
    library call per run would cost more than the run."""
    cdef Py_ssize_t last = 0, i, run, longest = 0
    memcpy(dst + 1, src, size)
    for i in range(size):
        if src[i] == 0:
            run = i + 1 - last
            longest = run if run > longest else longest
            dst[last] = <uint8_t>run
            last = i + 1
    run = size + 1 - last
    longest = run if run > longest else longest
    if longest >= 0xFF:
        return _cobs_encode_blocks(src, size, dst)
    dst[last] = <uint8_t>run
    return size + 1


cdef Py_ssize_t _cobs_decode(const uint8_t* src, Py_ssize_t size, uint8_t* dst) noexcept nogil:
    """``cobs.decode`` into ``dst`` (room for ``size`` bytes) of an input that ``cobs.encode``
    gives back unchanged; the length, or -1 where ``cobs.decode`` raises (a zero byte, a block
    running past the end) or the encoding is not canonical. The one decodable non-canonical
    form is an empty last block after a full one: the encoder never writes it.

    Without full blocks (runs of 254 non-zero bytes) the output is the input after its first
    byte with a zero at every later code byte: one copy, then one step per block."""
    cdef Py_ssize_t i = 0, out = 0, data
    cdef uint8_t code = 0, previous = 0
    cdef bint full = False
    if size == 0:
        return 0
    if memchr(src, 0, size) != NULL:
        return -1
    memcpy(dst, src + 1, size - 1)
    while True:  # zeros at the code bytes, as if no block were full
        previous = code
        code = src[i]
        full |= code == 0xFF
        i += code
        if i >= size:
            break
        dst[i - 1] = 0
    if i != size or (code == 1 and previous == 0xFF):
        return -1  # the last block runs past the end, or is the non-canonical empty one
    if not full:
        return size - 1
    i = 0  # full blocks add no zero: block by block
    while i < size:
        code = src[i]
        data = code - 1
        memcpy(dst + out, src + i + 1, data)
        out += data
        i += code
        if i < size and code < 0xFF:
            dst[out] = 0
            out += 1
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
        size = frame_into(c_version, c_type, c_seq, <const uint8_t*>buffer.buf, length, NULL, 0,
                          out)
    finally:
        PyBuffer_Release(&buffer)
    return PyBytes_FromStringAndSize(<char*>out, size)


cdef object _frame_of(const uint8_t* raw):
    """The RawFrame of a raw frame that passed :func:`_check_frame`."""
    cdef Py_ssize_t end = raw[4] | (raw[5] << 8)
    return _new_tuple(RawFrame, (raw[0], raw[1], raw[2] | (raw[3] << 8),
                                 PyBytes_FromStringAndSize(<char*>raw + HEADER_SIZE, end)))


def decode_frame(encoded: bytes) -> RawFrame:
    """Check and unpack one COBS-encoded frame (without its delimiter), as the reference."""
    cdef Py_buffer buffer
    cdef uint8_t raw[WIRE_CAPACITY]  # COBS decodes to at most its input's length
    cdef Py_ssize_t length
    cdef bint ok = False
    if not _get_bytes(encoded, &buffer):
        return framing_ref.decode_frame(encoded)
    try:
        length = buffer.len
        if 0 < length <= MAX_WIRE_FRAME:
            ok = _check_frame(<const uint8_t*>buffer.buf, length, raw)
    finally:
        PyBuffer_Release(&buffer)
    if not ok:
        return framing_ref.decode_frame(encoded)  # raises the reference's FrameError
    return _frame_of(raw)


cdef struct Part:
    Py_ssize_t start   # in the chunk
    Py_ssize_t length  # without the delimiter
    Py_ssize_t raw     # offset of the checked raw frame in the scratch buffer; -1: failed


cdef Py_ssize_t _scan(const uint8_t* data, Py_ssize_t size, Py_ssize_t* pos, Part* parts,
                      uint8_t* scratch) noexcept nogil:
    """Check every non-empty part of ``data`` from ``pos[0]`` up to its last delimiter into
    ``scratch`` (room for ``size`` bytes); sets ``pos[0]`` past that delimiter and returns
    the number of parts."""
    cdef Py_ssize_t count = 0, used = 0, start = pos[0], length
    cdef const uint8_t* zero
    while start < size:
        zero = <const uint8_t*>memchr(data + start, 0, size - start)
        if zero == NULL:
            break
        length = zero - (data + start)
        if length:
            parts[count].start = start
            parts[count].length = length
            parts[count].raw = -1
            if length <= MAX_WIRE_FRAME_SIZE and _check_frame(data + start, length,
                                                             scratch + used):
                parts[count].raw = used
                used += length
            count += 1
        start += length + 1
    pos[0] = start
    return count


cdef class FrameDecoder:
    """Streaming decoder: feed arbitrary chunks, get whole valid frames back.

    Bad frames are dropped and counted; the decoder resynchronises on the next 0x00.
    A run longer than the largest legal frame is discarded up to the next delimiter.
    The same frames, counts and errors as :class:`drivers.protocol.framing_ref.FrameDecoder`;
    a chunk of :data:`NOGIL_MIN_BYTES` or more is checked without the interpreter lock.
    """

    cdef bytearray _buffer
    cdef bint _overflow
    cdef public Py_ssize_t frames
    cdef public Py_ssize_t errors
    cdef public object last_error

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._overflow = False
        self.frames = 0
        self.errors = 0
        self.last_error = None

    def feed(self, chunk: bytes) -> list:
        """Decode every complete frame in ``chunk`` (plus what was buffered before)."""
        cdef Py_buffer buffer
        cdef const uint8_t* data
        cdef const uint8_t* zero
        cdef Py_ssize_t size, first, pos, count = 0, i
        cdef Part* parts = NULL
        cdef uint8_t* scratch = NULL
        frames = []
        if not _get_bytes(chunk, &buffer):
            self._buffer += chunk  # raises the reference's TypeError
            raise TypeError(f"a bytes-like chunk is needed, not {type(chunk).__name__}")
        try:
            data = <const uint8_t*>buffer.buf
            size = buffer.len
            zero = <const uint8_t*>memchr(data, 0, size) if size else NULL
            if zero == NULL:
                self._buffer += chunk
                self._check_overflow()
                return frames
            first = zero - data
            if self._overflow:  # the end of a run too long to be a frame
                self._overflow = False
            elif self._buffer or first:
                self._decode_into(frames, bytes(self._buffer) + data[:first])
            pos = first + 1
            parts = <Part*>PyMem_Malloc(((size - pos) // 2 + 1) * sizeof(Part))
            scratch = <uint8_t*>PyMem_Malloc(size - pos + 1)
            if parts == NULL or scratch == NULL:
                raise MemoryError()
            if size - pos >= NOGIL_MIN_BYTES:
                with nogil:
                    count = _scan(data, size, &pos, parts, scratch)
            else:
                count = _scan(data, size, &pos, parts, scratch)
            for i in range(count):
                if parts[i].raw >= 0:
                    frames.append(_frame_of(scratch + parts[i].raw))
                else:
                    self._decode_into(frames, data[parts[i].start:parts[i].start
                                                   + parts[i].length])
            self._buffer = bytearray(data[pos:size])
        finally:
            PyMem_Free(parts)
            PyMem_Free(scratch)
            PyBuffer_Release(&buffer)
        self.frames += len(frames)
        self._check_overflow()
        return frames

    cdef void _decode_into(self, list frames, bytes part) except *:
        """Append the frame of ``part``, or count its error."""
        try:
            frames.append(decode_frame(part))
        except FrameError as exc:
            self.errors += 1
            self.last_error = exc

    cdef void _check_overflow(self) except *:
        if len(self._buffer) > MAX_WIRE_FRAME_SIZE:
            self._buffer.clear()
            if not self._overflow:
                self.errors += 1
                self.last_error = FrameError(f"no delimiter within {MAX_WIRE_FRAME} bytes")
            self._overflow = True
