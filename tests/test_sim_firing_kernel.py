"""The compiled fire times equal their numpy reference bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.protocol.messages import SPOT_DTYPE
from sim_hw import _firing
from sim_hw.config import SimConfig
from sim_hw.firing_ref import fire_times as fire_times_reference
from sim_hw.galvo import Calibration, Galvo


@given(st.integers(0, 2**32 - 1), st.integers(1, 400), st.floats(0, 1e5),
       st.integers(1, 2_000_000), st.integers(1, 60_000), st.integers(1, 200_000),
       st.integers(0, 5000), st.sampled_from([0, 1, 2, 300, 65535]))
def test_fire_times_equal_reference(seed: int, count: int, first_s: float, rate_hz: int,
                                    field_size_um: int, speed: int, settle_us: int,
                                    step_lsb: int) -> None:
    rng = np.random.default_rng(seed)
    galvo = Galvo(SimConfig())
    galvo.calibration = Calibration(field_size_um)
    galvo.speed_um_per_ms, galvo.settle_us = speed, settle_us
    # repeated positions (no jump), small and full-field steps
    mirror_x = np.cumsum(rng.integers(-step_lsb, step_lsb + 1, count)).astype(np.int64)
    mirror_y = rng.integers(0, 65536, count).astype(np.int64) * (rng.random() < 0.5)
    spots = np.zeros(count, SPOT_DTYPE)  # pulse and stack as strided fields, as the device
    spots["pulse_us"] = rng.integers(1, 65536, count)
    spots["stack"] = rng.integers(1, 17, count)
    record = spots[:-1]
    args = (first_s, mirror_x, mirror_y, record["pulse_us"], record["stack"], 1 / rate_hz, galvo)
    assert _firing.fire_times(*args).tobytes() == fire_times_reference(*args).tobytes()


def test_fire_times_lengths_must_agree() -> None:
    spots = np.zeros(3, SPOT_DTYPE)
    with pytest.raises(ValueError, match="expected n, n, n - 1, n - 1"):
        _firing.fire_times(0.0, np.zeros(3, np.int64), np.zeros(3, np.int64), spots["pulse_us"],
                   spots["stack"], 1e-6, Galvo(SimConfig()))
