"""Driver throughput and latency over every transport, measured side by side in one run.

For each transport: request round trip (STATUS_REQUEST through the whole driver stack:
codec, link, reader thread) p50/p99, and sustained spots/s streamed into the simulator with
the simulator consuming them (virtual clock: the device fires as fast as the CPU allows, so
the figure is the whole stack's, host and simulated device together).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from drivers import Device, open_device
from sim_hw.config import SimConfig
from sim_hw.pty_server import serve_pty
from sim_hw.tcp_server import serve_tcp

OPTIONS = {"footswitch": "down", "pre_emission_ms": "0", "rep_rate_max_hz": "1000000",
           "avg_power_max_mw": "1000000000", "noise_percent": "0"}
RTT_REQUESTS = 2000
SPOTS = {"inproc": 40_000, "pty": 20_000, "socket": 20_000, "usb": 20_000}
TARGETS = {"inproc": 1_000_000, "pty": 250_000}


def _query() -> str:
    return "&".join(f"{k}={v}" for k, v in OPTIONS.items())


@contextmanager
def connect(kind: str) -> Iterator[Device]:
    config = SimConfig.from_query(OPTIONS)
    if kind == "inproc":
        with open_device(f"sim://?{_query()}") as dev:
            yield dev
    elif kind == "usb":
        with open_device(f"usb://1209:C025?backend=sim&{_query()}") as dev:
            yield dev
    else:
        serve: Callable = serve_pty if kind == "pty" else serve_tcp
        with serve(config) as served, open_device(
                served.path if kind == "pty" else served.url) as dev:
            yield dev


def round_trips(dev: Device) -> tuple[float, float]:
    times = []
    for _ in range(RTT_REQUESTS):
        start = time.perf_counter()
        dev.link.request("STATUS_REQUEST")
        times.append(time.perf_counter() - start)
    times.sort()
    return statistics.median(times) * 1e3, times[int(0.99 * len(times))] * 1e3


def stream_rate(dev: Device, n: int) -> float:
    x = np.tile(np.linspace(-5000, 5000, 1000), n // 1000)
    spots = dev.prepare_pass(0, x, np.zeros(n), 10_000, 100, 1)
    dev.laser.set_rep_rate(1_000_000)
    dev.load_plan(spots)
    dev.arm(spots)
    dev.start()
    start = time.perf_counter()
    delivered = 0
    for progress in dev.stream(spots):
        delivered += len(progress.index)
    elapsed = time.perf_counter() - start
    assert delivered == n, f"delivered {delivered} of {n}"
    return n / elapsed


def main() -> None:
    print(f"{'transport':<10} {'RTT p50 ms':>10} {'RTT p99 ms':>10} {'spots':>8} "
          f"{'spots/s':>10}  target")
    for kind in ("inproc", "pty", "socket", "usb"):
        with connect(kind) as dev:
            p50, p99 = round_trips(dev)
            rate = stream_rate(dev, SPOTS[kind])
        target = TARGETS.get(kind)
        verdict = "" if target is None else (
            f">= {target:,} spots/s: {'yes' if rate >= target else 'NO'}")
        if kind == "pty":
            verdict += f"; p99 <= 1 ms: {'yes' if p99 <= 1.0 else 'NO'}"
        print(f"{kind:<10} {p50:>10.3f} {p99:>10.3f} {SPOTS[kind]:>8} {rate:>10,.0f}  {verdict}")


if __name__ == "__main__":
    main()
