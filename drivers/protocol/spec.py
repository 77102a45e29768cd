"""Render the generated parts of ``firmware_protocol.md`` from :mod:`drivers.protocol.messages`.

``python -m drivers.protocol.spec firmware_protocol.md`` rewrites the blocks between
``<!-- generated:NAME -->`` and ``<!-- end:NAME -->``; a test checks that the document on disk
equals what this module renders, so the specification and the code cannot drift.
"""

from __future__ import annotations

import enum
import json
import re
import sys
from pathlib import Path

import numpy as np

from drivers.protocol import messages as m
from drivers.protocol.codec import Message, encode, message

HEX_CONSTANTS = {"NO_INDEX", "GALVO_CENTRE_LSB", "USB_VENDOR_ID", "USB_PRODUCT_ID", "USB_EP_OUT",
                 "USB_EP_IN"}
TYPE_NAMES = {"B": "u8", "H": "u16", "I": "u32", "h": "i16", "i": "i32"}

BLOCK = re.compile(r"(<!-- generated:(\w+) -->\n)(.*?)(<!-- end:\2 -->)", re.S)
VECTOR = re.compile(r"```vector\n(.*?)```", re.S)


def _type_name(f: m.Field) -> str:
    return f"u8[{f.size}]" if f.fmt.endswith("s") else TYPE_NAMES[f.fmt]


def _range(f: m.Field) -> str:
    if f.enum is not None:
        return f.enum.__name__
    bounds = f.bounds()
    if bounds is None:
        return "any"
    lo, hi = bounds
    return str(lo) if lo == hi else f"{lo}..{hi}"


def _field_rows(fields: tuple[m.Field, ...], start: int = 0) -> list[str]:
    rows = [
        "| offset | size | type | unit | range | field | meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    offset = start
    for f in fields:
        rows.append(
            f"| {offset} | {f.size} | {_type_name(f)} | {f.unit or '-'} | {_range(f)} "
            f"| `{f.name}` | {f.doc or '-'} |"
        )
        offset += f.size
    return rows


def _states(states: tuple[m.State, ...]) -> str:
    return "any" if set(states) == set(m.State) else ", ".join(s.name for s in states)


def render_messages() -> str:
    """One subsection per message: direction, legal states and byte tables."""
    out: list[str] = []
    for d in m.MESSAGES:
        out.append(f"#### {d.name} (0x{d.type_id:02X})")
        out.append("")
        facts = [d.direction.value]
        if d.direction is m.Direction.HOST:
            facts.append(f"legal in: {_states(d.legal_in)}")
            if d.service:
                facts.append("service mode required")
        out.append(f"{d.doc} ({'; '.join(facts)}.)")
        out.append("")
        if d.fields:
            out += _field_rows(d.fields)
        else:
            out.append("Empty payload.")
        if d.order:
            out += ["", "A message breaking one of these is invalid (section 2): "
                    + "; ".join(f"`{a}` {'<' if strict else '<='} `{b}`"
                                for a, b, strict in d.order) + "."]
        if d.record_dtype is not None:  # the dtype of d.record, None when it is empty
            out += ["", f"Then `{d.count}` records of {d.record_dtype.itemsize} bytes each "
                    f"(at most {d.max_records}):", ""]
            out += _field_rows(d.record)
        if d.text:
            out += ["", f"Then 0..{m.MAX_NACK_TEXT} bytes of printable ASCII (0x20..0x7E): a "
                    "human-readable reason, not NUL-terminated."]
        out.append("")
    return "\n".join(out)


def render_enums() -> str:
    """Tables of every enumeration used on the wire."""
    out: list[str] = []
    enums: list[type[enum.Enum]] = [
        m.State, m.Interlock, m.DeviceFlag, m.ErrorCode, m.FaultCode, m.Cause, m.Capability
    ]
    for e in enums:
        out += [f"#### {e.__name__}", "", (e.__doc__ or "").strip(), "", "| value | name |",
                "|---|---|"]
        for member in e:
            value = member.value
            text = f"0x{value:02X}" if issubclass(e, enum.IntFlag) else str(value)
            out.append(f"| {text} | `{member.name}` |")
        out.append("")
    return "\n".join(out)


def render_constants() -> str:
    """The numeric limits of the protocol."""
    rows = ["| constant | value | meaning |", "|---|---|---|"]
    for name, meaning in (
        ("PROTOCOL_VERSION", "header byte 0"),
        ("MAX_PAYLOAD", "largest payload, bytes"),
        ("MAX_FRAME", "largest raw frame (header + payload + CRC), bytes"),
        ("MAX_WIRE_FRAME", "bound on the COBS bytes between two delimiters (section 1.2), bytes"),
        ("MAX_BATCH_SPOTS", "most spots in one SPOT_BATCH"),
        ("MAX_NACK_TEXT", "longest NACK text, bytes"),
        ("NO_INDEX", "u32 index meaning none"),
        ("GALVO_CENTRE_LSB", "galvo field centre"),
        ("NONCE_SIZE", "authentication nonce, bytes"),
        ("USB_VENDOR_ID", "USB idVendor"),
        ("USB_PRODUCT_ID", "USB idProduct"),
        ("USB_EP_OUT", "bulk OUT endpoint (host -> device), interface 0"),
        ("USB_EP_IN", "bulk IN endpoint (device -> host), interface 0"),
        ("MAC_SIZE", "HMAC-SHA256 output, bytes"),
        ("KEY_SIZE", "device key, bytes"),
    ):
        value = getattr(m, name)
        shown = f"0x{value:X}" if name in HEX_CONSTANTS else str(value)
        rows.append(f"| `{name}` | {shown} | {meaning} |")
    rows.append(f"| `AUTH_CONTEXT` | `{m.AUTH_CONTEXT.decode()}` | HMAC message prefix (ASCII) |")
    return "\n".join(rows) + "\n"


def _spots(n: int) -> np.ndarray:
    spots = np.zeros(n, m.SPOT_DTYPE)
    spots["index"] = np.arange(n) + 10
    spots["x_lsb"] = [0x8000 + 100 * i for i in range(n)]
    spots["y_lsb"] = [0x7F00 - 50 * i for i in range(n)]
    spots["energy_uj"] = 15000
    spots["pulse_us"] = 500
    spots["stack"] = 1
    return spots


def example_messages() -> list[Message]:
    """One example of every message type: the specification's test vectors."""
    delivered = np.zeros(2, m.DELIVERED_DTYPE)
    delivered["index"] = [10, 11]
    delivered["measured_uj"] = [14810, 15230]
    return [
        message("IDENTIFY", 1),
        message("HEARTBEAT", 2),
        message("STATUS_REQUEST", 3),
        message("AUTH_BEGIN", 4),
        message("AUTH_RESPONSE", 5, mac=bytes(range(32))),
        message("AUTH_END", 6),
        message("SET_CALIBRATION", 7, field_size_um=20000, x_gain_ppm=-120, y_gain_ppm=85,
                x_offset_lsb=-3, y_offset_lsb=4),
        message("SET_LIMITS", 8, energy_max_uj=150000, rep_rate_max_hz=500,
                avg_power_max_mw=30000),
        message("SET_DEVICE_KEY", 9, key=b"K" * 32),
        message("GALVO_JUMP", 10, x_lsb=0x8000, y_lsb=0x9000),
        message("AIMING_BEAM", 11, on=1),
        message("PULSE_SETTINGS", 12, rep_rate_hz=300),
        message("LOAD_PLAN", 13, pass_index=0, spot_count=400, plan_checksum=0xDEADBEEF,
                first_index=0),
        message("SPOT_BATCH", 14, records=_spots(2)),
        message("ARM", 15, plan_checksum=0xDEADBEEF),
        message("DISARM", 16),
        message("START", 17),
        message("PAUSE", 18),
        message("RESUME", 19),
        message("ABORT", 20),
        message("RESET_FAULT", 21),
        message("RAISE_FAULT", 22, fault_code=int(m.FaultCode.ENERGY_DEVIATION)),
        message("ACK", 14, acked_type=0x21, state=int(m.State.READY), credits=4094, value=12),
        message("NACK", 15, refused_type=0x22, error=int(m.ErrorCode.INTERLOCK_OPEN),
                state=int(m.State.READY), detail=0x02, text="door open"),
        message("IDENTIFY_REPLY", 1, protocol_version=1, fw_major=1, fw_minor=2, fw_patch=3,
                serial=b"SIM-0001".ljust(16, b"\0"), capabilities=0x0F, field_size_um=20000,
                usable_lsb_min=1024, usable_lsb_max=64511, energy_min_uj=1000,
                energy_max_uj=200000, pulse_min_us=10, pulse_max_us=2000,
                rep_rate_max_hz=1000, avg_power_max_mw=30000, buffer_spots=4096, max_stack=5,
                watchdog_ms=500, heartbeat_ms=100, pre_emission_ms=2000,
                jump_speed_um_per_ms=5000, settle_us=150),
        message("STATUS_REPORT", 3, state=int(m.State.EMITTING), interlocks=0x0F, flags=0x0055,
                fault_code=0, pass_index=1, credits=3900, plan_checksum=0xDEADBEEF,
                spot_count=400, next_index=206, delivered_count=10, last_delivered=19,
                uptime_ms=123456, temperature_dc=312, rep_rate_hz=300),
        message("AUTH_CHALLENGE", 4, nonce=bytes(range(16, 32))),
        message("PLAN_LOADED", 13, pass_index=0, spot_count=400, plan_checksum=0xDEADBEEF,
                next_index=0, credits=4096),
        message("EVT_DELIVERED", 100, records=delivered, credits=4000),
        message("EVT_STATE", 101, old_state=int(m.State.EMITTING), new_state=int(m.State.PAUSED),
                cause=int(m.Cause.FOOTSWITCH), fault_code=0),
        message("EVT_INTERLOCK", 102, old=0x0F, new=0x07),
    ]


def _jsonable(value: object) -> object:
    return value.hex() if isinstance(value, bytes) else value


def render_vector(msg: Message) -> str:
    """A ```vector block: message, seq, fields (bytes as hex), records, text, wire hex."""
    lines = [f"message: {msg.name}", f"seq: {msg.seq}"]
    fixed = {k: _jsonable(v) for k, v in msg.values.items()}
    lines.append(f"fields: {json.dumps(fixed)}")
    if msg.records is not None:
        names = msg.records.dtype.names
        assert names is not None, "records are a structured array"
        rows = [{k: int(r[k]) for k in names} for r in msg.records]
        lines.append(f"records: {json.dumps(rows)}")
    if msg.text:
        lines.append(f"text: {msg.text}")
    wire = encode(msg).hex(" ")
    lines.append(f"wire: {wire}")
    return "```vector\n" + "\n".join(lines) + "\n```\n"


def render_vectors() -> str:
    """The specification's test vectors: a ```vector block per example message."""
    return "\n".join(render_vector(msg) for msg in example_messages())


RENDERERS = {
    "constants": render_constants,
    "messages": render_messages,
    "enums": render_enums,
    "vectors": render_vectors,
}


def render_document(text: str) -> str:
    """``text`` with every generated block replaced by its current rendering."""
    def replace(match: re.Match[str]) -> str:
        return match.group(1) + RENDERERS[match.group(2)]() + match.group(4)

    return BLOCK.sub(replace, text)


def main(argv: list[str]) -> int:
    """``python -m drivers.protocol.spec [FILE]``: regenerate FILE's blocks (default
    ``firmware_protocol.md``); exit status 0."""
    path = Path(argv[0] if argv else "firmware_protocol.md")
    path.write_text(render_document(path.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"rewrote generated blocks of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
