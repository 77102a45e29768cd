"""Encode and decode protocol messages, checking every field against its definition."""

from __future__ import annotations

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


def message(
    name: str, seq: int = 0, records: Any = None, text: str = "", **values: Value
) -> Message:
    """Build a message; the record count field is filled from ``records``."""
    definition = BY_NAME.get(name)
    if definition is None:
        raise MessageError(f"unknown message name {name!r}")
    if definition.count:
        values[definition.count] = 0 if records is None else len(records)
    for f in definition.fields:
        if f.name == "reserved":
            values.setdefault("reserved", 0)
    return Message(name, seq, values, records, text)


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
    for f in definition.record:
        lo, hi = f.bounds() or (0, 0)
        column = records[f.name]
        if column.size and (column.min() < lo or column.max() > hi):
            bad = int(column[(column < lo) | (column > hi)][0])
            raise MessageError(f"{where} record {f.name} = {bad} outside {lo}..{hi}")


def encode_payload(msg: Message) -> bytes:
    """Payload bytes of ``msg`` after checking every field."""
    definition = msg.definition
    missing = [f.name for f in definition.fields if f.name not in msg.values]
    extra = sorted(set(msg.values) - {f.name for f in definition.fields})
    if missing or extra:
        raise MessageError(f"{msg.name}: missing fields {missing}, unknown fields {extra}")
    for f in definition.fields:
        _check_value(msg.name, f, msg.values[f.name])
    payload = definition.struct.pack(*(msg.values[f.name] for f in definition.fields))
    if definition.record_dtype is not None:
        given = msg.records if msg.records is not None else []
        records = np.asarray(given, definition.record_dtype)
        if len(records) != msg.values[definition.count]:
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


def decode_payload(frame: RawFrame) -> Message:
    """Interpret a checked frame; raises :class:`MessageError` on anything unexpected."""
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
    values: dict[str, Value] = {}
    for f, value in zip(definition.fields, raw_values, strict=True):
        _check_value(definition.name, f, value)
        values[f.name] = value
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
