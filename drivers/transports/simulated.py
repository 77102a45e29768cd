"""In-process transport to the simulated device (``sim://?door=open&seed=3``).

The simulator is loaded lazily by name so that ``drivers`` does not import ``sim_hw`` except
through this registry entry.
"""

from __future__ import annotations

import importlib
from typing import Any

from drivers.errors import DeviceLost, TransportURLError
from drivers.transports.base import Transport

SIM_LINK = "sim_hw.link:open_link"


def load(target: str) -> Any:
    """Import ``module:attribute``."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


class SimTransport(Transport):
    """Bytes to and from an in-process :class:`sim_hw.device.SimDevice`."""

    def __init__(self, url: str, options: dict[str, str]) -> None:
        self.url = url
        try:
            self.link = load(SIM_LINK)(options)
        except ValueError as exc:  # a bad simulator option in the URL's query
            raise TransportURLError(f"cannot open {url!r}: {exc}") from exc
        self._closed = False

    @property
    def simulator(self) -> Any:
        """The simulator's handle (``.device`` ground truth and inputs, ``.faults``)."""
        return self.link

    def write(self, data: bytes) -> None:
        """Hand ``data`` to the simulator; DeviceLost once closed or when its link fails."""
        if self._closed:
            raise DeviceLost(f"{self.url} is closed")
        try:
            self.link.write(data)
        except (OSError, EOFError) as exc:
            raise DeviceLost(f"{self.url}: {exc}") from exc

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        """What the simulator sent, at most ``max_bytes``, waiting up to ``timeout_s`` (``b""`` on
        timeout); DeviceLost once closed or when its link fails."""
        if self._closed:
            raise DeviceLost(f"{self.url} is closed")
        try:
            return self.link.read(max_bytes, timeout_s)
        except (OSError, EOFError) as exc:
            raise DeviceLost(f"{self.url}: {exc}") from exc

    def close(self) -> None:
        """Close the simulator's link (once; closing again does nothing)."""
        if not self._closed:
            self._closed = True
            self.link.close()
