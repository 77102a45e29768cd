"""Each Cython kernel equals its numpy reference on random inputs (edge cases included)."""

from __future__ import annotations

from typing import Protocol, TypeVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import _scanpath as cy
from controller import patterns
from controller import scanpath_ref as ref

coord = st.floats(-5000, 5000, allow_nan=False)
pitch = st.floats(20, 800, allow_nan=False)
seeds = st.integers(0, 2**64 - 1)
T = TypeVar("T")


class Draw(Protocol):
    """A draw function: st.DataObject.draw as well as a composite's st.DrawFn (whose
    protocol a bound method does not match, for its __signature__ attribute)."""

    def __call__(self, strategy: st.SearchStrategy[T], label: object = None) -> T: ...


@st.composite
def points(draw: st.DrawFn, max_n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Random points, some of them on a coarse lattice so that duplicates and exact
    distances occur."""
    n = draw(st.integers(0, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 100.0, 3000.0]))
    x, y = rng.uniform(-scale, scale, n), rng.uniform(-scale, scale, n)
    snap = rng.random(n) < draw(st.floats(0, 1))
    x[snap] = np.round(x[snap] / 50.0) * 50.0
    y[snap] = np.round(y[snap] / 50.0) * 50.0
    return x, y


@st.composite
def polygons(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Random polygons (possibly self-intersecting: the crossing rule is still defined)."""
    nv = draw(st.integers(3, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["star", "random", "rectilinear", "turned", "sliver"]))
    if kind == "rectilinear":  # an L shape on a 50 µm raster: lattice points land on edges
        a, b, c, d = sorted(rng.integers(-60, 60, 4) * 50.0)
        return np.array([a, d, d, c, c, a]), np.array([a, a, b, b, d, d])
    if kind == "turned":  # a rectangle at any angle: long slanted edges across many rows
        w, h = rng.uniform(100, 3000, 2)
        c, s = np.cos(rng.uniform(0, np.pi)), np.sin(rng.uniform(0, np.pi))
        ux, uy = np.array([-w, w, w, -w]), np.array([-h, -h, h, h])
        return c * ux - s * uy, s * ux + c * uy
    if kind == "sliver":  # nearly horizontal edges: whole rows near an edge
        x = np.sort(rng.uniform(-3000, 3000, 2))
        y0 = rng.uniform(-3000, 3000)
        return np.array([x[0], x[1], x[0]]), np.array([y0, y0 + rng.uniform(-1, 1), y0 + 80.0])
    if kind == "star":
        angle = np.sort(rng.uniform(0, 2 * np.pi, nv))
        radius = rng.uniform(500, 3000, nv)
        vx, vy = radius * np.cos(angle), radius * np.sin(angle)
    else:
        vx, vy = rng.uniform(-3000, 3000, nv), rng.uniform(-3000, 3000, nv)
    return np.round(vx, draw(st.sampled_from([0, 6]))), np.round(vy, 0)


def lattice_points(draw: Draw) -> tuple[np.ndarray, ...]:
    """Row-major lattice points over a random box (input shape of the orderings)."""
    box = sorted([draw(coord), draw(coord)]), sorted([draw(coord), draw(coord)])
    vx = np.array([box[0][0], box[0][1], box[0][1], box[0][0]])
    vy = np.array([box[1][0], box[1][0], box[1][1], box[1][1]])
    return cy.grid_points(vx, vy, draw(pitch), draw(st.booleans()), draw(coord), draw(coord),
                          0.0, 0, 1.0, 0.0)


def assert_same(a: object, b: object) -> None:
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for p, q in zip(a, b, strict=True):
            assert_same(p, q)
    elif isinstance(a, np.ndarray):
        assert a.dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@settings(max_examples=150)
@given(polygons(), pitch | st.sampled_from([50.0, 100.0, 250.0]), st.booleans(),
       coord | st.integers(-20, 20).map(lambda k: k * 50.0),
       coord | st.integers(-20, 20).map(lambda k: k * 50.0),
       st.just(0.0) | st.floats(0, 300), seeds, st.floats(-np.pi, np.pi))
def test_grid_points(poly: tuple[np.ndarray, ...], pitch_um: float, hexagonal: bool,
                     ox: float, oy: float, half_um: float, key: int, angle: float) -> None:
    # pitches and offsets on the 50 µm raster put lattice points exactly on edges and vertices
    args = (*poly, pitch_um, hexagonal, ox, oy, half_um, key, np.cos(angle),
            np.sin(angle))
    got = cy.grid_points(*args)
    assert_same(got, ref.grid_points(*args))
    _, _, i, j = got
    assert np.all(np.diff(j) >= 0) and np.all(np.diff(i)[np.diff(j) == 0] > 0)


def test_grid_points_is_anchored_at_the_offset_and_row_major() -> None:
    vx, vy = np.array([-250.0, 250, 250, -250]), np.array([-100.0, -100, 300, 300])
    x, y, i, j = cy.grid_points(vx, vy, 100, True, 10, 0, 0.0, 0, 1.0, 0.0)
    assert np.all(np.diff(j) >= 0)
    assert np.all(np.diff(i)[np.diff(j) == 0] == 1)
    np.testing.assert_allclose(x, i * 100 + np.where(j % 2, 50, 0) + 10)
    np.testing.assert_allclose(y, j * 100 * np.sqrt(3) / 2)


def test_grid_points_outline_is_closed() -> None:
    vx, vy = np.array([-1000.0, 1000, 1000, -1000]), np.array([-1000.0, -1000, 1000, 1000])
    for module in (cy, ref):
        x, y, _, _ = module.grid_points(vx, vy, 500, False, 0, 0, 0.0, 0, 1.0, 0.0)
        # every edge inside: 5 x 5 spots from -1000 to 1000 (the half-open rule kept 4 x 4)
        assert len(x) == 25 and x.min() == y.min() == -1000 and x.max() == y.max() == 1000


def test_grid_points_keep_points_within_the_tolerance_of_any_edge() -> None:
    # the square's edges moved a hair (1e-10 of its reach) in or out: the lattice points on
    # them stay, those a micrometre beyond do not
    for hair in (-1e-7, 1e-7):
        h = 1000.0 + hair
        vx, vy = np.array([-h, h, h, -h]), np.array([-h, -h, h, h])
        for module in (cy, ref):
            assert len(module.grid_points(vx, vy, 500, False, 0, 0, 0.0, 0, 1.0, 0.0)[0]) == 25
            assert len(module.grid_points(vx, vy, 500, False, 1e-3, 1e-3, 0.0, 0, 1.0, 0.0)[0]
                       ) == 16


@st.composite
def edge_exact(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float, bool, float, float]:
    """A rectangle, regular hexagon or 'circle' polygon centred on a lattice point (or half a
    pitch off it), its size a whole or half number of pitches: lattice points on edges and
    vertices, up to the rounding of the vertices' trigonometry."""
    p = draw(st.sampled_from([50.0, 120.0, 250.0, 500.0]) | pitch)
    hexagonal = draw(st.booleans())
    kind = draw(st.sampled_from(["rectangle", "hexagon", "circle"]))
    a, b = (p * draw(st.integers(1, 16)) / 2.0 for _ in range(2))
    if kind == "rectangle":
        vx, vy = patterns.rectangle_um(2 * a, 2 * b)
    else:
        vx, vy = patterns.regular_polygon_um(6 if kind == "hexagon" else 4 * draw(
            st.integers(8, 30)), a)
    ox, oy = (p / 2.0 * draw(st.integers(-4, 4)) for _ in range(2))
    return vx + ox, vy + oy, p, hexagonal, ox, oy


@settings(max_examples=150)
@given(edge_exact(), st.just(0.0) | st.floats(0, 40), seeds, st.floats(-np.pi, np.pi))
def test_grid_points_on_edge_exact_shapes(case: tuple[np.ndarray, np.ndarray, float, bool,
                                                      float, float],
                                          half_um: float, key: int, angle: float) -> None:
    vx, vy, p, hexagonal, ox, oy = case
    args = (vx, vy, p, hexagonal, ox, oy, half_um, key, np.cos(angle), np.sin(angle))
    assert_same(cy.grid_points(*args), ref.grid_points(*args))


def test_grid_points_jitter_stays_within_the_square() -> None:
    # lattice points 250 µm inside the edges: a 40 µm jitter keeps every one of them
    vx, vy = np.array([-5250.0, 5250, 5250, -5250]), np.array([-5250.0, -5250, 5250, 5250])
    plain = cy.grid_points(vx, vy, 500, False, 0, 0, 0.0, 7, 1.0, 0.0)
    moved = cy.grid_points(vx, vy, 500, False, 0, 0, 40.0, 7, 1.0, 0.0)
    assert len(moved[0]) == len(plain[0]) == 21 * 21
    dx, dy = moved[0] - plain[0], moved[1] - plain[1]
    assert np.all(np.abs(dx) <= 40) and np.all(np.abs(dy) <= 40)
    assert np.std(dx) > 15 and np.std(dy) > 15  # uniform on [-40, 40]: std 23


@settings(max_examples=100)
@given(points(), polygons(),
       st.just(0.0) | st.floats(1e-100, 400) | st.sampled_from([50.0, 100.0]))
def test_near_outline(pts: tuple[np.ndarray, np.ndarray], poly: tuple[np.ndarray, np.ndarray],
                      radius_um: float) -> None:
    # squared distances are compared: a radius whose square underflows to 0 (below about
    # 1e-154 µm; hypothesis found 1.9e-186, a point on the outline then not near it) is
    # outside the kernel's domain, as it is of every caller's (lesion radii, tens of µm)
    (x, y), (vx, vy) = pts, poly
    got = cy.near_outline(x, y, vx, vy, radius_um)
    assert_same(got, ref.near_outline(x, y, vx, vy, radius_um))
    d = ref.edge_distance(x, y, vx, vy)
    assert np.all(got[d < radius_um * (1 - 1e-12)]) and not np.any(got[d > radius_um])


@settings(max_examples=40)
@given(seeds, st.integers(0, 2000))
def test_uniform(key: int, n: int) -> None:
    u = cy.uniform(key, n)
    assert_same(u, ref.uniform(key, n))
    assert np.all((u >= 0) & (u < 1))


@settings(max_examples=40)
@given(points(300), polygons())
def test_edge_distance(pts: tuple[np.ndarray, np.ndarray], poly: tuple[np.ndarray, ...]) -> None:
    vx, vy = poly
    got = cy.edge_distance(*pts, vx, vy)
    assert_same(got, ref.edge_distance(*pts, vx, vy))
    assert np.allclose(cy.edge_distance(vx, vy, vx, vy), 0.0)


@settings(max_examples=60)
@given(st.data(), st.integers(1, 5), st.integers(1, 5))
def test_interlaced_order(data: st.DataObject, ki: int, kj: int) -> None:
    x, y, i, j = lattice_points(data.draw)
    keep = np.random.default_rng(data.draw(st.integers(0, 99))).random(len(x)) < data.draw(
        st.floats(0.2, 1.0))
    x, y, i, j = x[keep], y[keep], i[keep], j[keep]
    got = cy.interlaced_order(i, j, x, y, ki, kj)
    assert_same(got, ref.interlaced_order(i, j, x, y, ki, kj))
    np.testing.assert_array_equal(np.sort(got), np.arange(len(x)))


def test_serpentine_reverses_every_other_row() -> None:
    x, y, i, j = ref.lattice(0, 200, 0, 200, 100, False, 0, 0)
    order = cy.interlaced_order(i, j, x, y, 1, 1)
    assert order.tolist() == [0, 1, 2, 5, 4, 3, 6, 7, 8]


def test_interlaced_fires_sub_grids_one_after_another() -> None:
    x, y, i, j = ref.lattice(0, 300, 0, 100, 100, False, 0, 0)
    order = cy.interlaced_order(i, j, x, y, 2, 1)
    # sub-grid i even: 0, 2 (row 0) then 6, 4 (row 1); sub-grid i odd starts at the end
    # of its first row farther from spot 4
    assert order.tolist() == [0, 2, 6, 4, 3, 1, 5, 7]


@settings(max_examples=60)
@given(points(400), st.just(0.0) | st.floats(1e-3, 800), st.integers(-5, 500))
def test_min_neighbour_gap(pts: tuple[np.ndarray, np.ndarray], radius_um: float, cap: int) -> None:
    got = cy.min_neighbour_gap(*pts, radius_um, cap)
    assert got == ref.min_neighbour_gap(*pts, radius_um, cap)
    x, y = pts
    d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    k = np.arange(len(x))
    gaps = np.abs(k[:, None] - k[None, :])[(d < radius_um) & (k[:, None] < k[None, :])]
    assert got == min(len(x), max(cap, 0), *gaps)


@settings(max_examples=40)
@given(points(300), st.floats(1, 5000), st.floats(0.1, 50), st.floats(1e-3, 1), st.floats(0, 500))
def test_fire_times(pts: tuple[np.ndarray, np.ndarray], period_us: float, speed: float,
                    accel: float, settle_us: float) -> None:
    x, y = pts
    rng = np.random.default_rng(len(x))
    pulse = rng.integers(1, 3000, len(x)).astype(np.int32)
    stack = rng.integers(1, 4, len(x)).astype(np.int32)
    t, end, travel = cy.fire_times(x, y, pulse, stack, period_us, speed, accel, settle_us)
    rt, rend, rtravel = ref.fire_times(x, y, pulse, stack, period_us, speed, accel, settle_us)
    assert_same(t, rt)
    assert end == rend
    assert travel == pytest.approx(rtravel, rel=1e-12, abs=1e-9)
    # consecutive spots never closer than one period, nor before the pulses of the earlier
    # one have ended (firmware_protocol.md section 5, rule 4)
    if len(x) > 1:
        assert np.all(np.diff(t) >= np.maximum(period_us, stack[:-1] * pulse[:-1]) - 1e-6)


def test_stacked_pulses_fire_back_to_back_as_the_device_fires_them() -> None:
    """The model put a spot's stacked pulses one spot period apart: a stack-2 pass at 196 Hz
    took 10.2 ms a spot where the device fires one every 5.1 ms (and the thermal screen
    screened the slower pass)."""
    period_us = 1e6 / 196
    t, end, _ = cy.fire_times(np.zeros(3), np.zeros(3), np.full(3, 500, np.int32),
                              np.full(3, 2, np.int32), period_us, 10.0, 0.05, 100.0)
    assert np.diff(t) == pytest.approx([period_us, period_us])
    assert end == pytest.approx(t[-1] + 2 * 500)
    slow, _, _ = cy.fire_times(np.zeros(2), np.zeros(2), np.full(2, 3000, np.int32),
                               np.full(2, 2, np.int32), period_us, 10.0, 0.05, 100.0)
    assert slow[1] - slow[0] == pytest.approx(2 * 3000 + 100.0)  # the pulses, then settling


def test_jump_time_model() -> None:
    # accel 0.01 µm/µs^2, speed 2 µm/µs: cruise from 400 µm; settle 10 µs, pulse 5 µs
    x = np.array([0.0, 100.0, 1100.0])
    t, end, travel = cy.fire_times(x, np.zeros(3), np.full(3, 5, np.int32),
                                   np.ones(3, np.int32), 1.0, 2.0, 0.01, 10.0)
    short_jump, long_jump = 2 * np.sqrt(100 / 0.01), 1000 / 2.0 + 2.0 / 0.01
    # first spot: jump 0, settle; then pulse + jump + settle (period 1 µs never binds)
    assert t.tolist() == pytest.approx([10.0, 10 + 5 + short_jump + 10,
                                        10 + 5 + short_jump + 10 + 5 + long_jump + 10])
    assert end == pytest.approx(t[-1] + 5)
    assert travel == pytest.approx(1100.0)


@settings(max_examples=60)
@given(points(250), st.floats(1, 400), polygons(), st.integers(0, 2**32 - 1))
def test_uncovered_samples(pts: tuple[np.ndarray, np.ndarray], radius_um: float,
                           poly: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    x, y = pts
    s = np.arange(32)
    sx = radius_um * np.sqrt((s + 0.5) / 32) * np.cos(s * 2.4)
    sy = radius_um * np.sqrt((s + 0.5) / 32) * np.sin(s * 2.4)
    rng = np.random.default_rng(seed)
    inside = np.where(rng.random(len(x)) < 0.5, 1.0, rng.random(len(x)))
    got = cy.uncovered_samples(x, y, radius_um, sx, sy, inside, *poly)
    assert got == ref.uncovered_samples(x, y, radius_um, sx, sy, inside, *poly)
    assert 0 <= got <= len(x) * 32
    # a repeated disc adds nothing
    assert cy.uncovered_samples(np.r_[x, x], np.r_[y, y], radius_um, sx, sy,
                                np.r_[inside, inside], *poly) == got
    # wholly inside a polygon around them all: whole uncovered samples, as before
    box = np.array([-1e4, 1e4, 1e4, -1e4]), np.array([-1e4, -1e4, 1e4, 1e4])
    whole = cy.uncovered_samples(x, y, radius_um, sx, sy, np.ones(len(x)), *box)
    assert whole == int(whole) and got <= whole


def test_kernels_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        cy.edge_distance(np.zeros(3), np.zeros(2), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="pitch_um"):
        cy.grid_points(np.zeros(3), np.ones(3), 0.0, False, 0, 0, 0.0, 0, 1.0, 0.0)
    with pytest.raises(ValueError, match="3 vertices"):
        cy.grid_points(np.zeros(2), np.ones(2), 10.0, False, 0, 0, 0.0, 0, 1.0, 0.0)
    with pytest.raises(ValueError, match="3 vertices"):
        cy.near_outline(np.zeros(1), np.zeros(1), np.zeros(2), np.ones(2), 10.0)
