"""Device clocks: a virtual clock that skips machine waits, and a real-time clock."""

from __future__ import annotations

import time


class SimClock:
    """Seconds since the clock started, for the serving loop.

    ``realtime``: device time is real elapsed time; the loop sleeps until each spot is due.
    ``virtual``: device time is real elapsed time plus every skip: while the device only waits
    for itself (the next spot, a galvo move) the loop jumps straight to that time, so CI runs
    as fast as the CPU allows. Host silence is still measured in real time (:meth:`real_s`),
    so the watchdog trips after ``watchdog_ms`` of real silence in both modes.
    """

    def __init__(self, mode: str = "virtual") -> None:
        if mode not in ("virtual", "realtime"):
            raise ValueError(f"clock mode {mode!r}: expected 'virtual' or 'realtime'")
        self.mode = mode
        self._t0_s = time.monotonic()
        self._skipped_s = 0.0

    @property
    def virtual(self) -> bool:
        """True when the loop skips the waits the device has only for itself."""
        return self.mode == "virtual"

    def real_s(self) -> float:
        """Real seconds since the clock started."""
        return time.monotonic() - self._t0_s

    def now_s(self) -> float:
        """Device seconds since the clock started."""
        return self.real_s() + self._skipped_s

    def skip_to(self, t_s: float) -> None:
        """Jump device time forward to ``t_s`` (virtual mode only; never backwards)."""
        if self.virtual:
            self._skipped_s += max(0.0, t_s - self.now_s())
