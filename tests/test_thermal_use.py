"""The thermal screen in use: hot plans rejected with the model's numbers (validation, session,
``co2scan plan``), injury maps in previews and reports, and the heat a session delivered."""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller import record as record_module
from controller import validation
from controller.cli import main
from controller.commands.plan import EXIT_REJECTED, WIDTH
from controller.errors import SettingsError
from controller.handpiece import get_handpiece
from controller.record import RecordError, TreatmentRecord
from controller.scanpath import Plan, build_plan
from controller.script import parse_script
from controller.session import TreatmentSession, timing_for
from controller.settings import DensitySpec, Handpiece, Pattern, TreatmentSettings
from controller.thermal import Trial, search_wait
from controller.thermal_delivered import delivered_heat, simulate_delivered
from controller.thermal_screen import PlanThermal, screen_plan, screen_progress
from controller.timing import GalvoTiming, fire_times_us
from controller.validation import ClinicalEnvelope, PlanRejected, validate_plans
from drivers import open_device
from drivers.protocol.messages import GALVO_CENTRE_LSB, GALVO_FULL_SCALE_LSB, SPOT_DTYPE
from tests.handpieces import unscreened

#: Two back-to-back raster passes at 30 % coverage and 600 µm on 2 mm: bulk heating.
HOT = '[[pass]]\nsize_mm = 2\ndensity_percent = 30\ndepth_um = 600\norder = "raster"\n' * 2
#: One raster pass at 30 % and 300 µm on 2 mm: about 59 % of the reservoir damaged.
WARM = '[[pass]]\nsize_mm = 2\ndensity_percent = 30\ndepth_um = 300\norder = "raster"\n'
#: A few sparse spots.
SMALL = '[[pass]]\nsize_mm = 2\npitch_um = 500\ndepth_um = 200\n' * 2
FAST = "sim://?footswitch=down&pre_emission_ms=20&seed=3"
FIELD_UM = 20_000


def plans_of(text: str) -> list[Plan]:
    return parse_script(text, Path("t.toml")).plans()


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def cool_tissue(monkeypatch: pytest.MonkeyPatch) -> None:
    """The planner screens with a thousandth of the handpiece's residual heat, so every plan
    passes the thermal screen whatever its damage criterion."""
    real = validation.screen_plan

    def screen(plan: Plan, handpiece: Handpiece, **kwargs: Any) -> PlanThermal:
        cool = replace(handpiece, residual_heat_fraction=handpiece.residual_heat_fraction * 1e-3)
        return real(plan, cool, **kwargs)

    monkeypatch.setattr(validation, "screen_plan", screen)


# -- rejection ---------------------------------------------------------------------------------

def test_a_hot_plan_is_rejected_with_the_models_numbers_and_suggestions() -> None:
    plans = plans_of(HOT)
    # screened as validate_plans screens (to the first failing pass): a screen of every pass
    # may suggest another density cut (its later passes' heat counts too)
    screen = screen_plan(plans[0], plans[0].settings.handpiece, until_failure=True)
    assert not screen.ok  # the extreme plan heats the reservoir beyond any sane limit
    with pytest.raises(PlanRejected) as info:
        validate_plans(plans, ClinicalEnvelope.load())
    text = str(info.value)
    reasons = screen.rejection_reasons()
    assert len(reasons) >= 2  # the numbers, then at least one evaluated suggestion
    for reason in reasons:
        assert reason in text
    first = next(line for line in info.value.extra if "thermal screen of plan 1" in line)
    assert re.search(r"\d %", first) and re.search(r"\d K", first)
    rejected = info.value.thermal[0].screen
    assert rejected is not None
    assert not rejected.ok


def test_a_plan_the_model_cannot_evaluate_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(plan: Plan, handpiece: Handpiece, **kwargs: Any) -> PlanThermal:
        raise SettingsError("window_um", 2500.0, "[50, 2000]")

    monkeypatch.setattr(validation, "screen_plan", fail)
    with pytest.raises(PlanRejected, match=r"could not evaluate it.*window_um = 2500"):
        validate_plans(plans_of(SMALL), ClinicalEnvelope.load())


def test_a_suggestion_beyond_the_model_still_leaves_the_numbers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_suggestions(self: PlanThermal) -> list[str]:
        raise SettingsError("window_um", 2331.0, "[50, 2000]")

    monkeypatch.setattr(PlanThermal, "rejection_reasons", no_suggestions)
    with pytest.raises(PlanRejected) as info:
        validate_plans(plans_of(HOT), ClinicalEnvelope.load())
    screen = info.value.thermal[0].screen
    assert screen is not None
    worst = max(p.damaged_reservoir_fraction for p in screen.passes)
    assert f"{100 * worst:.1f} % of the reservoir damaged" in str(info.value)
    assert "no suggestion could be evaluated" in str(info.value)


def test_a_session_refuses_a_hot_plan_and_fires_nothing(tmp_path: Path) -> None:
    with open_device(FAST) as dev, TreatmentRecord(tmp_path / "t.db") as rec:
        plans = parse_script(HOT, Path("t.toml")).plans(lambda s: timing_for(dev.info.limits, s))
        with pytest.raises(PlanRejected, match="thermal screen of plan 1"):
            TreatmentSession(dev, plans, rec, operator="t", patient_ref="p")
        assert len(dev.simulator.device.ground_truth) == 0
        assert list(rec.entries()) == []


# -- co2scan plan / preview --------------------------------------------------------------------

def table_rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if line[:1].isdigit()]


def test_plan_shows_the_failing_check_and_exits_3(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, HOT)
    assert main(["plan", path]) == EXIT_REJECTED
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert "thermal" in lines[3] and "check" in lines[4]
    rows = table_rows(out)  # pass 1 fails: pass 2, which carries its heat, is not run
    assert re.search(r"FAIL \d+(\.\d+)? %$", rows[0]) and rows[1].endswith("not run")
    assert "thermal screen of plan 1" in err
    assert max(len(line) for line in out.splitlines() + err.splitlines()) <= WIDTH
    assert main(["plan", path, "--json"]) == EXIT_REJECTED
    doc = json.loads(capsys.readouterr().out)
    assert not doc["accepted"] and any("thermal screen" in v for v in doc["violations"])
    first, second = doc["passes"]
    assert not first["thermal_ok"] and 0 <= first["damaged_reservoir_pct"] <= 100
    assert not second["thermal_run"] and second["damaged_reservoir_pct"] is None


def test_plan_shows_the_peak_rise_of_passing_passes(tmp_path: Path, cool_tissue: None,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", write(tmp_path, SMALL)]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert len(rows) == 2 and all(re.search(r"ok \d+ K$", row) for row in rows)
    assert max(len(line) for line in out.splitlines()) <= WIDTH


def test_preview_draws_a_rejected_plan_with_its_injury_maps(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from matplotlib.image import imread

    png = tmp_path / "plan.png"
    assert main(["preview", write(tmp_path, HOT), "-o", str(png)]) == EXIT_REJECTED
    out, err = capsys.readouterr()
    size = re.search(r"\((\d+)x(\d+) px, one panel and injury map", out)
    assert size is not None
    width, height = map(int, size.groups())
    assert imread(png).shape[:2] == (height, width)
    assert height > width  # pattern panels above, injury maps below
    assert "thermal screen of plan 1" in err


# -- the heat a session delivered --------------------------------------------------------------

SPOTS_XY_UM = [(x, y) for y in (-500.0, 0.0, 500.0) for x in (-500.0, 0.0, 500.0)]
SET_UJ = 30_000


def make_record(path: Path, monkeypatch: pytest.MonkeyPatch,
                batches: list[tuple[Any, ...]], stored: tuple[dict[str, Any], ...] = ({},),
                handpieces: tuple[str, ...] = ("spot120",),
                set_uj: tuple[int, ...] | None = None) -> TreatmentRecord:
    """One session, one pass of nine spots (stack 1, 500 Hz, ``set_uj`` per pass, default
    SET_UJ) per entry of ``stored`` (keys added to that pass's entry in the session head;
    none: a record from before passes stored their handpiece and galvo timing); ``batches`` =
    (first index, measured µJ, host time of the entry), all in pass 0 unless given as (pass,
    first, measured, at)."""
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(record_module, "time", SimpleNamespace(time=lambda: clock.now))
    spots = np.zeros(len(SPOTS_XY_UM), SPOT_DTYPE)
    to_lsb = GALVO_FULL_SCALE_LSB / FIELD_UM
    spots["index"] = np.arange(len(spots))
    spots["x_lsb"] = [round(GALVO_CENTRE_LSB + x * to_lsb) for x, _ in SPOTS_XY_UM]
    spots["y_lsb"] = [round(GALVO_CENTRE_LSB + y * to_lsb) for _, y in SPOTS_XY_UM]
    spots["pulse_us"], spots["stack"] = 300, 1
    per_pass = []
    for energy_uj in set_uj or (SET_UJ,) * len(stored):
        spots["energy_uj"] = energy_uj
        per_pass.append(spots.copy())
    rec = TreatmentRecord(path)
    session = rec.new_session(
        field_size_um=FIELD_UM, handpieces=list(handpieces), operator="t", patient_ref="p",
        passes=[{"pass": k, "spots": len(spots), "rep_rate_hz": 500,
                 "device_checksum": zlib.crc32(per_pass[k].tobytes()), **extra}
                for k, extra in enumerate(stored)])
    for k, records in enumerate(per_pass):
        rec.store_pass_spots(session, k, records)
    for batch in batches:
        pass_index, first, measured, at = batch if len(batch) == 4 else (0, *batch)
        clock.now = at
        rec.delivered(session, pass_index, np.arange(first, first + len(measured)),
                      np.array(measured))
    return rec


def relative_fire_s(timing: GalvoTiming | None = None) -> np.ndarray:
    timing = timing or GalvoTiming(field_um=FIELD_UM)
    x, y = (np.array(v) for v in zip(*SPOTS_XY_UM, strict=True))
    n = len(x)
    return fire_times_us(x, y, np.full(n, 300, np.int32), np.ones(n, np.int32), 500.0,
                         timing)[0] * 1e-6


def test_delivered_heat_follows_the_measured_energy(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    hp = get_handpiece("spot120")
    measured = np.array([29_000, 31_000, 30_500, 30_000, 28_000, 32_000, 30_000, 29_500, 30_100])
    found = []
    for factor in (1, 2):
        with make_record(tmp_path / f"{factor}.db", monkeypatch,
                         [(0, list(factor * measured), 100.0)]) as rec:
            found.append((delivered_heat(rec, 1).spots.heat_uj, simulate_delivered(rec, 1)))
    (heat, result), (heat_doubled, result_doubled) = found
    assert heat == pytest.approx(hp.residual_heat_fraction * measured)
    assert heat_doubled == pytest.approx(2 * heat)
    sampled = result.peak_rise_k >= 0
    assert result.peak_rise_k.max() > 0
    assert result_doubled.peak_rise_k[sampled] == pytest.approx(2 * result.peak_rise_k[sampled])


def test_an_unmeasured_energy_counts_as_the_set_energy(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    hp = get_handpiece("spot120")
    with make_record(tmp_path / "a.db", monkeypatch, [(0, [-1, 31_000], 5.0)]) as rec:
        heat = delivered_heat(rec, 1).spots.heat_uj
    assert heat == pytest.approx(hp.residual_heat_fraction * np.array([SET_UJ, 31_000]))


def test_delivered_times_are_never_closer_than_the_device_fires(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches recorded closer together than their spots can fire (the simulator's virtual
    clock; a host that wrote them late) were compressed, even run backwards (a 100k-spot pass
    of 106 s modelled in 4.4 s, stripes of damage); a reconciled batch (no readings, written
    on resume) was placed where it was written, seconds after it fired."""
    rel = relative_fire_s()
    batches = [(0, [SET_UJ] * 4, 100.0), (4, [SET_UJ] * 3, 100.0), (7, [-1, -1], 160.0)]
    with make_record(tmp_path / "c.db", monkeypatch, batches) as rec:
        t = delivered_heat(rec, 1).spots.t_s
    assert np.all(np.diff(t) >= np.diff(rel) - 1e-9)
    assert t[:4] == pytest.approx(rel[:4] - rel[0], abs=1e-9)  # the first batch as anchored
    assert t[7:] == pytest.approx(t[6] + rel[7:] - rel[6], abs=1e-9)  # right after spot 6


def test_delivered_times_anchor_batches_and_show_pauses(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    rel = relative_fire_s()
    end_first = 100.0
    back_to_back = end_first + rel[8] - rel[3]
    times = []
    for name, second_at in (("a.db", back_to_back), ("b.db", back_to_back + 5.0)):
        batches = [(0, [SET_UJ] * 4, end_first), (4, [SET_UJ] * 5, second_at)]
        with make_record(tmp_path / name, monkeypatch, batches) as rec:
            times.append(delivered_heat(rec, 1).spots.t_s)
    steady, paused = times
    # the plan's fire times when nothing paused; a pause shifts the later batch by its length
    assert steady == pytest.approx(rel - rel[0], abs=1e-6)
    assert paused[:4] == pytest.approx(steady[:4], abs=1e-6)
    assert paused[4:] == pytest.approx(steady[4:] + 5.0, abs=1e-6)


def test_delivered_times_follow_the_recorded_galvo_timing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = GalvoTiming(jump_speed_um_per_us=0.5, settle_us=3000.0, field_um=FIELD_UM)
    rel = relative_fire_s(slow)
    assert np.ptp(rel) > 1.5 * np.ptp(relative_fire_s())  # the timing matters here
    with make_record(tmp_path / "a.db", monkeypatch, [(0, [SET_UJ] * 9, 100.0)],
                     ({"galvo": slow.to_record()},)) as rec:
        times = delivered_heat(rec, 1).spots.t_s
    # to 10 µs: the record's positions are whole galvo LSBs (0.3 µm), jumps at 0.5 µm/µs
    assert times == pytest.approx(rel - rel[0], abs=1e-5)


@pytest.mark.parametrize("galvo", [{"settle_us": 5.0}, [1, 2], {
    **GalvoTiming().to_record(), "settle_us": -1.0}])
def test_a_bad_recorded_galvo_timing_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 galvo: object) -> None:
    with make_record(tmp_path / "a.db", monkeypatch, [(0, [SET_UJ] * 9, 100.0)],
                     ({"galvo": galvo},)) as rec, \
            pytest.raises(SettingsError, match=r"galvo|settle"):
        delivered_heat(rec, 1)


def test_each_pass_heats_with_its_recorded_handpiece(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A session that changed handpiece: each pass's heat by its own residual fraction (older
    records, which name several handpieces but not which pass used which, have no map)."""
    wide, narrow = get_handpiece("spot300"), get_handpiece("spot120")
    wide_uj = 120_000
    batches = [(0, 0, [wide_uj] * 9, 10.0), (1, 0, [SET_UJ] * 9, 20.0)]
    with make_record(tmp_path / "a.db", monkeypatch, batches,
                     ({"handpiece": "spot300"}, {"handpiece": "spot120"}),
                     set_uj=(wide_uj, SET_UJ)) as rec:
        spots = delivered_heat(rec, 1).spots
    assert spots.heat_uj[:9] == pytest.approx(wide.residual_heat_fraction * np.full(9, wide_uj))
    assert spots.heat_uj[9:] == pytest.approx(narrow.residual_heat_fraction * np.full(9, SET_UJ))
    assert spots.lesion_radius_um[:9] == pytest.approx(
        wide.spot_diameter_um / 2 + wide.coag_for_energy_um(np.full(9, wide_uj * 1e-3), "t"))
    assert spots.pass_start_s == pytest.approx([0.0, 10.0], abs=0.1)
    with make_record(tmp_path / "b.db", monkeypatch, batches, ({}, {}),
                     handpieces=("spot120", "spot300"), set_uj=(wide_uj, SET_UJ)) as rec, \
            pytest.raises(RecordError, match="no handpiece recorded"):
        delivered_heat(rec, 1)


def test_undelivered_spots_contribute_nothing(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with make_record(tmp_path / "a.db", monkeypatch, [(0, [SET_UJ] * 4, 10.0)]) as rec:
        spots = delivered_heat(rec, 1).spots
    assert len(spots.x_um) == 4
    assert np.column_stack([spots.x_um, spots.y_um]) == pytest.approx(
        np.array(SPOTS_XY_UM[:4]), abs=1.0)
    with make_record(tmp_path / "b.db", monkeypatch, []) as rec, \
            pytest.raises(RecordError, match="no spot was delivered"):
        delivered_heat(rec, 1)


def test_report_draws_the_injury_map_of_the_delivered_spots(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from matplotlib.image import imread

    from controller.commands.report import draw_session_report

    db = tmp_path / "t.db"
    make_record(db, monkeypatch, [(0, [SET_UJ] * 6, 10.0)]).close()
    with TreatmentRecord(db) as rec:
        picture = draw_session_report(rec, 1, tmp_path / "r.png")
    image = imread(picture.path)
    assert image.shape[:2] == picture.size_px[::-1]
    injury, spots = picture.panel("injury"), picture.panel("spots")
    assert injury.box_px[0] > spots.box_px[2]  # beside the spots panel, same height
    assert injury.box_px[3] - injury.box_px[1] == pytest.approx(
        spots.box_px[3] - spots.box_px[1], abs=1)
    for k, (x_um, y_um) in enumerate(SPOTS_XY_UM):
        col, row = injury.to_px(x_um / 1000, y_um / 1000)
        colour = image[round(float(row)), round(float(col)), :3]  # one spot: scalars
        assert (np.abs(colour - 1.0).max() > 0.3) == (k < 6)  # heat only where delivered
    assert main(["report", "1", "-o", str(tmp_path / "r2.png"), "--record", str(db)]) == 0
    assert "wrote" in capsys.readouterr().out


def test_a_handpiece_without_a_thermal_limit_is_not_screened() -> None:
    """Limit 1 (the whole reservoir may be damaged): no screen can fail, none is run."""
    plan = build_plan(TreatmentSettings(unscreened(), Pattern("square", 3.0),
                                        DensitySpec(pitch_um=130.0), depth_um=300.0))
    (check,) = validation.check_thermal([plan])
    assert check.unlimited and check.screen is None and check.rejections == ()


def test_plans_after_a_rejected_plan_are_not_screened(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """They carry its heat, the session is rejected already, and each screen (with its
    suggestions) costs model runs: a 10-plan script took 11 minutes to be told no."""
    text = HOT.replace('order = "raster"\n', 'order = "raster"\noffset = false\n') + WARM
    plans = plans_of(text)
    assert len(plans) == 3  # offset = false: each pass fires the same spots, its own plan
    seen: list[str] = []
    with screen_progress(seen.append):
        checks = validation.check_thermal(plans)
    first, second, third = checks
    assert first.screen is not None and not first.screen.ok and first.rejected
    assert second.screen is third.screen is None
    assert second.after_rejected == third.after_rejected == 0
    assert seen and all(s.startswith("plan 1, ") for s in seen)  # no model run for plans 2, 3
    assert second.rejections == ("thermal screen of plan 2: not run: it carries the heat of "
                                 "plan 1, which the screen rejects; change that plan first",)
    assert main(["plan", write(tmp_path, text)]) == EXIT_REJECTED
    out, err = capsys.readouterr()
    rows = table_rows(out)
    assert re.search(r"FAIL \d+(\.\d+)? %$", rows[0]) and rows[0].startswith("1 ")
    assert [r.endswith("not run") for r in rows] == [False, True, True]
    assert ("thermal screen of plans 2-3: not run: they carry the heat of plan 1"
            in " ".join(err.split()))


@pytest.mark.parametrize(("limit_over_damage", "outcome"), [
    (1.05, "warning"),  # within the limit, above 0.9 of it
    (1.3, "clean"),  # well within
    (0.95, "rejected"),
])
def test_damage_just_within_the_limit_is_a_borderline_warning(limit_over_damage: float,
                                                              outcome: str) -> None:
    """The model can read slow plans' damage low (docs/thermal_model.md, Limits), so a pass
    within the last tenth below its limit asks the operator to acknowledge it."""
    plan = plans_of(WARM)[0]
    damaged = max(p.damaged_reservoir_fraction for p in screen_plan(
        plan, plan.settings.handpiece).passes)
    assert 0.0 < damaged < 0.7
    handpiece = replace(plan.settings.handpiece,
                        max_reservoir_damage_fraction=damaged * limit_over_damage)
    plan = build_plan(replace(plan.settings, handpiece=handpiece), plan.timing, plan.seed)
    envelope = replace(ClinicalEnvelope.load(), max_combined_coverage_percent=100.0,
                       max_coverage_percent=100.0, max_cumulative_fluence_j_cm2=1e6)
    if outcome == "rejected":
        with pytest.raises(PlanRejected, match="thermal screen of plan 1"):
            validate_plans([plan], envelope)
        return
    thermal = [w for w in validate_plans([plan], envelope) if w.rule == "thermal screen"]
    if outcome == "clean":
        assert thermal == []
    else:
        assert [w.field for w in thermal] == ["pass 1: damaged_reservoir_percent"]
        assert thermal[0].value == pytest.approx(100.0 * damaged, rel=1e-6)
        assert thermal[0].limit == pytest.approx(100.0 * damaged * limit_over_damage)


@pytest.mark.parametrize(("field", "value"), [("max_coverage_percent", float("nan")),
                                              ("max_passes", 0), ("max_energy_mj", -1.0),
                                              ("borderline_fraction", 1.5)])
def test_an_envelope_with_a_limit_that_checks_nothing_is_refused(field: str, value: float
                                                                  ) -> None:
    """A NaN limit would pass every value (every comparison with it is false)."""
    change: dict[str, Any] = {field: value}  # one field by name: any of its types
    with pytest.raises(SettingsError) as caught:
        replace(ClinicalEnvelope.load(), **change)
    assert caught.value.field == f"envelope.{field}"


def test_a_depth_loss_the_modes_cannot_follow_is_a_settings_error_not_a_crash() -> None:
    """A 900 µm column over a 20 mm, 35 % pass: an AssertionError traceback from plan,
    preview and run (audit); a SettingsError makes it a plan the model cannot evaluate, which
    is rejected (the laser stays off)."""
    from controller.thermal import fit_modes

    with pytest.raises(SettingsError, match="the model cannot evaluate this plan") as caught:
        fit_modes(0.22222459261155567, 4.333379555925336)
    assert caught.value.field == "thermal.depth_loss"


@given(st.floats(0.01, 299.9))
def test_the_wait_found_is_a_whole_tenth_that_passes(needed_s: float) -> None:
    """The suggestion prints the wait with one decimal: a wait found by halving (256.34375 s)
    printed as 256.3 s, below what was evaluated, could fail when typed into the script."""
    trials: list[Trial] = []
    wait = search_wait(lambda w: Trial(f"{w}", 0.0, 0.0, w >= needed_s), trials, 300.0, 0.5)
    assert wait is not None and wait >= needed_s
    assert float(f"{wait:.1f}") == wait
    assert wait - needed_s <= 0.6
    assert all(float(f"{float(t.name):.1f}") == float(t.name) for t in trials)
