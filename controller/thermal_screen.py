"""Thermal screen of a whole plan: reservoir heating after every pass, and what would fix it.

The planner runs :func:`screen_plan` on every plan. Each spot leaves residual heat =
``residual_heat_fraction`` x pulse energy x stacked pulses; its lesion (tissue that is not
reservoir) is the spot radius plus the coagulation rim of its pulse energy, both from the
handpiece calibration. Passes run one after another with ``inter_pass_gap_s`` between the end
of one and the start of the next, spot times from the plan's ``fire_time_us``. The result
after pass k includes the heat and lesions of passes 0..k, and of every pass of the
``earlier`` plans of the same session (fired before this plan, on the same area, each with
its own handpiece's calibration). A plan is within the limit when no pass damages more than
the handpiece's ``max_reservoir_damage_fraction`` of the reservoir.
Model and limits: docs/thermal_model.md (a screening model, not a histology prediction).

Screens take seconds to minutes (a 10-pass plan within the limit is 55 model runs; the
planner stops a plan's screen at its first pass beyond the limit, and its suggestions add more):
inside ``with screen_progress(callback):`` every model run first calls ``callback`` with what
it evaluates, e.g. ``"plan 1, pass 3 of 10"`` or ``"suggestion thermal-spread order, pass 1 of
10"``, so that a caller can show progress.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace

import numpy as np

from controller.errors import SettingsError
from controller.numbers import distinct_digits
from controller.scanpath import Plan, build_plan
from controller.settings import (
    MAX_PITCH_UM,
    DensitySpec,
    Handpiece,
    ScanOrder,
    density_at_pitch,
    number,
)
from controller.thermal import (
    F64,
    MAX_WINDOW_UM,
    ThermalResult,
    TissueParams,
    Trial,
    passing_heat_scale,
    search_wait,
    simulate_pass,
    with_window,
)

#: Longest wait between passes that a suggestion may ask for.
MAX_WAIT_S = 300.0
#: Density cuts tried (each rebuilt and screened) before giving up on a density suggestion:
#: each cuts by the failing pass's heat scale and at least CUT_STEP, so 12 reach 14 % of the
#: first one's coverage at the least, and the planner's sparsest lattice usually before.
MAX_DENSITY_SCREENS = 12
#: The least significant digits of a damaged share shown beside its limit (more when needed
#: to tell them apart: 5.04 % over a limit of 5 %).
DAMAGE_DIGITS = 3
#: The least further cut of the heat (as coverage) after a density variant still fails.
CUT_STEP = 0.85
#: A screen's window half-width in lattice pitches (docs/thermal_model.md, Limits: narrower
#: windows let young heat reach edge cells that no open window covers).
WINDOW_PITCHES = 1.5

_progress: ContextVar[Callable[[str], None] | None] = ContextVar("screen_progress", default=None)
_subject: ContextVar[str] = ContextVar("screen_subject", default="")


@contextmanager
def screen_progress(callback: Callable[[str], None]) -> Iterator[None]:
    """Within the block, every model run of a screen first calls ``callback(what)``."""
    token = _progress.set(callback)
    try:
        yield
    finally:
        _progress.reset(token)


@contextmanager
def screening(subject: str) -> Iterator[None]:
    """Name what the model runs within the block evaluate (e.g. ``"plan 1"``; nested names
    join: ``"plan 1, suggestion thermal-spread order"``)."""
    token = _subject.set(_within_subject(subject))
    try:
        yield
    finally:
        _subject.reset(token)


def _within_subject(what: str) -> str:
    return ", ".join(s for s in (_subject.get(), what) if s)


def announce(what: str) -> None:
    """Tell the progress callback (:func:`screen_progress`) what the next model run evaluates."""
    callback = _progress.get()
    if callback is not None:
        callback(_within_subject(what))


@dataclass(frozen=True)
class SpotHeat:
    """Model inputs of a session's spots (earlier plans first, then this plan, each in plan
    order) with times on one sequence clock. ``pass_start_s`` has one entry per pass of the
    sequence; this plan's spots start at index ``first``."""

    first: int
    x_um: F64
    y_um: F64
    t_s: F64
    heat_uj: F64
    lesion_radius_um: F64
    column_depth_um: F64
    pass_start_s: F64

    @classmethod
    def of_pulses(cls, handpiece: Handpiece, x_um: F64, y_um: F64, t_s: F64, energy_uj: F64,
                  pulse_mj: F64, stack: F64, source: str = "plan.energy_uj") -> SpotHeat:
        """Spots fired with ``handpiece``, from their energy (µJ, whole stack), one pulse's
        energy (mJ) and stack, by its calibration: heat = residual fraction x energy, lesion =
        spot radius + the pulse's coagulation rim, column depth = the pulse's depth x stack.
        No pass starts: :meth:`joined` gives them to the whole sequence."""
        return cls(
            first=0, x_um=x_um, y_um=y_um, t_s=t_s,
            heat_uj=handpiece.residual_heat_fraction * energy_uj,
            lesion_radius_um=handpiece.spot_diameter_um / 2.0
            + handpiece.coag_for_energy_um(pulse_mj, source),
            column_depth_um=handpiece.depth_for_energy_um(pulse_mj, source) * stack,
            pass_start_s=np.empty(0))

    @classmethod
    def joined(cls, parts: Sequence[SpotHeat], pass_start_s: F64, first: int = 0) -> SpotHeat:
        """The spots of ``parts`` (each with its own handpiece's calibration) one after
        another, with the sequence's pass starts; this plan's spots start at ``first``."""
        def cat(field: str) -> F64:
            return np.concatenate([getattr(p, field) for p in parts])

        return cls(first=first, x_um=cat("x_um"), y_um=cat("y_um"), t_s=cat("t_s"),
                   heat_uj=cat("heat_uj"), lesion_radius_um=cat("lesion_radius_um"),
                   column_depth_um=cat("column_depth_um"), pass_start_s=pass_start_s)


@dataclass(frozen=True)
class PassThermal:
    """Reservoir heating up to the end of one pass (earlier passes' heat and lesions included:
    the maps hold the peak over all of them, so damage accumulates over passes).

    ``start_s`` is the pass start on the sequence clock; ``result`` holds the maps (peak rise,
    damage, reservoir) for pictures.
    """

    pass_index: int
    start_s: float
    result: ThermalResult
    ok: bool

    @property
    def peak_reservoir_rise_k(self) -> float:
        """Peak temperature rise (K) of the healing reservoir up to the end of this pass."""
        return self.result.peak_reservoir_rise_k

    @property
    def damaged_reservoir_fraction(self) -> float:
        """Share (0..1) of the reservoir damaged up to the end of this pass; the plan's
        ``max_damaged_fraction`` is its limit."""
        return self.result.damaged_reservoir_fraction


@dataclass(frozen=True)
class PlanThermal:
    """Thermal screen of a plan: one entry per pass, and the limit it was held to."""

    plan: Plan
    handpiece: Handpiece
    params: TissueParams
    inter_pass_gap_s: float
    max_damaged_fraction: float
    passes: tuple[PassThermal, ...]
    earlier: tuple[Plan, ...] = ()
    #: ``params`` are the defaults sized for this plan (none were given): a changed plan
    #: gets its own (window from its pitch), as screening it on its own would.
    params_auto: bool = False

    @property
    def ok(self) -> bool:
        """True when every pass screened is within the limit (a screen stopped at a pass beyond
        it is not)."""
        return all(p.ok for p in self.passes)

    @property
    def peak_reservoir_rise_k(self) -> float:
        """The highest reservoir rise (K) over the passes screened."""
        return max(p.peak_reservoir_rise_k for p in self.passes)

    def after_pass(self, pass_index: int) -> PassThermal | None:
        """The screen after pass ``pass_index`` of the plan, or None when it was not run (a
        screen ``until_failure`` ends at the first pass beyond the limit)."""
        return self.passes[pass_index] if pass_index < len(self.passes) else None

    def session_pass(self, result: PassThermal) -> int:
        """A pass's index in the session (from 0, earlier plans' passes first; messages
        number it from 1)."""
        return sum(len(q.metrics.passes) for q in self.earlier) + result.pass_index

    def rejection_reasons(self) -> list[str]:
        """Why the plan exceeds the limit, with the numbers, and what would bring it within:
        each suggestion was evaluated by the model. Empty when the plan is within the limit.
        Passes are numbered across the session from 1, as ``co2scan plan`` shows them."""
        if self.ok:
            return []
        first_bad = next(p for p in self.passes if not p.ok)
        damaged, limit = distinct_digits(100.0 * first_bad.damaged_reservoir_fraction,
                                         100.0 * self.max_damaged_fraction, DAMAGE_DIGITS)
        reasons = [
            f"pass {self.session_pass(first_bad) + 1}: {damaged} %"
            f" of the reservoir reaches thermal damage (Arrhenius Ω ≥ "
            f"{self.params.damage_omega:g}; peak rise {first_bad.peak_reservoir_rise_k:.1f} K);"
            f" the handpiece allows {limit} %"
        ]
        return reasons + _suggestions(self)


def spot_heat(plan: Plan, handpiece: Handpiece, inter_pass_gap_s: float = 0.0,
              earlier: Sequence[Plan] = ()) -> SpotHeat:
    """Residual heat, lesion radius, column depth and sequence time of every spot of the
    ``earlier`` plans (each with its own handpiece) and then ``plan`` (with ``handpiece``),
    all passes ``inter_pass_gap_s`` apart."""
    number("inter_pass_gap_s", inter_pass_gap_s, 0.0, 3600.0, unit="s")
    plans = [*earlier, plan]
    durations_s = [p.duration_s for q in plans for p in q.metrics.passes]
    starts_s = np.concatenate([[0.0], np.cumsum(np.add(durations_s, inter_pass_gap_s))])
    first_pass = np.cumsum([0] + [len(q.metrics.passes) for q in plans])
    parts = []
    for k, q in enumerate(plans):
        energy_mj = q.energy_uj.astype(np.float64) * 1e-3
        stack = q.stack.astype(np.float64)
        parts.append(SpotHeat.of_pulses(
            q.settings.handpiece if k < len(earlier) else handpiece,
            x_um=q.x_um.astype(np.float64), y_um=q.y_um.astype(np.float64),
            t_s=q.fire_time_us * 1e-6 + starts_s[first_pass[k] + q.pass_index],
            energy_uj=energy_mj * 1e3 * stack, pulse_mj=energy_mj, stack=stack))
    return SpotHeat.joined(parts, starts_s[:-1], first=sum(len(q.x_um) for q in earlier))


def sized_for_pitch(params: TissueParams, pitch_um: float) -> TissueParams:
    """``params`` with the map and windows of a lattice of this pitch: the map, and with it
    the reservoir, reaches the middle of the lattice cell beyond the outermost spots (0.75
    pitch + one cell); each window reaches WINDOW_PITCHES pitches, so that a cell beyond the
    edge lies in the windows of the edge spots whose pulses heat it most; the far grid just
    coarse enough for the window (:func:`~controller.thermal.with_window`)."""
    margin_um = min(max(params.window_um, 0.75 * pitch_um + params.grid_um), MAX_WINDOW_UM)
    return replace(with_window(params, max(margin_um, WINDOW_PITCHES * pitch_um)),
                   map_margin_um=margin_um)


def default_params(spots: SpotHeat, pitch_um: float) -> TissueParams:
    """Default tissue parameters sized for the pitch (:func:`sized_for_pitch`), the slab
    the heat-weighted mean column depth."""
    depth_um = float(np.average(spots.column_depth_um, weights=spots.heat_uj))
    return sized_for_pitch(TissueParams(thickness_um=min(max(depth_um, 10.0), 5000.0)),
                           pitch_um)


def screen_plan(plan: Plan, handpiece: Handpiece, params: TissueParams | None = None,
                inter_pass_gap_s: float = 0.0, earlier: Sequence[Plan] = (),
                until_failure: bool = False) -> PlanThermal:
    """Run the thermal model after every pass of ``plan`` (see the module docstring).
    ``until_failure``: stop after the first pass beyond the limit (enough for a verdict:
    ``passes`` then ends with it)."""
    spots = spot_heat(plan, handpiece, inter_pass_gap_s, earlier)
    auto = params is None
    params = params or default_params(spots, plan.settings.resolved_density.pitch_um)
    limit = handpiece.max_reservoir_damage_fraction
    first_pass = sum(len(q.metrics.passes) for q in earlier)
    passes = []
    for k in range(len(plan.metrics.passes)):
        announce(f"pass {k + 1} of {len(plan.metrics.passes)}")
        upto = spots.first + plan.pass_slice(k).stop
        res = simulate_pass(spots.x_um[:upto], spots.y_um[:upto], spots.t_s[:upto],
                            spots.heat_uj[:upto], spots.lesion_radius_um[:upto], params)
        passes.append(PassThermal(k, float(spots.pass_start_s[first_pass + k]), res,
                                  res.within_limit(limit)))
        if until_failure and not passes[-1].ok:
            break
    return PlanThermal(plan, handpiece, params, inter_pass_gap_s, limit, tuple(passes),
                       tuple(earlier), auto)


def _trial(name: str, screen: PlanThermal) -> Trial:
    worst = max(screen.passes, key=lambda p: p.damaged_reservoir_fraction)
    return Trial(name, screen.peak_reservoir_rise_k, worst.damaged_reservoir_fraction,
                 screen.ok)


def _rescreen(screen: PlanThermal, plan: Plan, gap_s: float | None = None) -> PlanThermal:
    """A variant's verdict: screened until its first pass beyond the limit, with the
    parameters it would be screened with on its own."""
    return screen_plan(plan, screen.handpiece, None if screen.params_auto else screen.params,
                       screen.inter_pass_gap_s if gap_s is None else gap_s, screen.earlier,
                       until_failure=True)


def _suggestions(screen: PlanThermal) -> list[str]:
    """Concrete changes that pass, each checked by screening the changed plan."""
    plan, out = screen.plan, []
    settings = plan.settings
    passing = [p for p in screen.passes if p.ok]
    n_passes = len(plan.metrics.passes)  # the screen may have stopped at the failing pass
    if n_passes > 1 and screen.passes[0].ok:
        verb = "stays" if len(passing) == 1 else "stay"
        out.append(f"fewer passes: the first {len(passing)} of {n_passes} {verb} within the limit")
        spots = spot_heat(plan, screen.handpiece, screen.inter_pass_gap_s)
        with screening("suggestion fewer passes"):
            alone = all(_single_pass_ok(screen, spots, k) for k in range(n_passes))
        if alone:
            trials: list[Trial] = []
            wait_s = search_wait(lambda w: _trial(f"wait {w:.1f} s", _waited(screen, w)),
                                 trials, MAX_WAIT_S, 0.5)
            if wait_s is not None:
                out.append(f"or wait {wait_s:.1f} s between passes (pass_wait_s = {wait_s:.1f}"
                           " in the script; evaluated: within the limit)")
            else:
                out.append(f"no wait up to {MAX_WAIT_S:g} s between passes is enough")
    if settings.order.kind != "thermal-spread":
        try:
            spread = build_plan(replace(settings, order=ScanOrder(kind="thermal-spread")),
                                plan.timing, plan.seed)
        except SettingsError as exc:
            out.append(f"thermal-spread order is not possible here ({exc})")
        else:
            out.append(_spread_suggestion(screen, spread))
    out.append(_density_suggestion(screen))
    return out


def _spread_suggestion(screen: PlanThermal, spread: Plan) -> str:
    """The plan in thermal-spread order, screened (unless it fires the same way)."""
    if all(np.array_equal(getattr(spread, f), getattr(screen.plan, f))
           for f in ("x_um", "y_um", "fire_time_us")):
        return "thermal-spread order fires this pattern in the same order and times here"
    with screening("suggestion thermal-spread order"):
        spread_screen = _rescreen(screen, spread)
    trial = _trial("thermal-spread", spread_screen)
    verdict = ("within the limit" if trial.passes else "still exceeds it in pass "
               f"{spread_screen.session_pass(spread_screen.passes[-1]) + 1}")
    return (f"or thermal-spread order: peak {trial.peak_reservoir_rise_k:.1f} K, "
            f"{damaged_text(screen, trial.damaged_reservoir_fraction)} % damaged ({verdict})")


def _waited(screen: PlanThermal, wait_s: float) -> PlanThermal:
    with screening(f"suggestion wait {wait_s:.1f} s"):
        return _rescreen(screen, screen.plan, wait_s)


def _single_pass_ok(screen: PlanThermal, spots: SpotHeat, k: int) -> bool:
    """Does pass k alone (no earlier heat) stay within the limit? ``spots``: the plan's own
    (no earlier plans)."""
    if k == 0 and not screen.earlier:
        return screen.passes[0].ok
    announce(f"pass {k + 1} alone")
    sl = screen.plan.pass_slice(k)
    res = simulate_pass(spots.x_um[sl], spots.y_um[sl], spots.t_s[sl], spots.heat_uj[sl],
                        spots.lesion_radius_um[sl], screen.params)
    return res.within_limit(screen.max_damaged_fraction)


def _density_suggestion(screen: PlanThermal) -> str:
    """Lower density: the heat scale that passes (exact, the model is linear in heat) as a
    coverage cut, then the rebuilt plan screened, cutting further while it still fails: by the
    scale its own failing pass asks for, and at least by CUT_STEP (a screen stops at its first
    failing pass, so the later passes' heat is known only from the variants). It stops at the
    sparsest plan the planner builds (pitch MAX_PITCH_UM, or the last density at which the
    pattern holds a spot) or after MAX_DENSITY_SCREENS variants. The coverage screened is the
    one shown (:func:`coverage_down`): the value typed into the script is the plan evaluated."""
    settings = screen.plan.settings
    coverage = settings.resolved_density.coverage_pct
    sparsest = density_at_pitch(MAX_PITCH_UM, settings.handpiece.spot_diameter_um,
                                settings.grid).coverage_pct
    wanted = coverage * _usable(_heat_scale(screen))
    failed: tuple[str, PlanThermal] | None = None  # the last variant screened, its coverage
    for _ in range(MAX_DENSITY_SCREENS):
        target, shown = coverage_down(wanted)
        floor = target <= sparsest
        if floor:
            target, shown = coverage_up(sparsest)
        try:
            plan = build_plan(replace(settings, density=DensitySpec(coverage_pct=target)),
                              screen.plan.timing, screen.plan.seed)
        except SettingsError as exc:  # sparser than the pattern holds a spot at
            if failed is None:
                return f"lowering the density far enough is not possible ({exc})"
            return _density_fails(screen, coverage, *failed, after=f", and at {shown} % the "
                                  f"planner builds no plan ({exc})")
        with screening(f"suggestion coverage {shown} %"):
            variant = _rescreen(screen, plan)
        if variant.ok:
            return (f"or lower the density by {100.0 * (1.0 - target / coverage):.0f} % "
                    f"(density_percent = {shown}: coverage {coverage:.1f} % -> {shown} %, "
                    "evaluated: within the limit)")
        failed = (shown, variant)
        if floor:
            return _density_fails(screen, coverage, shown, variant,
                                  f", the sparsest the planner builds (pitch "
                                  f"{MAX_PITCH_UM:g} µm),")
        wanted = target * min(CUT_STEP, _usable(_heat_scale(variant)))
    assert failed is not None
    cuts = f"{MAX_DENSITY_SCREENS} cut" + "s" * (MAX_DENSITY_SCREENS != 1)
    return _density_fails(screen, coverage, *failed, f", the last of {cuts} screened,")


def _usable(scale: float) -> float:
    """A heat scale to cut the density by: the estimate where it is one (finite, > 0), else
    CUT_STEP (the estimate may read no limit, or a negative rise, where the limiting cell's
    damage is not the plan's own)."""
    return scale if math.isfinite(scale) and scale > 0.0 else CUT_STEP


def _density_fails(screen: PlanThermal, coverage: float, shown: str, variant: PlanThermal,
                   note: str = "", after: str = "") -> str:
    """The deepest density cut screened (coverage ``shown``), and how it still fails."""
    bad = variant.passes[-1]  # a variant's screen ends at its first pass beyond the limit
    return (f"a density cut of {100.0 * (1.0 - float(shown) / coverage):.0f} % (to coverage "
            f"{shown} %){note} still fails pass {variant.session_pass(bad) + 1} "
            f"({damaged_text(screen, bad.damaged_reservoir_fraction)} % damaged){after}; "
            "lower the energy or split the area")


def coverage_down(coverage_pct: float) -> tuple[float, str]:
    """``coverage_pct`` rounded down to what is shown (0.1 from 1 %, two significant digits
    below), as a number and as the text that reads back as that number."""
    digits = max(1, 1 - math.floor(math.log10(coverage_pct)))
    value = math.floor(coverage_pct * 10**digits) / 10**digits
    return value, f"{value:.{digits}f}"


def coverage_up(coverage_pct: float) -> tuple[float, str]:
    """As :func:`coverage_down`, rounded up."""
    digits = max(1, 1 - math.floor(math.log10(coverage_pct)))
    value = math.ceil(coverage_pct * 10**digits) / 10**digits
    return value, f"{value:.{digits}f}"


def damaged_text(screen: PlanThermal, fraction: float) -> str:
    """A damaged share of the reservoir (%), with the digits that tell it from the limit."""
    return distinct_digits(100.0 * fraction, 100.0 * screen.max_damaged_fraction,
                           DAMAGE_DIGITS)[0]


def _heat_scale(screen: PlanThermal) -> float:
    """The largest heat factor with which every screened pass would stay within the limit."""
    return min(passing_heat_scale(p.result, screen.max_damaged_fraction) for p in screen.passes)
