"""Every constant a compiled kernel repeats from its reference (a DEF, an enum, a C global) is
the reference's value: a change on one side alone fails here, not as a subtle disagreement
of results."""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import pytest

from controller import _scanpath, _thermal, scanpath_ref, thermal_ref
from drivers.protocol import _framing, framing_ref
from drivers.protocol.messages import (
    CRC,
    DELIVERED_DTYPE,
    HEADER,
    MAX_FRAME,
    MAX_WIRE_FRAME,
    SPOT_DTYPE,
)
from sim_hw import _reports, _truth, reports_ref, truth


def _offset(dtype: np.dtype, name: str) -> int:
    fields = dtype.fields
    assert fields is not None
    return int(fields[name][1])


#: The copied SPOT fields' bytes: up to the end of the last one.
_COMMON = max(_offset(SPOT_DTYPE, name) + SPOT_DTYPE[name].itemsize
              for name in truth._SPOT_FIELDS)

#: (kernel module, its Python name, the reference's value, what the reference calls it)
SHARED: list[tuple[ModuleType, str, object, str]] = [
    (_thermal, "lookahead", thermal_ref.LOOKAHEAD, "thermal_ref.LOOKAHEAD"),
    (_thermal, "snaps_per_block", thermal_ref.SNAPS_PER_BLOCK, "thermal_ref.SNAPS_PER_BLOCK"),
    (_thermal, "cover_margin", thermal_ref.COVER_MARGIN, "thermal_ref.COVER_MARGIN"),
    (_thermal, "resolved_ratio", thermal_ref.RESOLVED_RATIO, "thermal_ref.RESOLVED_RATIO"),
    (_thermal, "damage_taylor_ratio", thermal_ref.DAMAGE_TAYLOR_RATIO,
     "thermal_ref.DAMAGE_TAYLOR_RATIO"),
    (_thermal, "inv_e", math.exp(-1.0), "exp(-1): np.exp(-d2 / sc) where sc = d2"),
    (_scanpath, "golden", int(scanpath_ref.GOLDEN), "scanpath_ref.GOLDEN"),
    (_scanpath, "on_edge_rel", scanpath_ref.ON_EDGE_REL, "scanpath_ref.ON_EDGE_REL"),
    (_framing, "header_size", HEADER.size, "messages.HEADER.size"),
    (_framing, "crc_size", CRC.size, "messages.CRC.size"),
    (_framing, "raw_capacity", MAX_FRAME, "messages.MAX_FRAME"),
    (_framing, "min_frame_size", framing_ref.MIN_FRAME, "framing_ref.MIN_FRAME"),
    (_framing, "max_wire_frame_size", MAX_WIRE_FRAME, "messages.MAX_WIRE_FRAME"),
    (_reports, "record_size", DELIVERED_DTYPE.itemsize, "messages.DELIVERED_DTYPE.itemsize"),
    (_reports, "max_spots", reports_ref.DELIVERED_MAX_SPOTS, "reports_ref.DELIVERED_MAX_SPOTS"),
    (_truth, "spot_size", SPOT_DTYPE.itemsize, "messages.SPOT_DTYPE.itemsize"),
    (_truth, "truth_size", truth.TRUTH_DTYPE.itemsize, "truth.TRUTH_DTYPE.itemsize"),
    (_truth, "common", _COMMON, "bytes of truth._SPOT_FIELDS in SPOT_DTYPE"),
    (_truth, "measured_at", _offset(truth.TRUTH_DTYPE, "measured_uj"),
     "TRUTH_DTYPE offset of measured_uj"),
    (_truth, "time_at", _offset(truth.TRUTH_DTYPE, "time_s"),
     "TRUTH_DTYPE offset of time_s"),
    (_truth, "pass_at", _offset(truth.TRUTH_DTYPE, "pass_index"),
     "TRUTH_DTYPE offset of pass_index"),
]


@pytest.mark.parametrize(("kernel", "name", "reference", "source"), SHARED,
                         ids=[f"{k.__name__.rsplit('.', 1)[1]}.{n}" for k, n, _, _ in SHARED])
def test_kernel_constant_equals_reference(kernel: ModuleType, name: str, reference: object,
                                          source: str) -> None:
    value = getattr(kernel, name)
    assert type(value) is type(reference), f"{kernel.__name__}.{name}: {value!r}, {source}"
    assert value == reference, f"{kernel.__name__}.{name} = {value!r}, {source} = {reference!r}"
