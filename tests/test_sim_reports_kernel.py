"""The compiled delivered-reports kernel equals its pure-Python reference (same frames, same
leftover state), and its frames decode to the reports section 6.1 asks for."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from drivers.protocol import FrameDecoder, decode_payload
from sim_hw import _reports as cy
from sim_hw import reports_ref as ref


@st.composite
def chunks(draw: st.DrawFn) -> tuple[bytes, np.ndarray, int, float | None, int, int]:
    """Fired chunks: steps between fire times from 1 µs to 30 ms (reports by count and by
    age, ties with the flush time), with or without records pending in an open report."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(0, 400))
    pending = draw(st.integers(0, 63))
    step_s = draw(st.sampled_from([1e-6, 252e-6, 2.5e-3, 0.01, 0.03]))
    steps = rng.choice([0.0, step_s, step_s * rng.random()], n)
    start_s = draw(st.floats(0, 100))
    times = start_s + np.cumsum(steps)
    # a report is open (with its flush time) exactly when records are pending
    flush_at_s = None if not pending else start_s + draw(st.sampled_from([0.0, 0.005, 0.01,
                                                                          -0.001]))
    records = rng.integers(0, 256, (pending + n) * 8, dtype=np.uint8).tobytes()
    credits = draw(st.integers(0, 0xFFFF - n))
    seq = draw(st.integers(0, 0xFFFF))
    return records, times, pending, flush_at_s, credits, seq


@given(chunks())
def test_compiled_reports_equal_reference(chunk: tuple) -> None:
    assert cy.delivered_reports(*chunk) == ref.delivered_reports(*chunk)


@given(chunks())
def test_reports_follow_section_6_1(chunk: tuple) -> None:
    records, _, pending, _, credits, seq = chunk
    wire, reports, unsent, _ = cy.delivered_reports(*chunk)
    frames = FrameDecoder().feed(wire)
    assert len(frames) == reports
    messages = [decode_payload(frame) for frame in frames]
    assert [msg.seq for msg in messages] == [(seq + i) & 0xFFFF for i in range(reports)]
    assert all(int(msg["count"]) <= ref.DELIVERED_MAX_SPOTS for msg in messages)
    sent = b""
    for msg in messages:
        assert msg.records is not None  # EVT_DELIVERED: records
        sent += msg.records.tobytes()
    assert sent == records[:unsent * 8]
    if messages:  # the credits as of each report's last spot leaving the buffer
        assert int(messages[-1]["credits"]) == credits + unsent - pending


def test_off_nominal_inputs_go_to_the_reference() -> None:
    times = np.array([0.0, 1.0])
    # the same arguments to both, like `chunk` above (the reference's times_s is annotated
    # Sequence[float], the kernel's a float64 array)
    cases: list[tuple] = [
        (bytes(8), times, 0, None, 0, 0),  # record buffer too short
        (bytes(16), times, 0, None, 0xFFFF, 0),  # credits beyond u16: struct.error
    ]
    for args in cases:
        expected: object
        got: object
        try:
            expected = ref.delivered_reports(*args)
        except Exception as exc:  # the comparison is the point
            expected = (type(exc), str(exc))
        try:
            got = cy.delivered_reports(*args)
        except Exception as exc:
            got = (type(exc), str(exc))
        assert got == expected
