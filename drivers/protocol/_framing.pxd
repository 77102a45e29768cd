from libc.stdint cimport uint8_t

cdef Py_ssize_t frame_into(uint8_t version, uint8_t type_id, Py_ssize_t seq,
                           const uint8_t* head, Py_ssize_t head_size,
                           const uint8_t* tail, Py_ssize_t tail_size,
                           uint8_t* out) noexcept nogil
