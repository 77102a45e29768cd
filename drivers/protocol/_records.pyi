"""Types of the compiled record scans in ``_records.pyx`` (same signatures as the
reference, :mod:`drivers.protocol.records_ref`)."""

import numpy as np

from drivers.protocol.messages import MessageDef

def record_extremes(definition: MessageDef, records: np.ndarray,
                    names: tuple[str, ...] | None = None) -> dict[str, tuple[int, int]]: ...
def first_out_of_sequence(records: np.ndarray, first: int) -> int: ...
