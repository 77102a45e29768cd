"""The live progress displays: a treatment (one tqdm bar per pass, plain lines off a terminal)
and a thermal screen (one status line on a terminal)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from tqdm import tqdm

from controller.session import SessionProgress
from controller.thermal_screen import screen_progress


@contextmanager
def screen_display(stream: TextIO, refresh_s: float = 0.1) -> Iterator[None]:
    """While the block screens plans: on a terminal, one line with what the thermal model
    evaluates, how many runs so far and the time (at most every ``refresh_s``; cleared at the
    end); off a terminal nothing."""
    if not stream.isatty():
        yield
        return
    bar = tqdm(file=stream, leave=False, ncols=100, mininterval=refresh_s,
               bar_format="thermal screen: {desc} ({n_fmt} model runs, {elapsed})")

    def show(what: str) -> None:
        bar.set_description_str(what, refresh=False)
        bar.update()

    try:
        with screen_progress(show):
            yield
    finally:
        bar.close()


def _interlocks(p: SessionProgress) -> str:
    from controller.safety import INTERLOCK_NAMES

    open_ = [text for bit, text in INTERLOCK_NAMES.items() if not p.interlocks & bit]
    return "interlocks ok" if not open_ else ", ".join(open_)


class ProgressDisplay:
    """Feed it SessionProgress; shows pass, spots delivered/total, rate, ETA, interlocks."""

    def __init__(self, stream: TextIO, plain_every_s: float = 1.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.plain_every_s = plain_every_s
        self._bar: tqdm | None = None
        self._pass = -1
        self._last_plain = 0.0

    def update(self, p: SessionProgress) -> None:
        state = p.state.name if p.state is not None else "?"
        status = f"{state}, {p.waiting_for}" if p.waiting_for else f"{state}, {_interlocks(p)}"
        if not self.tty:
            now = time.monotonic()
            if p.pass_number != self._pass or p.delivered == p.total or \
                    now - self._last_plain >= self.plain_every_s:
                self._pass, self._last_plain = p.pass_number, now
                eta = f"{p.eta_s:.1f} s" if p.eta_s != float("inf") else "?"
                print(f"pass {p.pass_number + 1} of {p.passes}: {p.delivered}/{p.total} spots, "
                      f"{p.rate_spots_s:.0f}/s, ETA {eta}, {status}", file=self.stream)
            return
        if p.pass_number != self._pass:
            self.close()
            self._pass = p.pass_number
            self._bar = tqdm(total=p.total, file=self.stream, unit="spot", leave=True,
                             desc=f"pass {p.pass_number + 1} of {p.passes}", ncols=100,
                             initial=p.delivered)
        assert self._bar is not None
        self._bar.update(p.delivered - self._bar.n)
        self._bar.set_postfix_str(status, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
