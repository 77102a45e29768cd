"""The transport interface: a byte pipe to the device, whatever carries it."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Transport(ABC):
    """Moves bytes; knows nothing of frames. Errors of the link become ``DeviceLost``.

    ``write`` is called with whole frames (one call per batch of frames); ``read`` returns
    what is available, waiting at most ``timeout_s`` for the first byte (``b""`` on timeout).
    """

    url: str = ""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Send ``data`` (whole frames), all of it; DeviceLost if the link is gone."""

    @abstractmethod
    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        """Up to ``max_bytes`` bytes, waiting at most ``timeout_s`` for the first (``b""`` on
        timeout); DeviceLost if the link is gone."""

    @abstractmethod
    def close(self) -> None:
        """Release the link; the transport is not used after it."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
