"""Scans of a message's records, numpy: the references for the compiled kernels of
``_records.pyx`` (the package exports the compiled ones: ``drivers.protocol.record_extremes``
and ``drivers.protocol.first_out_of_sequence``), which give the same values."""

from __future__ import annotations

import numpy as np

from drivers.protocol.messages import MessageDef


def record_extremes(definition: MessageDef, records: np.ndarray,
                    names: tuple[str, ...] | None = None) -> dict[str, tuple[int, int]]:
    """(lowest, highest) of the record fields ``names`` (default: every field) of a non-empty
    array of the record dtype, for checks that compare only extremes.

    The fields (integers of at most 32 bits) are copied into the rows of one int64 array and
    reduced along the rows, two reductions in all: about twice as fast as two per field for a
    batch, and much faster than reducing across a view of the records as rows of words."""
    if not names:
        dtype = definition.record_dtype
        assert dtype is not None and dtype.names is not None, f"{definition.name}: no records"
        names = dtype.names
    columns = np.empty((len(names), len(records)), np.int64)
    for row, name in zip(columns, names, strict=True):
        row[...] = records[name]
    lows, highs = columns.min(axis=1).tolist(), columns.max(axis=1).tolist()
    return dict(zip(names, zip(lows, highs, strict=True), strict=True))


def first_out_of_sequence(records: np.ndarray, first: int) -> int:
    """Position of the first record whose ``index`` is not ``first`` plus its position (the
    rule for SPOT_BATCH: indices consecutive from the device's next_index), or -1."""
    indices = records["index"].astype(np.int64)
    wrong = np.flatnonzero(indices != np.arange(first, first + len(records), dtype=np.int64))
    return int(wrong[0]) if wrong.size else -1
