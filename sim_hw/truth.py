"""Ground truth: the record of every spot the simulated laser actually fired."""

from __future__ import annotations

import numpy as np

from drivers.protocol.messages import SPOT_DTYPE
from sim_hw._truth import fill_fired_rows

TRUTH_DTYPE = np.dtype([
    ("index", "<u4"), ("x_lsb", "<u2"), ("y_lsb", "<u2"), ("energy_uj", "<u4"),
    ("pulse_us", "<u2"), ("stack", "u1"), ("measured_uj", "<u4"), ("time_s", "<f8"),
    ("pass_index", "u1"),
])

_CHUNK = 65_536
#: The fields a fired spot's row copies from its SPOT record.
_SPOT_FIELDS = ("index", "x_lsb", "y_lsb", "energy_uj", "pulse_us", "stack")
# the compiled kernel's byte layout: the SPOT fields first, at the same offsets
_TRUTH_LAYOUT, _SPOT_LAYOUT = TRUTH_DTYPE.fields, SPOT_DTYPE.fields
assert _TRUTH_LAYOUT is not None and _SPOT_LAYOUT is not None  # structured dtypes
assert all(_TRUTH_LAYOUT[name] == _SPOT_LAYOUT[name] for name in _SPOT_FIELDS)
assert (TRUTH_DTYPE.itemsize, SPOT_DTYPE.itemsize) == (28, 16) and [
    _TRUTH_LAYOUT[name][1] for name in ("measured_uj", "time_s", "pass_index")] == [15, 19, 27]


def fired_rows_reference(records: np.ndarray, measured_uj: np.ndarray, time_s: np.ndarray,
                         pass_index: int) -> np.ndarray:
    """:data:`TRUTH_DTYPE` rows of fired SPOT records with their monitor readings and fire
    times (numpy; the reference of :func:`fired_rows`)."""
    rows = np.empty(len(records), TRUTH_DTYPE)
    for name in _SPOT_FIELDS:
        rows[name] = records[name]
    rows["measured_uj"] = measured_uj
    rows["time_s"] = time_s
    rows["pass_index"] = pass_index
    return rows


def fired_rows(records: np.ndarray, measured_uj: np.ndarray, time_s: np.ndarray,
               pass_index: int) -> np.ndarray:
    """:func:`fired_rows_reference`, compiled (one pass over the spots, without the GIL)."""
    rows = np.empty(len(records), TRUTH_DTYPE)
    fill_fired_rows(rows.view(np.uint8), np.ascontiguousarray(records, SPOT_DTYPE).view(np.uint8),
                    np.ascontiguousarray(measured_uj, np.int64),
                    np.ascontiguousarray(time_s, np.float64), pass_index)
    return rows


class GroundTruth:
    """Append-only record of fired spots, kept as numpy chunks so a million spots stay cheap."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._rows: list[tuple] = []  # appended one by one after the last chunk
        self._parts: list[np.ndarray] = []  # rows of fired chunks after the last chunk
        self._parts_count = 0
        self._count = 0
        self._cached: np.ndarray | None = None

    def append(self, index: int, x_lsb: int, y_lsb: int, energy_uj: int, pulse_us: int,
               stack: int, measured_uj: int, time_s: float, pass_index: int) -> None:
        """Record one fired spot (mirror position in LSB, energies in µJ, device time in s)."""
        self._seal_parts()
        self._rows.append((index, x_lsb, y_lsb, energy_uj, pulse_us, stack, measured_uj, time_s,
                           pass_index))
        self._count += 1
        self._cached = None
        if len(self._rows) >= _CHUNK:
            self._seal_rows()

    def extend(self, spots: np.ndarray) -> None:
        """Record fired spots (a :data:`TRUTH_DTYPE` array, in firing order) in one go."""
        self._seal_parts()
        self._seal_rows()
        self._chunks.append(spots)
        self._count += len(spots)
        self._cached = None

    def extend_fired(self, records: np.ndarray, measured_uj: np.ndarray, time_s: np.ndarray,
                     pass_index: int) -> None:
        """Record fired spots given as their SPOT records, monitor readings and fire times
        (kept as rows, joined into one chunk per :data:`_CHUNK` spots or when read)."""
        self._seal_rows()
        self._parts.append(fired_rows(records, measured_uj, time_s, pass_index))
        self._parts_count += len(records)
        self._count += len(records)
        self._cached = None
        if self._parts_count >= _CHUNK:
            self._seal_parts()

    def _seal_parts(self) -> None:
        if self._parts:  # as bytes: a structured concatenate promotes its dtype in Python
            self._chunks.append(np.concatenate([part.view(np.uint8) for part in self._parts])
                                .view(TRUTH_DTYPE))
            self._parts, self._parts_count = [], 0

    def _seal_rows(self) -> None:
        if self._rows:
            self._chunks.append(np.array(self._rows, TRUTH_DTYPE))
            self._rows = []

    def __len__(self) -> int:
        return self._count

    @property
    def array(self) -> np.ndarray:
        """All fired spots in firing order (structured array of :data:`TRUTH_DTYPE`)."""
        if self._cached is None:
            self._seal_parts()
            self._seal_rows()
            self._cached = (np.concatenate(self._chunks) if self._chunks
                            else np.empty(0, TRUTH_DTYPE))
            self._chunks = [self._cached]
        return self._cached

    def indices(self, pass_index: int | None = None) -> np.ndarray:
        """Indices fired, optionally only those of one pass."""
        spots = self.array
        return spots["index"] if pass_index is None else spots["index"][
            spots["pass_index"] == pass_index]

    def summary(self) -> str:
        """One line: count, passes, index span, energy ratio measured/set."""
        spots = self.array
        if not len(spots):
            return "fired=0"
        set_uj = spots["energy_uj"].astype(np.float64) * spots["stack"]
        ratio = spots["measured_uj"] / set_uj
        passes = ",".join(str(p) for p in np.unique(spots["pass_index"]))
        return (f"fired={len(spots)} passes={passes} index={spots['index'].min()}.."
                f"{spots['index'].max()} measured/set={ratio.mean():.4f} "
                f"(min {ratio.min():.4f} max {ratio.max():.4f}) last_t_s={spots['time_s'][-1]:.6f}")
