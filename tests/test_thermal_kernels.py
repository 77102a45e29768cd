"""Cython thermal kernels agree with the numpy reference on random small inputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from controller import _thermal, thermal_ref
from controller.thermal import F64, NEGLECTED_DAMAGE_SHARE, Layout, TissueParams


@st.composite
def problems(draw: st.DrawFn) -> tuple:
    n = draw(st.integers(1, 25))
    seed = draw(st.integers(0, 2**32 - 1))
    grid_um = draw(st.sampled_from([20.0, 25.0, 40.0]))
    params = TissueParams(
        grid_um=grid_um,
        window_um=draw(st.sampled_from([100.0, 150.0])),
        far_grid_um=draw(st.sampled_from([400.0, 500.0])),
        time_sample_ratio=draw(st.sampled_from([1.3, 1.5, 2.0])),
        cutoff_rel=draw(st.sampled_from([1e-2, 1e-3, 1e-5])),
    )
    rng = np.random.default_rng(seed)
    span_um = draw(st.sampled_from([300.0, 1500.0]))
    x, y = rng.uniform(-span_um, span_um, n), rng.uniform(-span_um, span_um, n)
    # Slow firing too, so that problems span several far-grid blocks and chunks of blocks.
    period_scale = draw(st.sampled_from([1.0, 2.5, 6.0]))
    t = np.sort(rng.choice([0.0, 0.001, 0.2, 0.5, 1.0, 3.0], n) + rng.uniform(0.0, 1.5, n))
    heat_uj = rng.uniform(0.0, 5000.0, n)  # up to ~100 K rises: damage integrals far from 0
    radius_um = rng.uniform(grid_um, 200.0, n)
    return x, y, period_scale * t, heat_uj, radius_um, params


def chunks(lay: Layout) -> int:
    """Chunks of far-grid blocks the Cython kernel runs the problem in."""
    return -(-lay.n_blocks // _thermal.chunk_blocks)


def assert_kernels_agree(x: F64, y: F64, t: F64, heat_uj: F64, radius_um: F64,
                         params: TissueParams) -> tuple:
    """Peak, damage, far-peak and sampled maps and the lesion mask of both kernels agree;
    returns the Cython kernel's maps."""
    lay = Layout.for_spots(x, y, t, params)
    e = heat_uj * 1e-6 / (params.heat_capacity_j_m3_k * params.thickness_um * 1e-6) * 1e12
    fast = _thermal.peak_rise(x, y, t, e, radius_um**2, lay)
    slow = thermal_ref.peak_rise(x, y, t, e, radius_um**2, lay)
    scale = max(float(slow[0].max()), 1e-12)
    np.testing.assert_allclose(fast[0], slow[0], rtol=1e-9, atol=1e-12 * scale)
    # Damage integral: exponentials of nearly equal rises; at the floor one kernel may count
    # a sample the other leaves out, worth at most the neglected share.
    np.testing.assert_allclose(fast[1], slow[1], rtol=1e-7,
                               atol=NEGLECTED_DAMAGE_SHARE * params.damage_omega)
    np.testing.assert_allclose(fast[2], slow[2], rtol=1e-9, atol=1e-12 * float(slow[2].max()))
    np.testing.assert_array_equal(fast[3], slow[3])
    np.testing.assert_array_equal(_thermal.lesion_mask(x, y, radius_um, lay),
                                  thermal_ref.lesion_mask(x, y, radius_um, lay))
    return fast


@settings(max_examples=40)
@given(problems())
def test_cython_equals_reference(problem: tuple) -> None:
    x, y, t, heat_uj, radius_um, params = problem
    event(f"chunks of far-grid blocks: {chunks(Layout.for_spots(x, y, t, params))}")
    assert_kernels_agree(x, y, t, heat_uj, radius_um, params)


def test_kernels_agree_across_chunks() -> None:
    """Spots fired over several chunks of far-grid blocks: the far grid and the near spots
    handed from chunk to chunk, both kernels alike."""
    rng = np.random.default_rng(8)
    x, y = rng.uniform(-1000.0, 1000.0, 25), rng.uniform(-1000.0, 1000.0, 25)
    t = np.sort(rng.uniform(0.0, 25.0, 25))
    params = TissueParams(far_grid_um=450.0)
    assert chunks(Layout.for_spots(x, y, t, params)) >= 3
    fast = assert_kernels_agree(x, y, t, np.full(25, 3000.0), rng.uniform(40.0, 120.0, 25),
                                params)
    assert fast[0].max() > 10.0


#: Levels of hand-written SIMD loops this CPU runs beyond the portable one (1 AVX2,
#: 2 AVX-512), each compared with the portable twins.
SIMD_LEVELS = [pytest.param(level, marks=pytest.mark.skipif(
    level > _thermal.simd_level_max(), reason="the CPU lacks this level")) for level in (1, 2)]


def kernel_maps(x: F64, y: F64, t: F64, heat_uj: F64, radius_um: F64, params: TissueParams,
                level: int) -> tuple:
    """The Cython kernel's maps with its hand-written loops of this level (0: portable)."""
    lay = Layout.for_spots(x, y, t, params)
    e = heat_uj * 1e-6 / (params.heat_capacity_j_m3_k * params.thickness_um * 1e-6) * 1e12
    was = _thermal.set_simd_level(level)
    try:
        return _thermal.peak_rise(x, y, t, e, radius_um**2, lay)
    finally:
        _thermal.set_simd_level(was)


def assert_simd_equals_portable(x: F64, y: F64, t: F64, heat_uj: F64, radius_um: F64,
                                params: TissueParams, level: int) -> tuple:
    """The loops of this level give the same bits as their portable twins: peak, far-grid and
    sampled maps identical; the damage map too but for the order in which the threads' maps
    are summed (it follows the scheduling: a few ulp)."""
    fast = kernel_maps(x, y, t, heat_uj, radius_um, params, level)
    plain = kernel_maps(x, y, t, heat_uj, radius_um, params, 0)
    for k in (0, 2, 3):
        np.testing.assert_array_equal(fast[k], plain[k])
    np.testing.assert_allclose(fast[1], plain[1], rtol=1e-14, atol=0.0)
    return fast


def test_set_simd_levels() -> None:
    """set_simd(True) takes the highest level the CPU runs, set_simd(False) the portable
    loops; a level beyond the CPU's is lowered to it."""
    top = _thermal.simd_level_max()
    assert top in (0, 1, 2)
    was = _thermal.set_simd_level(0)
    try:
        assert _thermal.set_simd(True) is False
        assert _thermal.set_simd_level(5) == top
        assert _thermal.set_simd(False) is (top > 0)
        assert _thermal.set_simd_level(-1) == 0
    finally:
        _thermal.set_simd_level(was)


@pytest.mark.parametrize("level", SIMD_LEVELS)
@settings(max_examples=15)
@given(problem=problems())
def test_simd_loops_equal_their_portable_twins(level: int, problem: tuple) -> None:
    x, y, t, heat_uj, radius_um, params = problem
    assert_simd_equals_portable(x, y, t, heat_uj, radius_um, params, level)


@pytest.mark.parametrize("level", SIMD_LEVELS)
def test_simd_outer_products_over_wide_windows_and_full_batches(level: int) -> None:
    """Many spots fired at once under wide windows: Gaussians added in full batches and
    windows of several 16-column blocks with a ragged end, each level and portable alike."""
    rng = np.random.default_rng(11)
    n = 60
    x, y = rng.uniform(-300.0, 300.0, n), rng.uniform(-300.0, 300.0, n)
    t = np.sort(rng.uniform(0.0, 0.01, n))
    params = TissueParams(grid_um=20.0, window_um=510.0, far_grid_um=600.0)
    lay = Layout.for_spots(x, y, t, params)
    assert (2 * params.window_um / lay.cell_um) % 16 != 0
    fast = assert_simd_equals_portable(x, y, t, np.full(n, 2000.0), np.full(n, 40.0), params,
                                       level)
    assert fast[0].max() > 10.0


@pytest.mark.parametrize("level", SIMD_LEVELS)
@pytest.mark.parametrize("window_um", [50.0, 70.0, 90.0, 110.0, 130.0, 150.0, 170.0, 190.0])
def test_simd_ragged_windows(level: int, window_um: float) -> None:
    """Windows 5 to 19 cells wide (every remainder of 8 and 16 columns and rows) and batches
    of 1 to 16 Gaussians (spots fired in bursts of different sizes): each level and portable
    alike."""
    rng = np.random.default_rng(int(window_um))
    sizes = [1, 2, 3, 5, 7, 8, 9, 12, 16, 17]
    n = sum(sizes)
    x, y = rng.uniform(-250.0, 250.0, n), rng.uniform(-250.0, 250.0, n)
    t = np.concatenate([np.full(k, 0.002 * i) + rng.uniform(0.0, 1e-5, k)
                        for i, k in enumerate(sizes)])
    params = TissueParams(grid_um=20.0, window_um=window_um, far_grid_um=400.0)
    fast = assert_simd_equals_portable(x, y, np.sort(t), rng.uniform(500.0, 3000.0, n),
                                       rng.uniform(25.0, 90.0, n), params, level)
    assert fast[0].max() > 1.0


@pytest.mark.parametrize("level", SIMD_LEVELS)
@pytest.mark.parametrize("n", [25, 33])
def test_simd_lists_filled_to_their_room(level: int, n: int) -> None:
    """Spots piled on one place within 0.1 s (more than the window is cells wide, so that a
    window's lists have room for n): the later windows list nearly every spot, and the
    stores of the records and of the terms meet the end of their room: each level and
    portable alike. (A store of a whole vector past the room fails this test.)"""
    rng = np.random.default_rng(n)
    x, y = rng.uniform(-1.0, 1.0, n), rng.uniform(-1.0, 1.0, n)
    t = np.sort(rng.uniform(0.0, 0.1, n))
    params = TissueParams(grid_um=40.0, window_um=150.0, far_grid_um=400.0)
    fast = assert_simd_equals_portable(x, y, t, np.full(n, 1500.0), np.full(n, 60.0), params,
                                       level)
    assert fast[0].max() > 10.0


def hand_over_problem() -> tuple[F64, F64, F64, F64, F64, TissueParams]:
    """A spot every 0.05 s for 3 s on a 400 µm patch: windows whose damage samples run past
    block boundaries, so that their sharp spots (more than eight, a ragged number) are handed
    over while in the last sample's sum and stay out after, while others come into reach."""
    rng = np.random.default_rng(1)
    n = 60
    x, y = rng.uniform(-200.0, 200.0, n), rng.uniform(-200.0, 200.0, n)
    t = np.sort(np.arange(n) * 0.05 + rng.uniform(0.0, 0.025, n))
    params = TissueParams(grid_um=25.0, window_um=100.0, far_grid_um=400.0)
    assert Layout.for_spots(x, y, t, params).n_blocks >= 5
    return x, y, t, rng.uniform(500.0, 3000.0, n), rng.uniform(30.0, 90.0, n), params


@pytest.mark.parametrize("level", SIMD_LEVELS)
def test_simd_damage_samples_across_hand_overs(level: int) -> None:
    """Sharp spots handed over during a window's damage samples (each then out of every
    later sample's sum): each level and portable alike."""
    fast = assert_simd_equals_portable(*hand_over_problem(), level)
    assert fast[1].max() > 0.0


def test_kernels_agree_across_hand_overs_in_damage_samples() -> None:
    """The same spots: the Cython kernel as the numpy reference."""
    fast = assert_kernels_agree(*hand_over_problem())
    assert fast[1].max() > 0.0


def test_kernels_agree_where_a_deposit_folds_more_than_once() -> None:
    """Three spots of the widest lesion allowed (5000 µm, as _as_spots takes them) at the
    smallest cut-off (cutoff_rel 1e-6): at the hand-over their Gaussians reach past the whole
    far grid, so their weights fold back at its edges more than once. Both kernels fold as
    often as it takes (they folded once: the reference raised IndexError or wrapped the
    index, the Cython kernel wrote outside the row), and the Cython kernel's weight buffers
    hold the widest reach (they held the grid's width: valgrind showed writes past them from
    a radius of 2000 µm at the default cut-off). On the old build this test crashed."""
    x, y = np.array([0.0, 300.0, 150.0]), np.array([0.0, 0.0, 250.0])
    t, heat_uj, radius_um = np.array([0.0, 0.001, 0.002]), np.full(3, 2000.0), 5000.0
    params = TissueParams(cutoff_rel=1e-6)
    lay = Layout.for_spots(x, y, t, params)
    reach_um = np.sqrt((radius_um**2 + 4.0 * lay.kappa_um2_s * lay.handover_s) * lay.reach_log)
    first_node = np.ceil((x.min() - reach_um - lay.fx0_um) / lay.far_um)
    assert first_node < -lay.nfx  # beyond one fold
    fast = assert_kernels_agree(x, y, t, heat_uj, np.full(3, radius_um), params)
    assert float(fast[2].sum()) > 0.0  # the heat reached the far grid


@pytest.mark.parametrize("n", [1, 2, 3, 23])
def test_fold_is_repeated_reflection(n: int) -> None:
    """The reference's fold of far-node indices equals reflecting at the edges again and
    again, for indices many grid widths beyond either edge."""
    def reflect_repeatedly(k: int) -> int:
        while not 0 <= k < n:
            k = -1 - k if k < 0 else 2 * n - 1 - k
        return k
    k = np.arange(-5 * n - 3, 5 * n + 4)
    assert thermal_ref._fold(k, n).tolist() == [reflect_repeatedly(int(q)) for q in k]


def test_layout_tables_of_fewer_than_two_nodes_are_refused() -> None:
    """Every table lookup reads two adjacent nodes: a hand-built layout with a one-node table
    is refused before any is read."""
    from dataclasses import replace
    x, y, t = np.zeros(1), np.zeros(1), np.zeros(1)
    lay = Layout.for_spots(x, y, t, TissueParams())
    for field in ("loss_table", "rate_table"):
        short = replace(lay, **{field: getattr(lay, field)[:1].copy()})
        with pytest.raises(ValueError, match="at least 2 nodes"):
            _thermal.peak_rise(x, y, t, np.ones(1), np.ones(1), short)


@pytest.mark.parametrize("level", [0, *SIMD_LEVELS])
@pytest.mark.parametrize(("grid_um", "window_um"), [(25.0, 1650.0), (40.0, 2000.0)])
def test_kernels_agree_over_windows_widened_to_the_limit(level: int, grid_um: float,
                                                         window_um: float) -> None:
    """Windows widened towards MAX_WINDOW_UM (irregular plans): a narrow Gaussian's factor at
    the window's far edge underflows (exponent below -708), where the two-ratio recurrence
    had multiplied the underflowed value by an overflowing ratio (peak read 2.2x high or
    0.54x low, damage 1e15x or 1e-6x); every level agrees with the reference."""
    from dataclasses import replace

    from controller.thermal import with_window
    x, y = np.array([0.0, 150.0, -90.0]), np.array([0.0, 40.0, 120.0])
    t, heat_uj, radius_um = np.array([0.0, 0.001, 0.002]), np.full(3, 2000.0), np.full(3, 60.0)
    params = replace(with_window(TissueParams(grid_um=grid_um), window_um), depth_loss=False)
    was = _thermal.set_simd_level(level)
    try:
        fast = assert_kernels_agree(x, y, t, heat_uj, radius_um, params)
    finally:
        _thermal.set_simd_level(was)
    assert fast[0].max() > 50.0


class _NoHugePages(bytearray):
    """An anonymous mapping on a system that refuses the huge-page hint (EINVAL)."""

    def madvise(self, option: int) -> None:
        raise OSError(22, "Invalid argument")


def test_kernel_runs_where_the_huge_page_hint_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The work lists' mappings ask not to be backed by huge pages; a system built without
    them refuses, and the evaluation goes on with the same maps (the damage map's sums up to
    their order)."""
    import mmap
    import types
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-400.0, 400.0, 30), rng.uniform(-400.0, 400.0, 30)
    t = np.sort(rng.uniform(0.0, 0.05, 30))
    e, s0 = np.full(30, 1e6), np.full(30, 4900.0)
    lay = Layout.for_spots(x, y, t, TissueParams())
    hinted = _thermal.peak_rise(x, y, t, e, s0, lay)
    refusing = types.SimpleNamespace(
        MAP_PRIVATE=mmap.MAP_PRIVATE, MADV_NOHUGEPAGE=getattr(mmap, "MADV_NOHUGEPAGE", 15),
        mmap=lambda fileno, size, flags: _NoHugePages(size))
    monkeypatch.setattr(_thermal, "mmap", refusing)
    refused = _thermal.peak_rise(x, y, t, e, s0, lay)
    for k in (0, 2, 3):
        np.testing.assert_array_equal(refused[k], hinted[k])
    # (the damage map's sums follow the threads' scheduling: a few ulp)
    np.testing.assert_allclose(refused[1], hinted[1], rtol=1e-14, atol=0.0)


def test_kernels_reject_wrong_dtype() -> None:
    lay = Layout.for_spots(np.zeros(1), np.zeros(1), np.zeros(1), TissueParams())
    ints = np.zeros(1, dtype=np.int64)
    with pytest.raises(ValueError, match="dtype"):
        _thermal.lesion_mask(ints, ints, ints, lay)  # type: ignore[arg-type]  # int64 on purpose


def test_kernels_agree_on_damage_integral_of_hot_band() -> None:
    """A band of spots fired fast: damage well above the threshold in places and far below it
    in others, both kernels alike (guards the hypothesis test against all-zero damage maps)."""
    rng = np.random.default_rng(5)
    x, y = rng.uniform(-1500.0, 1500.0, 30), rng.uniform(-300.0, 300.0, 30)
    t = np.sort(rng.uniform(0.0, 0.05, 30))
    params = TissueParams(window_um=150.0)
    fast = assert_kernels_agree(x, y, t, np.full(30, 3000.0), np.full(30, 80.0), params)
    assert fast[1].max() > 10.0 * params.damage_omega
    assert (fast[1] < 0.01 * params.damage_omega).any()


def test_kernels_agree_on_damage_beyond_the_rate_table() -> None:
    """Rises beyond the damage-rate table (the windows' exact-rate fallback), both kernels
    alike."""
    x, y = np.array([0.0, 60.0, -40.0]), np.array([0.0, 30.0, 50.0])
    t = np.array([0.0, 0.002, 0.004])
    params = TissueParams()
    lay = Layout.for_spots(x, y, t, params)
    fast = assert_kernels_agree(x, y, t, np.full(3, 4e5), np.full(3, 30.0), params)
    assert fast[0].max() > lay.rate_floor_k + (len(lay.rate_table) - 1) / lay.rate_per_k


def test_inline_exp_matches_numpy() -> None:
    """The kernels' inline exp (damage rate, Gaussian rows, Taylor sums) is exp to a few ulp,
    and libm's exp outside [-708, 709] (subnormal, overflow, inf, nan)."""
    x = np.concatenate([np.linspace(-708.0, 709.0, 200_001),
                        np.random.default_rng(2).uniform(-60.0, 5.0, 100_000),
                        [0.0, -1e-300, 1e-300, -708.5, 709.5, -np.inf, np.inf]])
    fast = _thermal.fast_exp(x)
    with np.errstate(over="ignore"):
        exact = np.exp(x)
    inside = (x >= -708.0) & (x <= 709.0)
    np.testing.assert_allclose(fast[inside], exact[inside], rtol=1e-15, atol=0.0)
    np.testing.assert_array_equal(fast[~inside], exact[~inside])
    assert np.isnan(_thermal.fast_exp(np.array([np.nan])))[0]


@pytest.mark.parametrize("damage_omega", [1.0, 1e-3, 1e4])
def test_damage_rate_table_bounds_the_exact_rate(damage_omega: float) -> None:
    """The tabulated damage rate: the same in both kernels; 0 at or below the floor; above it
    never below the exact Arrhenius rate and at most 1e-4 over it (linear between nodes of a
    convex function); exact beyond the table."""
    params = TissueParams(damage_omega=damage_omega)
    lay = Layout.for_spots(np.zeros(1), np.zeros(1), np.array([0.0]), params)
    rise = np.concatenate([np.linspace(-5.0, 400.0, 400_001),
                           lay.rate_floor_k + np.arange(len(lay.rate_table)) / lay.rate_per_k])
    fast = _thermal.damage_rate(rise, lay)
    slow = thermal_ref.damage_rate(rise, lay)
    np.testing.assert_allclose(fast, slow, rtol=1e-14, atol=0.0)
    above = rise > lay.rate_floor_k
    assert (fast[~above] == 0.0).all()
    exact = params.damage_rate(rise[above])
    assert (fast[above] >= exact * (1.0 - 1e-14)).all()
    assert (fast[above] <= exact * (1.0 + 1e-4)).all()
    beyond = rise[above] > lay.rate_floor_k + (len(lay.rate_table) - 1) / lay.rate_per_k
    assert beyond.any()
    np.testing.assert_allclose(fast[above][beyond], exact[beyond], rtol=1e-14)


def test_kernels_look_as_far_ahead() -> None:
    """The Cython kernel lets a window sample no further ahead than the chunk it has ready
    (that both kernels look as far ahead: tests/test_kernel_constants.py)."""
    assert 2 <= _thermal.lookahead <= _thermal.chunk_blocks


def _hold_run(tj: float, s0_um2: float) -> thermal_ref._Run:
    """The reference's state for a spot at 0 s and one fired at tj (default tissue)."""
    x, y, t = np.zeros(2), np.zeros(2), np.array([0.0, tj])
    lay = Layout.for_spots(x, y, t, TissueParams())
    return thermal_ref._Run(x, y, t, np.ones(2), np.array([s0_um2, s0_um2]), lay)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2000), st.sampled_from([0.0, 3600.0, 22956.212316547953, 40000.0]),
       st.integers(-3, 3))
def test_a_spots_hold_is_the_first_snapshot_whose_width_test_takes_it(
        k: int, s0_um2: float, ulps: int) -> None:
    """A window samples on to its spot's hold, the snapshot from which the snapshots count the
    spot (width >= snap_s by the snapshot's own test); firing times that put the hold's
    quotient exactly on a snapshot, a few rounding steps either side, included (there the
    width at the rounded-to snapshot fell short by 1e-14: the window stopped there and that
    snapshot left the spot to the next, a quarter block in which nothing counted it)."""
    probe = _hold_run(1.0, s0_um2)
    lay = probe.lay
    kappa4, step = 4.0 * lay.kappa_um2_s, lay.block_s / thermal_ref.SNAPS_PER_BLOCK
    tj = lay.t0_s + k * step - (lay.snap_s_um2 - s0_um2) / kappa4
    for _ in range(abs(ulps)):
        tj = float(np.nextafter(tj, np.inf if ulps > 0 else -np.inf))
    if tj <= 0.0:
        return
    run = _hold_run(tj, s0_um2)
    hold = run.hold(1)
    assert s0_um2 + kappa4 * (hold - tj) >= lay.snap_s_um2  # the snapshot there takes it
    index = round((hold - lay.t0_s) / step)
    before = run.snap_time(index - 1)  # (the hold is a snapshot time)
    assert run.snap_time(index) == hold
    assert s0_um2 + kappa4 * (before - tj) < lay.snap_s_um2  # and not the one before
    assert _thermal.hold_time(tj, s0_um2, run.lay) == hold


def test_the_hold_at_a_rounding_tie_is_the_next_snapshot() -> None:
    """The case the session 18 review found: the quotient rounds onto snapshot 3682, whose
    width is 319,999.99999998550 µm² against snap_s 320,000."""
    tj, s0_um2 = 636.6979927159933, 22956.212316547953
    run = _hold_run(tj, s0_um2)
    lay = run.lay
    kappa4 = 4.0 * lay.kappa_um2_s
    assert lay.t0_s == 0.0 and lay.snap_s_um2 == 320_000.0
    assert s0_um2 + kappa4 * (run.snap_time(3682) - tj) < lay.snap_s_um2  # the tie
    assert run.hold(1) == run.snap_time(3683) == _thermal.hold_time(tj, s0_um2, lay)


#: Two bursts of a 12 x 12 grid 30 s apart (chunks with no window between them), evaluated
#: with the thread count given by the environment; the maps saved to argv[1].
THREADED_PASS = """
import sys
import numpy as np
from controller.thermal import TissueParams, simulate_pass
col, row = np.meshgrid(np.arange(12), np.arange(12))
x = np.tile(col.ravel() * 200.0, 2)
y = np.tile(row.ravel() * 200.0, 2)
t = np.concatenate([np.arange(144) * 1e-3, 30.0 + np.arange(144) * 1e-3])
res = simulate_pass(x, y, t, np.full(288, 2000.0), np.full(288, 70.0), TissueParams())
np.savez(sys.argv[1], peak=res.peak_rise_k, damage=res.damage, reservoir=res.reservoir)
"""


def test_maps_do_not_depend_on_the_thread_count(tmp_path: Path) -> None:
    """The windows of a chunk are shared out from one counter (not a prange); had a change
    made it private to each thread, every thread would run every window: the damage map
    summed once per thread, the peak map unchanged (a max), so the damage map shows it.
    Only the order of the damage sums may differ (rounding)."""
    maps = {}
    for n in ("1", "2", "3"):
        out = tmp_path / f"maps{n}.npz"
        subprocess.run([sys.executable, "-c", THREADED_PASS, str(out)], check=True,
                       env={**os.environ, "OMP_NUM_THREADS": n}, timeout=300)
        with np.load(out) as saved:
            maps[n] = {name: saved[name] for name in saved.files}
    one = maps["1"]
    assert one["damage"].max() > 1.0  # damage summed over windows to compare
    for n in ("2", "3"):
        np.testing.assert_array_equal(maps[n]["peak"], one["peak"])
        np.testing.assert_array_equal(maps[n]["reservoir"], one["reservoir"])
        np.testing.assert_allclose(maps[n]["damage"], one["damage"], rtol=1e-14, atol=0.0)
