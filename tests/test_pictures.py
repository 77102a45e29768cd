"""Pictures: announced size, spots at their place, at true size, coloured by firing order;
injury maps under every pass and in the report."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.transforms import Bbox

from controller import pictures
from controller.pictures import (
    CMAP,
    DPI,
    EARLIER_COLOUR,
    MISSING_COLOUR,
    PANEL_W_IN,
    Panel,
    Picture,
    draw_plan,
    draw_report,
)
from controller.scanpath import Plan
from controller.script import parse_script
from controller.thermal import TissueParams, simulate_pass
from controller.thermal_screen import screen_plan

PASS = '[[pass]]\nsize_mm = 6.5\npitch_um = 1000\ndepth_um = 300\norder = "raster"\n'
TWO_PASSES = '[handpiece]\nname = "spot300"\n' + PASS + PASS  # 300 µm spots, offset passes


def rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[k:k + 2], 16) / 255 for k in (1, 3, 5)])


def pixel(image: np.ndarray, col: float | np.ndarray, row: float | np.ndarray) -> np.ndarray:
    return image[round(float(row)), round(float(col)), :3]


#: The two-pass plan, its picture and the picture's pixels.
Drawn = tuple[Plan, Picture, np.ndarray]
#: The spots not delivered (x, y µm), the report's picture and its pixels.
Report = tuple[np.ndarray, Picture, np.ndarray]


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> Drawn:
    plan = parse_script(TWO_PASSES, Path("two.toml")).plans()[0]
    picture = draw_plan([plan], [screen_plan(plan, plan.settings.handpiece)],
                        tmp_path_factory.mktemp("pics") / "plan.png", "two passes")
    return plan, picture, imread(picture.path)


def inked(image: np.ndarray, panel: Panel) -> float:
    """Share of the pixels inside a panel's axes that are not white."""
    left, top, right, bottom = (round(v) for v in panel.box_px)
    box = image[top + 2:bottom - 2, left + 2:right - 2, :3]
    return float((np.abs(box - 1.0).max(axis=2) > 0.1).mean())


def test_plan_picture_has_the_announced_size_and_one_panel_per_pass(drawn: Drawn) -> None:
    _, picture, image = drawn
    assert image.shape[:2] == picture.size_px[::-1]
    assert picture.size_px[0] == round(max(7.5, 2 * PANEL_W_IN) * DPI)
    assert [p.name for p in picture.panels] == ["pass 1", "injury 1", "pass 2", "injury 2"]


def test_each_pass_has_its_injury_map_below_it(drawn: Drawn) -> None:
    plan, picture, image = drawn
    for k in range(2):
        spots, injury = picture.panel(f"pass {k + 1}"), picture.panel(f"injury {k + 1}")
        assert injury.box_px[1] > spots.box_px[3]  # below
        assert injury.box_px[0] == pytest.approx(spots.box_px[0], abs=1)
        assert injury.xlim_mm == spots.xlim_mm and injury.ylim_mm == spots.ylim_mm
        assert inked(image, injury) > 0.3  # the map fills most of the pattern's view
        part = plan.pass_slice(k)
        col, row = injury.to_px(plan.x_um[part] / 1000, plan.y_um[part] / 1000)
        assert all(np.abs(pixel(image, c, r) - 1.0).max() > 0.3 for c, r in zip(col, row,
                                                                             strict=True))


def test_a_plan_the_model_could_not_evaluate_gets_a_note(tmp_path: Path) -> None:
    plan = parse_script(PASS, Path("one.toml")).plans()[0]
    picture = draw_plan([plan], [None], tmp_path / "plan.png", "one pass")
    image = imread(picture.path)
    assert [p.name for p in picture.panels] == ["pass 1", "injury 1"]
    assert 0.0 < inked(image, picture.panel("injury 1")) < 0.1  # the note, no map


def test_a_pass_after_the_first_failing_one_gets_a_note(tmp_path: Path) -> None:
    """A screen ends at its first pass beyond the limit: no map for the passes after it."""
    plan = parse_script(TWO_PASSES, Path("two.toml")).plans()[0]
    full = screen_plan(plan, plan.settings.handpiece)
    stopped = replace(full, passes=full.passes[:1])
    picture = draw_plan([plan], [stopped], tmp_path / "plan.png", "stopped")
    image = imread(picture.path)
    assert inked(image, picture.panel("injury 1")) > 0.3
    assert 0.0 < inked(image, picture.panel("injury 2")) < 0.1  # the note, no map


def test_spots_are_coloured_by_firing_order_at_their_place(drawn: Drawn) -> None:
    plan, picture, image = drawn
    cmap = colormaps[CMAP]
    for k in range(2):
        panel = picture.panel(f"pass {k + 1}")
        part = plan.pass_slice(k)
        col, row = panel.to_px(plan.x_um[part] / 1000, plan.y_um[part] / 1000)
        assert np.allclose(pixel(image, col[0], row[0]), cmap(0.0)[:3], atol=0.08)
        assert np.allclose(pixel(image, col[-1], row[-1]), cmap(1.0)[:3], atol=0.08)


def test_spots_have_their_true_diameter(drawn: Drawn) -> None:
    plan, picture, image = drawn
    panel = picture.panel("pass 1")
    part = plan.pass_slice(0)
    col, row = panel.to_px(plan.x_um[part][5] / 1000, plan.y_um[part][5] / 1000)
    line = image[round(float(row)), :, :3]
    inked = np.flatnonzero(np.abs(line - 1.0).max(axis=1) > 0.3)
    run = inked[np.abs(inked - col) <= 20]
    px_per_mm = (panel.box_px[2] - panel.box_px[0]) / (panel.xlim_mm[1] - panel.xlim_mm[0])
    assert run.max() - run.min() + 1 == pytest.approx(0.300 * px_per_mm, abs=2.5)


def test_reservoirs_are_blank_and_earlier_passes_grey(drawn: Drawn) -> None:
    plan, picture, image = drawn
    first = plan.pass_slice(0)
    x0, y0 = plan.x_um[first] / 1000, plan.y_um[first] / 1000
    col, row = picture.panel("pass 1").to_px(x0[:3] + 0.5, y0[:3] + 0.5)  # half a pitch away
    for c, r in zip(col, row, strict=True):
        assert np.allclose(pixel(image, c, r), 1.0, atol=0.02)
    col, row = picture.panel("pass 2").to_px(x0[3], y0[3])  # pass 1's spot in pass 2's panel
    assert np.allclose(pixel(image, col, row), rgb(EARLIER_COLOUR), atol=0.05)


def test_caption_and_title_are_written(drawn: Drawn) -> None:
    _, picture, image = drawn
    top = min(p.box_px[1] for p in picture.panels)
    bottom = max(p.box_px[3] for p in picture.panels)
    assert (image[: int(top) - 30, :, :3] < 0.5).any()  # title
    assert (image[int(bottom) + 60:, :, :3] < 0.5).any()  # caption below the x labels


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    xy_um = np.array([(x, y) for x in range(-3000, 3001, 1000) for y in range(-3000, 3001, 1000)],
                     dtype=float)
    delivered = np.ones(len(xy_um), dtype=bool)
    delivered[[3, 20]] = False
    rng = np.random.default_rng(0)
    measured = 40_000 * rng.normal(1.0, 0.05, delivered.sum())
    measured[0] = 40_000 * 1.35  # outside the band
    x_um, y_um = xy_um[delivered].T
    n = len(x_um)
    injury = simulate_pass(x_um, y_um, np.arange(n, dtype=np.float64) * 2e-3, np.full(n, 3000.0),
                           np.full(n, 200.0), TissueParams(thickness_um=300.0))
    picture = draw_report(xy_um, delivered, measured, 40_000,
                          tmp_path_factory.mktemp("pics") / "report.png", "report",
                          injury=injury, spot_diameter_um=300)
    return xy_um[~delivered], picture, imread(picture.path)


def test_report_marks_missing_spots_in_red(report: Report) -> None:
    missing_um, picture, image = report
    spots = picture.panel("spots")
    assert image.shape[:2] == picture.size_px[::-1]
    for x_um, y_um in missing_um:
        col, row = spots.to_px(x_um / 1000, y_um / 1000)
        assert np.allclose(pixel(image, col, row), rgb(MISSING_COLOUR), atol=0.1)


def test_report_histogram_shows_the_band_and_the_outlier(report: Report) -> None:
    _, picture, image = report
    energy = picture.panel("energy")
    (x0, x1), (y0, _) = energy.xlim_mm, energy.ylim_mm  # the histogram's data range: % / count
    assert x0 < 80 and x1 > 135
    col, row = energy.to_px(np.array([100.0, 135.0, 90.0]), np.array([0.5, 0.5, 0.5]) + y0)
    assert np.abs(pixel(image, col[0], row[0]) - 1).max() > 0.3  # pulses near the set value
    assert np.allclose(pixel(image, col[1], row[1]), rgb(MISSING_COLOUR), atol=0.1)
    band_col, band_row = energy.to_px(82.0, energy.ylim_mm[1] * 0.95)
    band = pixel(image, band_col, band_row)
    assert band[1] > band[0] and band[1] > band[2]  # green band


def test_report_has_the_injury_map_beside_the_spots(report: Report) -> None:
    _, picture, image = report
    spots, injury = picture.panel("spots"), picture.panel("injury")
    assert [p.name for p in picture.panels] == ["spots", "injury", "energy"]
    assert spots.box_px[2] < injury.box_px[0] < picture.panel("energy").box_px[0]
    assert injury.xlim_mm == spots.xlim_mm
    assert inked(image, injury) > 0.3
    col, row = injury.to_px(0.0, 0.0)  # a delivered spot: heated
    assert np.abs(pixel(image, col, row) - 1.0).max() > 0.3


def test_report_without_a_map_says_why(tmp_path: Path) -> None:
    picture = draw_report(np.zeros((1, 2)), np.zeros(1, bool), np.zeros(0), 40_000,
                          tmp_path / "r.png", "nothing", injury="no injury map: none delivered")
    image = imread(picture.path)
    assert 0.0 < inked(image, picture.panel("injury")) < 0.1


def test_report_histogram_names_delivered_spots_without_a_reading(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spots reconciled from the device's count (their reports lost) have no reading: the
    histogram said "40 of 40 within" of 42 delivered, leaving them out unsaid."""
    titles: list[str] = []
    set_title = Axes.set_title

    def noting(ax: Axes, text: str, *args: object, **kwargs: object) -> object:
        titles.append(text)
        return set_title(ax, text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Axes, "set_title", noting)
    xy_um = np.array([(x, 0.0) for x in range(0, 4200, 100)])
    draw_report(xy_um, np.ones(len(xy_um), bool), np.full(40, 40_000.0), 40_000,
                tmp_path / "r.png", "report", injury="no injury map: test")
    assert any(t.startswith("40 of 40 within") and "2 delivered without a reading" in t
               for t in titles)


def drawn_figures(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures pictures write from now on, laid out as written (drawn on an Agg canvas)."""
    figures: list[Figure] = []
    save = pictures._save

    def keep(fig: Figure, out_path: str | Path, axes: dict[str, Axes]) -> Picture:
        figures.append(fig)
        picture = save(fig, out_path, axes)
        FigureCanvasAgg(fig).draw()
        return picture

    monkeypatch.setattr(pictures, "_save", keep)
    return figures


def axes_labelled(fig: Figure, ylabel: str) -> Axes:
    return next(ax for ax in fig.axes if ax.get_ylabel() == ylabel)


def axes_titled(fig: Figure, start: str) -> Axes:
    return next(ax for ax in fig.axes if ax.get_title().startswith(start))


@pytest.mark.parametrize("readings", [40, 12_000])
def test_report_labels_do_not_overlap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      readings: int) -> None:
    """The histogram's "spots" label overlapped the injury map's colour-bar label (its count
    ticks widen with the readings, the bar's with the peak rise): each panel with its labels
    now keeps clear of the next, the picture widened for them."""
    figures = drawn_figures(monkeypatch)
    xy_um = np.array([(x, y) for x in range(-3000, 3001, 1000) for y in range(-3000, 3001, 1000)],
                     dtype=float)
    x_um, y_um = xy_um.T
    n = len(x_um)
    hot = simulate_pass(x_um, y_um, np.arange(n, dtype=np.float64) * 2e-3, np.full(n, 20_000.0),
                        np.full(n, 200.0), TissueParams(thickness_um=300.0))
    assert hot.peak_rise_k.max() > 100  # three-digit bar ticks
    picture = draw_report(xy_um, np.ones(n, bool), np.full(readings, 40_000.0), 40_000,
                          tmp_path / "r.png", "report", injury=hot, spot_diameter_um=300)
    (fig,) = figures
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    renderer = canvas.get_renderer()
    spots = axes_labelled(fig, "spots")
    bar = axes_labelled(fig, "peak temperature rise (K)")
    spots_box = spots.yaxis.label.get_window_extent(renderer)
    bar_box = bar.yaxis.label.get_window_extent(renderer)
    assert not spots_box.overlaps(bar_box)
    assert spots_box.x0 - bar_box.x1 >= pictures.LABEL_GAP_IN * DPI - 1
    panels = [[axes_titled(fig, "delivered")], [axes_titled(fig, "injury map"), bar], [spots]]
    boxes = [Bbox.union([b for ax in group if (b := ax.get_tightbbox(renderer)) is not None])
             for group in panels]
    for one, other in itertools.pairwise(boxes):
        assert one.x1 < other.x0  # labels, tick labels and titles side by side, apart
    width, height = picture.size_px
    assert all(b.x0 >= 0 and b.x1 <= width and b.y0 >= 0 and b.y1 <= height for b in boxes)
