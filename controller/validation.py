"""Plan validation: device limits, handpiece limits, the clinical envelope and the thermal screen.

``validate_plans`` collects every violated rule (field, value, limit) and every failing thermal
screen (the model's numbers and its evaluated suggestions) and raises ``PlanRejected`` listing
all of them; values above ``borderline_fraction`` of a limit come back as warnings that the
caller must acknowledge before emission.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from controller.errors import SettingsError, pass_field
from controller.numbers import distinct_digits
from controller.patterns import within_outline
from controller.scanpath import Plan, skin_outline, union_area_um2
from controller.thermal_screen import DAMAGE_DIGITS, PlanThermal, screen_plan, screening
from drivers.galvo import usable_half_field_um
from drivers.info import DeviceLimits, average_power_mw
from drivers.protocol.messages import BY_NAME

ENVELOPE_FILE = Path(__file__).parent / "data" / "envelope.toml"

#: The slowest spot rate a device takes (PULSE_SETTINGS): a pass planned slower (thermal-spread
#: with a long relax_ms) would fire faster than it was screened.
MIN_SPOT_RATE_HZ = float(BY_NAME["PULSE_SETTINGS"].fields[0].bounds()[0])  # type: ignore[index]


@dataclass(frozen=True)
class ClinicalEnvelope:
    """The most one session may deliver to one area (a data file, never code)."""

    name: str
    max_coverage_percent: float
    max_combined_coverage_percent: float
    max_passes: int
    max_energy_mj: float
    max_cumulative_fluence_j_cm2: float
    max_depth_um: float
    borderline_fraction: float = 0.9

    def __post_init__(self) -> None:
        """Every limit a finite number > 0 (a NaN limit would pass every value), the
        borderline fraction in (0, 1]."""
        for name in self.__dataclass_fields__.keys() - {"name"}:
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value) or not value > 0):
                raise SettingsError(f"envelope.{name}", value, "a finite number > 0")
        if self.borderline_fraction > 1:
            raise SettingsError("envelope.borderline_fraction", self.borderline_fraction,
                                "0 < borderline_fraction <= 1")

    @classmethod
    def load(cls, path: Path = ENVELOPE_FILE) -> ClinicalEnvelope:
        """The envelope of a TOML file (default: the packaged ``data/envelope.toml``);
        SettingsError for a file that cannot be read, a key missing or unknown, or a limit out of
        range."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError("envelope file", str(path), "a readable TOML file",
                                str(exc)) from exc
        fields = set(cls.__dataclass_fields__)
        unknown = set(data) - fields
        if unknown or not fields - {"borderline_fraction"} <= set(data):
            raise SettingsError("envelope keys", sorted(data), f"exactly {sorted(fields)}")
        return cls(**data)


@dataclass(frozen=True)
class Finding:
    """One rule checked against a plan: a violation or a borderline warning."""

    rule: str
    field: str
    value: float
    limit: float
    unit: str
    bound: str = "at most"

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        value, limit = distinct_digits(self.value, self.limit)
        return f"{self.field} = {value}{unit}; {self.rule} allows {self.bound} {limit}{unit}"


class PlanRejected(Exception):
    """The plan breaks one or more rules; ``violations`` lists every one of them, ``extra``
    the other reasons (thermal screen); ``thermal`` holds the plans' thermal checks."""

    def __init__(self, violations: list[Finding], extra: list[str] | None = None,
                 thermal: Sequence[ThermalCheck] = ()) -> None:
        self.violations = violations
        self.extra = extra or []
        self.thermal = list(thermal)
        lines = [str(v) for v in violations] + self.extra
        super().__init__("plan rejected:\n  " + "\n  ".join(lines))


def _check(findings: list[Finding], warnings: list[Finding], rule: str, field: str,
           value: float, limit: float, unit: str, borderline: float) -> None:
    finding = Finding(rule, field, float(value), float(limit), unit)
    if value > limit:
        findings.append(finding)
    elif value > borderline * limit:
        warnings.append(finding)


def session_coverage(plans: Sequence[Plan]) -> tuple[float, int]:
    """The largest share (%) of one plan's area that the spots of every plan of the session
    cover together, and that plan's index: the plans treat the same area, so their reservoirs
    are what all of them leave. Counts each lesion's share inside the plan's outline (as
    ``PlanMetrics`` does), with the widest handpiece spot among the plans."""
    x = np.concatenate([plan.x_um for plan in plans])
    y = np.concatenate([plan.y_um for plan in plans])
    diameter_um = max(plan.settings.handpiece.spot_diameter_um for plan in plans)
    shares = []
    for plan in plans:
        outline = skin_outline(plan.settings)
        on = within_outline(*outline, x, y, tol_um=diameter_um / 2.0)  # a lesion reaches in
        union_um2 = union_area_um2(x[on], y[on], diameter_um, *outline)
        shares.append(100.0 * min(1.0, union_um2 / (plan.metrics.pattern_area_mm2 * 1e6)))
    k = int(np.argmax(shares))
    return shares[k], k


def column_depths_um(plan: Plan, part: slice = slice(None)) -> NDArray[np.float64]:
    """The columns of the spots ``part`` of the plan (all by default): one pulse's calibrated
    depth times the stack."""
    depth = plan.settings.handpiece.depth_for_energy_um(plan.energy_uj[part] / 1000.0)
    return np.asarray(depth * plan.stack[part], dtype=np.float64)


def deepest_column_um(plan: Plan, p: int) -> float:
    """The deepest column of pass ``p``, to 0.1 µm (energies are whole µJ, so a depth asked
    for at the limit reads 1600.001 µm)."""
    return round(float(column_depths_um(plan, plan.pass_slice(p)).max()), 1)


def deepest_coinciding_um(plans: Sequence[Plan]) -> float:
    """The deepest column where spots of several passes land on one another: each spot's
    depth plus that of every other spot of the session whose centre lies within one spot
    radius of it (the second pulse ablates on from the bottom of the first hole: passes
    fired on the same positions, ``offset = false``, add up), to 0.1 µm. Offset passes land
    at least half a pitch away (more than a radius within the envelope's coverage) and do
    not count."""
    x = np.concatenate([plan.x_um for plan in plans])
    y = np.concatenate([plan.y_um for plan in plans])
    depth = np.concatenate([column_depths_um(plan) for plan in plans])
    radius = max(plan.settings.handpiece.spot_diameter_um for plan in plans) / 2.0
    cx, cy = np.floor(x / radius).astype(np.int64), np.floor(y / radius).astype(np.int64)
    key = (cx << 32) + cy  # cells of one radius: a neighbour lies in one of the 9 around
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    total = np.zeros_like(depth)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            near = ((cx + dx) << 32) + (cy + dy)
            lo = np.searchsorted(sorted_key, near, "left")
            hi = np.searchsorted(sorted_key, near, "right")
            for m in range(int((hi - lo).max(initial=0))):
                i = np.flatnonzero(lo + m < hi)
                j = order[lo[i] + m]
                close = (x[i] - x[j]) ** 2 + (y[i] - y[j]) ** 2 < radius**2
                np.add.at(total, i[close], depth[j[close]])
    return round(float(total.max(initial=0.0)), 1)


def _device_findings(plan: Plan, p: int, g: int, limits: DeviceLimits,
                     findings: list[Finding]) -> None:
    """Device limits of pass ``p`` of ``plan``, pass ``g`` of the session."""
    part = plan.pass_slice(p)
    energy = plan.energy_uj[part].astype(np.float64)
    stack = plan.stack[part].astype(np.float64)
    pulse = plan.pulse_us[part]
    rate = plan.metrics.passes[p].spot_rate_hz
    half_field = usable_half_field_um(limits)
    reach = float(max(np.abs(plan.x_um[part]).max(), np.abs(plan.y_um[part]).max()))
    for rule, field, value, limit, unit in (
        ("device", "energy_uj", energy.max(), limits.energy_max_uj, "µJ"),
        ("device", "pulse_us", float(pulse.max()), limits.pulse_max_us, "µs"),
        ("device", "stack", stack.max(), limits.max_stack, ""),
        ("device", "spot_rate_hz", rate, limits.rep_rate_max_hz, "Hz"),
        ("device", "average_power_mw", float(average_power_mw(energy, stack, rate).max()),
         limits.avg_power_max_mw, "mW"),
        ("device field", "pattern reach from centre (µm)", reach, half_field, "µm"),
    ):
        if value > limit:
            findings.append(Finding(rule, pass_field(g, field), float(value), float(limit),
                                    unit))

    for field, value, low, unit in (("energy_uj", energy.min(), limits.energy_min_uj, "µJ"),
                                    ("pulse_us", float(pulse.min()), limits.pulse_min_us, "µs")):
        if value < low:
            findings.append(Finding("device", pass_field(g, field), float(value), float(low),
                                    unit, "at least"))


@dataclass(frozen=True)
class ThermalCheck:
    """The thermal screen of one plan (``screen``), or why the model could not evaluate it
    (``error``). A plan the model cannot evaluate is rejected: the laser stays off.
    ``unlimited``: the handpiece allows the whole reservoir to be damaged (limit 1), so no
    screen can fail and none is run (bench and service handpieces). ``after_rejected``: the
    index of an earlier plan that was rejected, so this one (which carries its heat) was not
    screened."""

    plan_index: int
    screen: PlanThermal | None
    error: str = ""
    unlimited: bool = False
    after_rejected: int | None = None

    @property
    def rejected(self) -> bool:
        """The plan is beyond the limit, or was not evaluated (and the handpiece has one)."""
        return not self.unlimited and (self.screen is None or not self.screen.ok)

    @property
    def outcome(self) -> PlanThermal | str | None:
        """The screen, or why there is none as a short text (None: the model could not
        evaluate the plan), as pictures show it under the plan's passes."""
        if self.unlimited:
            return "not screened: the handpiece\nhas no damage limit"
        if self.after_rejected is not None:
            return f"not run: plan {self.after_rejected + 1}\nexceeds the damage limit"
        return self.screen

    @cached_property
    def rejections(self) -> tuple[str, ...]:
        """Why the plan is rejected: the model's numbers and its evaluated suggestions (the
        suggestions screen changed plans, seconds; computed once). Empty when within limits."""
        head = f"thermal screen of plan {self.plan_index + 1}: "
        if self.unlimited:
            return ()
        if self.after_rejected is not None:
            return (f"{head}not run: it carries the heat of plan {self.after_rejected + 1}, "
                    "which the screen rejects; change that plan first",)
        if self.screen is None:
            return (f"{head}the model could not evaluate it ({self.error})",)
        try:
            with screening(f"plan {self.plan_index + 1}"):
                reasons = self.screen.rejection_reasons()
        except SettingsError as exc:  # a suggestion's variant is beyond the model's range
            worst = max(self.screen.passes, key=lambda p: p.damaged_reservoir_fraction)
            damaged, limit = distinct_digits(100.0 * worst.damaged_reservoir_fraction,
                                             100.0 * self.screen.max_damaged_fraction,
                                             DAMAGE_DIGITS)
            reasons = [f"{damaged} % of the reservoir damaged (peak rise "
                       f"{worst.peak_reservoir_rise_k:.1f} K); the handpiece allows {limit} %; "
                       f"no suggestion could be evaluated ({exc})"]
        return tuple(("  " if k else head) + r for k, r in enumerate(reasons))


def check_thermal(plans: Sequence[Plan], pass_wait_s: float = 0.0) -> list[ThermalCheck]:
    """Screen every plan with its handpiece (``plan.settings.handpiece``) as part of the
    session's sequence: plan k carries the heat and lesions of plans 0..k-1, every pass
    starting ``pass_wait_s`` after the previous one ended (the cooling wait the session
    enforces; 0: back to back).

    A plan's screen ends at its first pass beyond the limit, and the plans after a rejected
    one are not screened (``after_rejected``): they carry its heat, the session is rejected
    already, and their numbers would change with it (a 10-plan script took 11 minutes)."""
    checks: list[ThermalCheck] = []
    rejected: int | None = None  # the first plan the screen rejected
    for k, plan in enumerate(plans):
        if plan.settings.handpiece.max_reservoir_damage_fraction >= 1.0:
            checks.append(ThermalCheck(k, None, unlimited=True))
        elif rejected is not None:
            checks.append(ThermalCheck(k, None, after_rejected=rejected))
        else:
            checks.append(_screen(k, plans, pass_wait_s))
            rejected = k if checks[-1].rejected else None
    return checks


def _screen(k: int, plans: Sequence[Plan], pass_wait_s: float) -> ThermalCheck:
    try:
        with screening(f"plan {k + 1}"):
            screen = screen_plan(plans[k], plans[k].settings.handpiece,
                                 inter_pass_gap_s=pass_wait_s, earlier=plans[:k],
                                 until_failure=True)
        return ThermalCheck(k, screen)
    except SettingsError as exc:
        return ThermalCheck(k, None, str(exc))


def _not_run(thermal: Sequence[ThermalCheck]) -> list[str]:
    """One line for the plans not screened after a rejected one (ThermalCheck.rejections
    gives each its own)."""
    skipped = [c for c in thermal if c.after_rejected is not None]
    rejected = skipped[0].after_rejected if skipped else None
    if len(skipped) < 2 or rejected is None:
        return [r for c in skipped for r in c.rejections]
    return [f"thermal screen of plans {skipped[0].plan_index + 1}-{skipped[-1].plan_index + 1}:"
            f" not run: they carry the heat of plan {rejected + 1}, which the "
            "screen rejects; change that plan first"]


def _thermal_borderline(thermal: Sequence[ThermalCheck], borderline: float,
                        warnings: list[Finding]) -> None:
    """A pass within its damage limit but above ``borderline`` of it is a warning to
    acknowledge: the model can read slow plans' damage low (docs/thermal_model.md, Limits)."""
    for screen in (c.screen for c in thermal if c.screen is not None):
        limit = screen.max_damaged_fraction
        for result in screen.passes:
            damaged = result.damaged_reservoir_fraction
            if borderline * limit < damaged <= limit:
                warnings.append(Finding("thermal screen",
                                        pass_field(screen.session_pass(result),
                                                   "damaged_reservoir_percent"),
                                        100.0 * damaged, 100.0 * limit, "%"))


def validate_plans(plans: list[Plan], envelope: ClinicalEnvelope,
                   limits: DeviceLimits | None = None,
                   extra_rejections: list[str] | None = None,
                   thermal: Sequence[ThermalCheck] | None = None,
                   pass_wait_s: float = 0.0,
                   coverage: tuple[float, int] | None = None) -> list[Finding]:
    """Check every pass of every plan and screen every plan thermally; raise PlanRejected or
    return the warnings.

    The plans of one session are assumed to treat the same area, so passes and fluence add up.
    ``thermal``: the plans' :func:`check_thermal` when the caller already has it (it is
    computed here otherwise, with ``pass_wait_s`` between passes). ``coverage``: likewise
    their :func:`session_coverage` (used for more than one plan).
    """
    findings: list[Finding] = []
    warnings: list[Finding] = []
    bl = envelope.borderline_fraction
    passes = [(plan, p) for plan in plans for p in range(len(plan.metrics.passes))]
    _check(findings, warnings, "envelope", "passes", len(passes), envelope.max_passes, "", bl)
    fluence = 0.0
    deepest = [deepest_column_um(plan, p) for plan, p in passes]
    for g, (plan, p) in enumerate(passes):
        m = plan.metrics.passes[p]
        energy_mj = float(plan.energy_uj[plan.pass_slice(p)].max()) / 1000.0
        _check(findings, warnings, "envelope", pass_field(g, "coverage_percent"),
               m.coverage_pct, envelope.max_coverage_percent, "%", bl)
        _check(findings, warnings, "envelope", pass_field(g, "energy_mj"), energy_mj,
               envelope.max_energy_mj, "mJ", bl)
        _check(findings, warnings, "envelope", pass_field(g, "depth_um"), deepest[g],
               envelope.max_depth_um, "µm", bl)
        fluence += m.area_fluence_j_cm2
        if m.spot_rate_hz < MIN_SPOT_RATE_HZ:  # else fired faster than it was screened
            findings.append(Finding("device", pass_field(g, "spot_rate_hz"), m.spot_rate_hz,
                                    MIN_SPOT_RATE_HZ, "Hz", "at least"))
        if limits is not None:
            _device_findings(plan, p, g, limits, findings)
    if len(passes) > 1:
        coinciding = deepest_coinciding_um(plans)
        if coinciding > max(deepest):  # else the passes' own checks above say it
            _check(findings, warnings, "envelope",
                   "depth_um of columns of several passes on one spot", coinciding,
                   envelope.max_depth_um, "µm", bl)
    for plan in plans:
        _check(findings, warnings, "envelope", "combined_coverage_percent",
               plan.metrics.combined_coverage_pct, envelope.max_combined_coverage_percent, "%",
               bl)
    if len(plans) > 1:
        share, k = session_coverage(plans) if coverage is None else coverage
        _check(findings, warnings, "envelope",
               f"combined_coverage_percent of plans 1-{len(plans)} on plan {k + 1}'s area",
               share, envelope.max_combined_coverage_percent, "%", bl)
    _check(findings, warnings, "envelope", "cumulative_fluence_j_cm2", fluence,
           envelope.max_cumulative_fluence_j_cm2, "J/cm²", bl)
    if thermal is None:
        thermal = check_thermal(plans, pass_wait_s)
    _thermal_borderline(thermal, bl, warnings)
    rejections = list(extra_rejections or []) + [r for c in thermal if c.after_rejected is None
                                                 for r in c.rejections] + _not_run(thermal)
    rejections += [f"plan {k + 1}: its spots were changed after it was planned (they no longer "
                   f"match its checksum {plan.checksum:#010x}); plan it again"
                   for k, plan in enumerate(plans) if not plan.intact]
    if findings or rejections:
        raise PlanRejected(findings, rejections, thermal)
    return warnings
