"""Injury-map panel for previews and reports: predicted peak temperature rise with the damage
contour. matplotlib is an optional extra (``plot``) and is imported only when drawing."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from controller.thermal import ThermalResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Colour map of the peak rise; the damage contour is drawn over it in this colour.
RISE_CMAP = "inferno"
DAMAGE_COLOUR = "cyan"


def draw_injury_map(ax: Axes, result: ThermalResult, title: str) -> None:
    """Draw the peak temperature rise (K) of ``result`` on ``ax`` in mm, with the contour of
    the damaged reservoir. The image is the colour-bar mappable:
    ``fig.colorbar(ax.images[-1], ax=ax, label="peak rise (K)")``. Cells no window sampled
    are left blank."""
    xmin, xmax, ymin, ymax = (v * 1e-3 for v in result.extent_um)
    rise = np.ma.masked_less(result.peak_rise_k, 0.0)
    ax.imshow(rise, origin="lower", extent=(xmin, xmax, ymin, ymax), cmap=RISE_CMAP,
                      vmin=0.0, interpolation="nearest")
    if result.damaged.any() and not result.damaged.all():
        ny, nx = result.damaged.shape
        ax.contour(np.linspace(xmin, xmax, nx), np.linspace(ymin, ymax, ny),
                   result.damaged.astype(float), levels=[0.5], colors=DAMAGE_COLOUR,
                   linewidths=0.8)
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    ax.set_aspect("equal")
    pct = 100.0 * result.damaged_reservoir_fraction
    ax.set_title(f"{title}\npeak reservoir rise {result.peak_reservoir_rise_k:.1f} K, "
                 f"{pct:.1f} % of reservoir damaged (Ω ≥ {result.params.damage_omega:g})",
                 fontsize=9)
