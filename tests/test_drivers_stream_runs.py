"""A run of EVT_DELIVERED reports is recorded at once exactly as one by one would record it."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from drivers.protocol import Message, message
from drivers.protocol.messages import DELIVERED_DTYPE, SPOT_DTYPE
from drivers.spots import PassSpots
from drivers.stream import PassStreamer


def _pass(count: int) -> PassSpots:
    records = np.zeros(count, SPOT_DTYPE)
    records["index"] = np.arange(count)
    return PassSpots.from_records(0, records)


#: A pass long enough for every report below (indices under 500).
PASS = _pass(1000)


def streamer(last_seen: int) -> PassStreamer:
    """A PassStreamer with only the state that recording deliveries touches."""
    s = object.__new__(PassStreamer)
    s.last_seen, s.known, s.index, s.measured, s.credits = last_seen, True, [], [], 0
    s.spots = PASS  # reports name spots of the loaded pass only
    return s


@st.composite
def report_runs(draw: st.DrawFn) -> tuple[int, list[Message]]:
    """Reports that mostly continue one another, sometimes with a gap, a repeat or disorder."""
    last_seen = draw(st.integers(-1, 50))
    start = last_seen + 1 + draw(st.sampled_from([0, 0, 0, 1, -1, -3]))
    reports = []
    for _ in range(draw(st.integers(1, 6))):
        count = draw(st.integers(1, 70))
        records = np.zeros(count, DELIVERED_DTYPE)
        records["index"] = np.arange(max(start, 0), max(start, 0) + count)
        if draw(st.integers(0, 9)) == 0:
            records["index"][draw(st.integers(0, count - 1))] += draw(st.integers(1, 3))
        records["measured_uj"] = draw(st.integers(0, 2**32 - count)) + np.arange(count)
        reports.append(message("EVT_DELIVERED", records=records,
                               credits=draw(st.integers(0, 4096))))
        start = max(start, 0) + count + draw(st.sampled_from([0, 0, 0, 2, -5]))
    return last_seen, reports


@given(report_runs())
def test_handle_all_equals_one_by_one(case: tuple[int, list[Message]]) -> None:
    last_seen, reports = case
    together, alone = streamer(last_seen), streamer(last_seen)
    together.handle_all(list(reports))
    for report in reports:
        alone.handle(report)
    for s in (together, alone):
        s.index = np.concatenate(s.index or [np.empty(0, np.int64)]).tolist()
        s.measured = np.concatenate(s.measured or [np.empty(0, np.int64)]).tolist()
    assert (together.index, together.measured, together.last_seen, together.credits) == (
        alone.index, alone.measured, alone.last_seen, alone.credits)
