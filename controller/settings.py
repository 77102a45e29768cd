"""Validated treatment settings: handpiece calibration, density, pattern, passes and scan order.

Every dataclass checks itself on construction and raises :class:`SettingsError` naming the
dotted field, the value and the allowed range; settings that combine several fields (depth
against the handpiece, jitter against the pitch) are checked by :class:`TreatmentSettings`.
Limits that depend on the device (galvo field, spot rate) are checked by the planner.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from controller import patterns
from controller.errors import SettingsError

GridKind = Literal["square", "hex"]
ShapeKind = Literal["square", "rectangle", "circle", "hexagon", "line", "polygon"]
OrderKind = Literal["raster", "serpentine", "random", "interlaced", "thermal-spread"]
PassMode = Literal["offset", "stack"]

SHAPES: tuple[str, ...] = ("square", "rectangle", "circle", "hexagon", "line", "polygon")
ORDERS: tuple[str, ...] = ("raster", "serpentine", "random", "interlaced", "thermal-spread")
GRIDS: tuple[str, ...] = ("square", "hex")
PASS_MODES: tuple[str, ...] = ("offset", "stack")

#: Planner limits (the clinical envelope applied by plan validation is stricter).
MAX_PITCH_UM = 5000.0
MAX_PASSES = 10
MAX_INTERLACE_K = 16
#: Free text (operator, patient reference, names) that is stored and shown.
MAX_TEXT_CHARS = 200


def number(
    name: str, value: object, lo: float, hi: float, *, lo_open: bool = False,
    hi_open: bool = False, unit: str = "",
) -> float:
    """``value`` as a float if it is a finite real within the range, else SettingsError."""
    lo_txt = f"{lo:g} {'<' if lo_open else '<='} "
    hi_txt = "" if hi == math.inf else f" {'<' if hi_open else '<='} {hi:g}"
    allowed = f"{lo_txt}{name.rsplit('.', 1)[-1]}{hi_txt}{' ' + unit if unit else ''}"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise SettingsError(name, value, allowed, "not a number")
    v = float(value)
    if not math.isfinite(v):
        raise SettingsError(name, value, allowed, "not finite")
    if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
        raise SettingsError(name, value, allowed)
    return v


def least_shown(exact: float, passes: Callable[[float], bool]) -> str:
    """The least number of four significant digits from ``exact`` up that ``passes`` as it
    reads (``100 * 0.58`` is 57.99999999999999, so a product's bound ``0.58`` would fail), as
    the text to show: a bound typed in as shown passes."""
    step = 10.0 ** (math.floor(math.log10(exact)) - 3)
    k = math.floor(exact / step)
    while not passes(float(f"{k * step:.4g}")):
        k += 1
    return f"{k * step:.4g}"


def printable(name: str, value: object) -> str:
    """``value`` if it is printable text of at most MAX_TEXT_CHARS characters (no control
    or escape characters: it is stored and shown), else SettingsError."""
    allowed = f"printable text of at most {MAX_TEXT_CHARS} characters"
    if isinstance(value, int | float) and not isinstance(value, bool):  # unquoted in TOML
        raise SettingsError(name, value, allowed,
                            f"a number, not text: quote it in a script, {name} = \"{value}\"")
    if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS or not value.isprintable():
        raise SettingsError(name, value, allowed)
    return value


def integer(name: str, value: object, lo: int, hi: int) -> int:
    """``value`` as an int within [lo, hi], else SettingsError."""
    allowed = f"an integer {lo} <= {name.rsplit('.', 1)[-1]} <= {hi}"
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise SettingsError(name, value, allowed, "not an integer")
    if not lo <= int(value) <= hi:
        raise SettingsError(name, value, allowed)
    return int(value)


def choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    """``value`` if it is one of ``allowed``, else SettingsError."""
    if value not in allowed:
        raise SettingsError(name, value, "one of " + ", ".join(allowed))
    return str(value)


@dataclass(frozen=True)
class Handpiece:
    """A handpiece: spot size and its energy <-> depth calibration, with its limits.

    The calibration is a monotone table measured at ``peak_power_w`` (pulse width =
    energy / peak power); it is interpolated linearly inside and refused outside. Stacked
    pulses on one spot are assumed to add their depths (a simplification that, if stacking
    ablates less per pulse, under-treats rather than over-treats).
    """

    name: str
    spot_diameter_um: float
    spot_definition: str
    peak_power_w: float
    energy_mj: tuple[float, ...]
    depth_um: tuple[float, ...]
    coag_um: tuple[float, ...]
    energy_min_mj: float
    energy_max_mj: float
    pulse_min_us: int
    pulse_max_us: int
    max_stack: int
    residual_heat_fraction: float
    max_reservoir_damage_fraction: float
    calibration_source: str = ""

    def __post_init__(self) -> None:
        f = f"handpiece[{self.name}]."
        if not isinstance(self.name, str) or not self.name:
            raise SettingsError("handpiece.name", self.name, "a non-empty string")
        if not isinstance(self.spot_definition, str) or not self.spot_definition:
            raise SettingsError(f + "spot_definition", self.spot_definition,
                                "a non-empty description, e.g. '1/e^2 diameter'")
        number(f + "spot_diameter_um", self.spot_diameter_um, 0, 5000, lo_open=True, unit="µm")
        number(f + "peak_power_w", self.peak_power_w, 0, math.inf, lo_open=True, unit="W")
        columns = {"energy_mj": self.energy_mj, "depth_um": self.depth_um, "coag_um": self.coag_um}
        for col, values in columns.items():
            if len(values) < 2 or len(values) != len(self.energy_mj):
                raise SettingsError(f + col, values, "at least 2 rows, as many as energy_mj")
            for v in values:
                number(f + col, v, 0, math.inf, lo_open=True)
        for col in ("energy_mj", "depth_um"):
            if np.any(np.diff(columns[col]) <= 0):
                raise SettingsError(f + col, columns[col], "strictly increasing (monotone table)")
        if np.any(np.diff(self.coag_um) < 0):
            raise SettingsError(f + "coag_um", self.coag_um, "non-decreasing with energy")
        e_lo, e_hi = self.energy_mj[0], self.energy_mj[-1]
        number(f + "energy_min_mj", self.energy_min_mj, e_lo, e_hi, unit="mJ (calibrated range)")
        number(f + "energy_max_mj", self.energy_max_mj, self.energy_min_mj, e_hi, lo_open=True,
               unit="mJ (calibrated range)")
        integer(f + "pulse_min_us", self.pulse_min_us, 1, 65535)
        integer(f + "pulse_max_us", self.pulse_max_us, self.pulse_min_us, 65535)
        for lim, energy_mj in (("energy_min_mj", self.energy_min_mj),
                               ("energy_max_mj", self.energy_max_mj)):
            pulse_us = energy_mj * 1000.0 / self.peak_power_w
            if not self.pulse_min_us <= pulse_us <= self.pulse_max_us:
                raise SettingsError(
                    f + lim, energy_mj,
                    f"a pulse width {self.pulse_min_us}..{self.pulse_max_us} µs at "
                    f"{self.peak_power_w:g} W", f"needs {pulse_us:.0f} µs")
        integer(f + "max_stack", self.max_stack, 1, 16)
        number(f + "residual_heat_fraction", self.residual_heat_fraction, 0, 1, lo_open=True)
        # 1: the whole reservoir may be damaged, i.e. no thermal limit (bench handpieces).
        number(f + "max_reservoir_damage_fraction", self.max_reservoir_damage_fraction, 0, 1)

    @property
    def spot_area_um2(self) -> float:
        """Area of one spot as the handpiece defines its diameter."""
        return math.pi * self.spot_diameter_um**2 / 4.0

    @property
    def single_pulse_depth_um(self) -> tuple[float, float]:
        """Shallowest and deepest column one pulse within the energy limits can make."""
        d = np.interp([self.energy_min_mj, self.energy_max_mj], self.energy_mj, self.depth_um)
        return float(d[0]), float(d[1])

    def _energy_in_range(self, energy_mj: ArrayLike, name: str) -> NDArray[np.float64]:
        e = np.asarray(energy_mj, dtype=np.float64)
        bad = ~((e >= self.energy_min_mj) & (e <= self.energy_max_mj))
        if bad.any():
            raise SettingsError(name, float(e[bad][0]),
                                f"{self.energy_min_mj:g}..{self.energy_max_mj:g} mJ "
                                f"(handpiece {self.name})")
        return e

    def depth_for_energy_um(self, energy_mj: ArrayLike, name: str = "energy_mj") -> NDArray:
        """Ablation depth of one pulse, interpolated in the calibration table."""
        e = self._energy_in_range(energy_mj, name)
        return np.interp(e, self.energy_mj, self.depth_um)

    def coag_for_energy_um(self, energy_mj: ArrayLike, name: str = "energy_mj") -> NDArray:
        """Coagulation rim width of one pulse, interpolated in the calibration table."""
        e = self._energy_in_range(energy_mj, name)
        return np.interp(e, self.energy_mj, self.coag_um)

    def dose_for_depth(
        self, depth_um: ArrayLike, name: str = "depth_um"
    ) -> tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.int32]]:
        """(energy_uj, pulse_us, stack) reaching each target depth, stacking when needed.

        A depth deeper than one pulse at the energy limit is split evenly over the fewest
        pulses that reach it; beyond ``max_stack`` pulses, or shallower than one pulse at the
        lowest energy, it is refused.
        """
        d = np.asarray(depth_um, dtype=np.float64)
        shallow_um, deep_um = self.single_pulse_depth_um
        allowed = (f"{shallow_um:.0f}..{deep_um * self.max_stack:.0f} µm with handpiece "
                   f"{self.name} (one pulse reaches {shallow_um:.0f}..{deep_um:.0f} µm, "
                   f"up to {self.max_stack} stacked)")
        if not np.all(np.isfinite(d)):
            raise SettingsError(name, float(d[~np.isfinite(d)][0]), allowed, "not finite")
        stack = np.maximum(np.ceil(d / deep_um), 1.0)
        per_pulse_um = d / stack
        bad = (per_pulse_um < shallow_um) | (stack > self.max_stack)
        if bad.any():
            why = "too shallow" if per_pulse_um[bad][0] < shallow_um else "too deep"
            raise SettingsError(name, float(d[bad][0]), allowed, why)
        energy_mj = np.interp(per_pulse_um, self.depth_um, self.energy_mj)
        energy_uj = np.rint(energy_mj * 1000.0)
        pulse_us = np.rint(energy_uj / self.peak_power_w)
        return energy_uj.astype(np.int32), pulse_us.astype(np.int32), stack.astype(np.int32)


@dataclass(frozen=True)
class Density:
    """One density in its three equivalent forms (for one spot size and grid)."""

    pitch_um: float
    coverage_pct: float
    spots_per_cm2: float


@dataclass(frozen=True)
class DensitySpec:
    """Spot density as the operator gives it: exactly one of coverage, pitch or spots/cm^2."""

    coverage_pct: float | None = None
    pitch_um: float | None = None
    spots_per_cm2: float | None = None

    def __post_init__(self) -> None:
        given = {k: v for k, v in vars(self).items() if v is not None}
        if len(given) != 1:
            raise SettingsError("density", given or None,
                                "exactly one of coverage_pct, pitch_um, spots_per_cm2")
        (name, value), = given.items()
        number(f"density.{name}", value, 0, math.inf, lo_open=True)

    def resolve(self, spot_diameter_um: float, grid: GridKind) -> Density:
        """Pitch, coverage and spots/cm^2 for this spot size and grid (domain.md formulas).

        Allowed: pitch from the spot diameter (spots of one pass never overlap) to
        ``MAX_PITCH_UM``, or the coverage / spots per cm^2 that those pitches give.
        """
        cell_factor = _cell_factor(grid)
        spot_area_um2 = math.pi * spot_diameter_um**2 / 4.0
        if self.pitch_um is not None:
            name, value, pitch_um = "pitch_um", self.pitch_um, float(self.pitch_um)
        elif self.coverage_pct is not None:
            name, value = "coverage_pct", self.coverage_pct
            pitch_um = math.sqrt(spot_area_um2 / (self.coverage_pct / 100.0) / cell_factor)
        else:
            assert self.spots_per_cm2 is not None
            name, value = "spots_per_cm2", self.spots_per_cm2
            pitch_um = math.sqrt(1e8 / self.spots_per_cm2 / cell_factor)
        if not spot_diameter_um <= pitch_um <= MAX_PITCH_UM:
            raise SettingsError(f"density.{name}", value,
                                density_allowed(name, spot_diameter_um, grid))
        return density_at_pitch(pitch_um, spot_diameter_um, grid)


def _cell_factor(grid: str) -> float:
    """Area of a lattice cell over pitch²."""
    return math.sqrt(3.0) / 2.0 if grid == "hex" else 1.0


def density_at_pitch(pitch_um: float, spot_diameter_um: float, grid: str) -> Density:
    """The density of spots of this diameter at this pitch on this grid, in its three forms."""
    spot_area_um2 = math.pi * spot_diameter_um**2 / 4.0
    cell_um2 = pitch_um**2 * _cell_factor(grid)
    return Density(pitch_um, 100.0 * spot_area_um2 / cell_um2, 1e8 / cell_um2)


def density_allowed(name: str, spot_diameter_um: float, grid: str,
                    max_coverage_pct: float = math.inf) -> str:
    """The range of density form ``name`` (``coverage_pct``, ``pitch_um`` or
    ``spots_per_cm2``) a pass can use, as an error's ``allowed``: pitch from the spot diameter
    to ``MAX_PITCH_UM``, and with ``max_coverage_pct`` (the clinical envelope's limit for one
    pass) no denser than that coverage, so that the range names what is accepted in the end,
    not only what the geometry permits."""
    touching = density_at_pitch(spot_diameter_um, spot_diameter_um, grid)
    sparse = density_at_pitch(MAX_PITCH_UM, spot_diameter_um, grid)
    capped = max_coverage_pct < touching.coverage_pct
    dense = density_at_pitch(spot_diameter_um * math.sqrt(touching.coverage_pct
                                                          / max_coverage_pct),
                             spot_diameter_um, grid) if capped else touching
    lo, hi = sorted((getattr(dense, name), getattr(sparse, name)))
    where = f"for a {spot_diameter_um:g} µm spot on a {grid} grid"
    if not capped:
        return f"{lo:.4g}..{hi:.4g} {where} (pitch {spot_diameter_um:g}..{MAX_PITCH_UM:g} µm)"
    return (f"{lo:.4g}..{hi:.4g} {where} (pitch {dense.pitch_um:.4g}..{MAX_PITCH_UM:g} µm: at "
            f"most {max_coverage_pct:g} % coverage per pass, the clinical envelope's limit; "
            f"the spots touch at pitch {spot_diameter_um:g} µm, "
            f"{touching.coverage_pct:.4g} %)")


#: Longest cooling wait between passes (s): scripts and sessions accept 0..this.
MAX_PASS_WAIT_S = 600.0
#: Most vertices of a polygon outline: over four times the 224 sides of the largest circle
#: (the simple-polygon check is quadratic: 0.6 s at this size, a minute at 5,000).
MAX_POLYGON_VERTICES = 1000
#: Polygon vertices are rounded to this many decimals of a millimetre (1 nm).
VERTEX_DECIMALS = 6

@dataclass(frozen=True)
class Pattern:
    """Shape of the scanned area, centred on the galvo field centre (sizes in mm).

    ``width_mm`` is the square's side, the rectangle's width (``height_mm`` its height), the
    circle's diameter, the hexagon's width across corners and the line's length; a polygon
    gives ``vertices_mm`` (x, y) instead. ``rotation_deg`` turns shape and grid together.
    """

    shape: ShapeKind = "square"
    width_mm: float | None = None
    height_mm: float | None = None
    vertices_mm: tuple[tuple[float, float], ...] | None = None
    rotation_deg: float = 0.0

    def __post_init__(self) -> None:
        choice("pattern.shape", self.shape, SHAPES)
        number("pattern.rotation_deg", self.rotation_deg, -360, 360, unit="deg")
        if self.shape == "polygon":
            self._check_polygon()
        else:
            if self.vertices_mm is not None:
                raise SettingsError("pattern.vertices_mm", self.vertices_mm,
                                    "None unless shape is 'polygon'")
            number("pattern.width_mm", self.width_mm, 0, math.inf, lo_open=True, unit="mm")
        if self.shape == "rectangle":
            number("pattern.height_mm", self.height_mm, 0, math.inf, lo_open=True, unit="mm")
        elif self.height_mm is not None:
            raise SettingsError("pattern.height_mm", self.height_mm,
                                "None unless shape is 'rectangle'")

    def _check_polygon(self) -> None:
        if self.width_mm is not None:
            raise SettingsError("pattern.width_mm", self.width_mm,
                                "None for a polygon (its vertices give its size)")
        v = self.vertices_mm
        if v is None or len(v) < 3 or any(len(p) != 2 for p in v):
            raise SettingsError("pattern.vertices_mm", v, "3 or more (x, y) vertices")
        if len(v) > MAX_POLYGON_VERTICES:
            raise SettingsError("pattern.vertices_mm", f"{len(v)} vertices",
                                f"at most {MAX_POLYGON_VERTICES} (x, y) vertices")
        for p in v:
            for c in p:
                try:
                    number("pattern.vertices_mm", c, -math.inf, math.inf, unit="mm")
                except SettingsError as exc:  # the range says nothing here
                    raise SettingsError("pattern.vertices_mm", c, "finite coordinates (mm)",
                                        exc.reason) from None
        # Vertices on a 1 nm grid: a subnormal coordinate (e.g. 4e-312 mm) made an edge's
        # slope overflow and the planner put spots outside the polygon (found by hypothesis).
        v = tuple((round(float(px), VERTEX_DECIMALS), round(float(py), VERTEX_DECIMALS))
                  for px, py in v)
        object.__setattr__(self, "vertices_mm", v)
        vx, vy = np.array(v, dtype=np.float64).T
        touching = patterns.self_intersection(vx, vy)
        if touching is not None:
            raise SettingsError("pattern.vertices_mm", v, "a simple polygon",
                                f"edges {touching[0]} and {touching[1]} intersect")

    def outline_um(self, pitch_um: float) -> patterns.Polygon:
        """Counter-clockwise outline in µm before ``rotation_deg``.

        A line is the one-row strip of height ``pitch_um`` its spots treat.
        """
        if self.shape == "polygon":
            assert self.vertices_mm is not None
            vx, vy = np.array(self.vertices_mm, dtype=np.float64).T * 1000.0
            if patterns.signed_area_um2(vx, vy) < 0:
                vx, vy = vx[::-1].copy(), vy[::-1].copy()
            return vx, vy
        assert self.width_mm is not None
        w_um = self.width_mm * 1000.0
        if self.shape == "circle":
            return patterns.regular_polygon_um(patterns.circle_sides(w_um / 2.0), w_um / 2.0)
        if self.shape == "hexagon":
            return patterns.regular_polygon_um(6, w_um / 2.0)
        if self.shape == "line":
            return patterns.rectangle_um(w_um, pitch_um)
        h_um = w_um if self.shape == "square" else float(self.height_mm or 0.0) * 1000.0
        return patterns.rectangle_um(w_um, h_um)


@dataclass(frozen=True)
class Feathering:
    """Edge feathering: within ``width_um`` of the outline, density and depth ramp linearly
    down to the given fractions at the edge (blurs the treated area's boundary)."""

    width_um: float
    edge_density_fraction: float = 0.5
    edge_depth_fraction: float = 0.5

    def __post_init__(self) -> None:
        number("feathering.width_um", self.width_um, 0, math.inf, lo_open=True, unit="µm")
        number("feathering.edge_density_fraction", self.edge_density_fraction, 0, 1,
               lo_open=True)
        number("feathering.edge_depth_fraction", self.edge_depth_fraction, 0, 1, lo_open=True)


@dataclass(frozen=True)
class ScanOrder:
    """Firing order within a pass.

    ``interlaced`` fires the ``interlace_k`` x ``interlace_k`` sub-grids one after another.
    ``thermal-spread`` keeps consecutive spots at least ``min_step_um`` apart and fires any
    two spots closer than ``neighbour_um`` at least ``relax_ms`` apart at the pass's spot
    rate (lowered below the device maximum if the pattern needs it), with short galvo steps.
    """

    kind: OrderKind = "serpentine"
    interlace_k: int = 3
    min_step_um: float = 600.0
    neighbour_um: float = 600.0
    relax_ms: float = 20.0

    def __post_init__(self) -> None:
        choice("order.kind", self.kind, ORDERS)
        integer("order.interlace_k", self.interlace_k, 2, MAX_INTERLACE_K)
        number("order.min_step_um", self.min_step_um, 0, MAX_PITCH_UM * MAX_INTERLACE_K,
               unit="µm")
        number("order.neighbour_um", self.neighbour_um, 0, MAX_PITCH_UM * MAX_INTERLACE_K,
               unit="µm")
        number("order.relax_ms", self.relax_ms, 0, 10_000, unit="ms")


@dataclass(frozen=True)
class PassSettings:
    """How many passes, and whether each lands in the previous reservoirs or on the same spots.

    ``offset``: pass k is shifted (and turned by k * ``rotation_deg``) so its columns fall
    between the earlier ones. ``stack``: every pass fires the same positions.
    """

    count: int = 1
    mode: PassMode = "offset"
    rotation_deg: float = 0.0

    def __post_init__(self) -> None:
        integer("passes.count", self.count, 1, MAX_PASSES)
        choice("passes.mode", self.mode, PASS_MODES)
        number("passes.rotation_deg", self.rotation_deg, -180, 180, unit="deg")
        if self.mode == "stack" and self.rotation_deg != 0:
            raise SettingsError("passes.rotation_deg", self.rotation_deg,
                                "0 when passes.mode is 'stack' (same positions every pass)")


@dataclass(frozen=True)
class TreatmentSettings:
    """Everything the operator sets for one treatment area; checked as a whole on creation."""

    handpiece: Handpiece
    pattern: Pattern
    density: DensitySpec
    depth_um: float
    grid: GridKind = "square"
    jitter_um: float = 0.0
    feathering: Feathering | None = None
    passes: PassSettings = field(default_factory=PassSettings)
    order: ScanOrder = field(default_factory=ScanOrder)

    def __post_init__(self) -> None:
        choice("grid", self.grid, GRIDS)
        if self.pattern.shape == "line" and self.grid != "square":
            raise SettingsError("grid", self.grid, "'square' for a line pattern (one row)")
        if self.pattern.shape == "line" and self.passes.rotation_deg != 0:
            raise SettingsError("passes.rotation_deg", self.passes.rotation_deg,
                                "0 for a line pattern")
        d = self.resolved_density
        spare_um = (d.pitch_um - self.handpiece.spot_diameter_um) / 2.0
        number("jitter_um", self.jitter_um, 0, spare_um, unit="µm ((pitch - spot diameter) / 2,"
               " so jittered spots never overlap)")
        number("depth_um", self.depth_um, 0, math.inf, lo_open=True, unit="µm")
        self.handpiece.dose_for_depth([self.depth_um], "depth_um")
        if self.feathering is not None:
            shallow_um = self.handpiece.single_pulse_depth_um[0]
            fraction = self.feathering.edge_depth_fraction
            # the planner's own product, so rounding cannot pass here and fail there
            if self.depth_um * fraction < shallow_um:
                depth_um = self.depth_um
                raise SettingsError(
                    "feathering.edge_depth_fraction", fraction,
                    f"{least_shown(shallow_um / depth_um, lambda f: depth_um * f >= shallow_um)}"
                    f"..1, or depth_um of at least "
                    f"{least_shown(shallow_um / fraction, lambda d: d * fraction >= shallow_um)}"
                    " µm",
                    f"depth_um {self.depth_um:g} µm x edge_depth_fraction {fraction:g} = "
                    f"{self.depth_um * fraction:.4g} µm at the feathered edge, below the "
                    f"handpiece's shallowest calibrated depth, {shallow_um:.0f} µm")

    @cached_property
    def resolved_density(self) -> Density:
        """The density in all three forms for this handpiece and grid."""
        return self.density.resolve(self.handpiece.spot_diameter_um, self.grid)

    @property
    def min_spacing_um(self) -> float:
        """Guaranteed smallest distance between two spots of one pass."""
        return self.resolved_density.pitch_um - 2.0 * self.jitter_um
