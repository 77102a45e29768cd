"""The compiled ground-truth rows equal their numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.protocol.messages import SPOT_DTYPE
from sim_hw.truth import fired_rows, fired_rows_reference


@given(st.integers(0, 2**32 - 1), st.integers(0, 300), st.integers(0, 255))
def test_fired_rows_equal_reference(seed: int, count: int, pass_index: int) -> None:
    rng = np.random.default_rng(seed)
    records = np.frombuffer(rng.integers(0, 256, count * SPOT_DTYPE.itemsize, np.uint8)
                            .tobytes(), SPOT_DTYPE)
    measured = rng.integers(0, 2**32, count, np.int64)
    times = rng.uniform(0, 1e4, count)
    expected = fired_rows_reference(records, measured, times, pass_index)
    got = fired_rows(records, measured, times, pass_index)
    assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()
    if count > 1:  # strided inputs (every other spot) are taken too
        assert fired_rows(records[::2], measured[::2], times[::2], pass_index).tobytes() == (
            fired_rows_reference(records[::2], measured[::2], times[::2], pass_index).tobytes())


def test_fired_rows_lengths_must_agree() -> None:
    with pytest.raises(ValueError, match="2 readings, 3 times"):
        fired_rows(np.zeros(2, SPOT_DTYPE), np.zeros(2, np.int64), np.zeros(3), 0)
