"""What the device says about itself: identity, limits and status, as typed values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drivers.protocol import Message
from drivers.protocol.messages import (
    NO_INDEX,
    Capability,
    Cause,
    DeviceFlag,
    FaultCode,
    Interlock,
    State,
)


def average_power_mw(energy_uj: Any, stack: Any, rate_hz: Any) -> Any:
    """Average power (mW) of spots of ``energy_uj`` per pulse and ``stack`` pulses each fired
    at ``rate_hz``: energy x stack x rate (numbers or numpy arrays). The rule the device's
    ``avg_power_max_mw`` limits, in one place for the drivers' checks and the planner."""
    return energy_uj * stack * rate_hz / 1000.0


def power_limited_rate_hz(energy_uj: float, stack: float, avg_power_mw: float) -> float:
    """The spot rate (Hz) at which spots of ``energy_uj`` x ``stack`` reach ``avg_power_mw``:
    :func:`average_power_mw` solved for the rate (not rounded)."""
    return avg_power_mw * 1000.0 / (energy_uj * stack)


@dataclass(frozen=True)
class DeviceLimits:
    """Limits from IDENTIFY_REPLY; the drivers check every value against them before sending."""

    field_size_um: int
    usable_lsb_min: int
    usable_lsb_max: int
    energy_min_uj: int
    energy_max_uj: int
    pulse_min_us: int
    pulse_max_us: int
    rep_rate_max_hz: int
    avg_power_max_mw: int
    buffer_spots: int
    max_stack: int
    watchdog_ms: int
    heartbeat_ms: int
    pre_emission_ms: int
    jump_speed_um_per_ms: int
    settle_us: int


@dataclass(frozen=True)
class DeviceInfo:
    """Identity, capabilities and limits of a connected device."""

    serial: str
    firmware: str
    protocol_version: int
    capabilities: Capability
    limits: DeviceLimits

    @classmethod
    def from_message(cls, msg: Message) -> DeviceInfo:
        """From an IDENTIFY_REPLY: the serial without its NUL padding, the firmware as
        ``major.minor.patch``."""
        v = msg.values
        limits = DeviceLimits(**{k: int(v[k]) for k in DeviceLimits.__dataclass_fields__})
        serial = bytes(v["serial"]).rstrip(b"\0").decode("ascii", "replace")
        return cls(serial, f"{int(v['fw_major'])}.{int(v['fw_minor'])}.{int(v['fw_patch'])}",
                   int(v["protocol_version"]), Capability(int(v["capabilities"])), limits)


@dataclass(frozen=True)
class DeviceStatus:
    """A STATUS_REPORT: state, interlocks and pass progress."""

    state: State
    interlocks: Interlock
    flags: DeviceFlag
    fault_code: FaultCode
    pass_index: int
    credits: int
    plan_checksum: int
    spot_count: int
    next_index: int
    delivered_count: int
    last_delivered: int | None
    uptime_ms: int
    temperature_c: float
    rep_rate_hz: int

    @classmethod
    def from_message(cls, msg: Message) -> DeviceStatus:
        """From a STATUS_REPORT: ``last_delivered`` None when no spot of the pass was fired, the
        temperature in °C (the wire carries 0.1 °C)."""
        v = {k: int(x) for k, x in msg.values.items()}
        return cls(
            state=State(v["state"]), interlocks=Interlock(v["interlocks"]),
            flags=DeviceFlag(v["flags"]), fault_code=FaultCode(v["fault_code"]),
            pass_index=v["pass_index"], credits=v["credits"], plan_checksum=v["plan_checksum"],
            spot_count=v["spot_count"], next_index=v["next_index"],
            delivered_count=v["delivered_count"],
            last_delivered=None if v["last_delivered"] == NO_INDEX else v["last_delivered"],
            uptime_ms=v["uptime_ms"], temperature_c=v["temperature_dc"] / 10.0,
            rep_rate_hz=v["rep_rate_hz"],
        )


@dataclass(frozen=True)
class StateEvent:
    """An EVT_STATE: the device's state change, why (``cause``) and its ``fault_code``, read
    in one place so that every user of the event (a stream, a safety mirror) reads it alike."""

    old_state: State
    new_state: State
    cause: Cause
    fault_code: FaultCode

    @classmethod
    def from_message(cls, msg: Message) -> StateEvent:
        """From an EVT_STATE (the codec refused values outside the enumerations)."""
        v = {k: int(x) for k, x in msg.values.items()}
        return cls(old_state=State(v["old_state"]), new_state=State(v["new_state"]),
                   cause=Cause(v["cause"]), fault_code=FaultCode(v["fault_code"]))


@dataclass(frozen=True)
class InterlockEvent:
    """An EVT_INTERLOCK: the interlock inputs before and after the change (a set bit permits
    emission)."""

    old: Interlock
    new: Interlock

    @classmethod
    def from_message(cls, msg: Message) -> InterlockEvent:
        """From an EVT_INTERLOCK."""
        return cls(old=Interlock(int(msg["old"])), new=Interlock(int(msg["new"])))
