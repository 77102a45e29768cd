"""The exception types an embedder catches: exported by ``controller.api``, usable as types
under ``mypy --strict`` in a client project, and raised for the same NACK codes as ever."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import controller.api
from drivers import open_device
from drivers.errors import (
    NACK_TYPES,
    AuthFailed,
    BadIndex,
    BufferFull,
    DeviceError,
    DeviceNack,
    FootswitchUp,
    IllegalState,
    IndicatorDelay,
    InterlockOpen,
    NotAuthenticated,
    OutOfRange,
    PlanMismatch,
    nack_error,
)
from drivers.protocol.errors import MessageError
from drivers.protocol.messages import ErrorCode, Interlock, State

REPO = Path(__file__).resolve().parents[1]

#: A client of the library, as an embedder writes it.
CLIENT = '''
from typing import assert_type

from controller.api import (
    DeviceError, DeviceLost, DeviceNack, DeviceTimeout, IllegalState, InterlockOpen,
    LimitError, PlanRejected, SessionBusy, SettingsError, open_device,
)


def pause(url: str) -> str:
    try:
        with open_device(url) as dev:
            dev.pause()
    except IllegalState as exc:
        assert_type(exc.detail, int)
        return f"not now (state {exc.state}): {exc.detail}"
    except InterlockOpen as exc:
        assert_type(exc, InterlockOpen)
        return f"interlocks open: {exc.detail:#x} {exc.text}"
    except DeviceNack as exc:
        return f"refused: {exc.code} {exc.error}"
    except DeviceLost:
        return "link gone"
    except DeviceTimeout as exc:
        return f"no reply: {exc}"
    except (LimitError, SettingsError) as exc:
        assert_type(exc.field, str)
        return f"bad value: {exc}"
    except PlanRejected as exc:
        return f"rejected: {len(exc.violations)}"
    except SessionBusy:
        return "busy"
    except DeviceError as exc:
        return str(exc)
    return "paused"


def interlocks(exc: InterlockOpen) -> int:
    return exc.detail


def refusals() -> tuple[type[IllegalState], type[DeviceNack]]:
    return IllegalState, InterlockOpen
'''


def test_client_code_type_checks_under_strict_mypy(tmp_path: Path) -> None:
    client = tmp_path / "client.py"
    client.write_text(textwrap.dedent(CLIENT), encoding="utf-8")
    # A config of our own: not the repo's (ignore_missing_imports would turn an unresolved
    # import into Any and hide every problem); controller and drivers come from the repo
    # sources (mypy cannot follow the editable install's import hook). Errors inside the
    # library are not reported, as for an installed package: only the client's count.
    config = tmp_path / "mypy.ini"
    config.write_text(f"[mypy]\nmypy_path = {REPO}\nfollow_imports = silent\n",
                      encoding="utf-8")
    # in a process of its own: mypy raises the interpreter's recursion limit (and caches
    # modules), which changed what later tests saw (a deeply nested script parsed)
    done = subprocess.run([
        sys.executable, "-m", "mypy", "--config-file", str(config), "--strict",
        "--python-version", "3.11", "--cache-dir", str(tmp_path / "mypy_cache"),
        "--no-error-summary", "--show-error-codes", str(client),
    ], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and done.stdout == done.stderr == "", done.stdout + done.stderr


def test_every_exported_name_exists() -> None:
    missing = [name for name in controller.api.__all__ if not hasattr(controller.api, name)]
    assert missing == []
    assert len(set(controller.api.__all__)) == len(controller.api.__all__)


#: The NACK code -> exception class mapping, as it has always been.
EXPECTED: dict[int, type[DeviceNack]] = {
    ErrorCode.ILLEGAL_STATE: IllegalState,
    ErrorCode.OUT_OF_RANGE: OutOfRange,
    ErrorCode.BUFFER_FULL: BufferFull,
    ErrorCode.INTERLOCK_OPEN: InterlockOpen,
    ErrorCode.NOT_AUTHENTICATED: NotAuthenticated,
    ErrorCode.AUTH_FAILED: AuthFailed,
    ErrorCode.PLAN_MISMATCH: PlanMismatch,
    ErrorCode.BAD_INDEX: BadIndex,
    ErrorCode.INDICATOR_DELAY: IndicatorDelay,
    ErrorCode.FOOTSWITCH_UP: FootswitchUp,
}


@pytest.mark.parametrize("name", [
    "DeviceError", "DeviceLost", "DeviceClosed", "DeviceTimeout", "DeviceNack", "LimitError",
    "SettingsError", "PlanRejected", "SessionBusy", "TransportURLError", "MessageError",
    *(cls.__name__ for cls in EXPECTED.values()),
])
def test_the_exception_types_are_exported(name: str) -> None:
    import drivers

    assert name in controller.api.__all__
    if name not in {"SettingsError", "PlanRejected", "SessionBusy"}:
        assert name in drivers.__all__
        assert getattr(drivers, name) is getattr(controller.api, name)


def test_nack_codes_map_to_their_classes() -> None:
    assert {int(code): cls for code, cls in EXPECTED.items()} == NACK_TYPES
    for code in [*ErrorCode, 0, 200]:
        exc = nack_error("PAUSE", int(code), 7, int(State.STANDBY), "why")
        cls = EXPECTED.get(code, DeviceNack)
        assert type(exc) is cls
        assert isinstance(exc, DeviceNack) and isinstance(exc, DeviceError)
        assert (exc.request, exc.error, exc.detail, exc.state, exc.text) == (
            "PAUSE", int(code), 7, int(State.STANDBY), "why")
        assert exc.code == (code if cls is not DeviceNack else None)
        assert str(exc).startswith("PAUSE refused: ")
    for code, cls in EXPECTED.items():
        name = ErrorCode(code).name
        assert cls.__name__ == "".join(w.capitalize() for w in name.split("_"))
        assert cls.__module__ == "drivers.errors"
        assert cls.__bases__ == (DeviceNack,)
        assert cls.__doc__ == f"NACK {name}."


def test_device_nacks_arrive_as_their_classes() -> None:
    with open_device("sim://?door=open") as dev:
        with pytest.raises(IllegalState) as refused:
            dev.pause()  # not emitting
        assert refused.value.detail == refused.value.state == State.STANDBY
        spots = dev.prepare_pass(0, np.linspace(-5000, 5000, 10), np.zeros(10), 10_000, 200, 1)
        dev.load_plan(spots)
        with pytest.raises(InterlockOpen) as interlocks:
            dev.arm(spots)
        assert interlocks.value.detail & Interlock.DOOR_CLOSED == 0
        assert "INTERLOCK_OPEN" in str(interlocks.value)


def test_a_request_field_that_does_not_fit_raises_an_exported_value_error() -> None:
    """MessageError reaches scripts (a field out of its wire type's range, a float where an
    integer goes): exported, and a ValueError as the other bad-input errors."""
    from drivers.protocol.errors import ProtocolError

    assert controller.api.MessageError is MessageError
    with open_device("sim://") as dev:
        with pytest.raises(controller.api.MessageError,
                           match=r"SET_LIMITS.avg_power_max_mw = -1 outside 1..4294967295"):
            dev.set_limits(100000, 500, -1)
        with pytest.raises(ValueError, match="expected an integer") as floated:
            dev.set_limits(1.5e5, 500, 20000)  # type: ignore[arg-type]
        assert isinstance(floated.value, ProtocolError)


def test_interlock_open_names_the_open_interlocks() -> None:
    """The message said only "INTERLOCK_OPEN (detail 13)" (service audit)."""
    from drivers.errors import OPEN_INTERLOCK_WORDS
    from drivers.protocol.messages import SAFETY_INTERLOCKS

    assert set(OPEN_INTERLOCK_WORDS) == set(SAFETY_INTERLOCKS)
    closed = int(Interlock.KEY_ON | Interlock.ESTOP_RELEASED | Interlock.FOOTSWITCH_DOWN)
    exc = nack_error("ARM", int(ErrorCode.INTERLOCK_OPEN), closed, int(State.READY), "")
    assert "INTERLOCK_OPEN (detail 13: door open) in READY" in str(exc)
    exc = nack_error("ARM", int(ErrorCode.INTERLOCK_OPEN), 0, int(State.READY), "")
    assert "(detail 0: key switch off, door open, emergency stop pressed)" in str(exc)
    with open_device("sim://?door=open&estop=pressed") as dev:
        spots = dev.prepare_pass(0, np.linspace(-5000, 5000, 10), np.zeros(10), 10_000, 200, 1)
        dev.load_plan(spots)
        with pytest.raises(InterlockOpen, match="door open, emergency stop pressed"):
            dev.arm(spots)
