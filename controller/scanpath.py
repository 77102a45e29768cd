"""Scan-path planner: treatment settings -> the exact micro-pores to fire, with metrics.

Each pass is generated in its own *grid frame* (the lattice anchored at the pattern centre,
shifted into the earlier passes' reservoirs and turned by the per-pass rotation): lattice ->
optional jitter -> polygon mask -> optional edge feathering -> rotation onto the skin ->
firing order -> energy per spot -> timing. Everything random is drawn from counter-based
streams keyed by (seed, pass, purpose), so a plan is a pure function of settings, timing
limits and seed. Heavy loops run in ``controller._scanpath`` (Cython).
"""

from __future__ import annotations

import hashlib
import math
import zlib
from dataclasses import dataclass, fields
from enum import IntEnum
from functools import cache

import numpy as np
from numpy.typing import NDArray

from controller import _scanpath, patterns
from controller.errors import SettingsError
from controller.settings import Density, TreatmentSettings, integer
from controller.timing import GalvoTiming, fire_times_us

#: Sample points per spot for the union-of-spots (reservoir) estimate.
UNION_SAMPLES = 64
#: Offset candidates per lattice axis when placing later passes in the reservoirs.
OFFSET_STEPS = 48


class Stream(IntEnum):
    """Purposes of the random streams of one pass."""

    JITTER = 1
    FEATHER = 2
    ORDER = 3


def stream_key(seed: int, pass_index: int, stream: Stream) -> int:
    """64-bit key of one random stream (independent for every seed, pass and purpose)."""
    digest = hashlib.blake2b(f"{seed}:{pass_index}:{int(stream)}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little")


@dataclass(frozen=True)
class PassMetrics:
    """What one pass delivers over the pattern's outline area. Areas and doses count the
    share of each spot's lesion (its disc) inside the outline: a spot centred on an edge
    counts half, on a square's corner a quarter (``spots_per_cm2`` counts spots so weighted);
    peak fluence is the spot's own."""

    spot_count: int
    pulse_count: int
    pitch_um: float
    coverage_pct: float
    spots_per_cm2: float
    reservoir_fraction: float
    peak_fluence_j_cm2: float
    area_fluence_j_cm2: float
    spot_rate_hz: float
    duration_s: float
    travel_mm: float


@dataclass(frozen=True)
class PlanMetrics:
    """Per-pass metrics and what all passes leave together."""

    target: Density
    pattern_area_mm2: float
    min_spacing_um: float
    passes: tuple[PassMetrics, ...]
    combined_coverage_pct: float
    combined_reservoir_fraction: float
    total_duration_s: float


@dataclass(frozen=True, eq=False, kw_only=True)
class Spots:
    """Spots in firing order (spot k is the k-th fired), one array per field.

    ``order[k]`` is spot k's index in its pass's row-major grid (the firing order as a
    permutation); ``fire_time_us`` is the estimated first-pulse time from its pass's start.
    """

    x_um: NDArray[np.float64]
    y_um: NDArray[np.float64]
    energy_uj: NDArray[np.int32]
    pulse_us: NDArray[np.int32]
    stack: NDArray[np.int32]
    order: NDArray[np.int32]
    fire_time_us: NDArray[np.float64]


#: The per-spot arrays that every pass has and a plan concatenates.
SPOT_FIELDS = tuple(f.name for f in fields(Spots))


@dataclass(frozen=True, eq=False, kw_only=True)
class PassPlan(Spots):
    """One pass: its spots and metrics."""

    metrics: PassMetrics


@dataclass(frozen=True, eq=False, kw_only=True)
class Plan(Spots):
    """A whole treatment: every pass's spots in firing order, concatenated, with
    ``pass_index`` naming each spot's pass. ``checksum`` is CRC-32 over ``CHECKSUM_FIELDS``
    (little-endian, that order)."""

    CHECKSUM_FIELDS = ("x_um", "y_um", "energy_uj", "pulse_us", "stack", "pass_index", "order")

    settings: TreatmentSettings
    timing: GalvoTiming
    seed: int
    pass_index: NDArray[np.int32]
    metrics: PlanMetrics
    checksum: int

    def pass_slice(self, pass_index: int) -> slice:
        """Index range of one pass's spots."""
        lo, hi = np.searchsorted(self.pass_index, [pass_index, pass_index + 1])
        return slice(int(lo), int(hi))

    @property
    def intact(self) -> bool:
        """Do the spot arrays still match ``checksum`` (not changed since planning, when the
        metrics were computed)?"""
        return plan_checksum({f: getattr(self, f) for f in self.CHECKSUM_FIELDS}) == self.checksum


def plan_checksum(arrays: dict[str, np.ndarray]) -> int:
    """CRC-32 of the named arrays, each as little-endian bytes, in ``Plan.CHECKSUM_FIELDS``."""
    crc = 0
    for name in Plan.CHECKSUM_FIELDS:
        a = arrays[name]
        crc = zlib.crc32(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).data, crc)
    return crc


def _lattice_basis_um(pitch_um: float, hexagonal: bool) -> tuple[tuple[float, float], ...]:
    if hexagonal:
        return (pitch_um, 0.0), (pitch_um / 2.0, pitch_um * math.sqrt(3.0) / 2.0)
    return (pitch_um, 0.0), (0.0, pitch_um)


def pass_offsets_um(
    count: int, pitch_um: float, hexagonal: bool, along_x_only: bool = False
) -> list[tuple[float, float]]:
    """Lattice shift of each pass: pass 0 unshifted, each later pass at the point of the unit
    cell farthest from every earlier pass's spots (their reservoirs' centres)."""
    (ax, ay), (bx, by) = _lattice_basis_um(pitch_um, hexagonal)
    steps = np.arange(OFFSET_STEPS) / OFFSET_STEPS
    u, v = np.meshgrid(steps, [0.0] if along_x_only else steps)
    cand = np.stack([u.ravel() * ax + v.ravel() * bx, u.ravel() * ay + v.ravel() * by], 1)
    images = np.array([(p * ax + q * bx, p * ay + q * by)
                       for p in (-1, 0, 1) for q in (-1, 0, 1)])
    chosen = [np.zeros(2)]
    while len(chosen) < count:
        near = np.full(len(cand), np.inf)
        for c in chosen:
            d = cand[:, None, :] - (c + images)[None, :, :]
            near = np.minimum(near, np.min(np.einsum("kij,kij->ki", d, d), axis=1))
        chosen.append(cand[int(np.argmax(near))])
    return [(float(c[0]), float(c[1])) for c in chosen]


@cache
def _union_samples(radius_um: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Sunflower points filling a disc evenly (offsets from its centre)."""
    s = np.arange(UNION_SAMPLES)
    r = radius_um * np.sqrt((s + 0.5) / UNION_SAMPLES)
    angle = s * math.pi * (3.0 - math.sqrt(5.0))
    return r * np.cos(angle), r * np.sin(angle)


def union_area_um2(x_um: NDArray[np.float64], y_um: NDArray[np.float64], diameter_um: float,
                   vx: NDArray[np.float64], vy: NDArray[np.float64]) -> float:
    """Area of the union of spots of ``diameter_um`` inside the outline: exact for spots
    that no earlier spot overlaps, sampled for the others."""
    sx, sy = _union_samples(diameter_um / 2.0)
    inside = lesion_inside_fraction(x_um, y_um, diameter_um, vx, vy)
    count = _scanpath.uncovered_samples(x_um, y_um, diameter_um / 2.0, sx, sy, inside, vx, vy)
    return count * math.pi * diameter_um**2 / 4.0 / UNION_SAMPLES


def lesion_inside_fraction(x_um: NDArray[np.float64], y_um: NDArray[np.float64],
                           diameter_um: float, vx: NDArray[np.float64],
                           vy: NDArray[np.float64]) -> NDArray[np.float64]:
    """Share of each spot's disc inside the outline: 1 unless it comes within a radius of
    an edge (the closed outline keeps spots centred on it, half their lesion outside)."""
    inside = np.ones(len(x_um))
    near = np.flatnonzero(_scanpath.near_outline(x_um, y_um, vx, vy, diameter_um / 2.0))
    inside[near] = patterns.disc_area_inside_um2(x_um[near], y_um[near], diameter_um / 2.0,
                                                 vx, vy) / (math.pi * diameter_um**2 / 4.0)
    return inside


def thermal_subgrids(min_distance_um: float, pitch_um: float, hexagonal: bool
                     ) -> tuple[int, int]:
    """Sub-grid counts (along rows, across rows) whose same-sub-grid spots are at least
    ``min_distance_um`` apart (rows are pitch*sqrt(3)/2 apart on a hexagonal grid)."""
    row_um = pitch_um * math.sqrt(3.0) / 2.0 if hexagonal else pitch_um
    return (max(2, math.ceil(min_distance_um / pitch_um)),
            max(2, math.ceil(min_distance_um / row_um)))


def skin_outline(settings: TreatmentSettings) -> patterns.Polygon:
    """The pattern's outline on the skin (µm, turned by its rotation)."""
    vx, vy = settings.pattern.outline_um(settings.resolved_density.pitch_um)
    return patterns.rotate(vx, vy, math.radians(settings.pattern.rotation_deg))


def _size_field(settings: TreatmentSettings) -> tuple[str, object]:
    p = settings.pattern
    return ("pattern.vertices_mm", p.vertices_mm) if p.shape == "polygon" else (
        "pattern.width_mm", p.width_mm)


def pass_geometry(
    settings: TreatmentSettings, geom_pass: int, seed: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int32], NDArray[np.int32],
           NDArray[np.float64]]:
    """Spots of one pass before ordering: (x_um, y_um on the skin, i, j, depth_scale);
    depth_scale is a read-only view of ones when the pattern is not feathered."""
    density = settings.resolved_density
    hexagonal = settings.grid == "hex"
    turn_rad = math.radians(settings.passes.rotation_deg * geom_pass)
    skin_rad = math.radians(settings.pattern.rotation_deg) + turn_rad
    gx, gy = patterns.rotate(*settings.pattern.outline_um(density.pitch_um), -turn_rad)
    offsets = pass_offsets_um(geom_pass + 1, density.pitch_um, hexagonal,
                              along_x_only=settings.pattern.shape == "line")
    x, y, i, j = _scanpath.grid_points(
        gx, gy, density.pitch_um, hexagonal, *offsets[geom_pass],
        settings.jitter_um / math.sqrt(2.0), stream_key(seed, geom_pass, Stream.JITTER),
        math.cos(skin_rad), math.sin(skin_rad))
    scale = np.broadcast_to(1.0, len(x))  # read-only ones: no 8 MB temporary per 1 M spots
    feather = settings.feathering
    if feather is not None:
        if settings.pattern.shape == "line":  # feather towards the line's two ends only
            along_um = x * math.cos(skin_rad) + y * math.sin(skin_rad)
            edge_um = float(gx.max()) - np.abs(along_um)
        else:
            edge_um = _scanpath.edge_distance(x, y, *skin_outline(settings))
        # clipped at 0 too: rounding puts a rotated line's end spot a hair past its end
        ramp = np.clip(edge_um / feather.width_um, 0.0, 1.0)
        u = _scanpath.uniform(stream_key(seed, geom_pass, Stream.FEATHER), len(x))
        keep = u < feather.edge_density_fraction + (1.0 - feather.edge_density_fraction) * ramp
        x, y, i, j, ramp = x[keep], y[keep], i[keep], j[keep], ramp[keep]
        scale = feather.edge_depth_fraction + (1.0 - feather.edge_depth_fraction) * ramp
    if len(x) == 0:
        name, value = _size_field(settings)
        raise SettingsError(name, value, f"a pattern holding at least one spot at pitch "
                            f"{density.pitch_um:.0f} µm", f"pass {geom_pass + 1} has no spot "
                            f"(spot diameter {settings.handpiece.spot_diameter_um:g} µm)")
    return x, y, i, j, scale


def firing_order(
    settings: TreatmentSettings, x: NDArray[np.float64], y: NDArray[np.float64],
    i: NDArray[np.int32], j: NDArray[np.int32], key: int, timing: GalvoTiming,
) -> tuple[NDArray[np.int32], float]:
    """Permutation of the pass's spots and the spot rate (Hz) it must be fired at."""
    spec = settings.order
    if spec.kind == "raster":
        return np.arange(len(x), dtype=np.int32), timing.max_spot_rate_hz
    if spec.kind == "random":
        return (np.argsort(_scanpath.uniform(key, len(x)), kind="stable").astype(np.int32),
                timing.max_spot_rate_hz)
    if spec.kind in ("serpentine", "interlaced"):
        k = 1 if spec.kind == "serpentine" else spec.interlace_k
        return _scanpath.interlaced_order(i, j, x, y, k, k), timing.max_spot_rate_hz
    ki, kj = thermal_subgrids(max(spec.min_step_um, spec.neighbour_um) + 2 * settings.jitter_um,
                              settings.resolved_density.pitch_um, settings.grid == "hex")
    order = _scanpath.interlaced_order(i, j, x, y, ki, kj)
    xs, ys = x[order], y[order]
    step_um = np.hypot(np.diff(xs), np.diff(ys))
    if len(step_um) and step_um.min() < spec.min_step_um:
        raise SettingsError("order.min_step_um", spec.min_step_um,
                            f"<= {step_um.min():.0f} µm for this pattern",
                            "the pattern is too small to keep consecutive spots that far apart")
    # fastest rate at which neighbours fired `gap` spots apart are relax_ms apart
    needed_gap = math.ceil(spec.relax_ms * 1e-3 * timing.max_spot_rate_hz)
    # a pair at the neighbour distance to rounding counts as neighbours (the distance is
    # compared squared here; hypot elsewhere may put it a few ulp below the threshold)
    gap = _scanpath.min_neighbour_gap(xs, ys, spec.neighbour_um * (1.0 + 1e-9), needed_gap)
    rate_hz = timing.max_spot_rate_hz if gap >= needed_gap else gap * 1000.0 / spec.relax_ms
    return order, rate_hz


def plan_pass(
    settings: TreatmentSettings, pass_index: int, timing: GalvoTiming | None = None,
    seed: int = 0,
) -> PassPlan:
    """Spots, energies, firing order, timing and metrics of one pass."""
    timing = timing or GalvoTiming()
    integer("seed", seed, 0, 2**64 - 1)
    integer("pass_index", pass_index, 0, settings.passes.count - 1)
    geom_pass = 0 if settings.passes.mode == "stack" else pass_index
    x, y, i, j, scale = pass_geometry(settings, geom_pass, seed)
    order, rate_hz = firing_order(settings, x, y, i, j,
                                   stream_key(seed, pass_index, Stream.ORDER), timing)
    x, y = x[order], y[order]
    hp = settings.handpiece
    if settings.feathering is None:  # one depth: one dose for every spot
        energy_uj, pulse_us, stack = (np.repeat(a, len(x)) for a in hp.dose_for_depth(
            [settings.depth_um]))
    else:
        energy_uj, pulse_us, stack = hp.dose_for_depth(settings.depth_um * scale[order])
    t_us, end_us, travel_um = fire_times_us(x, y, pulse_us, stack, rate_hz, timing)
    outline = skin_outline(settings)
    area_um2 = patterns.signed_area_um2(*outline)
    inside = lesion_inside_fraction(x, y, hp.spot_diameter_um, *outline)
    lesions = float(inside.sum())  # spots, each counted by its lesion's share inside
    dose_j = energy_uj.astype(np.float64) * stack * 1e-6
    metrics = PassMetrics(
        spot_count=len(x),
        pulse_count=int(stack.sum()),
        pitch_um=settings.resolved_density.pitch_um,
        coverage_pct=100.0 * lesions * hp.spot_area_um2 / area_um2,
        spots_per_cm2=lesions / area_um2 * 1e8,
        # spots of one pass never overlap (jitter <= (pitch - diameter) / 2): no union needed
        reservoir_fraction=max(0.0, 1.0 - lesions * hp.spot_area_um2 / area_um2),
        peak_fluence_j_cm2=float(dose_j.max()) / (hp.spot_area_um2 * 1e-8),
        area_fluence_j_cm2=float(np.dot(dose_j, inside)) / (area_um2 * 1e-8),
        spot_rate_hz=rate_hz,
        duration_s=end_us * 1e-6,
        travel_mm=travel_um * 1e-3,
    )
    return PassPlan(x_um=x, y_um=y, energy_uj=energy_uj, pulse_us=pulse_us, stack=stack,
                    order=order, fire_time_us=t_us, metrics=metrics)


def build_plan(settings: TreatmentSettings, timing: GalvoTiming | None = None, seed: int = 0
               ) -> Plan:
    """The whole treatment plan for ``settings`` within ``timing``'s limits.

    Raises SettingsError for settings the device or the pattern cannot honour (outline
    outside the galvo field, a pass with no spot, thermal-spread rules that cannot hold).
    """
    timing = timing or GalvoTiming()
    integer("seed", seed, 0, 2**64 - 1)
    vx, vy = skin_outline(settings)
    reach_um = float(max(np.abs(vx).max(), np.abs(vy).max()))
    if reach_um > timing.field_um / 2.0:
        name, value = _size_field(settings)
        raise SettingsError(name, value, f"an outline within the galvo field "
                            f"(±{timing.field_um / 2000.0:g} mm)",
                            f"reaches {reach_um / 1000.0:g} mm")
    spot_um2 = settings.handpiece.spot_area_um2
    if patterns.signed_area_um2(vx, vy) < spot_um2:  # one spot would cover more than all of it
        name, value = _size_field(settings)
        d_um = settings.handpiece.spot_diameter_um
        raise SettingsError(name, value, f"a pattern at least as large as one {d_um:g} µm spot "
                            f"({spot_um2 * 1e-6:.4g} mm²)", f"the pattern's area, "
                            f"{patterns.signed_area_um2(vx, vy) * 1e-6:.3g} mm², is smaller "
                            "than one spot's")
    passes = [plan_pass(settings, k, timing, seed) for k in range(settings.passes.count)]
    arrays = {name: np.concatenate([getattr(p, name) for p in passes]) for name in SPOT_FIELDS}
    arrays["pass_index"] = np.repeat(np.arange(len(passes), dtype=np.int32),
                                     [p.metrics.spot_count for p in passes])
    area_um2 = patterns.signed_area_um2(vx, vy)
    d_um = settings.handpiece.spot_diameter_um
    if len(passes) == 1:
        union_um2 = (1.0 - passes[0].metrics.reservoir_fraction) * area_um2
    else:
        union_um2 = union_area_um2(arrays["x_um"], arrays["y_um"], d_um, vx, vy)
    metrics = PlanMetrics(
        target=settings.resolved_density,
        pattern_area_mm2=area_um2 * 1e-6,
        min_spacing_um=settings.min_spacing_um,
        passes=tuple(p.metrics for p in passes),
        combined_coverage_pct=100.0 * min(1.0, union_um2 / area_um2),
        combined_reservoir_fraction=max(0.0, 1.0 - union_um2 / area_um2),
        total_duration_s=sum(p.metrics.duration_s for p in passes),
    )
    return Plan(settings=settings, timing=timing, seed=seed, metrics=metrics,
                checksum=plan_checksum(arrays), **arrays)
