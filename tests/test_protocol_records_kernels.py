"""The compiled record scans equal their numpy references in drivers.protocol.records_ref."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from drivers.protocol import _records as cy
from drivers.protocol import records_ref as ref
from drivers.protocol.messages import BY_NAME, MESSAGES

RECORD_MESSAGES = [m for m in MESSAGES if m.record_dtype is not None]


@st.composite
def record_arrays(draw: st.DrawFn) -> tuple:
    definition = draw(st.sampled_from(RECORD_MESSAGES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = definition.record_dtype
    assert dtype is not None and dtype.names is not None  # structured records
    count = draw(st.integers(1, definition.max_records))
    width = draw(st.sampled_from([1, 3, 256, 1 << 32]))  # narrow ranges give ties
    raw = rng.integers(0, width, count * dtype.itemsize, dtype=np.uint64)
    records = np.frombuffer(raw.astype(np.uint8).tobytes(), dtype)
    names = draw(st.sampled_from([None, dtype.names[1:], dtype.names[:1]]))
    return definition, records, names


@given(record_arrays())
def test_record_extremes_equal_reference(case: tuple) -> None:
    definition, records, names = case
    assert cy.record_extremes(definition, records, names) == ref.record_extremes(
        definition, records, names)
    strided = records[::2]  # not contiguous: the reference
    assert cy.record_extremes(definition, strided, names) == ref.record_extremes(
        definition, strided, names)


@given(st.integers(0, 2**32 - 300), st.integers(1, 255), st.integers(0, 2**32 - 1),
       st.sampled_from(["none", "one", "swap", "shift"]))
def test_first_out_of_sequence_equals_reference(first: int, count: int, seed: int,
                                                damage: str) -> None:
    records = np.zeros(count, BY_NAME["SPOT_BATCH"].record_dtype)
    records["index"] = np.arange(first, first + count)
    rng = np.random.default_rng(seed)
    at = int(rng.integers(0, count))
    if damage == "one":
        records["index"][at] = rng.integers(0, 2**32)
    elif damage == "swap" and count > 1:
        records["index"][[0, at]] = records["index"][[at, 0]]
    elif damage == "shift":
        records["index"] += 1
    for start in (first, first + 1, first - 1 if first else 0):
        assert cy.first_out_of_sequence(records, start) == ref.first_out_of_sequence(
            records, start)
