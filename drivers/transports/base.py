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
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def read(self, max_bytes: int, timeout_s: float) -> bytes: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
