"""A pass as the device receives it: SPOT records in index order and their checksum."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from drivers.protocol.messages import SPOT_DTYPE


def plan_checksum(records: np.ndarray) -> int:
    """CRC-32 of the wire bytes of every SPOT record, in index order (spec section 9)."""
    return zlib.crc32(np.ascontiguousarray(records, SPOT_DTYPE).tobytes())


@dataclass(frozen=True)
class PassSpots:
    """The spots of one pass, already converted to galvo LSB and checked against limits."""

    pass_index: int
    records: np.ndarray
    checksum: int

    @property
    def count(self) -> int:
        return len(self.records)

    @classmethod
    def from_records(cls, pass_index: int, records: np.ndarray) -> PassSpots:
        records = np.ascontiguousarray(records, SPOT_DTYPE)
        if not np.array_equal(records["index"], np.arange(len(records))):
            raise ValueError("spot records must be indexed 0..n-1 in order")
        return cls(pass_index, records, plan_checksum(records))
