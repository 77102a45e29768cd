"""Injury maps drawn at the resolution the picture shows them at: a map of millions of cells
(a 100k-spot session's report) was handed to matplotlib whole (1.5 GB, seconds); its blocks
keep every peak and every damaged cell, and the damage contour closes at the map's edge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.image import imread

from controller.thermal import ThermalResult, TissueParams
from controller.thermal_plot import DAMAGE_COLOUR, RISE_CMAP, draw_injury_map, pooled

CELL_UM = 25.0


def result(peak_rise_k: np.ndarray, damaged: np.ndarray) -> ThermalResult:
    """A map of these cells, 25 µm each, from (0, 0)."""
    ny, nx = peak_rise_k.shape
    return ThermalResult(peak_rise_k=peak_rise_k, damage=damaged.astype(np.float64),
                         damaged=damaged, reservoir=np.ones_like(damaged),
                         extent_um=(0.0, nx * CELL_UM, 0.0, ny * CELL_UM),
                         peak_reservoir_rise_k=float(peak_rise_k.max()),
                         damaged_reservoir_fraction=float(damaged.mean()), heat_deposited_j=0.0,
                         heat_content_j=0.0, heat_time_s=0.0, params=TissueParams())


def drawn(res: ThermalResult, path: Path) -> tuple[Figure, np.ndarray]:
    """``res`` drawn alone in a 3-inch axes at 100 dpi (about 230 pixels a side), and the
    written pixels."""
    fig = Figure(figsize=(3.5, 3.5), dpi=100)
    ax = fig.add_axes((0.15, 0.15, 0.7, 0.7))
    draw_injury_map(ax, res, "test")
    fig.savefig(path, dpi=100, format="png")
    return fig, imread(path)[..., :3]


def near(pixels: np.ndarray, colour: np.ndarray, tolerance: float = 0.02) -> int:
    """How many pixels have this colour."""
    return int((np.abs(pixels - colour).max(axis=2) < tolerance).sum())


def test_pooled_keeps_the_largest_of_each_block_and_any_true() -> None:
    cells = np.arange(35.0).reshape(5, 7)
    assert pooled(cells, 3).tolist() == [[16.0, 19.0, 20.0], [30.0, 33.0, 34.0]]
    flags = np.zeros((5, 7), bool)
    flags[4, 6] = True
    assert pooled(flags, 3).tolist() == [[False, False, False], [False, False, True]]
    assert pooled(cells, 1) is cells


def test_a_large_map_is_drawn_a_cell_per_pixel_at_most_and_one_hot_cell_shows(
        tmp_path: Path) -> None:
    peak = np.ones((2000, 2400))
    peak[1234, 1567] = 100.0  # one hot cell among 4.8 million: nearest resampling skips it
    fig, pixels = drawn(result(peak, np.zeros(peak.shape, bool)), tmp_path / "m.png")
    ax = fig.axes[0]
    image = ax.images[-1].get_array()
    assert image is not None
    box = ax.get_window_extent()
    assert image.shape[0] <= box.height and image.shape[1] <= box.width
    assert image.max() == 100.0
    assert near(pixels, np.array(colormaps[RISE_CMAP](1.0)[:3])) >= 1
    xmin, xmax, ymin, ymax = ax.images[-1].get_extent()
    assert (xmin, ymin) == (0.0, 0.0)
    block_mm = (xmax - xmin) / image.shape[1]
    assert 60.0 <= xmax < 60.0 + block_mm and 50.0 <= ymax < 50.0 + block_mm


def test_a_block_is_blank_only_when_none_of_its_cells_was_sampled(tmp_path: Path) -> None:
    peak = np.ones((2000, 2000))
    peak[:400, :400] = -1.0  # unsampled corner, but for one cell
    peak[399, 399] = 5.0
    peak[-400:, -400:] = -1.0  # unsampled corner
    fig, _ = drawn(result(peak, np.zeros(peak.shape, bool)), tmp_path / "m.png")
    image = fig.axes[0].images[-1].get_array()
    assert image is not None
    mask = np.ma.getmaskarray(image)
    rows, cols = np.nonzero(~mask & (np.ma.filled(image, 0.0) == 5.0))
    assert (len(rows), len(cols)) == (1, 1)  # the first corner's one sampled cell shows
    assert mask[:rows[0], :cols[0]].all() and mask[-1, -1]
    assert 0.0 < mask.mean() < 0.1


def cyan_pixels(pixels: np.ndarray) -> int:
    """Pixels mostly of the damage contour's colour (over the pale top of the colour map)."""
    r, g, b = to_rgb(DAMAGE_COLOUR)
    return int(((np.abs(pixels - (r, g, b)) < 0.35).all(axis=2)).sum())


def test_one_damaged_cell_shows(tmp_path: Path) -> None:
    damaged = np.zeros((2000, 2000), bool)
    damaged[777, 1111] = True
    _, pixels = drawn(result(np.ones(damaged.shape), damaged), tmp_path / "m.png")
    assert cyan_pixels(pixels) >= 2


def test_a_map_damaged_throughout_is_enclosed_by_the_contour(tmp_path: Path) -> None:
    """The contour was left out when every cell was damaged: no sign of the damage at all."""
    damaged = np.ones((300, 300), bool)
    fig, pixels = drawn(result(np.ones(damaged.shape), damaged), tmp_path / "m.png")
    (contour,) = fig.axes[0].collections
    (x0, y0), (x1, y1) = contour.get_datalim(fig.axes[0].transData).get_points()
    assert (x0, y0, x1, y1) == pytest.approx((0.0, 0.0, 7.5, 7.5), abs=1e-9)
    assert cyan_pixels(pixels) > 100


@pytest.mark.parametrize("n", [997, 996, 1000])
@pytest.mark.parametrize("where", ["corner", "last row", "last column"])
def test_a_cell_in_the_last_partial_block_or_at_the_frame_shows(
        tmp_path: Path, n: int, where: str) -> None:
    """A map whose size is not a multiple of the block drew its last, partial block whole,
    past the axes' limits, and the part left inside spanned no pixel: a damaged cell or a
    peak there vanished; a peak in an edge block of one pixel hid under the frame (review of
    session 15). Each case against the same map without the cell."""
    i, j = {"corner": (n - 1, n - 1), "last row": (n - 1, n // 2),
            "last column": (n // 2, n - 1)}[where]
    cold = np.zeros((n, n))
    clean = np.zeros((n, n), bool)
    scaled = cold.copy()
    scaled[0, 0] = 100.0  # one hot cell elsewhere: the colour scale of both maps
    hot = scaled.copy()
    hot[i, j] = 100.0
    _, without = drawn(result(scaled, clean), tmp_path / "scaled.png")
    _, peak = drawn(result(hot, clean), tmp_path / "peak.png")
    assert (np.abs(peak - without).sum(axis=2) > 0.1).sum() >= 1
    damaged = clean.copy()
    damaged[i, j] = True
    _, base = drawn(result(cold, clean), tmp_path / "base.png")
    _, marked = drawn(result(cold, damaged), tmp_path / "damaged.png")
    assert (np.abs(marked - base).sum(axis=2) > 0.1).sum() >= 1
