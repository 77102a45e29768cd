"""A pass as the device receives it: SPOT records in index order and their checksum."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from drivers.protocol.codec import check_records
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
        """Spots in the pass."""
        return len(self.records)

    @cached_property
    def records_checked(self) -> bool:
        """True when every record passed the SPOT record checks of the codec (once, for the
        whole pass) and cannot change since (a read-only array): batches sliced from it are
        then not checked again. Raises MessageError for a bad record, as sending its batch
        would, but before any batch is sent."""
        if self.records.flags.writeable:
            return False
        check_records("SPOT_BATCH", self.records)
        return True

    @classmethod
    def from_records(cls, pass_index: int, records: np.ndarray) -> PassSpots:
        """The pass with a read-only copy of ``records``: what was checksummed cannot change."""
        records = np.array(records, SPOT_DTYPE, order="C")
        records.flags.writeable = False
        expected = np.arange(len(records))
        if bad := np.flatnonzero(records["index"] != expected).tolist():
            raise ValueError(f"spot records must be indexed 0..{len(records) - 1} in order: "
                             f"record {bad[0]} has index {int(records['index'][bad[0]])}, "
                             f"expected {bad[0]}")
        return cls(pass_index, records, plan_checksum(records))
