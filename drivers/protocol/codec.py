"""Encode and decode protocol messages, checking every field against its definition."""

from __future__ import annotations

import dataclasses
import struct
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

    @property
    def definition(self) -> MessageDef:
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

    names: tuple[str, ...]
    name_set: frozenset[str]
    reserved: bool
    encode: tuple[_FieldCheck, ...]
    decode: tuple[_FieldCheck, ...]
    records: tuple[tuple[str, int | None, int | None], ...]

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
        return cls(names, frozenset(names), "reserved" in names, tuple(encode), tuple(decode),
                   tuple(records))


def _type_range(f: Field) -> tuple[int, int]:
    """The range of the field's wire type (what unpacking can give)."""
    return dataclasses.replace(f, lo=None, hi=None).bounds() or (0, 0)


_CHECKS = {name: _Checks.of(definition) for name, definition in BY_NAME.items()}


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
    if not len(records):
        return
    for name, lo, hi in _CHECKS[definition.name].records:
        column = records[name]
        if (lo is not None and column.min() < lo) or (hi is not None and column.max() > hi):
            f = next(f for f in definition.record if f.name == name)
            lo, hi = f.bounds() or (0, 0)
            bad = int(column[(column < lo) | (column > hi)][0])
            raise MessageError(f"{where} record {name} = {bad} outside {lo}..{hi}")


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


def encode_payload(msg: Message) -> bytes:
    """Payload bytes of ``msg`` after checking every field."""
    definition = msg.definition
    checks = _CHECKS[msg.name]
    values = msg.values
    if values.keys() != checks.name_set:
        missing = [name for name in checks.names if name not in values]
        extra = sorted(set(values) - checks.name_set)
        raise MessageError(f"{msg.name}: missing fields {missing}, unknown fields {extra}")
    _check_values(msg.name, values, checks.encode)
    payload = definition.struct.pack(*[values[name] for name in checks.names])
    if definition.record_dtype is not None:
        given = msg.records if msg.records is not None else []
        records = np.asarray(given, definition.record_dtype)
        if len(records) != values[definition.count]:
            raise MessageError(f"{msg.name}: count field disagrees with {len(records)} records")
        _check_records(msg.name, definition, records)
        payload += records.tobytes()
    elif definition.text:
        raw = msg.text.encode("ascii", "replace")[:MAX_NACK_TEXT]
        payload += bytes(b if 0x20 <= b <= 0x7E else 0x3F for b in raw)
    if len(payload) > MAX_PAYLOAD:
        raise MessageError(f"{msg.name}: payload {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return payload


def encode(msg: Message) -> bytes:
    """Wire bytes (COBS frame with delimiter) of ``msg``."""
    return encode_frame(msg.definition.type_id, msg.seq, encode_payload(msg))


def decode_payload(frame: RawFrame, records_checked: bool = False) -> Message:
    """Interpret a checked frame; raises :class:`MessageError` on anything unexpected.

    ``records_checked``: the caller has already checked every record against its bounds
    (:func:`narrow_record_bounds`), so that is not done again.
    """
    if frame.version != PROTOCOL_VERSION:
        raise MessageError(f"protocol version {frame.version}, expected {PROTOCOL_VERSION}")
    definition = BY_ID.get(frame.type_id)
    if definition is None:
        raise MessageError(f"unknown message type 0x{frame.type_id:02X}")
    fixed = definition.struct.size
    payload = frame.payload
    if len(payload) < fixed:
        raise MessageError(f"{definition.name}: payload {len(payload)} bytes, needs {fixed}")
    try:
        raw_values = definition.struct.unpack_from(payload)
    except struct.error as exc:  # pragma: no cover - length checked above
        raise MessageError(f"{definition.name}: {exc}") from None
    checks = _CHECKS[definition.name]
    values: dict[str, Value] = dict(zip(checks.names, raw_values, strict=True))
    _check_values(definition.name, values, checks.decode)
    tail = payload[fixed:]
    records = None
    text = ""
    if definition.record_dtype is not None:
        count = int(values[definition.count])
        expected = count * definition.record_dtype.itemsize
        if len(tail) != expected:
            raise MessageError(
                f"{definition.name}: {count} records need {expected} bytes, got {len(tail)}"
            )
        records = np.frombuffer(tail, definition.record_dtype)
        if not records_checked:
            _check_records(definition.name, definition, records)
    elif definition.text:
        if len(tail) > MAX_NACK_TEXT or any(b < 0x20 or b > 0x7E for b in tail):
            raise MessageError(
                f"{definition.name}: text must be <= {MAX_NACK_TEXT} printable ASCII bytes"
            )
        text = tail.decode("ascii")
    elif tail:
        raise MessageError(f"{definition.name}: {len(tail)} unexpected trailing bytes")
    return Message(definition.name, frame.seq, values, records, text)


def decode(encoded: bytes) -> Message:
    """Decode one frame (without delimiter) into a message."""
    return decode_payload(decode_frame(encoded))
