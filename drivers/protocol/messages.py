"""The single source of truth for co2scan wire protocol v1: ids, layouts, enums and limits.

``firmware_protocol.md`` renders its tables from this module (see :mod:`drivers.protocol.spec`)
and a test checks that the document and this module agree. Everything is little-endian.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

import numpy as np

PROTOCOL_VERSION = 1

#: Frame header: version u8, message type u8, sequence u16, payload length u16.
HEADER = struct.Struct("<BBHH")
#: Frame trailer: CRC-32 (zlib / ISO-HDLC) over header + payload.
CRC = struct.Struct("<I")
#: Largest payload a frame may carry, in bytes.
MAX_PAYLOAD = 4096
#: Largest frame before COBS encoding: header + payload + CRC.
MAX_FRAME = HEADER.size + MAX_PAYLOAD + CRC.size
#: Bound on a COBS-encoded frame on the wire, both delimiters included (the largest is one
#: byte shorter); receivers discard a run between delimiters longer than this.
MAX_WIRE_FRAME = MAX_FRAME + (MAX_FRAME + 253) // 254 + 1 + 2
#: Value of a u32 index field meaning "none yet".
NO_INDEX = 0xFFFFFFFF
#: Longest NACK text, in bytes of ASCII.
MAX_NACK_TEXT = 64
#: Prefix of the HMAC-SHA256 message in service-mode authentication.
AUTH_CONTEXT = b"CO2SCAN-AUTH-v1"
#: Sizes of the authentication nonce, the MAC and the device key, in bytes.
NONCE_SIZE = 16
MAC_SIZE = 32
KEY_SIZE = 32
SERIAL_SIZE = 16
#: USB identity of the device: vendor/product id and its bulk endpoints (interface 0).
USB_VENDOR_ID = 0x1209
USB_PRODUCT_ID = 0xC025
USB_EP_OUT = 0x01
USB_EP_IN = 0x81
#: A galvo position is an unsigned 16-bit offset-binary value; the field centre is 0x8000.
GALVO_CENTRE_LSB = 0x8000
GALVO_FULL_SCALE_LSB = 0x10000


class State(enum.IntEnum):
    """Device states (one byte on the wire)."""

    STANDBY = 0
    READY = 1
    ARMED = 2
    EMITTING = 3
    PAUSED = 4
    FAULT = 5


class Interlock(enum.IntFlag):
    """Interlock bits: a set bit means the condition that permits emission holds."""

    KEY_ON = 0x01
    DOOR_CLOSED = 0x02
    ESTOP_RELEASED = 0x04
    FOOTSWITCH_DOWN = 0x08


#: Bits that must all be set for the device to be armed or to stay out of FAULT.
SAFETY_INTERLOCKS = Interlock.KEY_ON | Interlock.DOOR_CLOSED | Interlock.ESTOP_RELEASED


class DeviceFlag(enum.IntFlag):
    """Status flags (u16)."""

    EMISSION_INDICATOR = 0x0001
    AIMING_BEAM = 0x0002
    SHUTTER_OPEN = 0x0004
    SERVICE_MODE = 0x0008
    PLAN_LOADED = 0x0010
    OVER_TEMPERATURE = 0x0020
    LASER_ON = 0x0040


class ErrorCode(enum.IntEnum):
    """NACK error codes."""

    UNKNOWN_MESSAGE = 1
    BAD_LENGTH = 2
    ILLEGAL_STATE = 3
    OUT_OF_RANGE = 4
    BUFFER_FULL = 5
    INTERLOCK_OPEN = 6
    NOT_AUTHENTICATED = 7
    AUTH_FAILED = 8
    PLAN_MISMATCH = 9
    BAD_INDEX = 10
    INDICATOR_DELAY = 11
    FOOTSWITCH_UP = 12
    BAD_VERSION = 13
    FAULT_ACTIVE = 14


class FaultCode(enum.IntEnum):
    """Why the device is (or was last) in FAULT."""

    NONE = 0
    INTERLOCK_OPEN = 1
    KEY_OFF = 2
    ESTOP = 3
    WATCHDOG = 4
    GALVO_STUCK = 5
    OVER_TEMPERATURE = 6
    DEVICE_RESET = 7
    HOST_REQUEST = 8
    ENERGY_DEVIATION = 9


#: Fault codes the host may raise with RAISE_FAULT.
HOST_FAULTS = (FaultCode.HOST_REQUEST, FaultCode.ENERGY_DEVIATION)


class Cause(enum.IntEnum):
    """Why a state changed (EVT_STATE)."""

    HOST_COMMAND = 1
    FOOTSWITCH = 2
    INTERLOCK = 3
    WATCHDOG = 4
    PLAN_COMPLETE = 5
    DEVICE_FAULT = 6
    POWER_ON = 7


class Capability(enum.IntFlag):
    """Capability bits in IDENTIFY_REPLY."""

    AIMING_BEAM = 0x01
    ENERGY_MONITOR = 0x02
    DISTORTION_CORRECTION = 0x04
    SERVICE_AUTH = 0x08


@dataclass(frozen=True)
class Field:
    """One fixed-size field of a payload.

    ``fmt`` is a :mod:`struct` code; ``lo``/``hi`` bound the value (inclusive) where the
    protocol restricts it further than the type does; ``enum`` names the enum a value must
    belong to.
    """

    name: str
    fmt: str
    unit: str = ""
    doc: str = ""
    lo: int | None = None
    hi: int | None = None
    enum: type[enum.IntEnum] | type[enum.IntFlag] | None = None

    @property
    def size(self) -> int:
        """Bytes the field takes on the wire."""
        return struct.calcsize("<" + self.fmt)

    def bounds(self) -> tuple[int, int] | None:
        """Allowed inclusive range of an integer field, or None for byte strings."""
        if self.fmt.endswith("s"):
            return None
        bits = self.size * 8
        signed = self.fmt.islower()
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        return (lo if self.lo is None else self.lo, hi if self.hi is None else self.hi)


class Direction(enum.Enum):
    """Who sends a message: the host (a request), the device (its reply) or the device unasked
    (an event)."""

    HOST = "host -> device"
    DEVICE = "device -> host"
    EVENT = "device -> host, unsolicited"


@dataclass(frozen=True)
class MessageDef:
    """Layout of one message type.

    The payload is the fixed ``fields`` in order, then either ``count`` records of
    ``record`` (``count`` names a fixed field holding the number of records), or an ASCII
    ``text`` tail of at most :data:`MAX_NACK_TEXT` bytes, or nothing.
    """

    name: str
    type_id: int
    direction: Direction
    doc: str
    fields: tuple[Field, ...] = ()
    record: tuple[Field, ...] = ()
    count: str = ""
    text: bool = False
    legal_in: tuple[State, ...] = ()
    service: bool = False
    #: relations between fixed fields, each (smaller, larger, strict): ``smaller < larger``
    #: when strict, else ``smaller <= larger``
    order: tuple[tuple[str, str, bool], ...] = ()
    struct: struct.Struct = field(init=False, repr=False, compare=False)
    record_dtype: np.dtype | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "struct", struct.Struct("<" + "".join(f.fmt for f in self.fields)))
        dtype = (
            np.dtype([(f.name, "<" + f.fmt) for f in self.record]) if self.record else None
        )
        object.__setattr__(self, "record_dtype", dtype)

    @property
    def max_records(self) -> int:
        """The most records one payload holds (within MAX_PAYLOAD); 0 for a message without
        records."""
        if self.record_dtype is None:
            return 0
        return (MAX_PAYLOAD - self.struct.size) // self.record_dtype.itemsize


ALL_STATES = tuple(State)
IDLE = (State.STANDBY, State.READY)
ACTIVE = (State.ARMED, State.EMITTING, State.PAUSED)

U8, U16, U32, I16, I32 = "B", "H", "I", "h", "i"

SPOT_RECORD = (
    Field("index", U32, "", "spot index within the pass, 0-based"),
    Field("x_lsb", U16, "LSB", "galvo X position, offset binary"),
    Field("y_lsb", U16, "LSB", "galvo Y position, offset binary"),
    Field("energy_uj", U32, "µJ", "energy per pulse", lo=1),
    Field("pulse_us", U16, "µs", "pulse width", lo=1),
    Field("stack", U8, "", "pulses fired on this spot", lo=1, hi=16),
    Field("flags", U8, "", "reserved, must be 0", hi=0),
)

DELIVERED_RECORD = (
    Field("index", U32, "", "spot index that fired"),
    Field("measured_uj", U32, "µJ", "energy measured by the monitor (sum over the stack)"),
)

MESSAGES: tuple[MessageDef, ...] = (
    # -- host -> device ---------------------------------------------------------------
    MessageDef("IDENTIFY", 0x01, Direction.HOST, "Ask for identity and limits.",
               legal_in=ALL_STATES),
    MessageDef("HEARTBEAT", 0x02, Direction.HOST,
               "Keep the watchdog fed; send at least every heartbeat_ms.", legal_in=ALL_STATES),
    MessageDef("STATUS_REQUEST", 0x03, Direction.HOST, "Ask for a STATUS_REPORT.",
               legal_in=ALL_STATES),
    MessageDef("AUTH_BEGIN", 0x04, Direction.HOST,
               "Start service-mode authentication; the device answers AUTH_CHALLENGE.",
               legal_in=(State.STANDBY,)),
    MessageDef("AUTH_RESPONSE", 0x05, Direction.HOST,
               "Prove knowledge of the device key.",
               fields=(Field("mac", f"{MAC_SIZE}s", "", "HMAC-SHA256(key, AUTH_CONTEXT + nonce)"),),
               legal_in=(State.STANDBY,)),
    MessageDef("AUTH_END", 0x06, Direction.HOST, "Leave service mode.", legal_in=ALL_STATES),
    MessageDef("SET_CALIBRATION", 0x07, Direction.HOST,
               "Set the field calibration applied by the device before driving the galvo.",
               fields=(
                   Field("field_size_um", U32, "µm", "field edge length mapped onto 65536 LSB",
                         lo=1000, hi=100_000),
                   Field("x_gain_ppm", I32, "ppm", "X gain correction", lo=-50_000, hi=50_000),
                   Field("y_gain_ppm", I32, "ppm", "Y gain correction", lo=-50_000, hi=50_000),
                   Field("x_offset_lsb", I16, "LSB", "X offset correction", lo=-2048, hi=2048),
                   Field("y_offset_lsb", I16, "LSB", "Y offset correction", lo=-2048, hi=2048),
               ),
               legal_in=(State.STANDBY,), service=True),
    MessageDef("SET_LIMITS", 0x08, Direction.HOST,
               "Lower the working limits; each must not exceed the factory limit.",
               fields=(
                   Field("energy_max_uj", U32, "µJ", "highest energy per pulse", lo=1),
                   Field("rep_rate_max_hz", U32, "Hz", "highest spot rate", lo=1),
                   Field("avg_power_max_mw", U32, "mW", "highest average power", lo=1),
               ),
               legal_in=(State.STANDBY,), service=True),
    MessageDef("SET_DEVICE_KEY", 0x09, Direction.HOST, "Replace the service key.",
               fields=(Field("key", f"{KEY_SIZE}s", "", "new HMAC key"),),
               legal_in=(State.STANDBY,), service=True),
    MessageDef("GALVO_JUMP", 0x10, Direction.HOST,
               "Move the mirrors (no emission); ACK value = jump time in µs.",
               fields=(Field("x_lsb", U16, "LSB", "target X"),
                       Field("y_lsb", U16, "LSB", "target Y")),
               legal_in=IDLE),
    MessageDef("AIMING_BEAM", 0x11, Direction.HOST, "Switch the visible aiming beam.",
               fields=(Field("on", U8, "", "1 = on, 0 = off", hi=1),),
               legal_in=(State.STANDBY, State.READY, State.ARMED, State.PAUSED)),
    MessageDef("PULSE_SETTINGS", 0x12, Direction.HOST,
               "Set the spot repetition rate used while emitting.",
               fields=(Field("rep_rate_hz", U32, "Hz", "spots per second", lo=1),),
               legal_in=IDLE),
    MessageDef("LOAD_PLAN", 0x20, Direction.HOST,
               "Announce a pass; answered by PLAN_LOADED. Clears the spot buffer.",
               fields=(
                   Field("pass_index", U8, "", "the host's number for the pass (any; keys rule 1)"),
                   Field("spot_count", U32, "", "spots in the pass", lo=1),
                   Field("plan_checksum", U32, "", "CRC-32 of all SPOT records of the pass"),
                   Field("first_index", U32, "", "first spot to stream (resume point)"),
               ),
               legal_in=IDLE),
    MessageDef("SPOT_BATCH", 0x21, Direction.HOST,
               "Queue spots; indices consecutive from the device's next_index.",
               fields=(Field("count", U16, "", "records that follow", lo=1,
                             hi=(MAX_PAYLOAD - 4) // 16),
                       Field("reserved", U16, "", "must be 0", hi=0)),
               record=SPOT_RECORD, count="count",
               legal_in=(State.READY, State.ARMED, State.EMITTING, State.PAUSED)),
    MessageDef("ARM", 0x22, Direction.HOST,
               "Arm: emission indicator on, pre-emission delay starts.",
               fields=(Field("plan_checksum", U32, "", "must equal LOAD_PLAN's"),),
               legal_in=(State.READY,)),
    MessageDef("DISARM", 0x23, Direction.HOST, "Back to READY; emission indicator off.",
               legal_in=(State.ARMED, State.PAUSED)),
    MessageDef("START", 0x24, Direction.HOST, "Begin emitting buffered spots.",
               legal_in=(State.ARMED,)),
    MessageDef("PAUSE", 0x25, Direction.HOST, "Stop after the current spot.",
               legal_in=(State.EMITTING,)),
    MessageDef("RESUME", 0x26, Direction.HOST, "Continue after a pause.",
               legal_in=(State.PAUSED,)),
    MessageDef("ABORT", 0x27, Direction.HOST,
               "End the pass now: emission off, buffer cleared, plan unloaded.",
               legal_in=(State.READY, State.ARMED, State.EMITTING, State.PAUSED)),
    MessageDef("RESET_FAULT", 0x28, Direction.HOST,
               "Operator reset of a fault; needs every safety interlock closed.",
               legal_in=(State.FAULT,)),
    MessageDef("RAISE_FAULT", 0x29, Direction.HOST,
               "Host-detected fault (e.g. energy deviation): emission off, FAULT.",
               fields=(Field("fault_code", U8, "", "HOST_REQUEST or ENERGY_DEVIATION",
                             lo=int(FaultCode.HOST_REQUEST), hi=int(FaultCode.ENERGY_DEVIATION)),),
               legal_in=ALL_STATES),
    # -- device -> host replies -----------------------------------------------------------
    MessageDef("ACK", 0x80, Direction.DEVICE, "Request accepted.",
               fields=(
                   Field("acked_type", U8, "", "type id of the request"),
                   Field("state", U8, "", "device state after the request", enum=State),
                   Field("credits", U16, "spots", "free spot-buffer slots"),
                   Field("value", U32, "",
                         "SPOT_BATCH: the new next_index; GALVO_JUMP: jump time in µs; else 0"),
               )),
    MessageDef("NACK", 0x81, Direction.DEVICE, "Request refused; nothing changed.",
               fields=(
                   Field("refused_type", U8, "", "type id of the request"),
                   Field("error", U8, "", "error code", enum=ErrorCode),
                   Field("state", U8, "", "device state", enum=State),
                   Field("reserved", U8, "", "0", hi=0),
                   Field("detail", U32, "", "per error: section 2.2"),
               ),
               text=True),
    MessageDef("IDENTIFY_REPLY", 0x82, Direction.DEVICE, "Identity, capabilities and limits.",
               fields=(
                   Field("protocol_version", U8, "", "PROTOCOL_VERSION"),
                   Field("fw_major", U8), Field("fw_minor", U8), Field("fw_patch", U8),
                   Field("serial", f"{SERIAL_SIZE}s", "", "ASCII, NUL padded"),
                   Field("capabilities", U32, "", "Capability bits (section 4.2)"),
                   Field("field_size_um", U32, "µm", "field edge length over 65536 LSB",
                         lo=1000, hi=100_000),
                   Field("usable_lsb_min", U16, "LSB", "lowest reachable position"),
                   Field("usable_lsb_max", U16, "LSB", "highest reachable position"),
                   Field("energy_min_uj", U32, "µJ", "lowest energy per pulse", lo=1),
                   Field("energy_max_uj", U32, "µJ", "highest energy per pulse", lo=1),
                   Field("pulse_min_us", U16, "µs", "shortest pulse", lo=1),
                   Field("pulse_max_us", U16, "µs", "longest pulse", lo=1),
                   Field("rep_rate_max_hz", U32, "Hz", "highest spot rate", lo=1),
                   Field("avg_power_max_mw", U32, "mW", "highest average power", lo=1),
                   Field("buffer_spots", U16, "spots", "spot-buffer capacity", lo=1),
                   Field("max_stack", U8, "", "most pulses per spot", lo=1, hi=16),
                   Field("reserved", U8, "", "0", hi=0),
                   Field("watchdog_ms", U16, "ms", "watchdog timeout", lo=1),
                   Field("heartbeat_ms", U16, "ms", "host heartbeat interval", lo=1),
                   Field("pre_emission_ms", U16, "ms", "indicator-on time before START"),
                   Field("jump_speed_um_per_ms", U16, "µm/ms", "galvo slew speed", lo=1),
                   Field("settle_us", U16, "µs", "galvo settling after a jump"),
               ),
               # a host refuses limits it could not keep to (a reply breaking one is invalid)
               order=(("usable_lsb_min", "usable_lsb_max", True),
                      ("energy_min_uj", "energy_max_uj", False),
                      ("pulse_min_us", "pulse_max_us", False),
                      ("heartbeat_ms", "watchdog_ms", True))),
    MessageDef("STATUS_REPORT", 0x83, Direction.DEVICE, "Device state and progress.",
               fields=(
                   Field("state", U8, "", "State", enum=State),
                   Field("interlocks", U8, "", "Interlock bits", hi=0x0F),
                   Field("flags", U16, "", "DeviceFlag bits"),
                   Field("fault_code", U8, "", "FaultCode", enum=FaultCode),
                   Field("pass_index", U8, "",
                         "the pass last loaded or restored, kept after its completion "
                         "or ABORT; 0 if none (section 4.3)"),
                   Field("credits", U16, "spots", "free spot-buffer slots"),
                   Field("plan_checksum", U32, "",
                         "that pass's checksum, kept after its completion or ABORT; "
                         "0 if none"),
                   Field("spot_count", U32, "",
                         "that pass's spot count, kept after its completion or ABORT; "
                         "0 if none"),
                   Field("next_index", U32, "",
                         "index the next SPOT_BATCH must start at; 0 if none"),
                   Field("delivered_count", U32, "",
                         "spots of that pass fired since its LOAD_PLAN; 0 if none"),
                   Field("last_delivered", U32, "",
                         "last index of that pass fired, 0xFFFFFFFF = none"),
                   Field("uptime_ms", U32, "ms", "since power-on or reset, modulo 2^32"),
                   Field("temperature_dc", I16, "0.1 °C", "laser head temperature"),
                   Field("rep_rate_hz", U16, "Hz",
                         "spot rate in use (65535 if higher; section 5, rule 11)"),
               )),
    MessageDef("AUTH_CHALLENGE", 0x84, Direction.DEVICE, "Fresh single-use nonce.",
               fields=(Field("nonce", f"{NONCE_SIZE}s", "", "random"),)),
    MessageDef("PLAN_LOADED", 0x85, Direction.DEVICE, "Echo of the accepted LOAD_PLAN.",
               fields=(
                   Field("pass_index", U8, ""),
                   Field("spot_count", U32, ""),
                   Field("plan_checksum", U32, ""),
                   Field("next_index", U32, "", "first index the device will accept"),
                   Field("credits", U16, "spots", "free spot-buffer slots"),
               )),
    # -- device -> host events --------------------------------------------------------------
    MessageDef("EVT_DELIVERED", 0x90, Direction.EVENT,
               "Spots fired since the last report, in firing order.",
               fields=(Field("count", U16, "",
                             "records that follow; the device sends at most 64 (section 6.1)",
                             lo=1, hi=(MAX_PAYLOAD - 4) // 8),
                       Field("credits", U16, "spots",
                             "free spot-buffer slots when the report is sent (section 6.1)")),
               record=DELIVERED_RECORD, count="count"),
    MessageDef("EVT_STATE", 0x91, Direction.EVENT, "The device changed state.",
               fields=(
                   Field("old_state", U8, "", "State", enum=State),
                   Field("new_state", U8, "", "State", enum=State),
                   Field("cause", U8, "", "Cause", enum=Cause),
                   Field("fault_code", U8, "", "FaultCode", enum=FaultCode),
               )),
    MessageDef("EVT_INTERLOCK", 0x92, Direction.EVENT, "An interlock input changed.",
               fields=(Field("old", U8, "", "Interlock bits", hi=0x0F),
                       Field("new", U8, "", "Interlock bits", hi=0x0F))),
)

BY_NAME: dict[str, MessageDef] = {m.name: m for m in MESSAGES}
BY_ID: dict[int, MessageDef] = {m.type_id: m for m in MESSAGES}
assert len(BY_ID) == len(MESSAGES), "duplicate message type id"


def _records_of(name: str) -> np.dtype:
    """The record dtype of a message that carries records."""
    dtype = BY_NAME[name].record_dtype
    assert dtype is not None, f"{name} carries records"
    return dtype


SPOT_DTYPE = _records_of("SPOT_BATCH")
DELIVERED_DTYPE = _records_of("EVT_DELIVERED")
MAX_BATCH_SPOTS = BY_NAME["SPOT_BATCH"].max_records
