"""Pictures of plans and treatments for clinicians (PNG through matplotlib, the extra ``plot``).

Everything is drawn in millimetres on the skin with equal axes, spots at their true diameter
(the handpiece's definition), so a picture can be held against a ruler. Injury maps (the
thermal model's peak temperature rise with the damage contour) share their pattern panel's
view and one colour scale per picture. matplotlib is imported
only when a picture is drawn; without it :class:`PlottingUnavailable` says how to install it.
Figures are built with ``matplotlib.figure.Figure`` (no pyplot state), so drawing is safe in
threads and tests.

Pictures are PNG only (their pixel size and panel boxes are read back from the written
raster): the output path must name a file ending in ``.png`` (any case), and exactly that
file is written (:func:`check_png_path`).
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from controller import patterns
from controller.safety import ENERGY_TOLERANCE
from controller.scanpath import Plan
from controller.script import describe_pattern, span
from controller.settings import TreatmentSettings
from controller.thermal import ThermalResult
from controller.thermal_plot import draw_injury_map
from controller.thermal_screen import PlanThermal

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 150
#: What an output path may be, as errors state it (see check_png_path).
PNG_ALLOWED = "a file name ending in .png"
PANEL_W_IN = 5.4
AXES_W_IN = 3.7
AXES_MAX_H_IN = 4.6
COLUMNS_MAX = 3
MIN_WIDTH_IN = 7.5
PANEL_GAP_IN = 1.0  # below an axes for its x labels, above it for a one-line title
INJURY_TITLE_IN = 0.2  # the injury map's title has a second line (its numbers)
TITLE_LINE_IN = 0.25
TITLE_CHARS_PER_IN = 9.5  # 13 pt text
HISTOGRAM_W_IN = 4.2
#: The least room between the labels of panels side by side, and from a label to the edge
#: (inches): the report widens for what its labels take (:func:`_keep_apart`).
LABEL_GAP_IN = 0.2
EDGE_IN = 0.1
CAPTION_LINE_IN = 0.2
CAPTION_CHARS_PER_IN = 12.5  # 9 pt monospace
SCALE_BAND = 0.14  # extra room below the pattern (fraction of its extent) for the scale bar
CMAP = "viridis"
EARLIER_COLOUR = "#c8c8c8"
MISSING_COLOUR = "#d62728"
DELIVERED_COLOUR = "#1f77b4"
BAND_PERCENT = 100.0 * ENERGY_TOLERANCE  # the band the session's energy check holds


class PictureError(RuntimeError):
    """A picture cannot be drawn or written; the message says why."""


class PlottingUnavailable(PictureError):
    """matplotlib (the ``plot`` extra) is not installed."""


@dataclass(frozen=True)
class Panel:
    """Where one panel's axes landed in the image, and the data range (mm) it shows."""

    name: str
    box_px: tuple[float, float, float, float]  # left, top, right, bottom; origin top-left
    xlim_mm: tuple[float, float]
    ylim_mm: tuple[float, float]

    def to_px(self, x_mm: ArrayLike, y_mm: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Image (column, row) of skin positions in mm."""
        left, top, right, bottom = self.box_px
        (x0, x1), (y0, y1) = self.xlim_mm, self.ylim_mm
        col = left + (np.asarray(x_mm) - x0) / (x1 - x0) * (right - left)
        row = bottom - (np.asarray(y_mm) - y0) / (y1 - y0) * (bottom - top)
        return col, row


@dataclass(frozen=True)
class Picture:
    """A written PNG: its path, size in pixels (width, height) and panels."""

    path: Path
    size_px: tuple[int, int]
    panels: tuple[Panel, ...]

    def panel(self, name: str) -> Panel:
        """The panel called ``name`` (e.g. "pass 1", "injury 1", "spots"; passes from 1, as
        their titles)."""
        return next(p for p in self.panels if p.name == name)


def _figure(width_in: float, height_in: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlottingUnavailable("pictures need matplotlib: pip install 'co2scan[plot]'"
                                  ) from exc
    return Figure(figsize=(width_in, height_in), dpi=DPI)


def check_png_path(out_path: str | os.PathLike[str]) -> Path:
    """``out_path`` as a Path when it names a PNG file to write: a file name ending in ``.png``
    (any case) with a name before it, and not an existing directory. Anything else raises
    PictureError naming the value and what is allowed (nothing is written).

    Whether the file can really be written shows only when it is written (``cannot write``).
    """
    text = os.fspath(out_path)
    name = os.path.basename(text)
    stem, suffix = os.path.splitext(name)
    why = (" (empty)" if not text else
           " (a directory)" if not name or name in (".", "..") or os.path.isdir(text) else
           " (no name before .png)" if name.lower() == ".png" else
           "")
    if why or not stem or suffix.lower() != ".png":
        raise PictureError(f"{text!r} rejected{why}; allowed: {PNG_ALLOWED}")
    return Path(text)


def _save(fig: Figure, out_path: str | Path, axes: dict[str, Axes]) -> Picture:
    from PIL import Image  # a matplotlib dependency

    path = Path(out_path)  # checked by the caller before drawing (check_png_path)
    try:
        # the format is given, so matplotlib writes exactly ``path`` (it appends ".png" to
        # a name without a suffix it knows when left to guess)
        fig.savefig(path, dpi=DPI, format="png")
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError) as exc:  # ValueError: e.g. a NUL byte in the path
        raise PictureError(f"cannot write {path}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from exc
    panels = []
    for name, ax in axes.items():
        box = ax.get_window_extent()
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        panels.append(Panel(name, (box.x0, height - box.y1, box.x1, height - box.y0),
                            (x0, x1), (y0, y1)))
    return Picture(path, (width, height), tuple(panels))


@dataclass(frozen=True)
class View:
    """The skin area a panel shows (mm), with a band at the bottom for the scale bar."""

    xlim_mm: tuple[float, float]
    ylim_mm: tuple[float, float]

    @classmethod
    def around(cls, x_mm: np.ndarray, y_mm: np.ndarray, margin_mm: float) -> View:
        """Centred on the field centre, holding every point plus ``margin_mm``."""
        half_x = float(np.abs(x_mm).max()) + margin_mm
        half_y = float(np.abs(y_mm).max()) + margin_mm
        band = SCALE_BAND * 2 * max(half_x, half_y)
        return cls((-half_x, half_x), (-half_y - band, half_y))

    def axes_size_in(self) -> tuple[float, float]:
        """Axes width and height (inches) showing this view at equal scale."""
        aspect = (self.ylim_mm[1] - self.ylim_mm[0]) / (self.xlim_mm[1] - self.xlim_mm[0])
        scale = min(1.0, AXES_MAX_H_IN / (AXES_W_IN * aspect))
        return AXES_W_IN * scale, AXES_W_IN * scale * aspect

    def apply(self, ax: Axes) -> None:
        """Set the limits, equal scale, mm labels and a scale bar in the lower left."""
        from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

        ax.set_xlim(*self.xlim_mm)
        ax.set_ylim(*self.ylim_mm)
        ax.set_aspect("equal")
        ax.set_xlabel("x (mm)")
        ax.set_ylabel("y (mm)")
        ax.tick_params(labelsize=8)
        width_mm = self.xlim_mm[1] - self.xlim_mm[0]
        length_mm = max(v for v in (0.2, 0.5, 1, 2, 5, 10) if v <= max(0.2, width_mm / 5))
        ax.add_artist(AnchoredSizeBar(ax.transData, length_mm, f"{length_mm:g} mm",
                                      "lower left", pad=0.4, sep=3, frameon=False,
                                      size_vertical=width_mm / 150))


def _circles(ax: Axes, x_mm: np.ndarray, y_mm: np.ndarray, diameter_mm: float,
             **style: Any) -> Any:
    """Spots as circles of their true diameter in data units."""
    from matplotlib.collections import EllipseCollection

    d = np.full(len(x_mm), diameter_mm)
    spots = EllipseCollection(d, d, np.zeros(len(x_mm)), units="xy",
                              offsets=np.column_stack([x_mm, y_mm]),
                              offset_transform=ax.transData, **style)
    ax.add_collection(spots)
    return spots


def skin_outline_mm(settings: TreatmentSettings) -> tuple[np.ndarray, np.ndarray]:
    """The pattern's outline on the skin (closed, in mm)."""
    vx, vy = patterns.rotate(*settings.pattern.outline_um(settings.resolved_density.pitch_um),
                             math.radians(settings.pattern.rotation_deg))
    return np.append(vx, vx[0]) / 1000.0, np.append(vy, vy[0]) / 1000.0


def describe_pass(plan: Plan, plan_pass: int) -> str:
    """One line of a pass's settings and results, for captions."""
    s, hp, m = plan.settings, plan.settings.handpiece, plan.metrics.passes[plan_pass]
    part = plan.pass_slice(plan_pass)
    energy_mj = plan.energy_uj[part] / 1000.0
    stack = plan.stack[part]
    order = s.order.kind + (f" k={s.order.interlace_k}" if s.order.kind == "interlaced" else "")
    feather = f", feathered {s.feathering.width_um / 1000:g} mm" if s.feathering else ""
    dose = f"{span(energy_mj.min(), energy_mj.max(), '.1f')} mJ per pulse × " \
           f"{span(stack.min(), stack.max(), 'd')} pulses"
    return (f"{describe_pattern(s.pattern)}, {s.grid} grid, {order}{feather}; density "
            f"{m.coverage_pct:.1f} % (pitch {m.pitch_um:.0f} µm, {m.spots_per_cm2:.0f}/cm²); "
            f"depth {s.depth_um:g} µm = {dose}; {hp.name} {hp.spot_diameter_um:g} µm spot; "
            f"{m.spot_count} spots in {m.duration_s:.2f} s; seed {plan.seed}")


def _title(fig: Figure, title: str, width_in: float) -> float:
    """Put the wrapped title at the top; returns the height (inches) it takes."""
    text = textwrap.fill(title, int(width_in * TITLE_CHARS_PER_IN))
    height_in = 0.35 + TITLE_LINE_IN * (text.count("\n") + 1)
    fig.text(0.5, 1 - 0.2 / fig.get_size_inches()[1], text, ha="center", va="top",
             fontsize=13)
    return height_in


def draw_plan(plans: Sequence[Plan], screens: Sequence[PlanThermal | str | None],
              out_path: str | Path, title: str = "") -> Picture:
    """Draw every pass of ``plans`` (one panel each, same scale) and its injury map below it
    to a PNG.

    Spots are drawn to scale and coloured by firing order (colour bar: first to last); the
    spots of earlier passes show in grey, so offsets into the reservoirs are visible; the
    outline is dashed; a scale bar sits in the lower left; the caption lists each pass's
    settings. ``screens``: the thermal screen of each plan as validation.check_thermal gives
    it (plan k carries plans 0..k-1, so the injury map under pass g holds passes 0..g; a text:
    why there is none, as ``ThermalCheck.outcome`` gives it; None: the model could not
    evaluate the plan). ``out_path``: see :func:`check_png_path`.
    """
    check_png_path(out_path)  # before the drawing
    passes = [(plan, p, screen) for plan, screen in zip(plans, screens, strict=True)
              for p in range(len(plan.metrics.passes))]
    ncols = min(COLUMNS_MAX, len(passes))
    nrows = math.ceil(len(passes) / ncols)
    width_in = max(MIN_WIDTH_IN, ncols * PANEL_W_IN)
    outlines = [skin_outline_mm(plan.settings) for plan in plans]
    view = View.around(
        np.concatenate([plan.x_um / 1000 for plan in plans] + [o[0] for o in outlines]),
        np.concatenate([plan.y_um / 1000 for plan in plans] + [o[1] for o in outlines]),
        max(plan.settings.handpiece.spot_diameter_um for plan in plans) / 1000 + 0.3)
    axes_w_in, axes_h_in = view.axes_size_in()
    caption = [textwrap.fill(f"pass {g + 1}: {describe_pass(plan, p)}",
                             int(width_in * CAPTION_CHARS_PER_IN), subsequent_indent="    ")
               for g, (plan, p, _) in enumerate(passes)]
    caption_in = CAPTION_LINE_IN * (sum(c.count("\n") + 1 for c in caption) + 1)
    title_in = 0.35 + TITLE_LINE_IN * (textwrap.fill(title, int(width_in * TITLE_CHARS_PER_IN))
                                       .count("\n") + 1)
    injury_h_in = axes_h_in + PANEL_GAP_IN + INJURY_TITLE_IN
    row_h_in = axes_h_in + PANEL_GAP_IN + injury_h_in
    height_in = title_in + nrows * row_h_in + caption_in
    fig = _figure(width_in, height_in)
    _title(fig, title, width_in)
    margin_in = (width_in - ncols * PANEL_W_IN) / 2
    rise_max_k = _rise_scale_k([r.result for _, p, s in passes
                                if isinstance(s, PlanThermal)
                                and (r := s.after_pass(p)) is not None])
    axes: dict[str, Axes] = {}
    for g, (plan, p, screen) in enumerate(passes):
        row, col = divmod(g, ncols)
        left_in = margin_in + col * PANEL_W_IN + 0.65 + (AXES_W_IN - axes_w_in) / 2
        bottom_in = height_in - title_in - row * row_h_in - axes_h_in - 0.45
        ax, cax = _axes_with_bar(fig, left_in, bottom_in, axes_w_in, axes_h_in)
        _draw_pass(ax, cax, plans, plan, p, g, view)
        axes[f"pass {g + 1}"] = ax  # the panels as their titles name them
        ax, cax = _axes_with_bar(fig, left_in, bottom_in - injury_h_in, axes_w_in, axes_h_in)
        _draw_injury(ax, cax, _injury(screen, p),
                     f"pass {g + 1}: predicted injury{_scope(g)}", view, rise_max_k)
        axes[f"injury {g + 1}"] = ax
    fig.text(0.01, (caption_in - CAPTION_LINE_IN * 0.5) / height_in, "\n".join(caption),
             va="top", ha="left", fontsize=9, family="monospace")
    return _save(fig, out_path, axes)


def _injury(screen: PlanThermal | str | None, p: int) -> ThermalResult | str | None:
    """The injury map after pass p of a plan, or why there is none."""
    if not isinstance(screen, PlanThermal):
        return screen
    after = screen.after_pass(p)
    if after is None:
        return "not run: an earlier pass\nexceeds the damage limit"
    return after.result


def _scope(g: int) -> str:
    """Which passes the injury map under the pass of session index g holds: all of the
    session up to it."""
    return f" (passes 1-{g + 1} together)" if g else ""


def _axes_with_bar(fig: Figure, left_in: float, bottom_in: float, width_in: float,
                   height_in: float) -> tuple[Axes, Axes]:
    """An axes placed in inches, with a thin colour-bar axes just right of it."""
    fig_w_in, fig_h_in = fig.get_size_inches()
    ax = fig.add_axes((left_in / fig_w_in, bottom_in / fig_h_in, width_in / fig_w_in,
                       height_in / fig_h_in))
    cax = fig.add_axes(((left_in + width_in + 0.1) / fig_w_in, bottom_in / fig_h_in,
                        0.12 / fig_w_in, height_in / fig_h_in))
    return ax, cax


def _rise_scale_k(results: Sequence[ThermalResult]) -> float:
    """Top of the shared colour scale of injury maps: the highest peak rise drawn."""
    peaks = [float(np.max(r.peak_rise_k, initial=0.0)) for r in results]
    return max(peaks, default=0.0) or 1.0


def _draw_injury(ax: Axes, cax: Axes, result: ThermalResult | str | None, title: str,
                 view: View, rise_max_k: float) -> None:
    """An injury map in ``view`` on the shared colour scale, or a note when there is none
    (``result``: the reason as text, or None when the model could not evaluate the plan)."""
    if not isinstance(result, ThermalResult):
        view.apply(ax)
        note = result or "the thermal model could not\nevaluate this plan (see co2scan plan)"
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center",
                fontsize=9, wrap=True)
        ax.set_title(title, fontsize=10)
        cax.set_axis_off()
        return
    view.apply(ax)  # first: the map is drawn at the resolution this view shows it at
    draw_injury_map(ax, result, title)
    image = ax.images[-1]
    image.set_clim(0.0, rise_max_k)
    bar = ax.figure.colorbar(image, cax=cax)
    bar.set_label("peak temperature rise (K)", fontsize=8)
    bar.ax.tick_params(labelsize=8)


def _draw_pass(ax: Axes, cax: Axes, plans: Sequence[Plan], plan: Plan, p: int, g: int,
               view: View) -> None:
    d_mm = plan.settings.handpiece.spot_diameter_um / 1000.0
    view.apply(ax)
    earlier = [(q.x_um[q.pass_slice(k)], q.y_um[q.pass_slice(k)])
               for q in plans for k in range(len(q.metrics.passes))][:g]
    for ex, ey in earlier:
        _circles(ax, ex / 1000, ey / 1000, d_mm, facecolors=EARLIER_COLOUR, edgecolors="none")
    part = plan.pass_slice(p)
    x_mm, y_mm = plan.x_um[part] / 1000, plan.y_um[part] / 1000
    spots = _circles(ax, x_mm, y_mm, d_mm, cmap=CMAP, edgecolors="none")
    spots.set_array(np.arange(1, len(x_mm) + 1))
    spots.set_clim(1, max(2, len(x_mm)))
    ax.plot(*skin_outline_mm(plan.settings), color="0.25", lw=0.8, ls="--", zorder=0.9)
    ax.plot(x_mm[0], y_mm[0], marker="o", ms=9, mfc="none", mec="black", mew=1.2)
    ax.annotate("first", (x_mm[0], y_mm[0]), xytext=(6, 6), textcoords="offset points",
                fontsize=8)
    m = plan.metrics.passes[p]
    ax.set_title(f"pass {g + 1}: {m.spot_count} spots, {m.coverage_pct:.1f} % cover"
                 + (", grey: earlier passes" if earlier else ""), fontsize=10)
    bar = ax.figure.colorbar(spots, cax=cax, ticks=[1, len(x_mm)])
    bar.set_label("firing order (first to last)", fontsize=8)
    bar.ax.tick_params(labelsize=8)


def draw_report(planned_xy: ArrayLike, delivered_mask: ArrayLike, measured_uj: ArrayLike,
                set_uj: ArrayLike, out_path: str | Path, title: str, *,
                injury: ThermalResult | str, spot_diameter_um: float | None = None,
                planned_set_uj: ArrayLike | None = None) -> Picture:
    """Delivered against planned spots, the injury map of what was delivered, and the
    measured energy against the set value.

    ``planned_xy`` (N, 2) spot positions in µm; ``delivered_mask`` (N,) True for spots the
    device confirmed; ``measured_uj`` the measured energies and ``set_uj`` their set values
    (one number, or one per measurement), both of the whole stack (all pulses of a spot, as
    the monitor measures): one per delivered spot that has a reading, the
    others (delivered count minus readings) are named as without one. ``planned_set_uj``:
    the set energies (whole stack) of the planned spots, named as the set value when no
    reading is there to name it. Missing spots are
    marked with red crosses; the histogram shows measured / set in percent with the +/-20 %
    band. Spots are drawn at ``spot_diameter_um`` when given, else as markers. ``injury``:
    the thermal model run on the delivered spots (controller.thermal_delivered), or why
    there is no map.
    ``out_path``: see :func:`check_png_path`.
    """
    check_png_path(out_path)  # before the drawing
    xy_mm = np.asarray(planned_xy, dtype=np.float64).reshape(-1, 2) / 1000.0
    done = np.asarray(delivered_mask, dtype=bool)
    measured = np.asarray(measured_uj, dtype=np.float64)
    ratio_pct = 100.0 * measured / np.broadcast_to(np.asarray(set_uj, np.float64), measured.shape)
    view = View.around(xy_mm[:, 0], xy_mm[:, 1], (spot_diameter_um or 100.0) / 1000 + 0.3)
    axes_w_in, axes_h_in = view.axes_size_in()
    injury_left_in = 0.7 + axes_w_in + 0.9
    width_in = injury_left_in + axes_w_in + 1.3 + HISTOGRAM_W_IN + 0.3
    title_in = 0.35 + TITLE_LINE_IN * (textwrap.fill(title, int(width_in * TITLE_CHARS_PER_IN))
                                       .count("\n") + 1)
    height_in = title_in + axes_h_in + 0.9 + INJURY_TITLE_IN
    fig = _figure(width_in, height_in)
    _title(fig, title, width_in)
    bottom, height = 0.6 / height_in, axes_h_in / height_in
    left = fig.add_axes((0.7 / width_in, bottom, axes_w_in / width_in, height))
    middle, cax = _axes_with_bar(fig, injury_left_in, 0.6, axes_w_in, axes_h_in)
    right = fig.add_axes(((width_in - 0.3 - HISTOGRAM_W_IN) / width_in, bottom,
                          HISTOGRAM_W_IN / width_in, height))
    view.apply(left)
    missing = xy_mm[~done]
    if spot_diameter_um is None:
        left.plot(*xy_mm[done].T, "o", ms=3, color=DELIVERED_COLOUR, ls="none")
    else:
        done_x, done_y = xy_mm[done].T
        _circles(left, done_x, done_y, spot_diameter_um / 1000, facecolors=DELIVERED_COLOUR,
                 edgecolors="none")
    left.plot(*missing.T, "x", ms=7, mew=1.8, color=MISSING_COLOUR, ls="none")
    left.set_title(f"delivered {done.sum()} of {len(done)} planned spots, "
                   f"missing {len(missing)} (red ×)", fontsize=10)
    rise_max_k = _rise_scale_k([injury] if isinstance(injury, ThermalResult) else [])
    _draw_injury(middle, cax, injury, "injury map of the delivered spots", view, rise_max_k)
    named_set = set_uj if measured.size or planned_set_uj is None else planned_set_uj
    _energy_histogram(right, ratio_pct, named_set,
                      unread=max(int(done.sum()) - measured.size, 0))
    _keep_apart(fig, [[left], [middle, cax], [right]])
    return _save(fig, out_path, {"spots": left, "injury": middle, "energy": right})


def _keep_apart(fig: Figure, columns: Sequence[Sequence[Axes]]) -> None:
    """Move each column of axes (a panel and its colour bar), left to right, clear of the one
    before it: at least LABEL_GAP_IN between their labels as drawn (titles, axis labels, tick
    labels: the colour bar's, the histogram's counts, widen with their numbers), and EDGE_IN
    from the picture's edges; the figure widens by what that takes (sizes and heights kept)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import Bbox

    renderer = FigureCanvasAgg(fig).get_renderer()
    width_in, height_in = fig.get_size_inches()
    shifts: list[float] = []
    reach_in = EDGE_IN - LABEL_GAP_IN  # the right end of the labels so far, shifted
    for column in columns:
        box = Bbox.union([b for ax in column if (b := ax.get_tightbbox(renderer)) is not None])
        left_in, right_in = box.x0 / fig.dpi, box.x1 / fig.dpi
        shift = max(shifts[-1] if shifts else 0.0, reach_in + LABEL_GAP_IN - left_in)
        shifts.append(shift)
        reach_in = right_in + shift
    new_width_in = max(width_in + shifts[-1], reach_in + EDGE_IN)
    if new_width_in == width_in and not any(shifts):
        return
    places = [[(ax, ax.get_position(original=True)) for ax in column] for column in columns]
    fig.set_size_inches(new_width_in, height_in)
    for placed, shift in zip(places, shifts, strict=True):
        for ax, pos in placed:
            ax.set_position(((pos.x0 * width_in + shift) / new_width_in, pos.y0,
                             pos.width * width_in / new_width_in, pos.height))


def _energy_histogram(ax: Axes, ratio_pct: np.ndarray, set_uj: ArrayLike, unread: int = 0
                      ) -> None:
    """Measured / set energy of each spot (whole stack) with the band; ``set_uj`` the set
    energies named in the label; ``unread``: delivered spots without a reading (their
    reports lost, reconciled from the device's count), named in the title. Without a
    reading the count axis shows 0..1 (not matplotlib's -0.04..0.04 around nothing)."""
    lo, hi = 100 - BAND_PERCENT, 100 + BAND_PERCENT
    reach = max(2 * BAND_PERCENT, float(np.abs(ratio_pct - 100).max()) if len(ratio_pct) else 0)
    edges = np.arange(100 - 1.1 * reach, 100 + 1.1 * reach + 1.0, 1.0)  # 1 % bins
    ax.axvspan(lo, hi, color="#2ca02c", alpha=0.15, label=f"set ±{BAND_PERCENT:g} %")
    within = (ratio_pct >= lo) & (ratio_pct <= hi)
    ax.hist([ratio_pct[within], ratio_pct[~within]], bins=edges.tolist(), stacked=True,
            color=[DELIVERED_COLOUR, MISSING_COLOUR])
    ax.axvline(100, color="black", lw=1, label="set value")
    set_mj = np.atleast_1d(np.asarray(set_uj, dtype=np.float64)) / 1000.0
    set_text = span(set_mj.min(), set_mj.max(), ".1f") if set_mj.size else "-"
    ax.set_xlabel(f"measured / set energy per spot, whole stack (%);\nset {set_text} mJ per "
                  "spot (all its pulses)", fontsize=9)
    ax.set_ylabel("spots")
    if not len(ratio_pct):
        ax.set_ylim(0, 1)
    ax.set_title(f"{within.sum()} of {len(ratio_pct)} within ±{BAND_PERCENT:g} %, "
                 f"{(~within).sum()} outside (red)"
                 + (f",\n{unread} delivered without a reading" if unread else ""), fontsize=10)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8, loc="upper right")
