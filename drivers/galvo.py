"""Galvo scanner driver: µm on the skin <-> galvo LSB, distortion correction, jumps."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from drivers.errors import LimitError
from drivers.info import DeviceLimits
from drivers.link import Link
from drivers.protocol.messages import GALVO_CENTRE_LSB, GALVO_FULL_SCALE_LSB, Capability


def lsb_to_um(lsb: ArrayLike, field_um: float) -> NDArray[np.float64]:
    """Nominal skin positions (µm from the field centre; no distortion correction) of galvo
    positions in a field of ``field_um``: the inverse of :meth:`GalvoScanner.to_lsb`
    (firmware_protocol.md section 3), the one conversion every reader of LSB uses."""
    return (np.asarray(lsb, dtype=np.float64) - GALVO_CENTRE_LSB) / (
        GALVO_FULL_SCALE_LSB / field_um)


def usable_range_um(limits: DeviceLimits) -> tuple[float, float]:
    """Lowest and highest coordinate (µm from the field centre, both axes) within the
    device's usable galvo range."""
    return (float(lsb_to_um(limits.usable_lsb_min, limits.field_size_um)),
            float(lsb_to_um(limits.usable_lsb_max, limits.field_size_um)))


def usable_half_field_um(limits: DeviceLimits) -> float:
    """How far from the centre a pattern may reach on every side (µm): the nearer edge of
    the usable range."""
    lo, hi = usable_range_um(limits)
    return min(-lo, hi)


@dataclass(frozen=True)
class DistortionTable:
    """Lens distortion correction: offsets (µm) to add at grid nodes spanning the field.

    ``dx_um``/``dy_um`` have shape (ny, nx); nodes are evenly spaced from -field/2 to
    +field/2 on both axes. Between nodes the offset is interpolated bilinearly.
    """

    dx_um: NDArray[np.float64]
    dy_um: NDArray[np.float64]

    def __post_init__(self) -> None:
        dx, dy = np.asarray(self.dx_um, float), np.asarray(self.dy_um, float)
        if dx.shape != dy.shape or dx.ndim != 2 or min(dx.shape) < 2:
            raise LimitError("distortion table shape", f"{dx.shape} and {dy.shape}",
                             "two equal (ny, nx) grids with nx, ny >= 2")
        if not (np.isfinite(dx).all() and np.isfinite(dy).all()):
            raise LimitError("distortion table", "non-finite entries", "finite µm offsets")
        object.__setattr__(self, "dx_um", dx)
        object.__setattr__(self, "dy_um", dy)

    def offsets(self, x_um: NDArray[np.float64], y_um: NDArray[np.float64],
                field_size_um: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The correction (µm, x and y) to add at each skin point, bilinear between the nodes;
        points beyond the grid take the value at its edge."""
        ny, nx = self.dx_um.shape
        fx = np.clip((x_um / field_size_um + 0.5) * (nx - 1), 0, nx - 1 - 1e-9)
        fy = np.clip((y_um / field_size_um + 0.5) * (ny - 1), 0, ny - 1 - 1e-9)
        ix, iy = fx.astype(int), fy.astype(int)
        tx, ty = fx - ix, fy - iy

        def interp(grid: NDArray[np.float64]) -> NDArray[np.float64]:
            top = grid[iy, ix] * (1 - tx) + grid[iy, ix + 1] * tx
            bottom = grid[iy + 1, ix] * (1 - tx) + grid[iy + 1, ix + 1] * tx
            return np.asarray(top * (1 - ty) + bottom * ty)

        return interp(self.dx_um), interp(self.dy_um)


class GalvoScanner:
    """Converts skin coordinates to galvo positions within the device's usable field."""

    def __init__(self, link: Link, limits: DeviceLimits,
                 capabilities: Capability | None = None,
                 refresh: Callable[[], None] | None = None) -> None:
        self._link = link
        self.limits = limits
        self._refresh = refresh  # reads the device's limits again (its owner's, e.g. Device)
        self._device_corrects = (capabilities is not None
                                 and Capability.DISTORTION_CORRECTION in capabilities)
        self._correction: DistortionTable | None = None

    @property
    def correction(self) -> DistortionTable | None:
        """The host-side lens distortion table (None: positions as section 3 maps them)."""
        return self._correction

    @correction.setter
    def correction(self, table: DistortionTable | None) -> None:
        if table is not None and self._device_corrects:
            raise LimitError("galvo distortion table", "a table", "none: this device corrects "
                             "its lens distortion itself (capability DISTORTION_CORRECTION), "
                             "and the two corrections would add up")
        self._correction = table

    @property
    def lsb_per_um(self) -> float:
        """Galvo LSB per µm of skin: the full scale over the field size (nominal, before any
        distortion correction)."""
        return GALVO_FULL_SCALE_LSB / self.limits.field_size_um

    def usable_range_um(self) -> tuple[float, float]:
        """Lowest and highest reachable coordinate (µm from the field centre), both axes."""
        return usable_range_um(self.limits)

    def to_lsb(self, x_um: ArrayLike, y_um: ArrayLike) -> tuple[NDArray[np.uint16],
                                                               NDArray[np.uint16]]:
        """Galvo positions for skin coordinates; refuses any point outside the usable field."""
        x = np.asarray(x_um, dtype=np.float64)
        y = np.asarray(y_um, dtype=np.float64)
        if self.correction is not None:
            dx, dy = self.correction.offsets(x, y, self.limits.field_size_um)
            x, y = x + dx, y + dy
        lo, hi = self.usable_range_um()
        for name, values in (("x_um", x), ("y_um", y)):
            bad = ~np.isfinite(values) | (values < lo) | (values > hi)
            if bad.any():
                shown_lo, shown_hi = math.ceil(lo * 10) / 10, math.floor(hi * 10) / 10
                raise LimitError(name, float(values[bad].flat[0]),  # bounds it accepts
                                 f"{shown_lo:.1f}..{shown_hi:.1f} µm")
        x_lsb = np.rint(GALVO_CENTRE_LSB + x * self.lsb_per_um)
        y_lsb = np.rint(GALVO_CENTRE_LSB + y * self.lsb_per_um)
        return x_lsb.astype(np.uint16), y_lsb.astype(np.uint16)

    def to_um(self, x_lsb: ArrayLike, y_lsb: ArrayLike) -> tuple[NDArray[np.float64],
                                                                NDArray[np.float64]]:
        """Nominal skin coordinates of galvo positions (no distortion correction)."""
        field_um = self.limits.field_size_um
        return lsb_to_um(x_lsb, field_um), lsb_to_um(y_lsb, field_um)

    def jump(self, x_um: float, y_um: float) -> int:
        """Move the mirrors (no emission); returns the device's jump time in µs."""
        x_lsb, y_lsb = self.to_lsb([x_um], [y_um])
        reply = self._link.request("GALVO_JUMP", x_lsb=int(x_lsb[0]), y_lsb=int(y_lsb[0]),
                                   timeout_s=self._link.request_timeout_s + 1.0)
        return int(reply["value"])

    def set_calibration(self, field_size_um: int, x_gain_ppm: int = 0, y_gain_ppm: int = 0,
                        x_offset_lsb: int = 0, y_offset_lsb: int = 0) -> None:
        """Store the field calibration on the device (service mode required); the limits
        (the field size every position is converted with) are then read again from it."""
        self._link.request("SET_CALIBRATION", field_size_um=field_size_um,
                           x_gain_ppm=x_gain_ppm, y_gain_ppm=y_gain_ppm,
                           x_offset_lsb=x_offset_lsb, y_offset_lsb=y_offset_lsb)
        if self._refresh is not None:
            self._refresh()
