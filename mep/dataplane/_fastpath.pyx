# cython: language_level=3
"""Native packet helpers and (later) the batch engine; the Python twin is mep.dataplane.packet."""

def inet_checksum(const unsigned char[:] data, unsigned int initial=0):
    """RFC 1071 one's-complement checksum of ``data`` folded to 16 bits and complemented."""
    cdef unsigned long long acc = initial
    cdef Py_ssize_t i, n = data.shape[0]
    for i in range(0, n - 1, 2):
        acc += (data[i] << 8) | data[i + 1]
    if n & 1:
        acc += data[n - 1] << 8
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return (~acc) & 0xFFFF
