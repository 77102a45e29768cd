"""Tissue thermal screening model: temperature rise and thermal damage of the healing reservoir.

Each fired spot leaves its residual heat as a Gaussian (1/e radius = lesion radius) spread evenly
over the depth of a slab of tissue; heat conducts in the plane and, optionally, down into the
tissue below (exact half-space factor, depth-averaged over the slab). Every grid cell outside
all lesions gets its peak rise and its Arrhenius damage integral (Henriques & Moritz skin
constants); a cell whose integral reaches the damage threshold is damaged reservoir. A screening
model for comparing plans and catching bulk heating, not a histology prediction: see
docs/thermal_model.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from types import ModuleType
from typing import cast

import numpy as np
from numpy.typing import NDArray

from controller import _thermal
from controller.errors import SettingsError

F64 = NDArray[np.float64]

#: Taylor (smooth) treatment of a near spot once its Gaussian width s >= this x window_um^2.
SMOOTH_WINDOW_RATIO = 8.0
#: A near spot is window background (evaluated at the first and last sample of a window and
#: interpolated in time) once its Gaussian width is at least this x the window's width span.
BACKGROUND_SPAN_RATIO = 2.0
#: Nodes of the depth-factor table (linear in w = v / (1 + v), v = sqrt(kappa age) / h).
LOSS_TABLE_NODES = 4097
#: Largest overestimate of the depth factor by the far grid's sum of exponential modes.
MODE_FIT_TOLERANCE = 0.02
#: Widest window half-width (µm): the parameter's limit and the cap of the widening.
MAX_WINDOW_UM = 2000.0
#: Hole search (cells x spots distances) above which the window is widened 1.5x blindly.
HOLE_SEARCH_LIMIT = 200_000_000
#: Distances computed per numpy call in the hole search.
HOLE_SEARCH_CHUNK = 4_000_000
#: Molar gas constant, J/(mol K).
GAS_CONSTANT = 8.314462618
#: Rises below the floor are not integrated; the floor is set so that a cell held just below
#: it for the whole evaluated time would gather at most this share of the damage threshold.
NEGLECTED_DAMAGE_SHARE = 1e-3
#: Damage-rate table: the exact rate every RATE_TABLE_STEP_K from the floor rise, over
#: RATE_TABLE_SPAN_K; between nodes linear (the rate is convex in the rise, so the chord lies
#: above it: over-read at most (step x Ea/(R T^2))^2 / 8 < 1e-4), exact above the table.
RATE_TABLE_STEP_K = 1.0 / 32.0
RATE_TABLE_SPAN_K = 256.0
#: Finest far grid allowed: the validated default. Finer ones under-read the damage integral
#: against the brute force (18 random 6x6 cases: down to 0.50x at 300 um where 400 um reads
#: 0.95x or more): the evaluation ends sooner after the last firing (as far^2) and the damage
#: samples fall elsewhere (traced in session 19; docs/thermal_model.md, "Limits").
MIN_FAR_GRID_UM = 400.0
#: Largest fine map (cells): its peak and damage maps take 16 bytes a cell (400 MB here, a
#: 125 mm square at 25 um); a larger area is refused before anything is allocated.
MAX_MAP_CELLS = 25_000_000
#: Longest evaluated time, first to last firing (s).
MAX_SPAN_S = 86_400.0


def depth_factor(v: F64) -> F64:
    """Share of a slab's heat still in the slab, v = sqrt(kappa age) / thickness (exact).

    Heat spread evenly over depth [0, h] of a half-space with an insulated surface, at age t:
    F = erf(1/v) - v (1 - exp(-1/v^2)) / sqrt(pi)  (docs/thermal_model.md, "Depth loss").
    """
    v = np.asarray(v, dtype=np.float64)
    out = np.ones(v.shape)
    pos = v > 0.0
    u = 1.0 / v[pos]
    erf_u = np.array([math.erf(x) for x in u.ravel()]).reshape(u.shape)
    out[pos] = erf_u + np.expm1(-u * u) / (u * math.sqrt(math.pi))
    return out


def _loss_table() -> F64:
    """depth_factor at w = i / (nodes - 1), w = v / (1 + v); the last node (v = inf) is 0."""
    w = np.linspace(0.0, 1.0, LOSS_TABLE_NODES)
    table = np.zeros(LOSS_TABLE_NODES)
    table[:-1] = depth_factor(w[:-1] / (1.0 - w[:-1]))
    return table


#: Depth factor tabulated for both kernels (linear interpolation error < 1e-6, tested).
LOSS_TABLE = _loss_table()


def table_depth_factor(age_s: F64, loss_per_sqrt_s: float) -> F64:
    """Depth factor by LOSS_TABLE, exactly as the kernels compute it (v = sqrt(age) x scale)."""
    v = np.sqrt(np.maximum(age_s, 0.0)) * loss_per_sqrt_s
    pos = (v / (1.0 + v)) * (LOSS_TABLE_NODES - 1)
    k = np.minimum(pos.astype(np.intp), LOSS_TABLE_NODES - 2)
    return LOSS_TABLE[k] + (pos - k) * (LOSS_TABLE[k + 1] - LOSS_TABLE[k])


@lru_cache(maxsize=64)
def fit_modes(theta_min: float, theta_max: float) -> tuple[F64, F64, float]:
    """Exponential modes sum_k w_k exp(-theta / tau_k) >= depth_factor(sqrt(theta)) on
    [theta_min, theta_max] (theta = kappa age / h^2), overestimating by at most
    MODE_FIT_TOLERANCE: (tau_k, w_k, largest relative overestimate). Fewest modes that do.

    F is completely monotone (a positive mixture of exponentials), so positive weights exist;
    the weights come from iteratively reweighted least squares on the relative error, then
    are scaled up until the sum is nowhere below F.
    """
    theta = np.geomspace(theta_min, max(theta_max, 1.001 * theta_min), 1000)
    target = depth_factor(np.sqrt(theta))
    for n_modes in range(1, 16):
        for low, high in ((0.5, 2.5), (0.5, 1.0), (1.0, 1.0), (0.25, 4.0), (2.0, 0.5)):
            tau = np.geomspace(low * theta[0], high * theta[-1], n_modes)
            if n_modes == 1:  # the chord of ln F (its exact slope for a narrow range)
                tau = np.array([(theta[-1] - theta[0]) / math.log(target[0] / target[-1])])
            basis = np.exp(-theta[:, None] / tau[None, :]) / target[:, None]
            weight = np.ones(len(theta))
            for _ in range(20):
                coef = np.linalg.lstsq(basis * weight[:, None], weight, rcond=None)[0]
                err = np.abs(basis @ coef - 1.0)
                weight *= 1.0 + 5.0 * err / max(float(err.max()), 1e-300)
                weight /= weight.mean()
            ratio = basis @ coef
            if (coef <= 0.0).any() or ratio.min() <= 0.0:
                continue
            coef = coef / ratio.min()
            over = float((basis @ coef).max()) - 1.0
            if over <= MODE_FIT_TOLERANCE:
                return tau, coef, over
    # a rejection, not a crash: a plan the model cannot evaluate is not fired
    raise SettingsError("thermal.depth_loss", (theta_min, theta_max),
                        "ages the model's exponential modes follow within "
                        f"{MODE_FIT_TOLERANCE:.0%} (this column depth and pass length)",
                        "no fit of the heat lost below the slab over kappa age / depth^2 in "
                        "this range: the model cannot evaluate this plan")


def _check(name: str, value: float, lo: float, hi: float, lo_open: bool = False) -> None:
    ok = (lo < value if lo_open else lo <= value) and value <= hi and math.isfinite(value)
    if not ok:
        bracket = "(" if lo_open else "["
        raise SettingsError(name, value, f"{bracket}{lo:g}, {hi:g}]")


@dataclass(frozen=True)
class TissueParams:
    """Tissue constants, the damage criterion and the numerical resolution of the model.

    diffusivity_m2_s, heat_capacity_j_m3_k: skin literature values (docs/thermal_model.md).
    thickness_um: slab over which the residual heat is spread and the rise depth-averaged
    (the column depth). depth_loss: heat also conducts down into the tissue below the slab
    (exact homogeneous half-space factor, time scale thickness^2 / diffusivity); False keeps
    every joule in the slab, an upper bound on bulk heating.
    baseline_c: tissue temperature before treatment. arrhenius_a_per_s, arrhenius_ea_j_mol:
    damage rate A exp(-Ea / (R T)) (Henriques & Moritz 1947, skin); damage_omega: a reservoir
    cell whose damage integral reaches this is damaged (1: irreversible).
    grid_um: output map cell; window_um: half-width of the fine window sampled around each
    spot; map_margin_um: how far the map, and with it the reservoir, reaches beyond the
    outermost spots (None: window_um; at most window_um); far_grid_um: node spacing of the
    coarse grid that carries heat older than the hand-over age (at least MIN_FAR_GRID_UM);
    time_sample_ratio: ratio between successive sampled Gaussian widths after a firing
    (sqrt(2): peak under-read at most 1.5 %); cutoff_rel: Gaussians are cut where they fall
    below this fraction of their centre value.
    """

    diffusivity_m2_s: float = 1.3e-7
    heat_capacity_j_m3_k: float = 3.7e6
    thickness_um: float = 500.0
    baseline_c: float = 37.0
    arrhenius_a_per_s: float = 3.1e98
    arrhenius_ea_j_mol: float = 6.28e5
    damage_omega: float = 1.0
    grid_um: float = 25.0
    window_um: float = 150.0
    far_grid_um: float = 400.0
    time_sample_ratio: float = math.sqrt(2.0)
    cutoff_rel: float = 1e-3
    depth_loss: bool = True
    map_margin_um: float | None = None

    def __post_init__(self) -> None:
        _check("diffusivity_m2_s", self.diffusivity_m2_s, 5e-8, 5e-7)
        _check("heat_capacity_j_m3_k", self.heat_capacity_j_m3_k, 2e6, 5e6)
        _check("thickness_um", self.thickness_um, 10.0, 5000.0)
        _check("baseline_c", self.baseline_c, 20.0, 42.0)
        _check("arrhenius_a_per_s", self.arrhenius_a_per_s, 1e30, 1e200)
        _check("arrhenius_ea_j_mol", self.arrhenius_ea_j_mol, 1e5, 2e6)
        _check("damage_omega", self.damage_omega, 0.0, 1e9, lo_open=True)
        _check("grid_um", self.grid_um, 2.0, 200.0)
        _check("window_um", self.window_um, 2.0 * self.grid_um, MAX_WINDOW_UM)
        # Also at least 2 grid_um (grid_um <= 200).
        _check("far_grid_um", self.far_grid_um, MIN_FAR_GRID_UM, 5000.0)
        _check("time_sample_ratio", self.time_sample_ratio, 1.0, 4.0, lo_open=True)
        _check("cutoff_rel", self.cutoff_rel, 1e-6, 0.1)
        if not isinstance(self.depth_loss, bool):
            raise SettingsError("depth_loss", self.depth_loss, "True or False")
        if self.map_margin_um is not None:
            _check("map_margin_um", self.map_margin_um, self.grid_um, self.window_um)
        # All samples of a window must fall inside the block of the firing or the next one.
        limit = math.sqrt(1.125 / self.time_sample_ratio) * self.far_grid_um
        if self.window_um >= limit:
            raise SettingsError("window_um", self.window_um,
                                f"< sqrt(1.125 / time_sample_ratio) * far_grid_um = {limit:.1f}")

    @property
    def margin_um(self) -> float:
        """How far the map reaches beyond the outermost spots."""
        return self.window_um if self.map_margin_um is None else self.map_margin_um

    @property
    def base_k(self) -> float:
        """Baseline tissue temperature in K (the Arrhenius rate needs absolute temperature)."""
        return self.baseline_c + 273.15

    @property
    def ea_r_k(self) -> float:
        """Ea / R (K)."""
        return self.arrhenius_ea_j_mol / GAS_CONSTANT

    def damage_rate(self, rise_k: F64 | float) -> F64:
        """Arrhenius damage rate (1/s) at a temperature rise above the baseline."""
        rise = np.maximum(np.asarray(rise_k, dtype=np.float64), 0.0)
        return np.exp(math.log(self.arrhenius_a_per_s) - self.ea_r_k / (self.base_k + rise))

    def rise_for_rate(self, rate_per_s: float) -> float:
        """The rise (K) at which the damage rate is ``rate_per_s`` (may be negative)."""
        return self.ea_r_k / (math.log(self.arrhenius_a_per_s) - math.log(rate_per_s)) \
            - self.base_k

    @property
    def kappa_um2_s(self) -> float:
        """``diffusivity_m2_s`` in µm^2/s, the units of the model's coordinates and times."""
        return self.diffusivity_m2_s * 1e12

    @property
    def loss_per_sqrt_s(self) -> float:
        """sqrt(kappa) / h, so that v = sqrt(age) x this; 0 without depth loss (F = 1)."""
        return math.sqrt(self.kappa_um2_s) / self.thickness_um if self.depth_loss else 0.0

    @property
    def handover_s(self) -> float:
        """Age at which a spot's Gaussian (std >= 1.5 far cells) moves to the far grid."""
        return 4.5 * self.far_grid_um**2 / (4.0 * self.kappa_um2_s)

    @property
    def block_s(self) -> float:
        """Time step of the far grid: half the hand-over age."""
        return self.handover_s / 2.0


def block_taps(step_um: float, variance_um2: float) -> F64:
    """Normalised 1-D kernel on nodes step_um apart, cut at 3 sigma, whose variance is exactly
    ``variance_um2`` (so that repeated blocks diffuse at the true rate)."""
    half = math.ceil(3.0 * math.sqrt(variance_um2) / step_um)
    d2 = (np.arange(-half, half + 1) * step_um) ** 2
    sigma2 = variance_um2
    for _ in range(50):  # fixed point: the cut lowers the variance, widen the Gaussian to match
        taps = np.exp(-d2 / (2.0 * sigma2))
        taps /= taps.sum()
        sigma2 *= variance_um2 / float(taps @ d2)
    return taps


@dataclass(frozen=True, eq=False)
class Layout:
    """Grids and time scales of one evaluation, shared by the Cython and numpy kernels.

    Fine cell (r, c) has its centre at (x0 + (c + 0.5) cell, y0 + (r + 0.5) cell); far node
    (r, c) sits at (fx0 + c far, fy0 + r far). Block b of the far grid starts at t0 + b block.
    The depth factor is ``loss_table`` at v = sqrt(age) x ``loss_per_sqrt_s``; on the far grid
    it is the sum of modes ``mode_weight`` x exp(-``mode_decay_per_s`` x age), at most
    ``mode_fit_over`` above it. ``taps``: the far grid's one-block kernel. Windows sample to
    width 2 window^2 for the peak and on to ``damage_s_um2`` (one ratio short of the
    snapshots' ``snap_s_um2``) for the damage integral. The damage rate is
    exp(``rate_ln_a`` - ``rate_ea_r_k`` / (``rate_base_k`` + rise)), integrated only above
    ``rate_floor_k`` (see NEGLECTED_DAMAGE_SHARE); from the floor on it is read from
    ``rate_table`` (the exact rate at floor + k / ``rate_per_k``, linear between nodes) while
    the rise is inside the table, exact above it.
    """

    x0_um: float
    y0_um: float
    cell_um: float
    nx: int
    ny: int
    fx0_um: float
    fy0_um: float
    far_um: float
    nfx: int
    nfy: int
    window_um: float
    kappa_um2_s: float
    t0_s: float
    block_s: float
    handover_s: float
    n_blocks: int
    sample_ratio: float
    smooth_s_um2: float
    snap_s_um2: float
    damage_s_um2: float
    reach_log: float
    background_ratio: float
    loss_per_sqrt_s: float
    loss_table: F64 = field(repr=False)
    mode_decay_per_s: F64 = field(repr=False)
    mode_weight: F64 = field(repr=False)
    mode_fit_over: float
    taps: F64 = field(repr=False)
    rate_ln_a: float
    rate_ea_r_k: float
    rate_base_k: float
    rate_floor_k: float
    rate_per_k: float
    rate_table: F64 = field(repr=False)

    @classmethod
    def for_spots(cls, x_um: F64, y_um: F64, t_s: F64, params: TissueParams) -> Layout:
        """Fine grid over the spots plus the map margin (at most one window: every cell centre
        inside the window of an outermost spot); far grid ten far cells beyond it."""
        cell, far, win, edge = (params.grid_um, params.far_grid_um, params.window_um,
                                params.margin_um)
        x0, y0 = x_um.min() - edge, y_um.min() - edge
        nx = max(math.floor((x_um.max() - x_um.min() + 2.0 * edge) / cell), 1)
        ny = max(math.floor((y_um.max() - y_um.min() + 2.0 * edge) / cell), 1)
        if nx * ny > MAX_MAP_CELLS:
            raise SettingsError("x_um, y_um", f"{nx * cell:.0f} x {ny * cell:.0f} um of map "
                                f"({nx * ny:,} cells of {cell:g} um)",
                                f"at most {MAX_MAP_CELLS:,} cells (a coarser grid_um or a "
                                "smaller area)")
        margin = 10.0 * far
        nfx = math.ceil((nx * cell + 2.0 * margin) / far) + 1
        nfy = math.ceil((ny * cell + 2.0 * margin) / far) + 1
        t0 = float(t_s.min())
        n_blocks = math.floor((float(t_s.max()) - t0 + params.handover_s) / params.block_s) + 1
        if params.depth_loss:
            theta_per_s = params.kappa_um2_s / params.thickness_um**2
            tau, weight, over = fit_modes(params.handover_s * theta_per_s,
                                          (n_blocks + 1) * params.block_s * theta_per_s)
            decay = theta_per_s / tau
        else:
            decay, weight, over = np.zeros(1), np.ones(1), 0.0
        floor_k = max(params.rise_for_rate(
            NEGLECTED_DAMAGE_SHARE * params.damage_omega / ((n_blocks + 1) * params.block_s)), 0.0)
        return cls(
            x0_um=float(x0), y0_um=float(y0), cell_um=cell, nx=nx, ny=ny,
            fx0_um=float(x0 - margin), fy0_um=float(y0 - margin), far_um=far, nfx=nfx, nfy=nfy,
            window_um=win, kappa_um2_s=params.kappa_um2_s, t0_s=t0, block_s=params.block_s,
            handover_s=params.handover_s, n_blocks=n_blocks,
            sample_ratio=params.time_sample_ratio,
            smooth_s_um2=SMOOTH_WINDOW_RATIO * win * win, snap_s_um2=2.0 * far * far,
            damage_s_um2=2.0 * far * far / params.time_sample_ratio,
            reach_log=-math.log(params.cutoff_rel), background_ratio=BACKGROUND_SPAN_RATIO,
            loss_per_sqrt_s=params.loss_per_sqrt_s, loss_table=LOSS_TABLE,
            mode_decay_per_s=np.ascontiguousarray(decay), mode_weight=np.ascontiguousarray(weight),
            mode_fit_over=over, taps=block_taps(far, 2.0 * params.kappa_um2_s * params.block_s),
            rate_ln_a=math.log(params.arrhenius_a_per_s), rate_ea_r_k=params.ea_r_k,
            rate_base_k=params.base_k, rate_floor_k=floor_k, rate_per_k=1.0 / RATE_TABLE_STEP_K,
            rate_table=params.damage_rate(cast(F64, floor_k + RATE_TABLE_STEP_K * np.arange(
                round(RATE_TABLE_SPAN_K / RATE_TABLE_STEP_K) + 1))),
        )

    @property
    def extent_um(self) -> tuple[float, float, float, float]:
        """(xmin, xmax, ymin, ymax) of the map in µm, as ``imshow(extent=...)`` takes it."""
        return (self.x0_um, self.x0_um + self.nx * self.cell_um,
                self.y0_um, self.y0_um + self.ny * self.cell_um)


@dataclass(frozen=True)
class ThermalResult:
    """Peak temperature rise and thermal damage of one evaluated pass (or passes).

    ``peak_rise_k``: peak rise over time (K); ``damage``: Arrhenius damage integral (Ω,
    dimensionless); ``damaged``: reservoir cells with Ω >= params.damage_omega.
    Maps are (rows = y, columns = x) with ``extent_um`` = (xmin, xmax, ymin, ymax) for
    ``imshow(..., origin="lower", extent=extent_um)``. ``reservoir``: cells outside every
    lesion that some spot's window sampled. ``heat_content_j`` is the heat still in the slab
    at ``heat_time_s`` (the end of the model's last far-grid block), ``heat_lost_j`` what has
    gone down into the tissue below by then (zero without depth loss), together the
    ``heat_deposited_j`` (a heat-conservation check). ``params`` are the parameters used
    (window_um/far_grid_um possibly widened to cover every cell).
    """

    peak_rise_k: F64
    damage: F64
    damaged: NDArray[np.bool_]
    reservoir: NDArray[np.bool_]
    extent_um: tuple[float, float, float, float]
    peak_reservoir_rise_k: float
    damaged_reservoir_fraction: float
    heat_deposited_j: float
    heat_content_j: float
    heat_time_s: float
    params: TissueParams

    @property
    def heat_lost_j(self) -> float:
        """Heat conducted down out of the slab by ``heat_time_s``."""
        return self.heat_deposited_j - self.heat_content_j

    def within_limit(self, max_damaged_fraction: float) -> bool:
        """True when the damaged share of the reservoir does not exceed the limit."""
        return self.damaged_reservoir_fraction <= max_damaged_fraction


def _as_spots(x_um: F64, y_um: F64, t_s: F64, heat_uj: F64,
              lesion_radius_um: F64, params: TissueParams) -> tuple[F64, ...]:
    """Validated float64 copies, sorted by firing time (stable)."""
    names = ("x_um", "y_um", "t_s", "heat_uj", "lesion_radius_um")
    arrays = [np.ascontiguousarray(a, dtype=np.float64)
              for a in (x_um, y_um, t_s, heat_uj, lesion_radius_um)]
    n = arrays[0].shape
    for name, a in zip(names, arrays, strict=True):
        if a.ndim != 1 or a.shape != n:
            raise SettingsError(name, f"shape {a.shape}", f"1-D, same length as x_um {n}")
        if not np.isfinite(a).all():
            raise SettingsError(name, "non-finite entries", "finite numbers")
    if n[0] == 0:
        raise SettingsError("x_um", "empty", "at least one spot")
    if np.ptp(arrays[2]) > MAX_SPAN_S:
        raise SettingsError("t_s", f"{np.ptp(arrays[2]):g} s from first to last",
                            f"at most {MAX_SPAN_S:g} s")
    if arrays[3].min() < 0.0:
        raise SettingsError("heat_uj", float(arrays[3].min()), ">= 0")
    radius = arrays[4]
    if radius.min() < params.grid_um or radius.max() > 5000.0:
        bad = radius.min() if radius.min() < params.grid_um else radius.max()
        raise SettingsError("lesion_radius_um", float(bad), f"[grid_um = {params.grid_um:g}, 5000]")
    order = np.argsort(arrays[2], kind="stable")
    return tuple(a[order] for a in arrays)


def with_window(params: TissueParams, window_um: float) -> TissueParams:
    """``params`` with window ``window_um`` (capped at MAX_WINDOW_UM, the largest allowed),
    the far grid coarsened just enough to keep the block constraint."""
    window = min(window_um, MAX_WINDOW_UM)
    far = max(params.far_grid_um, 1.01 * window * math.sqrt(params.time_sample_ratio / 1.125))
    return replace(params, window_um=window, far_grid_um=far)


def _window_reaching(x: F64, y: F64, lay: Layout, holes: NDArray[np.bool_],
                     reach_um: float) -> float:
    """The half-width that samples every hole, more than the current ``reach_um`` (at least
    one cell more): the largest distance (max-norm, the windows being squares) from a hole
    cell to its nearest spot, 1 % over; 1.5 ``reach_um`` if that would take too long to
    compute (very many holes and spots).

    Exact while that distance is at most MAX_WINDOW_UM, the widest window; beyond, only known
    to exceed it (the widening is capped there): each band of hole rows is measured against
    the spots within MAX_WINDOW_UM of it across the rows, the only ones that can be nearer.
    """
    rows, cols = np.nonzero(holes)  # row by row: a chunk of holes spans a band of rows
    if len(rows) * len(x) > HOLE_SEARCH_LIMIT:
        return 1.5 * reach_um
    xc = lay.x0_um + (cols + 0.5) * lay.cell_um
    yc = lay.y0_um + (rows + 0.5) * lay.cell_um
    by_y = np.argsort(y, kind="stable")
    xs, ys = x[by_y], y[by_y]
    chunk = max(1, HOLE_SEARCH_CHUNK // len(x))
    nearest = 0.0
    for k in range(0, len(xc), chunk):
        hx, hy = xc[k:k + chunk, None], yc[k:k + chunk, None]
        lo = int(np.searchsorted(ys, hy.min() - MAX_WINDOW_UM, side="left"))
        hi = int(np.searchsorted(ys, hy.max() + MAX_WINDOW_UM, side="right"))
        if hi == lo:  # no spot within the widest window of these holes
            return math.inf
        dist = np.maximum(np.abs(hx - xs[None, lo:hi]), np.abs(hy - ys[None, lo:hi]))
        nearest = max(nearest, float(dist.min(axis=1).max()))
    return max(1.01 * nearest, reach_um + lay.cell_um)


def _spots_on_both_sides(centres_um: F64, band_um: F64, along_um: F64, positions_um: F64,
                         half_width_um: float) -> NDArray[np.bool_]:
    """[band, position]: do spots within half_width of the band centre lie on both sides?

    ``band_um`` and ``along_um`` are the spot coordinates across and along the bands.
    """
    order = np.argsort(band_um, kind="stable")
    band, along = band_um[order], along_um[order]
    lo = np.searchsorted(band, centres_um - half_width_um, "left")
    hi = np.searchsorted(band, centres_um + half_width_um, "right")
    least = np.array([along[a:b].min() if b > a else np.inf for a, b in zip(lo, hi, strict=True)])
    most = np.array([along[a:b].max() if b > a else -np.inf for a, b in zip(lo, hi, strict=True)])
    return (least[:, None] < positions_um[None, :]) & (positions_um[None, :] < most[:, None])


def _within(x: F64, y: F64, reach_um: float, lay: Layout) -> NDArray[np.bool_]:
    """Cells whose centres lie within ``reach_um`` (max-norm) of some spot: the cells that
    windows of that half-width sample (each spot's span as ``thermal_ref.cell_span``)."""
    def span(centre: F64, origin: float, n: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        lo = np.ceil((centre - reach_um - origin) / lay.cell_um - 0.5)
        hi = np.floor((centre + reach_um - origin) / lay.cell_um - 0.5) + 1.0
        return np.clip(lo, 0, n).astype(np.intp), np.clip(hi, 0, n).astype(np.intp)

    c0, c1 = span(x, lay.x0_um, lay.nx)
    r0, r1 = span(y, lay.y0_um, lay.ny)
    keep = (c0 < c1) & (r0 < r1)
    c0, c1, r0, r1 = c0[keep], c1[keep], r0[keep], r1[keep]
    # A 2-D difference array, summed in place: a map-sized int64 array and two copies were
    # 300 MB of a 12.7-million-cell map; int32 holds counts of spots (below 2**31).
    corners = np.zeros((lay.ny + 1, lay.nx + 1), dtype=np.int32)
    for rows, cols, sign in ((r0, c0, 1), (r0, c1, -1), (r1, c0, -1), (r1, c1, 1)):
        np.add.at(corners, (rows, cols), sign)
    np.cumsum(corners, axis=0, out=corners)
    np.cumsum(corners, axis=1, out=corners)
    return cast(NDArray[np.bool_], corners[:-1, :-1] > 0)


def _holes(x: F64, y: F64, lay: Layout, sampled: NDArray[np.bool_],
           reach_um: float) -> NDArray[np.bool_]:
    """Unsampled cells inside the spots' bounding box with spots on both sides along their row
    band or their column band, ``reach_um`` wide on each side (a cell beyond the outermost,
    jittered row is not a hole)."""
    if sampled.all():
        return ~sampled
    xc = cast(F64, lay.x0_um + (np.arange(lay.nx) + 0.5) * lay.cell_um)
    yc = cast(F64, lay.y0_um + (np.arange(lay.ny) + 0.5) * lay.cell_um)
    in_row = _spots_on_both_sides(yc, y, x, xc, reach_um)
    in_col = _spots_on_both_sides(xc, x, y, yc, reach_um).T
    inside = ((yc >= y.min()) & (yc <= y.max()))[:, None] & ((xc >= x.min()) & (xc <= x.max()))
    return ~sampled & inside & (in_row | in_col)


def _simulate(x_um: F64, y_um: F64, t_s: F64, heat_uj: F64, lesion_radius_um: F64,
              params: TissueParams, kernel: ModuleType) -> ThermalResult:
    """Evaluate with the given kernel module (controller._thermal or controller.thermal_ref).

    The window is widened (to the distance from the farthest such cell to its nearest spot)
    until no map cell between spots (spots on both sides along its row or its column) is
    outside every window, or the window reaches its 2000 µm limit. Cells outside every window
    (beyond the edge of a concave pattern) keep the coarse far-grid value and are left out of
    the reservoir.
    """
    x, y, t, heat, radius = _as_spots(x_um, y_um, t_s, heat_uj, lesion_radius_um, params)
    # Times from the first firing: the kernels step in milliseconds, which times far from
    # zero cannot hold (1e15 s: steps of 0.125 s; the results depended on the offset).
    t_first = float(t[0])
    t = t - t_first
    thickness_m = params.thickness_um * 1e-6
    e_k_um2 = heat * 1e-6 / (params.heat_capacity_j_m3_k * thickness_m) * 1e12
    while True:
        lay = Layout.for_spots(x, y, t, params)
        peak, damage, far_end, sampled = kernel.peak_rise(x, y, t, e_k_um2, radius * radius,
                                                          lay)
        if params.map_margin_um is not None:  # the reservoir is the map margin's reach
            sampled &= _within(x, y, params.map_margin_um, lay)
        if params.window_um >= MAX_WINDOW_UM or sampled.all():  # all sampled: no holes
            break
        holes = _holes(x, y, lay, sampled, params.margin_um)
        if not holes.any():
            break
        reach_um = _window_reaching(x, y, lay, holes, params.margin_um)
        params = with_window(params, max(reach_um, params.window_um))
        if params.map_margin_um is not None:
            params = replace(params, map_margin_um=min(reach_um, params.window_um))
    # In place (no map-sized temporaries; each new map's pages are zeroed by the kernel):
    # reservoir = sampled & ~lesion, damaged = reservoir & (damage >= omega) in the lesion mask.
    mask = kernel.lesion_mask(x, y, radius, lay)
    reservoir = np.logical_and(sampled, np.logical_not(mask, out=mask), out=sampled)
    damaged = np.logical_and(reservoir, np.greater_equal(damage, params.damage_omega, out=mask),
                             out=mask)
    n_res = int(np.count_nonzero(reservoir))
    far_m = lay.far_um * 1e-6
    return ThermalResult(
        peak_rise_k=peak,
        damage=damage,
        damaged=damaged,
        reservoir=reservoir,
        extent_um=lay.extent_um,
        peak_reservoir_rise_k=float(np.max(peak, where=reservoir, initial=-np.inf))
        if n_res else 0.0,
        damaged_reservoir_fraction=float(np.count_nonzero(damaged)) / n_res if n_res else 0.0,
        heat_deposited_j=float(heat.sum()) * 1e-6,
        heat_content_j=float(far_end.sum()) * far_m * far_m * params.heat_capacity_j_m3_k
        * thickness_m,
        heat_time_s=t_first + lay.t0_s + lay.n_blocks * lay.block_s,
        params=params,
    )


def simulate_pass(x_um: F64, y_um: F64, t_s: F64, heat_uj: F64, lesion_radius_um: F64,
                  params: TissueParams) -> ThermalResult:
    """Peak reservoir temperature rise and damage of the spots fired at times ``t_s``.

    Arrays are 1-D float64 of equal length: spot centres (µm), firing time (s from the pass
    start; any order), residual heat left in the tissue (µJ) and lesion radius (column +
    coagulation rim, µm; tissue within it is not reservoir). Several passes are evaluated
    together by concatenating them with their real firing times.

    Size ``params`` for the spots' pitch (``controller.thermal_screen.sized_for_pitch``, as the
    planner, ``co2scan preview`` and ``co2scan report`` do): against the exact superposition,
    ``TissueParams()``'s 150 µm window read the damage at least 0.945x at pitches of 150 and
    200 µm (1.07x where the exact damage is at most 100), but down to 0.53x, and the peak
    0.745x, at 250 µm (docs/thermal_model.md, "Limits").
    """
    return _simulate(x_um, y_um, t_s, heat_uj, lesion_radius_um, params, _thermal)


@dataclass(frozen=True)
class Trial:
    """One evaluated variant of a plan: what was tried and how the reservoir fared."""

    name: str
    peak_reservoir_rise_k: float
    damaged_reservoir_fraction: float
    passes: bool


def passing_heat_scale(result: ThermalResult, max_damaged_fraction: float) -> float:
    """Estimated largest factor on every spot's heat with which ``result`` stays within the
    limit (callers verify it by running the model again).

    The rise is linear in heat and the damage integral is dominated by the time near a cell's
    peak, so scaling the heat by f multiplies a cell's integral by about
    rate(f x peak) / rate(peak). The estimate brings the (allowed + 1)-th most damaged
    reservoir cell just below the threshold.
    """
    params = result.params
    omega = result.damage[result.reservoir]
    peak = result.peak_rise_k[result.reservoir]
    order = np.argsort(omega)
    allowed_cells = math.floor(max_damaged_fraction * len(order))
    if allowed_cells >= len(order):
        return math.inf
    kept = order[len(order) - 1 - allowed_cells]
    if omega[kept] <= 0.0 or peak[kept] <= 0.0:
        return math.inf
    # rate(f peak) = rate(peak) x threshold / omega, solved for f.
    target_rate = float(params.damage_rate(peak[kept])) * params.damage_omega / omega[kept]
    return params.rise_for_rate(target_rate) / float(peak[kept])


def search_wait(evaluate: Callable[[float], Trial], trials: list[Trial], max_wait_s: float,
                 tolerance_s: float) -> float | None:
    """Shortest wait that passes: doubling from 0.5 s, then bisection on whole tenths of a
    second (the wait a suggestion prints, ``.1f``, is then the wait it evaluated); None if
    none does."""
    failing, wait = 0.0, min(0.5, max_wait_s)
    while True:
        trial = evaluate(wait)
        trials.append(trial)
        if trial.passes:
            break
        if wait >= max_wait_s:
            return None
        failing, wait = wait, min(2.0 * wait, max_wait_s)
    passing = wait
    while passing - failing > tolerance_s:
        middle = math.ceil(5.0 * (failing + passing)) / 10.0
        if middle >= passing:
            break
        trial = evaluate(middle)
        trials.append(trial)
        if trial.passes:
            passing = middle
        else:
            failing = middle
    return passing
