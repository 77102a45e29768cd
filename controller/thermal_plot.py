"""Injury-map panel for previews and reports: predicted peak temperature rise with the damage
contour. matplotlib is an optional extra (``plot``) and is imported only when drawing."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from controller.thermal import ThermalResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Colour map of the peak rise; the damage contour is drawn over it in this colour.
RISE_CMAP = "inferno"
DAMAGE_COLOUR = "cyan"
#: Pixels a side that a whole block spans at least: a map whose size is not a multiple of
#: the block is drawn over its true extent, so its blocks shrink by up to half (still a
#: pixel), and an edge block keeps a pixel beside the axes' frame.
MIN_BLOCK_PX = 2.0


def cells_per_block(ax: Axes, extent_um: tuple[float, float, float, float],
                    cell_um: float) -> int:
    """The fewest map cells a side that one block must hold so that every block of the map,
    drawn in ``ax`` at the limits it has (the map's extent where it has none), spans at
    least ``MIN_BLOCK_PX`` pixels of the written picture (at the figure's dpi)."""
    xmin, xmax, ymin, ymax = (v * 1e-3 for v in extent_um)
    if ax.get_autoscalex_on() or ax.get_autoscaley_on():  # imshow would set these
        ax.set_xlim(xmin, xmax)
        ax.set_ylim(ymin, ymax)
    ax.set_aspect("equal")
    ax.apply_aspect()  # the box an equal-aspect axes is drawn in
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    box = ax.get_window_extent()
    cell_px = cell_um * 1e-3 * min(box.width / abs(x1 - x0), box.height / abs(y1 - y0))
    return max(1, math.ceil(MIN_BLOCK_PX / cell_px)) if cell_px > 0 else 1


def pooled(cells: NDArray[np.generic], block: int) -> NDArray[np.generic]:
    """The largest value of each ``block`` x ``block`` block of a map (rows, columns), the
    last row and column of blocks holding what is left; a bool map: any True."""
    if block == 1:
        return cells
    ny, nx = cells.shape
    by_col = np.maximum.reduceat(cells, np.arange(0, nx, block), axis=1)
    return np.maximum.reduceat(by_col, np.arange(0, ny, block), axis=0)


def draw_injury_map(ax: Axes, result: ThermalResult, title: str) -> None:
    """Draw the peak temperature rise (K) of ``result`` on ``ax`` in mm, with the contour of
    the damaged reservoir. The image is the colour-bar mappable:
    ``fig.colorbar(ax.images[-1], ax=ax, label="peak rise (K)")``. Cells no window sampled
    are left blank.

    Set the axes' limits first (else the map's extent is shown): the maps are drawn at the
    resolution the picture shows them at, in blocks of cells (:func:`cells_per_block`), each
    coloured by its hottest cell and counted damaged when any of its cells is, so that no
    peak and no damaged cell is lost to the resampling; a block left blank had no sampled
    cell. The blocks are drawn over the map's true extent: where its size is not a multiple
    of the block, the last, partial block is widened and the others narrowed to fit (by at
    most a block in all, each keeping a pixel; a partial block drawn whole had reached past
    the axes' limits and been cut to nothing). The contour closes along the map's edge, so
    that damage reaching it (or a map damaged throughout) is enclosed."""
    x0_um, x1_um, y0_um, _ = result.extent_um
    ny, nx = result.peak_rise_k.shape
    cell_um = (x1_um - x0_um) / nx
    block = cells_per_block(ax, result.extent_um, cell_um)
    rise = pooled(result.peak_rise_k, block)
    damaged = pooled(result.damaged, block)
    rows, cols = rise.shape
    xmin, ymin = x0_um * 1e-3, y0_um * 1e-3
    xmax, ymax = xmin + nx * cell_um * 1e-3, ymin + ny * cell_um * 1e-3  # the true extent
    ax.imshow(np.ma.masked_less(rise, 0.0), origin="lower", extent=(xmin, xmax, ymin, ymax),
              cmap=RISE_CMAP, vmin=0.0, interpolation="nearest")
    if damaged.any():  # closed along the map's edge: no reservoir lies beyond it
        bw, bh = (xmax - xmin) / cols, (ymax - ymin) / rows
        ax.contour(xmin + (np.arange(-1, cols + 1) + 0.5) * bw,
                   ymin + (np.arange(-1, rows + 1) + 0.5) * bh,
                   np.pad(damaged, 1).astype(np.float32), levels=[0.5],
                   colors=DAMAGE_COLOUR, linewidths=0.8)
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    ax.set_aspect("equal")
    pct = 100.0 * result.damaged_reservoir_fraction
    ax.set_title(f"{title}\npeak reservoir rise {result.peak_reservoir_rise_k:.1f} K, "
                 f"{pct:.1f} % of reservoir damaged (Ω ≥ {result.params.damage_omega:g})",
                 fontsize=9)
