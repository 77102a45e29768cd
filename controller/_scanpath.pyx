# cython: boundscheck=False, wraparound=False, cdivision=True
"""Cython kernels for the fractional scan path (numpy references in controller.scanpath_ref)."""

import numpy as np

from libc.math cimport sqrt


def grid(double width_um, double height_um, double pitch_um, bint hexagonal):
    """Centred square or hexagonal grid of points covering a width x height box.

    Returns (x_um, y_um) float64 arrays, row-major (row by row, left to right).
    On a hexagonal grid rows are pitch*sqrt(3)/2 apart and odd rows shift by pitch/2.
    """
    if not (pitch_um > 0):
        raise ValueError(f"pitch_um must be > 0, got {pitch_um}")
    cdef double row_um = pitch_um * sqrt(3.0) / 2.0 if hexagonal else pitch_um
    cdef Py_ssize_t nx = <Py_ssize_t>(width_um / pitch_um) + 1
    cdef Py_ssize_t ny = <Py_ssize_t>(height_um / row_um) + 1
    x = np.empty(nx * ny, dtype=np.float64)
    y = np.empty(nx * ny, dtype=np.float64)
    cdef double[::1] xv = x
    cdef double[::1] yv = y
    cdef double x0 = -(nx - 1) * pitch_um / 2.0
    cdef double y0 = -(ny - 1) * row_um / 2.0
    cdef Py_ssize_t i, j, k = 0
    cdef double shift
    with nogil:
        for j in range(ny):
            shift = pitch_um / 2.0 if (hexagonal and (j & 1)) else 0.0
            for i in range(nx):
                xv[k] = x0 + i * pitch_um + shift - (pitch_um / 4.0 if hexagonal else 0.0)
                yv[k] = y0 + j * row_um
                k += 1
    return x, y
