"""Delivered reports (firmware_protocol.md section 6.1), pure Python: the reference for the
compiled :func:`sim_hw._reports.delivered_reports`, which gives the same bytes and values."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from drivers.protocol.framing_ref import encode_frame
from drivers.protocol.messages import BY_NAME, DELIVERED_DTYPE, PROTOCOL_VERSION

#: EVT_DELIVERED goes out after this many fired spots ...
DELIVERED_MAX_SPOTS = 64
#: ... or this long after the first unreported spot, whichever comes first.
DELIVERED_MAX_AGE_S = 0.010
DELIVERED = BY_NAME["EVT_DELIVERED"]


def delivered_reports(records: bytes, times_s: Sequence[float], pending: int,
                      flush_at_s: float | None, credits: int, seq: int
                      ) -> tuple[bytes, int, int, float | None]:
    """The EVT_DELIVERED frames completed when a chunk of spots fires.

    ``records`` holds the DELIVERED_DTYPE records of the ``pending`` spots not reported yet,
    then one per spot of the chunk, fired at ``times_s``; ``flush_at_s`` is when the open
    report is due (None: no report open); ``credits`` the free buffer slots before the chunk's
    spots left the buffer; ``seq`` the next event sequence number.

    A report goes out at its 64th spot, or before a spot fired when its first spot is 10 ms
    old; each carries the credits as of its last spot leaving the buffer. Returns the frames'
    wire bytes, how many, the first record left unreported, and the open report's flush time.
    """
    times = list(times_s)
    size = DELIVERED_DTYPE.itemsize
    frames: list[bytes] = []
    first, count, start, total = 0, pending, 0, len(times)
    while start < total:
        if flush_at_s is None:
            flush_at_s = times[start] + DELIVERED_MAX_AGE_S
        end = min(start + DELIVERED_MAX_SPOTS - count, bisect_left(times, flush_at_s, start))
        count += end - start
        credits += end - start
        if end < total or count >= DELIVERED_MAX_SPOTS:
            payload = DELIVERED.struct.pack(count, credits) + records[
                first * size:(first + count) * size]
            frames.append(encode_frame(DELIVERED.type_id, seq + len(frames), payload,
                                       PROTOCOL_VERSION))
            first, count, flush_at_s = first + count, 0, None
        start = end
    return b"".join(frames), len(frames), first, flush_at_s
