"""Types of the compiled delivered reports in ``_reports.pyx`` (as the reference,
:func:`sim_hw.reports_ref.delivered_reports`, with ``times_s`` a contiguous float64 array)."""

import numpy as np
from numpy.typing import NDArray

#: As DELIVERED_DTYPE.itemsize and reports_ref.DELIVERED_MAX_SPOTS.
record_size: int
max_spots: int

def delivered_reports(records: bytes, times_s: NDArray[np.float64], pending: int,
                      flush_at_s: float | None, credits: int, seq: int
                      ) -> tuple[bytes, int, int, float | None]: ...
