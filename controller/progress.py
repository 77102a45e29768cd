"""The live progress displays: a treatment (one tqdm bar per pass, plain lines off a terminal),
a thermal screen (one status line on a terminal, plain lines off one) and the steps of a
command such as ``co2scan report`` (likewise)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import accumulate
from typing import TextIO

from tqdm import tqdm

from controller.scanpath import Plan
from controller.session import SessionProgress
from controller.thermal_screen import screen_progress

#: A model run of a plan's own screen as the thermal screen announces it ("plan 1, pass 3 of
#: 10"; a suggestion's run says so: "plan 1, suggestion ..., pass 3 of 10").
_OWN_PASS = re.compile(r"plan (\d+), pass (\d+) of \d+")
#: Off a terminal, the least time between two lines of a thermal screen's progress.
LOG_EVERY_S = 5.0


class ScreenLog:
    """A thermal screen's progress as plain lines for a log (no carriage return, no escape
    code): what the model evaluates, the model runs so far, for a pass of a plan's own screen
    the spots of ``plans`` (the screened ones) before it out of all, and the time; at the
    first model run, then at most every ``every_s``. :meth:`close` adds the totals."""

    def __init__(self, stream: TextIO, plans: Sequence[Plan] = (), every_s: float = LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.every_s, self.clock = stream, every_s, clock
        self.runs = 0
        self._start = clock()
        self._last_line: float | None = None
        #: each plan's first pass in the session, and the spots before each pass
        self._first = [0, *accumulate(len(plan.metrics.passes) for plan in plans)]
        self._before = [0, *accumulate(m.spot_count for plan in plans
                                       for m in plan.metrics.passes)]

    def spots_before(self, what: str) -> int | None:
        """The spots of the plans' passes before the model run ``what``, if it screens a pass
        of a plan's own screen (else None: a suggestion, or plans not given)."""
        own = _OWN_PASS.fullmatch(what)
        if own is None or not 1 <= int(own[1]) < len(self._first):
            return None
        first, end = self._first[int(own[1]) - 1], self._first[int(own[1])]
        index = first + int(own[2]) - 1
        return self._before[index] if first <= index < end else None

    def __call__(self, what: str) -> None:
        """Count a model run ``what``; print its line at the first run, then at most every
        ``every_s``."""
        self.runs += 1
        now = self.clock()
        if self._last_line is not None and now - self._last_line < self.every_s:
            return
        self._last_line = now
        before = self.spots_before(what)
        spots = "" if before is None else f", {before}/{self._before[-1]} spots"
        self._print(f"{what} (model run {self.runs}{spots}, {now - self._start:.1f} s)")

    def close(self) -> None:
        """The totals, if a model ran."""
        if self.runs:
            self._print(f"{self.runs} model runs, {self.clock() - self._start:.1f} s")

    def _print(self, text: str) -> None:
        print(f"thermal screen: {text}", file=self.stream, flush=True)


@contextmanager
def screen_display(stream: TextIO, plans: Sequence[Plan] = (), *, quiet: bool = False,
                   refresh_s: float = 0.1, every_s: float = LOG_EVERY_S,
                   tick_s: float = 0.5) -> Iterator[None]:
    """While the block screens ``plans``: on a terminal, one line with what the thermal model
    evaluates, how many runs so far and the time (at most every ``refresh_s`` as runs begin,
    and every ``tick_s`` also while one model run takes long: a call of up to a minute;
    cleared at the end); off a terminal a :class:`ScreenLog` (a line at most every
    ``every_s``); with ``quiet``, nothing."""
    if quiet:
        yield
        return
    if not stream.isatty():
        log = ScreenLog(stream, plans, every_s)
        try:
            with screen_progress(log):
                yield
        finally:
            log.close()
        return
    bar = tqdm(file=stream, leave=False, ncols=100, mininterval=refresh_s,
               bar_format="thermal screen: {desc} ({n_fmt} model runs, {elapsed})")

    def show(what: str) -> None:
        bar.set_description_str(what, refresh=False)
        bar.update()

    with _redrawn(bar, tick_s, "thermal screen progress"), screen_progress(show):
        yield


@contextmanager
def _redrawn(bar: tqdm, every_s: float, thread_name: str) -> Iterator[None]:
    """Draw ``bar`` again every ``every_s`` from a thread of its own while the block runs, so
    that its elapsed time keeps counting through a long call that updates nothing (the thermal
    model's: released from the interpreter lock); close it at the end."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(every_s):
            bar.refresh()

    ticker = threading.Thread(target=tick, name=thread_name, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()
        bar.close()


@contextmanager
def step_display(stream: TextIO, name: str, *, quiet: bool = False, refresh_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic
                 ) -> Iterator[Callable[[str], None]]:
    """Show what the block is doing, as it says through the yielded ``step(what)``: on a
    terminal one line ``name: what (elapsed)``, its time counting every ``refresh_s`` also
    while a step takes long (the thermal model of a large session: one call of many seconds),
    cleared at the end; off a terminal a plain line per step with the seconds since the start
    (a last step, e.g. "done", gives the total); with ``quiet``, nothing."""
    if quiet:
        yield lambda what: None
        return
    if not stream.isatty():
        start = clock()
        yield lambda what: print(f"{name}: {what} ({clock() - start:.1f} s)", file=stream,
                                 flush=True)
        return
    bar = tqdm(file=stream, leave=False, ncols=100, mininterval=0.0,
               bar_format=f"{name}: {{desc}} ({{elapsed}})")
    with _redrawn(bar, refresh_s, f"{name} progress"):
        yield lambda what: bar.set_description_str(what, refresh=True)


def _interlocks(p: SessionProgress) -> str:
    from controller.safety import INTERLOCK_NAMES

    open_ = [text for bit, text in INTERLOCK_NAMES.items() if not p.interlocks & bit]
    return "interlocks ok" if not open_ else ", ".join(open_)


class ProgressDisplay:
    """Feed it SessionProgress; shows pass, spots delivered/total, rate, ETA, interlocks: a bar
    on a terminal, else plain lines (none if ``quiet``)."""

    def __init__(self, stream: TextIO, plain_every_s: float = 1.0, quiet: bool = False) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.plain_every_s = plain_every_s
        self.quiet = quiet
        self._bar: tqdm | None = None
        self._pass = -1
        self._last_plain = 0.0

    def update(self, p: SessionProgress) -> None:
        """Show ``p``: on a terminal move the bar (a new one per pass); off one a plain line at
        a new pass, the last spot, or ``plain_every_s`` after the previous line (none if
        ``quiet``)."""
        state = p.state.name if p.state is not None else "?"
        status = f"{state}, {p.waiting_for}" if p.waiting_for else f"{state}, {_interlocks(p)}"
        if not self.tty:
            if self.quiet:
                return
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
        """Close the pass's bar, if one is shown (it stays on the terminal as it ended)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
