"""Plane geometry of scan patterns: outlines as polygons (µm), their area and simplicity.

Every pattern, the circle included, is handled as a polygon so one masking kernel serves all;
a circle becomes its inscribed polygon with at most ``CIRCLE_MAX_ERROR_UM`` of radial error, so
spots inside the polygon are inside the circle.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

Polygon = tuple[NDArray[np.float64], NDArray[np.float64]]

CIRCLE_MAX_ERROR_UM = 1.0
CIRCLE_MIN_SIDES = 32


def regular_polygon_um(sides: int, radius_um: float) -> Polygon:
    """Counter-clockwise regular polygon centred on the origin, first vertex on +x."""
    angle = 2.0 * np.pi * np.arange(sides) / sides
    return radius_um * np.cos(angle), radius_um * np.sin(angle)


def circle_sides(radius_um: float) -> int:
    """Sides of the inscribed polygon whose sagitta stays within ``CIRCLE_MAX_ERROR_UM``,
    a multiple of 4: with a vertex on each axis the polygon has the square lattice's
    mirror and quarter-turn symmetries, so a centred disc's spots have them too."""
    if radius_um <= CIRCLE_MAX_ERROR_UM:
        return CIRCLE_MIN_SIDES
    sides = math.ceil(math.pi / math.acos(1.0 - CIRCLE_MAX_ERROR_UM / radius_um))
    return max(CIRCLE_MIN_SIDES, 4 * math.ceil(sides / 4))


def rectangle_um(width_um: float, height_um: float) -> Polygon:
    """Counter-clockwise axis-aligned rectangle centred on the origin."""
    hw, hh = width_um / 2.0, height_um / 2.0
    return np.array([-hw, hw, hw, -hw]), np.array([-hh, -hh, hh, hh])


def signed_area_um2(vx: NDArray[np.float64], vy: NDArray[np.float64]) -> float:
    """Shoelace area: positive for a counter-clockwise polygon."""
    return 0.5 * float(np.dot(vx, np.roll(vy, -1)) - np.dot(np.roll(vx, -1), vy))


def rotate(
    x: NDArray[np.float64], y: NDArray[np.float64], angle_rad: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Points rotated counter-clockwise about the origin."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return c * x - s * y, s * x + c * y


def _orientation(ax: float, ay: float, bx: float, by: float, cx: float, cy: float) -> float:
    return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)


def _on_segment(ax: float, ay: float, bx: float, by: float, px: float, py: float) -> bool:
    return min(ax, bx) <= px <= max(ax, bx) and min(ay, by) <= py <= max(ay, by)


def _segments_touch(p: tuple[float, ...], q: tuple[float, ...]) -> bool:
    """Closed segments p=(ax,ay,bx,by) and q intersect (collinear overlap included)."""
    ax, ay, bx, by = p
    cx, cy, dx, dy = q
    o1 = _orientation(ax, ay, bx, by, cx, cy)
    o2 = _orientation(ax, ay, bx, by, dx, dy)
    o3 = _orientation(cx, cy, dx, dy, ax, ay)
    o4 = _orientation(cx, cy, dx, dy, bx, by)
    if ((o1 > 0) != (o2 > 0)) and ((o3 > 0) != (o4 > 0)) and 0 not in (o1, o2, o3, o4):
        return True
    return (
        (o1 == 0 and _on_segment(ax, ay, bx, by, cx, cy))
        or (o2 == 0 and _on_segment(ax, ay, bx, by, dx, dy))
        or (o3 == 0 and _on_segment(cx, cy, dx, dy, ax, ay))
        or (o4 == 0 and _on_segment(cx, cy, dx, dy, bx, by))
    )


def self_intersection(vx: NDArray[np.float64], vy: NDArray[np.float64]) -> tuple[int, int] | None:
    """First pair of edges (edge k joins vertex k to k+1) that touch, or None if simple.

    Adjacent edges may share their common vertex only: a zero-length edge or a fold back
    along the previous edge counts as touching. O(V^2): outlines have few vertices.
    """
    n = len(vx)
    pts = [(float(vx[k]), float(vy[k])) for k in range(n)]
    for k in range(n):
        if pts[k] == pts[(k + 1) % n]:
            return k, (k + 1) % n
    for a in range(n):
        for b in range(a + 1, n):
            if b == a + 1 or (a == 0 and b == n - 1):
                # shared vertex s between outer vertices p and q: touching means a fold back
                p, s, q = (pts[a], pts[b], pts[(b + 1) % n]) if b == a + 1 else (
                    pts[b], pts[0], pts[1])
                if _orientation(*p, *s, *q) == 0 and (
                        _on_segment(*p, *s, *q) or _on_segment(*s, *q, *p)):
                    return a, b
            elif _segments_touch((*pts[a], *pts[(a + 1) % n]), (*pts[b], *pts[(b + 1) % n])):
                return a, b
    return None


def within_outline(vx: NDArray[np.float64], vy: NDArray[np.float64], x: NDArray[np.float64],
                   y: NDArray[np.float64], tol_um: float = 1e-3) -> NDArray[np.bool_]:
    """Which points lie inside the closed polygon or within ``tol_um`` of its edges (even-odd
    rule; a point on an edge counts as inside on every edge alike)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    inside = np.zeros(x.shape, dtype=bool)
    near = np.zeros(x.shape, dtype=bool)
    for ax, ay, bx, by in zip(vx, vy, np.roll(vx, -1), np.roll(vy, -1), strict=True):
        crosses = (ay > y) != (by > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = ax + (y - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (x < x_cross)
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        u = np.clip(((x - ax) * dx + (y - ay) * dy) / length2, 0.0, 1.0) if length2 else 0.0
        near |= np.hypot(x - (ax + u * dx), y - (ay + u * dy)) <= tol_um
    return inside | near


#: Disc-edge pairs evaluated at once by :func:`disc_area_inside_um2` (bounds its memory).
_DISC_EDGE_CHUNK = 1 << 18


def _sector_um2(ux: NDArray[np.float64], uy: NDArray[np.float64], vx: NDArray[np.float64],
                vy: NDArray[np.float64], radius_um: float) -> NDArray[np.float64]:
    """Signed area of the disc's sector from direction u to direction v (turning < pi)."""
    return 0.5 * radius_um**2 * np.arctan2(ux * vy - uy * vx, ux * vx + uy * vy)


def disc_area_inside_um2(cx: NDArray[np.float64], cy: NDArray[np.float64], radius_um: float,
                         vx: NDArray[np.float64], vy: NDArray[np.float64]
                         ) -> NDArray[np.float64]:
    """Area of each disc (centre cx, cy) inside the simple polygon, exact up to rounding.

    The polygon is the signed sum of the triangles (centre, edge start, edge end); the disc
    within each triangle is a sector, a triangle and a sector, split where the edge crosses
    the circle. A centre on an edge gives that edge a flat triangle: half a disc on a
    straight edge, a quarter on a square's corner.
    """
    sign = 1.0 if signed_area_um2(vx, vy) >= 0 else -1.0
    out = np.empty(len(cx))
    step = max(1, _DISC_EDGE_CHUNK // len(vx))
    r2 = radius_um * radius_um
    for lo in range(0, len(cx), step):
        # a: edge starts, b: edge ends, relative to each centre (discs x edges)
        ax = vx[None, :] - cx[lo:lo + step, None]
        ay = vy[None, :] - cy[lo:lo + step, None]
        bx, by = np.roll(ax, -1, axis=1), np.roll(ay, -1, axis=1)
        dx, dy = bx - ax, by - ay
        dd = dx * dx + dy * dy
        half_b = ax * dx + ay * dy
        disc = half_b * half_b - dd * (ax * ax + ay * ay - r2)
        root = np.sqrt(np.maximum(disc, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            t0 = np.clip((-half_b - root) / dd, 0.0, 1.0)
            t1 = np.clip((-half_b + root) / dd, 0.0, 1.0)
        # the chord's part inside the disc (none when the line misses it or dd is 0)
        chord = (disc > 0.0) & (dd > 0.0) & (t1 > t0)
        t0, t1 = np.where(chord, t0, 0.0), np.where(chord, t1, 0.0)
        px, py = ax + t0 * dx, ay + t0 * dy
        qx, qy = ax + t1 * dx, ay + t1 * dy
        area = np.where(chord, _sector_um2(ax, ay, px, py, radius_um)
                        + 0.5 * (px * qy - py * qx)
                        + _sector_um2(qx, qy, bx, by, radius_um),
                        _sector_um2(ax, ay, bx, by, radius_um))
        out[lo:lo + step] = sign * area.sum(axis=1)
    return np.clip(out, 0.0, np.pi * r2)
