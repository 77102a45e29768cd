"""Encode and decode protocol messages, checking every field against its definition."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivers.protocol.errors import MessageError
from drivers.protocol.framing import RawFrame, decode_frame, encode_frame
from drivers.protocol.messages import (
    BY_ID,
    BY_NAME,
    MAX_NACK_TEXT,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    Field,
    MessageDef,
)

Value = int | bytes


@dataclass(slots=True)
class Message:
    """One decoded (or to-be-encoded) message.

    ``values`` holds the fixed fields by name, ``records`` the structured numpy array of
    records for SPOT_BATCH / EVT_DELIVERED, ``text`` the NACK text.
    """

    name: str
    seq: int = 0
    values: dict[str, Value] = field(default_factory=dict)
    records: np.ndarray | None = None
    text: str = ""
    #: Set by a sender whose records were checked already (:func:`check_records`) and cannot
    #: have changed since (a read-only array): encoding then does not check them again.
    records_checked: bool = False

    @property
    def definition(self) -> MessageDef:
        """The layout of this message type (by its name)."""
        return BY_NAME[self.name]

    def __getitem__(self, key: str) -> Value:
        return self.values[key]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        same_records = (self.records is None and other.records is None) or (
            self.records is not None
            and other.records is not None
            and np.array_equal(self.records, other.records)
        )
        return (self.name, self.seq, self.values, self.text) == (
            other.name,
            other.seq,
            other.values,
            other.text,
        ) and same_records


_FieldCheck = tuple[Field, int | None, int, int, dict[int, Any] | None]


@dataclass(frozen=True, slots=True)
class _Checks:
    """What checking a message's values takes, worked out once per message type.

    ``encode`` holds every field, in order (any value may be given); ``decode`` only the
    fields an unpacked value can fail (bounds narrower than the type, or an enum); each as
    (field, byte size for a byte string else None, lo, hi, enum members). ``records`` holds
    the record fields whose bounds are narrower than their type, None for a side that cannot
    fail. Enum membership is looked up live, as :func:`_check_value` does.
    """

    definition: MessageDef
    names: tuple[str, ...]
    name_set: frozenset[str]
    reserved: bool
    encode: tuple[_FieldCheck, ...]
    decode: tuple[_FieldCheck, ...]
    records: tuple[tuple[str, int | None, int | None], ...]
    #: ``decode`` as (position among the fixed fields, lo, hi, enum members): an unpacked
    #: value is always of its type, so only its range and membership are compared
    unpacked: tuple[tuple[int, int, int, dict[int, Any] | None], ...]
    #: position of the record count among the fixed fields (-1: no records)
    count_at: int
    #: bytes per record (0: no records)
    itemsize: int

    @classmethod
    def of(cls, definition: MessageDef) -> _Checks:
        encode: list[_FieldCheck] = []
        decode: list[_FieldCheck] = []
        records = []
        for f in definition.fields:
            bounds = f.bounds()
            if bounds is None:
                encode.append((f, f.size, 0, 0, None))
                continue
            members = None if f.enum is None else f.enum._value2member_map_
            encode.append((f, None, *bounds, members))
            if bounds != _type_range(f) or members is not None:
                decode.append((f, None, *bounds, members))
        for f in definition.record:
            (lo, hi), (type_lo, type_hi) = f.bounds() or (0, 0), _type_range(f)
            if (lo, hi) != (type_lo, type_hi):
                records.append((f.name, None if lo == type_lo else lo,
                                None if hi == type_hi else hi))
        names = tuple(f.name for f in definition.fields)
        unpacked = tuple((names.index(f.name), lo, hi, members)
                         for f, _, lo, hi, members in decode)
        count_at = names.index(definition.count) if definition.count else -1
        itemsize = 0 if definition.record_dtype is None else definition.record_dtype.itemsize
        return cls(definition, names, frozenset(names), "reserved" in names, tuple(encode),
                   tuple(decode), tuple(records), unpacked, count_at, itemsize)


def _type_range(f: Field) -> tuple[int, int]:
    """The range of the field's wire type (what unpacking can give)."""
    return dataclasses.replace(f, lo=None, hi=None).bounds() or (0, 0)


_CHECKS = {name: _Checks.of(definition) for name, definition in BY_NAME.items()}
_CHECKS_BY_ID = {definition.type_id: _CHECKS[definition.name] for definition in BY_ID.values()}


def message(
    name: str, seq: int = 0, records: Any = None, text: str = "", **values: Value
) -> Message:
    """Build a message; the record count field is filled from ``records``."""
    definition = BY_NAME.get(name)
    if definition is None:
        raise MessageError(f"unknown message name {name!r}")
    if definition.count:
        values[definition.count] = 0 if records is None else len(records)
    if _CHECKS[name].reserved:
        values.setdefault("reserved", 0)
    return Message(name, seq, values, records, text)


def narrow_record_bounds(definition: MessageDef) -> tuple[tuple[str, int | None, int | None], ...]:
    """The record fields whose bounds are narrower than their wire type, as (name, lo, hi)
    with None for a side that records of the record dtype cannot exceed."""
    return _CHECKS[definition.name].records


def _check_value(where: str, f: Field, value: Value) -> None:
    bounds = f.bounds()
    if bounds is None:
        if not isinstance(value, bytes) or len(value) != f.size:
            raise MessageError(f"{where}.{f.name}: expected {f.size} bytes")
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise MessageError(f"{where}.{f.name}: expected an integer, got {value!r}")
    lo, hi = bounds
    if not lo <= value <= hi:
        raise MessageError(f"{where}.{f.name} = {value} outside {lo}..{hi}")
    if f.enum is not None and value not in f.enum._value2member_map_:
        allowed = ", ".join(f"{m.name}={m.value}" for m in f.enum)
        raise MessageError(f"{where}.{f.name} = {value} is not one of {allowed}")


def _check_records(where: str, definition: MessageDef, records: np.ndarray) -> None:
    """Every record field within its bounds; ``records`` already has the record dtype, so
    only bounds narrower than a field's type are compared."""
    narrow = _CHECKS[definition.name].records
    if not len(records) or not narrow:
        return
    for name, lo, hi in narrow:
        column = records[name]
        if (lo is not None and column.min() < lo) or (hi is not None and column.max() > hi):
            f = next(f for f in definition.record if f.name == name)
            lo, hi = f.bounds() or (0, 0)
            bad = int(column[(column < lo) | (column > hi)][0])
            raise MessageError(f"{where} record {name} = {bad} outside {lo}..{hi}")


def check_records(name: str, records: np.ndarray) -> None:
    """Check records of message ``name`` (already of its record dtype) against their bounds,
    as encoding does; raises :class:`MessageError`. A sender that checked a read-only array
    once may mark messages carrying slices of it ``records_checked``."""
    _check_records(name, BY_NAME[name], records)


def _check_values(where: str, values: dict[str, Value], checks: tuple[_FieldCheck, ...]) -> None:
    """:func:`_check_value` over ``checks`` in order, with a fast path for plain values."""
    for f, size, lo, hi, members in checks:
        value = values[f.name]
        if size is not None:
            if type(value) is not bytes or len(value) != size:
                _check_value(where, f, value)
        elif type(value) is not int or not lo <= value <= hi or (
                members is not None and value not in members):
            _check_value(where, f, value)


def _check_order(definition: MessageDef, values: dict[str, Any]) -> None:
    """The relations ``definition.order`` between fixed values (:class:`MessageError`)."""
    for small, large, strict in definition.order:
        a, b = values[small], values[large]
        if a >= b if strict else a > b:
            raise MessageError(f"{definition.name}.{small} = {a} must be "
                               f"{'below' if strict else 'at most'} {large} = {b}")


def encode_payload(msg: Message) -> bytes:
    """Payload bytes of ``msg`` after checking every field."""
    return b"".join(_payload_parts(msg))


def _payload_parts(msg: Message) -> tuple[bytes, ...]:
    """The payload of ``msg`` in pieces (fixed fields, then records or text), checked."""
    checks = _CHECKS[msg.name]
    definition = checks.definition
    values = msg.values
    if values.keys() != checks.name_set:
        missing = [name for name in checks.names if name not in values]
        extra = sorted(set(values) - checks.name_set)
        raise MessageError(f"{msg.name}: missing fields {missing}, unknown fields {extra}")
    _check_values(msg.name, values, checks.encode)
    if definition.order:  # (IDENTIFY_REPLY only: not on the spot batches' path)
        _check_order(definition, values)
    fixed = definition.struct.pack(*map(values.__getitem__, checks.names))
    if definition.record_dtype is not None:
        given: np.ndarray | list[object] = msg.records if msg.records is not None else []
        records = np.asarray(given, definition.record_dtype)
        if len(records) != values[definition.count]:
            raise MessageError(f"{msg.name}: count field disagrees with {len(records)} records")
        if not (msg.records_checked and records is given):  # a conversion is checked anew
            _check_records(msg.name, definition, records)
        parts: tuple[bytes, ...] = (fixed, records.tobytes())
        size = len(fixed) + records.nbytes
    elif definition.text:
        raw = msg.text.encode("ascii", "replace")[:MAX_NACK_TEXT]
        parts = (fixed, bytes(b if 0x20 <= b <= 0x7E else 0x3F for b in raw))
        size = len(fixed) + len(parts[1])
    else:
        parts, size = (fixed,), len(fixed)
    if size > MAX_PAYLOAD:
        raise MessageError(f"{msg.name}: payload {size} bytes exceeds {MAX_PAYLOAD}")
    return parts


def encode(msg: Message) -> bytes:
    """Wire bytes (COBS frame with delimiter) of ``msg``."""
    parts = _payload_parts(msg)  # at most MAX_PAYLOAD bytes, checked there
    return encode_frame(_CHECKS[msg.name].definition.type_id, msg.seq,
                        parts[0] if len(parts) == 1 else b"".join(parts), PROTOCOL_VERSION)


def _checked_layout(frame: RawFrame) -> tuple[_Checks, tuple[Any, ...], int]:
    """The checks of ``frame``'s message type, its fixed values and its record count (-1:
    none), after the version, type, length, fixed-value and record-length checks
    (:class:`MessageError` otherwise)."""
    if frame.version != PROTOCOL_VERSION:
        raise MessageError(f"protocol version {frame.version}, expected {PROTOCOL_VERSION}")
    checks = _CHECKS_BY_ID.get(frame.type_id)
    if checks is None:
        raise MessageError(f"unknown message type 0x{frame.type_id:02X}")
    definition = checks.definition
    payload = frame.payload
    fixed = definition.struct.size
    if len(payload) < fixed:
        raise MessageError(f"{definition.name}: payload {len(payload)} bytes, needs {fixed}")
    raw_values = definition.struct.unpack_from(payload)
    for position, lo, hi, members in checks.unpacked:
        value = raw_values[position]
        if not lo <= value <= hi or (members is not None and value not in members):
            _check_value(definition.name, definition.fields[position], value)  # raises
    if definition.order:
        _check_order(definition, dict(zip(checks.names, raw_values, strict=True)))
    if checks.count_at < 0:
        return checks, raw_values, -1
    count = int(raw_values[checks.count_at])
    itemsize = checks.itemsize
    if len(payload) - fixed != count * itemsize:
        raise MessageError(f"{definition.name}: {count} records need {count * itemsize} "
                           f"bytes, got {len(payload) - fixed}")
    return checks, raw_values, count


def decode_payload(frame: RawFrame, records_checked: bool = False) -> Message:
    """Interpret a checked frame; raises :class:`MessageError` on anything unexpected.

    ``records_checked``: the caller has already checked every record against its bounds
    (:func:`narrow_record_bounds`), so that is not done again.
    """
    checks, raw_values, count = _checked_layout(frame)
    definition = checks.definition
    fixed = definition.struct.size
    payload = frame.payload
    values: dict[str, Value] = dict(zip(checks.names, raw_values, strict=True))
    records = None
    text = ""
    if count >= 0:
        records = np.frombuffer(payload, definition.record_dtype, count, fixed)
        if not records_checked and checks.records:
            _check_records(definition.name, definition, records)
    elif definition.text:
        tail = payload[fixed:]
        if len(tail) > MAX_NACK_TEXT or any(b < 0x20 or b > 0x7E for b in tail):
            raise MessageError(
                f"{definition.name}: text must be <= {MAX_NACK_TEXT} printable ASCII bytes"
            )
        text = tail.decode("ascii")
    elif len(payload) > fixed:
        raise MessageError(f"{definition.name}: {len(payload) - fixed} unexpected trailing bytes")
    return Message(definition.name, frame.seq, values, records, text)


def joined_records(frames: Sequence[RawFrame]) -> tuple[np.ndarray, Message] | None:
    """The records of consecutive frames (at least one) of one record-carrying message type,
    joined in order, and the last frame decoded; None when any frame would not decode (decode
    them one by one then, to learn why). The checks are :func:`decode_payload`'s, without
    making a message of each frame."""
    kind = _CHECKS_BY_ID.get(frames[0].type_id)
    if kind is None or kind.count_at < 0:
        return None
    tails = []
    try:
        for frame in frames:
            checks, _, _ = _checked_layout(frame)
            if checks is not kind:
                return None
            tails.append(frame.payload[kind.definition.struct.size:])
        definition = kind.definition
        records = np.frombuffer(b"".join(tails), definition.record_dtype)
        if kind.records:
            _check_records(definition.name, definition, records)
        return records, decode_payload(frames[-1])
    except MessageError:
        return None


def decode(encoded: bytes) -> Message:
    """Decode one frame (without delimiter) into a message."""
    return decode_payload(decode_frame(encoded))
