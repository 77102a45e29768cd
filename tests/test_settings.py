"""Settings: density conversions (domain.md worked examples) and errors naming field/value/range."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.errors import SettingsError
from controller.handpiece import get_handpiece
from controller.settings import (
    DensitySpec,
    Feathering,
    GridKind,
    PassSettings,
    Pattern,
    ScanOrder,
    TreatmentSettings,
)

HP = get_handpiece()  # 120 µm


def treatment(**kw: object) -> TreatmentSettings:
    args: dict = {"handpiece": HP, "pattern": Pattern("square", 10.0),
                  "density": DensitySpec(pitch_um=500.0), "depth_um": 300.0}
    args.update(kw)
    return TreatmentSettings(**args)


def test_domain_worked_examples_square_grid() -> None:
    at500 = DensitySpec(pitch_um=500).resolve(120, "square")
    assert at500.coverage_pct == pytest.approx(4.52, abs=0.01)  # "about 4.5 %"
    assert at500.spots_per_cm2 == pytest.approx(400.0)
    at200 = DensitySpec(pitch_um=200).resolve(120, "square")
    assert at200.coverage_pct == pytest.approx(28.3, abs=0.05)  # "about 28 %"
    assert at200.spots_per_cm2 == pytest.approx(2500.0)


def test_hexagonal_cell_is_sqrt3_over_2_of_the_square_cell() -> None:
    hexa = DensitySpec(pitch_um=500).resolve(120, "hex")
    assert hexa.coverage_pct == pytest.approx(4.5239 / (math.sqrt(3) / 2), rel=1e-4)
    assert hexa.spots_per_cm2 == pytest.approx(400 / (math.sqrt(3) / 2))


@settings(max_examples=50)
@given(st.floats(120, 5000), st.sampled_from(["square", "hex"]), st.sampled_from([120.0, 300.0]))
def test_three_density_forms_round_trip(pitch_um: float, grid: GridKind,
                                        spot_um: float) -> None:
    if pitch_um < spot_um:
        return
    d = DensitySpec(pitch_um=pitch_um).resolve(spot_um, grid)
    by_cov = DensitySpec(coverage_pct=d.coverage_pct).resolve(spot_um, grid)
    by_count = DensitySpec(spots_per_cm2=d.spots_per_cm2).resolve(spot_um, grid)
    for other in (by_cov, by_count):
        assert other.pitch_um == pytest.approx(pitch_um, rel=1e-9)
        assert other.coverage_pct == pytest.approx(d.coverage_pct, rel=1e-9)


def test_density_needs_exactly_one_form() -> None:
    with pytest.raises(SettingsError, match="exactly one"):
        DensitySpec(pitch_um=500, coverage_pct=5)
    with pytest.raises(SettingsError, match="exactly one"):
        DensitySpec()


BAD: list[tuple[str, Callable[[], object], str, object]] = [
    ("negative width", lambda: Pattern("square", -3.0), "pattern.width_mm", -3.0),
    ("zero width", lambda: Pattern("circle", 0.0), "pattern.width_mm", 0.0),
    ("NaN width", lambda: Pattern("hexagon", math.nan), "pattern.width_mm", math.nan),
    ("NaN rotation", lambda: Pattern("square", 5.0, rotation_deg=math.nan),
     "pattern.rotation_deg", math.nan),
    ("rectangle without height", lambda: Pattern("rectangle", 5.0), "pattern.height_mm", None),
    ("bowtie polygon", lambda: Pattern("polygon", vertices_mm=((0, 0), (4, 0), (0, 4), (4, 4))),
     "pattern.vertices_mm", ((0, 0), (4, 0), (0, 4), (4, 4))),
    ("polygon with a repeated vertex",
     lambda: Pattern("polygon", vertices_mm=((0, 0), (4, 0), (4, 0), (0, 4))),
     "pattern.vertices_mm", ((0, 0), (4, 0), (4, 0), (0, 4))),
    ("two-vertex polygon", lambda: Pattern("polygon", vertices_mm=((0, 0), (4, 0))),
     "pattern.vertices_mm", ((0, 0), (4, 0))),
    # wrong on purpose, refused at run time:
    ("unknown shape", lambda: Pattern("star", 5.0),  # type: ignore[arg-type]
     "pattern.shape", "star"),
    ("negative pitch", lambda: DensitySpec(pitch_um=-500), "density.pitch_um", -500),
    ("zero coverage", lambda: DensitySpec(coverage_pct=0), "density.coverage_pct", 0),
    ("NaN spots/cm2", lambda: DensitySpec(spots_per_cm2=math.nan), "density.spots_per_cm2",
     math.nan),
    ("pitch below the spot", lambda: treatment(density=DensitySpec(pitch_um=100)),
     "density.pitch_um", 100),
    ("coverage above touching spots", lambda: treatment(density=DensitySpec(coverage_pct=80)),
     "density.coverage_pct", 80),
    ("depth too deep for the handpiece", lambda: treatment(depth_um=5000.0), "depth_um", 5000.0),
    ("depth too shallow for the handpiece", lambda: treatment(depth_um=20.0), "depth_um", 20.0),
    ("zero depth", lambda: treatment(depth_um=0.0), "depth_um", 0.0),
    ("NaN depth", lambda: treatment(depth_um=math.nan), "depth_um", math.nan),
    ("negative jitter", lambda: treatment(jitter_um=-1.0), "jitter_um", -1.0),
    ("jitter letting spots overlap", lambda: treatment(jitter_um=200.0), "jitter_um", 200.0),
    ("feather edge too shallow",
     lambda: treatment(feathering=Feathering(500.0, edge_depth_fraction=0.1)),
     "feathering.edge_depth_fraction", 0.1),
    ("zero feather width", lambda: Feathering(0.0), "feathering.width_um", 0.0),
    ("zero passes", lambda: PassSettings(0), "passes.count", 0),
    ("too many passes", lambda: PassSettings(11), "passes.count", 11),
    # wrong on purpose, refused at run time:
    ("fractional passes", lambda: PassSettings(1.5),  # type: ignore[arg-type]
     "passes.count", 1.5),
    ("rotated stacked passes", lambda: PassSettings(2, "stack", 10.0), "passes.rotation_deg",
     10.0),
    # wrong on purpose, refused at run time:
    ("unknown order", lambda: ScanOrder("spiral"),  # type: ignore[arg-type]
     "order.kind", "spiral"),
    ("negative relax time", lambda: ScanOrder(relax_ms=-1.0), "order.relax_ms", -1.0),
    ("interlace k of 1", lambda: ScanOrder("interlaced", interlace_k=1), "order.interlace_k", 1),
    ("hex grid on a line", lambda: treatment(pattern=Pattern("line", 5.0), grid="hex"), "grid",
     "hex"),
    # a bool is an int, hence a float, to mypy; refused at run time:
    ("bool as a number", lambda: Pattern("square", True), "pattern.width_mm", True),
]


@pytest.mark.parametrize(("make", "field", "value"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_bad_settings_name_field_value_and_allowed_range(
    make: Callable[[], object], field: str, value: object
) -> None:
    with pytest.raises(SettingsError) as err:
        make()
    e = err.value
    assert e.field == field
    nan = isinstance(value, float) and math.isnan(value)
    assert (isinstance(e.value, float) and math.isnan(e.value)) if nan else e.value == value
    assert e.allowed
    assert field in str(e) and e.allowed in str(e) and repr(e.value) in str(e)


def test_allowed_range_is_stated_in_the_operator_units() -> None:
    with pytest.raises(SettingsError) as err:
        treatment(density=DensitySpec(coverage_pct=80))
    assert err.value.allowed.startswith("0.04524..78.54")
    with pytest.raises(SettingsError) as err:
        treatment(depth_um=5000.0)
    assert "58..2694 µm" in err.value.allowed


def test_good_settings_resolve_all_three_density_forms() -> None:
    s = treatment(density=DensitySpec(spots_per_cm2=400.0), jitter_um=50.0)
    assert s.resolved_density.pitch_um == pytest.approx(500.0)
    assert s.resolved_density.coverage_pct == pytest.approx(4.5239, rel=1e-4)
    assert s.min_spacing_um == pytest.approx(400.0)


def test_a_polygon_has_at_most_max_polygon_vertices() -> None:
    """The simple-polygon check is quadratic: 5,000 vertices took a minute to plan."""
    from controller.settings import MAX_POLYGON_VERTICES

    def ring(n: int) -> tuple[tuple[float, float], ...]:
        return tuple((5.0 * math.cos(2 * math.pi * k / n), 5.0 * math.sin(2 * math.pi * k / n))
                     for k in range(n))

    assert len(Pattern("polygon", vertices_mm=ring(MAX_POLYGON_VERTICES)).vertices_mm or ()) \
        == MAX_POLYGON_VERTICES
    with pytest.raises(SettingsError) as caught:
        Pattern("polygon", vertices_mm=ring(MAX_POLYGON_VERTICES + 1))
    assert caught.value.field == "pattern.vertices_mm"
    assert f"at most {MAX_POLYGON_VERTICES}" in caught.value.allowed
