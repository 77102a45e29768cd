"""Treatment scripts: defaults, pass groups, and errors naming key, line, value and range."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from controller import script as script_module
from controller.errors import SettingsError
from controller.handpiece import get_handpiece
from controller.script import ScriptError, load_script, parse_script
from controller.validation import ClinicalEnvelope, validate_plans

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))
PASS = '[[pass]]\nsize_mm = 6\ndensity_percent = 5\ndepth_um = 300\n'


def parse(text: str) -> script_module.TreatmentScript:
    return parse_script(text, Path("t.toml"))


def rejected(text: str) -> ScriptError:
    with pytest.raises(ScriptError) as info:
        parse(text).plans()
    return info.value


def test_a_script_of_passes_only_runs_on_the_default_handpiece_and_the_simulator() -> None:
    s = parse("[[pass]]\n")
    assert s.device_url == "sim://" and s.handpiece == get_handpiece()
    assert (s.operator, s.patient_ref) == ("", "")
    settings = s.passes[0].settings  # everything from the handpiece's pass defaults
    assert settings.pattern.shape == "square" and settings.pattern.width_mm == 10.0
    assert settings.density.coverage_pct == 5.0 and settings.depth_um == 300.0
    assert settings.order.kind == "interlaced"


def test_a_pass_key_replaces_its_whole_default_group() -> None:
    settings = parse("[[pass]]\npitch_um = 800\nenergy_mj = 20\n").passes[0].settings
    assert settings.density.pitch_um == 800 and settings.density.coverage_pct is None
    assert settings.depth_um == pytest.approx(174.0)  # one 20 mJ pulse, spot120 calibration


def test_header_keys_are_read() -> None:
    s = parse('operator = "Dr B"\npatient_ref = "P-7"\n[device]\nurl = "socket://127.0.0.1:9"\n'
              '[handpiece]\nname = "spot300"\n' + PASS)
    assert (s.operator, s.patient_ref, s.device_url) == ("Dr B", "P-7", "socket://127.0.0.1:9")
    assert s.handpiece.name == "spot300"
    assert s.pass_wait_s == 0.0
    assert parse("pass_wait_s = 12.5\n" + PASS).pass_wait_s == 12.5


@pytest.mark.parametrize(("value", "reason"), [
    ("-1", None), ("601", None), ('"20"', "not a number"), ("nan", "not finite")])
def test_pass_wait_is_checked(value: str, reason: str | None) -> None:
    exc = rejected(f"operator = \"x\"\npass_wait_s = {value}\n" + PASS)
    assert exc.field == "pass_wait_s" and exc.line == 2
    assert "0 <= pass_wait_s <= 600 s" in exc.allowed
    assert reason is None or reason in str(exc)


def test_error_names_pass_key_line_value_and_range() -> None:
    exc = rejected(PASS + PASS.replace("density_percent = 5", "density_percent = 90"))
    assert exc.field == "pass 2: density_percent" and exc.value == 90 and exc.line == 7
    assert str(exc).startswith("t.toml:7: pass 2: density_percent = 90 rejected")


@pytest.mark.parametrize(("body", "allowed"), [
    ("density_percent = 90", "0.04524..35 for a 120 µm spot on a square grid (pitch 179.8..5000"
                             " µm: at most 35 % coverage per pass, the clinical envelope's limit;"
                             " the spots touch at pitch 120 µm, 78.54 %)"),
    ("pitch_um = 100", "179.8..5000 for a 120 µm spot on a square grid"),
    ("spots_per_cm2 = 9000", "4..3095 for a 120 µm spot on a square grid"),
    ('grid = "hex"\ndensity_percent = 95', "0.05224..35 for a 120 µm spot on a hex grid (pitch "
                                           "193.2..5000 µm: at most 35 %"),
])
def test_a_density_beyond_the_geometry_names_the_range_the_envelope_lets_a_pass_use(
        body: str, allowed: str) -> None:
    """Not the geometric range (up to 78.54 % when the spots touch): the clinical envelope
    refuses more than 35 % coverage in one pass, so that is what a pass can use."""
    exc = rejected(f"[[pass]]\nsize_mm = 6\n{body}\ndepth_um = 300\n")
    assert exc.field == f"pass 1: {body.splitlines()[-1].split(' =')[0]}"
    assert exc.allowed.startswith(allowed), exc.allowed


def test_the_density_range_is_the_geometric_one_where_the_envelope_allows_more(
        monkeypatch: pytest.MonkeyPatch) -> None:
    loose = replace(ClinicalEnvelope.load(), max_coverage_percent=95.0)
    monkeypatch.setattr(ClinicalEnvelope, "load", classmethod(lambda cls: loose))
    exc = rejected("[[pass]]\nsize_mm = 6\ndensity_percent = 90\ndepth_um = 300\n")
    assert exc.allowed == "0.04524..78.54 for a 120 µm spot on a square grid (pitch 120..5000 µm)"


@pytest.mark.parametrize(("text", "field", "allowed"), [
    ('[[pass]]\ndesnity_percent = 5\n', "pass 1: desnity_percent", "density_percent"),
    ('[[pass]]\ninclude = "/etc/passwd"\n', "pass 1: include", "keys pattern"),
    ('speed = 3\n[[pass]]\n', "speed", "keys operator"),
    ('[device]\nurl = "sim://"\nfile = "x"\n[[pass]]\n', "device.file", "keys url"),
])
def test_unknown_keys_are_refused_listing_the_allowed_keys(text: str, field: str,
                                                           allowed: str) -> None:
    exc = rejected(text)
    assert exc.field == field and allowed in exc.allowed and exc.line is not None
    assert exc.reason.startswith("unknown key")


def test_a_misspelt_key_gets_a_suggestion() -> None:
    assert "did you mean 'density_percent'" in rejected("[[pass]]\ndesnity_percent = 5\n").reason


def test_syntax_error_gives_tomls_line_and_the_line_text() -> None:
    exc = rejected("[[pass]]\ndepth_um = 300 %\n")
    assert exc.line == 2 and exc.value == "depth_um = 300 %" and exc.field == "toml"


@pytest.mark.parametrize(("body", "field", "value", "allowed"), [
    ("density_percent = 5\npitch_um = 300", "pitch_um", 300, "exactly one of"),
    ("energy_mj = 400", "energy_mj", 400.0, "5..160 mJ"),
    ("energy_mj = 20\nstack = 2", "stack", 2, "1 for 348 µm"),
    ("size_mm = [3, 4]", "size_mm", [3, 4], "[width, height] only for a rectangle"),
    ('pattern = "rectangle"\nsize_mm = 5', "size_mm", 5, "[width, height]"),
    ('pattern = "circle"', "size_mm", None, "a size in mm for a circle"),
    ('order = "random"\ninterlace_k = 4', "interlace_k", 4, "only with order = 'interlaced'"),
    ("feather_edge_depth = 0.5", "feather_edge_depth", 0.5, "only with feather_mm"),
    ("feather_mm = 0", "feather_mm", 0, "0 < feather_mm"),
    ("size_mm = 0", "size_mm", 0, "0 < size_mm mm"),  # the script's key, not width_mm
    ('grid = "hexx"', "grid", "hexx", "one of square, hex"),
    ("seed = -1", "seed", -1, "0 <= seed"),
    ("offset = 1", "offset", 1, "true or false"),
    ("size_mm = 30", "size_mm", 30.0, "within the galvo field"),  # refused by the planner
])
def test_bad_pass_values(body: str, field: str, value: object, allowed: str) -> None:
    exc = rejected(f"\n[[pass]]\n{body}\n")
    assert exc.field == f"pass 1: {field}" and exc.value == value and allowed in exc.allowed
    rows = [k for k, row in enumerate(body.splitlines()) if row.startswith(f"{field} =")]
    assert exc.line == (3 + rows[0] if rows else 2)  # the key's line, else the [[pass]] line


def use_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path = tmp_path / "pass_defaults.toml"
    path.write_text(text)
    monkeypatch.setattr(script_module, "PASS_DEFAULTS_FILE", path)


def test_a_default_that_does_not_fit_says_where_it_came_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_defaults(tmp_path, monkeypatch, "[spot120]\nsize_mm = 5\ndensity_percent = 5\n"
                                        "depth_um = 5\n")
    exc = rejected("\n[[pass]]\n")
    assert exc.field == "pass 1: depth_um" and exc.value == 5 and exc.line == 2
    assert "from the spot120 defaults in pass_defaults.toml" in exc.reason
    assert parse("[[pass]]\ndepth_um = 300\n").passes[0].settings.depth_um == 300


def test_pass_defaults_may_not_hold_a_seed(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    use_defaults(tmp_path, monkeypatch, "[spot120]\nseed = 3\n")
    with pytest.raises(SettingsError, match=r"\[spot120\]\.seed"):
        parse("[[pass]]\n")


def test_missing_settings_without_handpiece_defaults(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    use_defaults(tmp_path, monkeypatch, "")
    exc = rejected("[[pass]]\nsize_mm = 5\ndepth_um = 300\n")
    assert exc.field == "pass 1: density_percent" and "no default" in exc.reason


def test_identical_passes_form_one_plan_with_offset_passes() -> None:
    s = parse(PASS + PASS)
    plans = s.plans()
    assert len(plans) == 1 and len(plans[0].metrics.passes) == 2
    first, second = (plans[0].pass_slice(k) for k in range(2))
    gap_um = np.hypot(plans[0].x_um[second, None] - plans[0].x_um[None, first],
                      plans[0].y_um[second, None] - plans[0].y_um[None, first]).min()
    assert gap_um > 200  # the second pass lands in the reservoirs between the first's spots


def test_offset_false_fires_the_same_positions_again_as_a_new_plan() -> None:
    plans = parse(PASS + PASS + "offset = false\n").plans()
    assert len(plans) == 2
    assert np.array_equal(np.sort(plans[0].x_um), np.sort(plans[1].x_um))


def test_offset_true_is_refused_when_the_settings_differ() -> None:
    exc = rejected(PASS + PASS.replace("300", "250") + "offset = true\n")
    assert exc.field == "pass 2: offset" and exc.line == 9
    assert "depth_um differs from pass 1" in exc.reason
    assert rejected(PASS + "offset = true\n").reason == "the first pass has no pass before it"


def test_different_passes_are_separate_plans_in_order() -> None:
    s = parse(PASS + PASS.replace("300", "250") + PASS.replace("300", "250"))
    assert [[p.index for p in g] for g in s.groups()] == [[0], [1, 2]]
    assert [len(p.metrics.passes) for p in s.plans()] == [1, 2]


def test_stack_with_energy_sets_pulses_per_spot() -> None:
    plan = parse("[[pass]]\nsize_mm = 4\nenergy_mj = 140\nstack = 2\n").plans()[0]
    assert set(plan.stack) == {2} and set(plan.energy_uj) == {140_000}


@pytest.mark.parametrize("url", ["/etc/passwd", "serial:///dev/sda", "spy:///dev/ttyS0",
                                 "loop://", "/dev/../etc/shadow", "file:///tmp/x"])
def test_a_script_cannot_name_a_file_as_its_device(url: str) -> None:
    exc = rejected(f'[device]\nurl = "{url}"\n[[pass]]\n')
    assert exc.field == "device.url" and exc.line == 2 and "--device" in exc.allowed


@pytest.mark.parametrize("url", ["sim://?door=open", "socket://127.0.0.1:5555", "/dev/ttyUSB0",
                                 "serial:///dev/ttyACM0?baudrate=921600", "usb://1209:C025",
                                 "/dev/serial/by-id/usb-co2scan_SIM-0001-if00", "COM3"])
def test_device_urls_a_script_may_name(url: str) -> None:
    assert parse(f'[device]\nurl = "{url}"\n[[pass]]\n').device_url == url


def test_unknown_handpiece_lists_the_known_ones() -> None:
    exc = rejected('[handpiece]\nname = "spot999"\n[[pass]]\n')
    assert exc.field == "handpiece.name" and exc.line == 2 and "spot120" in exc.allowed


def test_passes_must_be_an_array_of_tables() -> None:
    assert rejected("[pass]\nsize_mm = 5\n").field == "pass"
    assert rejected('operator = "x"\n').field == "pass"


def test_a_script_without_a_pass_says_so() -> None:
    assert "(the script has no [[pass]] table)" in str(rejected('operator = "x"\n'))


@pytest.mark.parametrize("vertex", ["nan", "inf", '"5"'])
def test_a_polygon_vertex_must_be_a_finite_number(vertex: str) -> None:
    exc = rejected(f'\n[[pass]]\npattern = "polygon"\n'
                   f"vertices_mm = [[0, 0], [5, {vertex}], [5, 0]]\n")
    assert exc.field == "pass 1: vertices_mm" and exc.allowed == "finite coordinates (mm)"
    assert "inf <=" not in str(exc)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match="a readable UTF-8 TOML file"):
        load_script(tmp_path / "missing.toml")


def test_key_lines_skip_multiline_strings() -> None:
    text = 'operator = """\n[[pass]]\nsize_mm = 1\n"""\n[[pass]]\nsize_mm = 4\n'
    assert script_module.key_lines(text)[("pass", 0, "size_mm")] == 6


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_plans_within_the_clinical_envelope(path: Path) -> None:
    s = load_script(path)
    plans = s.plans()
    assert sum(len(p.metrics.passes) for p in plans) == len(s.passes)
    validate_plans(plans, ClinicalEnvelope.load())


def test_the_examples_cover_the_clinical_goals() -> None:
    assert [p.stem for p in EXAMPLES] == ["deep_scar", "rapid_recovery", "surface_texture"]
    deep = load_script(EXAMPLES[0])
    assert len(deep.plans()[0].metrics.passes) == 2  # multi-pass with offsets
    surface = load_script(EXAMPLES[2]).passes[0].settings
    assert surface.feathering is not None and surface.depth_um <= 200
    rapid = load_script(EXAMPLES[1]).plans()[0]
    assert rapid.metrics.combined_reservoir_fraction > 0.95


def test_a_script_larger_than_the_limit_is_not_read_to_its_end(tmp_path: Path) -> None:
    """/dev/zero (or a huge file) was read until memory ran out."""
    from controller.script import MAX_SCRIPT_BYTES

    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * MAX_SCRIPT_BYTES + "\n[[pass]]\n", encoding="utf-8")
    for path in (big, Path("/dev/zero")):
        with pytest.raises(ScriptError) as caught:
            load_script(path)
        assert caught.value.reason == "larger"
        assert f"at most {MAX_SCRIPT_BYTES:,} bytes" in caught.value.allowed


def test_an_unquoted_number_as_patient_ref_says_to_quote_it() -> None:
    with pytest.raises(ScriptError) as info:
        parse("patient_ref = 20240117\n" + PASS)
    assert 'quote it in a script, patient_ref = "20240117"' in str(info.value)


def test_a_huge_rejected_value_is_not_echoed_whole() -> None:
    """A 999,000-character operator name was echoed in full (1 MB of stderr; audit)."""
    with pytest.raises(ScriptError) as info:
        parse(f'operator = "{"A" * 999_000}"\n' + PASS)
    message = str(info.value)
    assert len(message) < 400 and "(999,002 characters)" in message
    assert "allowed: printable text of at most" in message


@pytest.mark.parametrize("key, name", [
    ('"dénsity"', "dénsity"),
    ("'dénsity'", "dénsity"),
    ('"d\\u00e9nsity"', "dénsity"),  # a basic string's escape, read as the parser reads it
    ('density . x', "density"),      # a dotted key sets the table named by its first part
    ('"dens.ity".x', "dens.ity"),
])
def test_a_quoted_or_dotted_unknown_key_is_named_with_its_line(key: str, name: str) -> None:
    exc = rejected(PASS + f"{key} = 3\n")
    assert exc.field == f"pass 1: {name}" and exc.line == 5
    assert str(exc).startswith("t.toml:5: ")


def test_a_quoted_pass_key_error_points_at_its_line() -> None:
    exc = rejected("[[pass]]\nsize_mm = 6\n'density_percent' = 90\ndepth_um = 300\n")
    assert exc.field == "pass 1: density_percent" and exc.line == 3


def test_a_default_feather_edge_depth_too_shallow_names_the_product_at_the_depth_line() -> None:
    """The planner's default edge depth (0.5) was blamed at the [[pass]] line as if the script
    set it; the cause is the pass's depth times that fraction below the shallowest depth."""
    exc = rejected('[[pass]]\npattern = "square"\nsize_mm = 5\ndensity_percent = 5\n'
                   'depth_um = 100\nfeather_mm = 1\n')
    assert exc.field == "pass 1: feather_edge_depth" and exc.value == 0.5
    assert exc.line == 5  # depth_um, not the [[pass]] line
    assert exc.reason.startswith("the default, not set in the script; depth_um 100 µm x "
                                 "feather_edge_depth 0.5 = 50 µm at the feathered edge, below "
                                 "the handpiece's shallowest calibrated depth, 58 µm")
    assert exc.allowed == "0.5801..1, or depth_um of at least 116 µm"


@pytest.mark.parametrize("edge, depth", [("0.5801", "100"), ("0.5", "116")])
def test_the_bounds_of_a_too_shallow_feathered_edge_pass_as_shown(edge: str, depth: str
                                                                   ) -> None:
    """100 x 0.58 is 57.99999999999999 µm: the bound shown passes when typed in."""
    parse(f'[[pass]]\nsize_mm = 5\ndensity_percent = 5\ndepth_um = {depth}\nfeather_mm = 1\n'
          f'feather_edge_depth = {edge}\n').plans()


def test_a_pattern_smaller_than_one_spot_is_refused_naming_its_size_and_the_spot() -> None:
    """0.01 mm square: one spot, refused only as 11,310 % coverage by the envelope."""
    exc = rejected('[[pass]]\npattern = "square"\nsize_mm = 0.01\ndensity_percent = 5\n'
                   'depth_um = 100\n')
    assert exc.field == "pass 1: size_mm" and exc.value == 0.01 and exc.line == 3
    assert "120 µm spot" in exc.allowed and "smaller than one spot's" in exc.reason
    assert parse(PASS.replace("size_mm = 6", "size_mm = 0.11")).plans()  # one spot's area
