"""Driver throughput and latency over every transport, measured side by side in one run.

For each transport: request round trip (STATUS_REQUEST through the whole driver stack:
codec, link, reader thread) p50/p99, and sustained spots/s streamed into the simulator with
the simulator consuming them (virtual clock: the device fires as fast as the CPU allows, so
the figure is the whole stack's, host and simulated device together).

Over the pty and the socket the simulator runs in its own process (``python -m sim_hw
serve``), as real hardware runs beside the host; in-process (``sim://``) and USB (the
simulated pyusb backend lives in the host's process by nature) it is a thread of this
process and shares its interpreter lock.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from drivers import Device, open_device

OPTIONS = {"footswitch": "down", "pre_emission_ms": "0", "rep_rate_max_hz": "1000000",
           "avg_power_max_mw": "1000000000", "noise_percent": "0"}
RTT_REQUESTS = 2000
SPOTS = {"inproc": 400_000, "pty": 200_000, "socket": 200_000, "usb": 200_000}
TARGETS = {"inproc": 1_000_000, "pty": 250_000}
#: Where the simulator runs, per transport.
SIMULATOR = {"inproc": "thread", "pty": "process", "socket": "process", "usb": "thread"}


def _query() -> str:
    return "&".join(f"{k}={v}" for k, v in OPTIONS.items())


@contextmanager
def simulator_process(kind: str) -> Iterator[str]:
    """Run ``python -m sim_hw serve`` for ``kind`` (pty or socket); yields what to open."""
    where = ["--pty"] if kind == "pty" else ["--tcp", "0"]
    options = [f"--{k}={v}" if k == "footswitch" else f"--option={k}={v}"
               for k, v in OPTIONS.items()]
    prefix = "pty: " if kind == "pty" else "url: "
    with subprocess.Popen([sys.executable, "-m", "sim_hw", "serve", *where, *options],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(prefix):
                    yield line[len(prefix):].strip()
                    break
            else:
                raise RuntimeError(f"simulator exited with {proc.wait()} before serving")
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@contextmanager
def connect(kind: str) -> Iterator[Device]:
    """A Device on the simulator over ``kind`` (inproc, pty, socket or usb), with ``OPTIONS``."""
    if kind == "inproc":
        with open_device(f"sim://?{_query()}") as dev:
            yield dev
    elif kind == "usb":
        with open_device(f"usb://1209:C025?backend=sim&{_query()}") as dev:
            yield dev
    else:
        with simulator_process(kind) as target, open_device(target) as dev:
            yield dev


def round_trips(dev: Device) -> tuple[float, float]:
    """Round-trip time of a STATUS_REQUEST through the driver stack: (p50, p99) in ms."""
    times = []
    for _ in range(RTT_REQUESTS):
        start = time.perf_counter()
        dev.link.request("STATUS_REQUEST")
        times.append(time.perf_counter() - start)
    times.sort()
    return statistics.median(times) * 1e3, times[int(0.99 * len(times))] * 1e3


def stream_rate(dev: Device, n: int) -> float:
    """Stream a pass of ``n`` spots (a multiple of 1000) to the end: spots/s delivered."""
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
    """Print RTT and streaming rate per transport, against the targets where there is one."""
    print("simulator: 'process' = python -m sim_hw serve in its own process, as real hardware "
          "runs beside the host;\n           'thread' = in this process, sharing its interpreter "
          "lock (sim://, and the simulated USB backend by nature)")
    print(f"{'transport':<10} {'simulator':<9} {'RTT p50 ms':>10} {'RTT p99 ms':>10} "
          f"{'spots':>8} {'spots/s':>10}  target")
    for kind in ("inproc", "pty", "socket", "usb"):
        with connect(kind) as dev:
            p50, p99 = round_trips(dev)
            rate = stream_rate(dev, SPOTS[kind])
        target = TARGETS.get(kind)
        verdict = "" if target is None else (
            f">= {target:,} spots/s: {'yes' if rate >= target else 'NO'}")
        if kind == "pty":
            verdict += f"; p99 <= 1 ms: {'yes' if p99 <= 1.0 else 'NO'}"
        print(f"{kind:<10} {SIMULATOR[kind]:<9} {p50:>10.3f} {p99:>10.3f} {SPOTS[kind]:>8} "
              f"{rate:>10,.0f}  {verdict}")


if __name__ == "__main__":
    main()
