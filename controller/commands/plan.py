"""``co2scan plan SCRIPT``: the validated plan of a treatment script, one row per pass."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, TextIO

from controller.commands import add_command, to_stderr
from controller.errors import SettingsError
from controller.numbers import distinct_digits
from controller.progress import screen_display
from controller.scanpath import Plan
from controller.script import TreatmentScript, describe_pattern, load_script, span
from controller.session import timing_for
from controller.settings import TreatmentSettings
from controller.thermal_screen import DAMAGE_DIGITS
from controller.timing import GalvoTiming
from controller.validation import (
    ClinicalEnvelope,
    Finding,
    PlanRejected,
    ThermalCheck,
    check_thermal,
    session_coverage,
    validate_plans,
)
from drivers import DeviceError, LimitError
from drivers import identify as read_identity
from drivers.info import DeviceInfo
from drivers.protocol.messages import Capability

EXIT_OK = 0
EXIT_REJECTED = 3
EXIT_DEVICE = 6  # as co2scan run: the device unreachable, or one co2scan cannot treat with

HELP = """show the validated plan of a treatment script, one row per [[pass]]

Plans every pass with the default galvo field and timing, or with --device URL for that
device's own limits (field, pulse rate, average power) exactly as co2scan run plans it: the
device is only identified, nothing is loaded, armed or fired. Without --device a device may
refuse the plan (a pattern beyond its field) or fire it slower (its power limit), which
changes the thermal figures. Checks the plan against the clinical envelope (and the device's
limits) and screens it with the thermal model: the
"thermal check" column shows each pass's peak reservoir rise ("ok 12 K") or, when too much
of the reservoir is damaged, the damaged share ("FAIL 3.1 %"); the passes after such a pass,
and the plans after its plan, are "not run" (they carry its heat). Exit status: 0 plan accepted,
3 script invalid or plan rejected (the reasons, with the thermal model's numbers and
suggestions, on stderr; with --json the plan is still printed), 6 device unreachable or one
co2scan cannot treat with (no energy monitor). While the screen runs, stderr
shows what it evaluates: a status line on a terminal, else a plain line at most every 5 s
(--quiet: nothing).

examples:
  co2scan plan examples/deep_scar.toml
  co2scan plan examples/deep_scar.toml --device /dev/ttyACM0
  co2scan plan examples/deep_scar.toml --json > deep_scar.plan.json
"""

#: SGR codes for terminal colour.
BOLD, RED, YELLOW, GREEN = "1", "31", "33", "32"


def paint(text: str, sgr: str, stream: TextIO) -> str:
    """``text`` in colour when ``stream`` is a terminal and NO_COLOR is unset, else as is."""
    if os.environ.get("NO_COLOR") or not stream.isatty():
        return text
    return f"\033[{sgr}m{text}\033[0m"


@dataclass(frozen=True)
class PassRow:
    """What one pass delivers, as the summary shows it (metrics plus per-spot ranges)."""

    index: int
    plan: int
    pattern: str
    grid: str
    order: str
    spot_count: int
    pitch_um: float
    coverage_pct: float
    reservoir_pct: float
    peak_fluence_j_cm2: float
    area_fluence_j_cm2: float
    fluence_j_cm2: tuple[float, float]  # per spot, lowest and highest (feathered edges)
    energy_mj: tuple[float, float]
    stack: tuple[int, int]
    depth_um: tuple[float, float]
    spot_rate_hz: float
    duration_s: float
    thermal_ok: bool
    peak_reservoir_rise_k: float | None  # None: not evaluated (see thermal_run)
    damaged_reservoir_pct: float | None
    thermal_run: bool  # False: not screened, after a pass or plan beyond the limit
    max_damaged_reservoir_pct: float | None = None  # the handpiece's limit (None: no screen)


def pass_rows(plans: list[Plan], thermal: Sequence[ThermalCheck]) -> list[PassRow]:
    """One row per pass of the plans, indexed across plans (from 0; the table numbers them
    from 1) like the script's passes, with the thermal screen of each pass (``thermal``: one
    check per plan, see check_thermal)."""
    rows: list[PassRow] = []
    for k, (plan, check) in enumerate(zip(plans, thermal, strict=True)):
        s, hp = plan.settings, plan.settings.handpiece
        for p, m in enumerate(plan.metrics.passes):
            screened = check.screen.after_pass(p) if check.screen else None
            part = plan.pass_slice(p)
            energy_mj = plan.energy_uj[part] / 1000.0
            depth_um = hp.depth_for_energy_um(energy_mj) * plan.stack[part]
            fluence = energy_mj * plan.stack[part] * 1e-3 / (hp.spot_area_um2 * 1e-8)
            rows.append(PassRow(
                index=len(rows), plan=k, pattern=describe_pattern(s.pattern), grid=s.grid,
                order=s.order.kind, spot_count=m.spot_count, pitch_um=m.pitch_um,
                coverage_pct=m.coverage_pct, reservoir_pct=100.0 * m.reservoir_fraction,
                peak_fluence_j_cm2=m.peak_fluence_j_cm2,
                area_fluence_j_cm2=m.area_fluence_j_cm2,
                fluence_j_cm2=(float(fluence.min()), float(fluence.max())),
                energy_mj=(float(energy_mj.min()), float(energy_mj.max())),
                stack=(int(plan.stack[part].min()), int(plan.stack[part].max())),
                depth_um=(float(depth_um.min()), float(depth_um.max())),
                spot_rate_hz=m.spot_rate_hz, duration_s=m.duration_s,
                thermal_ok=check.unlimited or (screened is not None and screened.ok),
                thermal_run=screened is not None or (check.screen is None
                                                     and check.after_rejected is None),
                peak_reservoir_rise_k=None if screened is None else
                screened.peak_reservoir_rise_k,
                damaged_reservoir_pct=None if screened is None else
                100.0 * screened.damaged_reservoir_fraction,
                max_damaged_reservoir_pct=None if check.screen is None else
                100.0 * check.screen.max_damaged_fraction))
    return rows


def thermal_cell(row: PassRow) -> str:
    """The thermal check of a pass: peak reservoir rise when within the limit, else the
    damaged share of the reservoir (with the digits that tell it from the limit: "FAIL 5.04 %"
    over 5 %); "n/a" when the model could not evaluate it, "no limit"
    for a handpiece without a thermal limit, "not run" after a pass or plan beyond the limit
    (it carries that one's heat)."""
    damaged, limit = row.damaged_reservoir_pct, row.max_damaged_reservoir_pct
    if row.peak_reservoir_rise_k is None or damaged is None or limit is None:
        return "no limit" if row.thermal_ok else "n/a" if row.thermal_run else "not run"
    if row.thermal_ok:
        return f"ok {row.peak_reservoir_rise_k:.0f} K"
    return f"FAIL {distinct_digits(damaged, limit, DAMAGE_DIGITS)[0]} %"


#: (heading, unit, cell) per column; the first TEXT_COLUMNS are left-aligned text. A pass's
#: reservoir is 100 % - its coverage; the plan lines give the reservoir all passes leave.
COLUMNS: tuple[tuple[str, str, Callable[[PassRow], str]], ...] = (
    ("pass", "", lambda r: str(r.index + 1)),  # for people: from 1, as every message
    ("pattern", "", lambda r: r.pattern + (" hex" if r.grid == "hex" else "")),
    ("order", "", lambda r: r.order),
    ("spots", "", lambda r: str(r.spot_count)),
    ("pitch", "µm", lambda r: f"{r.pitch_um:.0f}"),
    ("cover", "%", lambda r: f"{r.coverage_pct:.1f}"),
    ("fluence", "J/cm²", lambda r: span(*r.fluence_j_cm2, ".0f")),
    ("energy", "mJ/pulse", lambda r: span(*r.energy_mj, ".1f")),
    ("stack", "", lambda r: span(*r.stack, "d")),
    ("depth", "µm", lambda r: span(*r.depth_um, ".0f")),
    ("time", "s", lambda r: f"{r.duration_s:.1f}"),
    ("thermal", "check", thermal_cell),
)
TEXT_COLUMNS = 3
PATTERN_COLUMN = 1
WIDTH = 100


def format_table(rows: list[PassRow], stream: TextIO) -> str:
    """The pass table within WIDTH columns (a long pattern text is cut), headings bold on a
    terminal."""
    table = [[c[0] for c in COLUMNS], [c[1] for c in COLUMNS]]
    table += [[c[2](r) for c in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    excess = sum(widths) + len(widths) - 1 - WIDTH
    if excess > 0:
        widths[PATTERN_COLUMN] -= excess
        for row in table[2:]:
            cell = row[PATTERN_COLUMN]
            row[PATTERN_COLUMN] = cell if len(cell) <= widths[PATTERN_COLUMN] else \
                cell[:widths[PATTERN_COLUMN] - 1] + "…"
    lines = [" ".join(v.ljust(w) if i < TEXT_COLUMNS else v.rjust(w)
                      for i, (v, w) in enumerate(zip(row, widths, strict=True)))
             for row in table]
    return "\n".join([paint(line, BOLD, stream) for line in lines[:2]] + lines[2:])


def load_and_plan(path: str, timing: GalvoTiming | None = None, device: DeviceInfo | None = None
                  ) -> tuple[TreatmentScript, list[Plan]]:
    """Load a script and plan it, with ``timing`` or for ``device``'s limits as co2scan run
    plans it (:func:`~controller.session.timing_for`); raises ScriptError (a SettingsError)
    when it is invalid or the device cannot honour it (e.g. a pattern beyond its field)."""
    script = load_script(path)
    return script, script.plans(timing if device is None else planning_timing(device))


def planning_timing(device: DeviceInfo) -> Callable[[TreatmentSettings], GalvoTiming]:
    """The timing of each plan for ``device``, as co2scan run and a session plan it."""
    return partial(timing_for, device.limits)


def identify(url: str) -> DeviceInfo:
    """The identity and limits of the device at ``url``, for planning: read only
    (:func:`drivers.identify`: queries only, nothing sent at close, since a Device.close would
    ask a device that this co2scan never armed to PAUSE and DISARM; one that another host
    arms, say). Raises DeviceError when it cannot be reached, and LimitError for a device
    co2scan cannot treat with (no energy monitor: co2scan run refuses it too)."""
    info = read_identity(url)
    if Capability.ENERGY_MONITOR not in info.capabilities:
        raise LimitError("device capabilities", repr(info.capabilities),
                         "ENERGY_MONITOR set: co2scan checks every spot's measured energy "
                         "(firmware_protocol.md 4.2), and cannot with this device")
    return info


def prepare(args: argparse.Namespace) -> tuple[TreatmentScript, list[Plan],
                                                DeviceInfo | None] | int:
    """The script of ``args.script`` planned (for the device at ``args.device``, if given),
    or the exit status, the reason on stderr: a script invalid (for that device), a device
    unreachable or one co2scan cannot treat with."""
    try:
        script = load_script(args.script)  # an invalid one is refused before a device is asked
        device = None if args.device is None else identify(args.device)
        plans = script.plans(None if device is None else planning_timing(device))
    except SettingsError as exc:
        return fail(str(exc))
    except LimitError as exc:
        return fail(f"cannot treat with the device at {args.device}: {exc}", EXIT_DEVICE)
    except DeviceError as exc:
        return fail(f"cannot reach the device at {args.device}: {exc}", EXIT_DEVICE)
    return script, plans, device


def check(plans: list[Plan], pass_wait_s: float = 0.0, quiet: bool = False,
          device: DeviceInfo | None = None, coverage: tuple[float, int] | None = None
          ) -> tuple[list[Finding], list[str], list[ThermalCheck]]:
    """Borderline warnings and violations of the plans against the clinical envelope, the
    device's limits (when planned for ``device``, as a session checks them) and the thermal
    screen (passes ``pass_wait_s`` apart), and the thermal check of each plan; the screen's
    progress on stderr unless ``quiet``. ``coverage``: the plans' :func:`session_coverage`
    when the caller has it (computed otherwise, for more than one plan)."""
    with screen_display(sys.stderr, plans, quiet=quiet):
        thermal = check_thermal(plans, pass_wait_s)
        try:
            return validate_plans(plans, ClinicalEnvelope.load(),
                                  None if device is None else device.limits,
                                  thermal=thermal, coverage=coverage), [], thermal
        except PlanRejected as exc:
            return [], [str(v) for v in exc.violations] + exc.extra, thermal


def plan_document(script: TreatmentScript, plans: list[Plan], warnings: list[Finding],
                  violations: list[str], thermal: Sequence[ThermalCheck],
                  device: DeviceInfo | None = None, device_url: str = "",
                  coverage: tuple[float, int] | None = None) -> dict[str, Any]:
    """Everything the summary shows, as JSON-ready data (plan metrics as ``build_plan`` gave).
    ``device``: the device planned for (at ``device_url``), None for the default timing.
    ``coverage``: the plans' :func:`session_coverage` (None: computed here, for more than
    one plan)."""
    rows = pass_rows(plans, thermal)
    first = 0
    plan_docs = []
    for plan in plans:
        count = len(plan.metrics.passes)
        plan_docs.append({"passes": list(range(first, first + count)), "seed": plan.seed,
                          "checksum": plan.checksum, "timing": asdict(plan.timing),
                          "metrics": asdict(plan.metrics)})
        first += count
    timings = [d["timing"] for d in plan_docs]
    return {
        "script": str(script.path), "device_url": script.device_url,
        "planned_for": None if device is None else {
            "device_url": device_url, "serial": device.serial, "firmware": device.firmware,
            "limits": asdict(device.limits)},
        "handpiece": script.handpiece.name,
        "spot_diameter_um": script.handpiece.spot_diameter_um,
        "operator": script.operator, "patient_ref": script.patient_ref,
        # one timing for every plan (the defaults), or None: each plan's in "plans"
        "timing": timings[0] if all(t == timings[0] for t in timings) else None,
        "pass_wait_s": script.pass_wait_s,
        "accepted": not violations,
        "violations": violations, "warnings": [str(w) for w in warnings],
        "passes": [asdict(r) for r in rows], "plans": plan_docs,
        "coverage_notes": coverage_notes(plans),
        "total_spots": sum(r.spot_count for r in rows),
        "total_duration_s": sum(r.duration_s for r in rows),
        "session_coverage": _session_coverage(plans, coverage),
    }


#: Achieved coverage this far (relative) from the density asked for is pointed out.
COVERAGE_NOTE_FRACTION = 0.10


def coverage_notes(plans: list[Plan]) -> list[str]:
    """One line per pass whose coverage differs from the density its settings ask for by more
    than COVERAGE_NOTE_FRACTION (relative): a pattern holds whole lattice spots only, so a
    small one covers what its spot count gives (25 spots of 300 µm on a 5 mm square: 6.8 %
    for 5 %). A feathered pass is left out: its edge is thinned on purpose. A note, not a
    refusal: the figures (and the envelope's checks) are the spots the plan fires."""
    notes, first = [], 0
    for plan in plans:
        asked = plan.settings.resolved_density.coverage_pct
        for p, m in enumerate(plan.metrics.passes):
            off = m.coverage_pct / asked - 1.0
            if plan.settings.feathering is None and abs(off) > COVERAGE_NOTE_FRACTION:
                notes.append(f"pass {first + p + 1}: coverage {m.coverage_pct:.3g} % where "
                             f"the density set gives {asked:.3g} % ({100.0 * off:+.1f} %): the "
                             f"pattern holds {m.spot_count} whole lattice spots at pitch "
                             f"{m.pitch_um:.0f} µm")
        first += len(plan.metrics.passes)
    return notes


def coverage_of(plans: list[Plan]) -> tuple[float, int] | None:
    """The plans' :func:`session_coverage`, computed once for the checks and the summary;
    None for one plan (its own coverage says it)."""
    return session_coverage(plans) if len(plans) > 1 else None


def _session_coverage(plans: list[Plan], coverage: tuple[float, int] | None = None
                      ) -> dict[str, float | int] | None:
    """What the plans of the session cover together (``coverage``, their
    :func:`session_coverage` if computed already), on the area of the plan they cover most;
    None for one plan (its own coverage says it)."""
    if len(plans) < 2:
        return None
    share, k = session_coverage(plans) if coverage is None else coverage
    return {"coverage_pct": share, "reservoir_pct": 100.0 - share, "on_plan": k}


def wrap(text: str) -> str:
    """``text`` folded to WIDTH columns, continuation lines indented."""
    return "\n".join(textwrap.fill(line, WIDTH, subsequent_indent="    ")
                     for line in text.splitlines())


def _summary(doc: dict[str, Any], plans: list[Plan], thermal: Sequence[ThermalCheck],
             stream: TextIO) -> str:
    who = ", ".join(f"{label} {doc[k]}" for k, label in (("operator", "operator"),
                                                          ("patient_ref", "patient")) if doc[k])
    target = doc["planned_for"]
    device = (f"planned for device {target['serial']} (firmware {target['firmware']}) at "
              f"{target['device_url']}" if target else f"device {doc['device_url']}")
    lines = [wrap(f"{doc['script']}: handpiece {doc['handpiece']} ({doc['spot_diameter_um']:g}"
                  f" µm spot), {device}"), *([wrap(who)] if who else []), "",
             format_table(pass_rows(plans, thermal), stream), ""]
    for k, (plan, plan_doc) in enumerate(zip(plans, doc["plans"], strict=True), start=1):
        first, last = plan_doc["passes"][0] + 1, plan_doc["passes"][-1] + 1  # indices in JSON
        names = f"pass {first}" if first == last else f"passes {first}-{last}"
        m = plan.metrics
        lines.append(wrap(f"plan {k} = {names} (seed {plan.seed}, checksum {plan.checksum:08x}):"
                          f" {m.pattern_area_mm2:.1f} mm², coverage {m.combined_coverage_pct:.1f}"
                          f" %, reservoir {100 * m.combined_reservoir_fraction:.1f} %"))
    if doc["session_coverage"]:
        c = doc["session_coverage"]
        lines.append(wrap(f"all plans together on plan {c['on_plan'] + 1}'s area: coverage "
                          f"{c['coverage_pct']:.1f} %, reservoir {c['reservoir_pct']:.1f} %"))
    wait = (f"passes {doc['pass_wait_s']:g} s apart (pass_wait_s)" if doc["pass_wait_s"]
            else "passes back to back")
    rate_hz = max(plan.timing.max_spot_rate_hz for plan in plans)
    field_mm = min(plan.timing.field_um for plan in plans) / 2000.0
    timing = (f"this device's timing (up to {rate_hz:g} spots/s)" if target else
              "the default galvo timing")
    lines.append(wrap(f"total: {doc['total_spots']} spots, {doc['total_duration_s']:.1f} s of "
                      f"scanning at {timing}, {wait}; fluence column: per spot"))
    if not target:
        lines.append(wrap(DEFAULTS_CAVEAT.format(field_mm=field_mm, rate_hz=rate_hz)))
    if doc["coverage_notes"]:
        lines += [paint(wrap(f"coverage: {n}"), YELLOW, stream) for n in doc["coverage_notes"]]
        lines.append(wrap("(a pattern holds whole lattice spots only: the smaller it is, the "
                          "further its coverage may be from the density asked for; the plan's "
                          "figures and checks are those of the spots it fires)"))
    lines += [paint(wrap(f"borderline: {w}"), YELLOW, stream) for w in doc["warnings"]]
    if doc["accepted"]:
        lines.append(paint("plan accepted by the clinical envelope and the thermal screen",
                           GREEN, stream))
    return "\n".join(lines)


#: Under a plan made without --device: what it does not know (the summary, preview).
DEFAULTS_CAVEAT = ("planned for the default galvo field (±{field_mm:g} mm) and timing (up to "
                   "{rate_hz:g} spots/s), not a device's: a device may refuse it or fire it "
                   "slower (other thermal figures); --device URL plans for its limits")


def fail(message: str, status: int = EXIT_REJECTED) -> int:
    """Print ``message`` as an error on stderr; returns ``status``."""
    to_stderr(paint(wrap(f"error: {message}"), RED, sys.stderr))
    return status


def run(args: argparse.Namespace) -> int:
    """``co2scan plan``: plan and check the script (for ``--device``'s limits, if given) and
    print the plan, or its JSON; the exit status as HELP lists it."""
    prepared = prepare(args)
    if isinstance(prepared, int):
        return prepared
    script, plans, device = prepared
    coverage = coverage_of(plans)  # for the checks and the summary line: computed once
    warnings, violations, thermal = check(plans, script.pass_wait_s, args.quiet, device,
                                          coverage)
    doc = plan_document(script, plans, warnings, violations, thermal, device, args.device or "",
                        coverage)
    print(json.dumps(doc, indent=2) if args.json else _summary(doc, plans, thermal, sys.stdout))
    return fail("plan rejected:\n  " + "\n  ".join(violations)) if violations else EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``co2scan plan`` command to the CLI's subcommands."""
    parser = add_command(subparsers, "plan", "show and check the plan of a treatment script", HELP)
    parser.add_argument("script", metavar="SCRIPT", help="treatment script (TOML)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_device(parser)
    add_quiet(parser)
    parser.set_defaults(handler=run)


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet``: no thermal-screen progress on stderr (errors still go there)."""
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no thermal-screen progress on stderr (errors still go there)")


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device URL``: plan for that device's limits (identified only, nothing fired)."""
    parser.add_argument("--device", metavar="URL",
                        help="plan for this device's limits (field, pulse rate, average power) "
                             "as co2scan run does; the device is only identified, nothing is "
                             "loaded, armed or fired (default: the default galvo field and "
                             "timing, which a device may refuse or fire slower)")
