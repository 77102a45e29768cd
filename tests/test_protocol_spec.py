"""firmware_protocol.md and drivers.protocol must agree: tables and test vectors, both ways."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from drivers.protocol import FrameDecoder, Message, decode, encode, message
from drivers.protocol import messages as m
from drivers.protocol.errors import FrameError
from drivers.protocol.framing import decode_frame
from drivers.protocol.spec import BLOCK, RENDERERS, VECTOR, render_document

DOC = Path(__file__).resolve().parents[1] / "firmware_protocol.md"
TEXT = DOC.read_text(encoding="utf-8")


def parse_vector(block: str) -> dict[str, str]:
    entries = dict(line.split(": ", 1) for line in block.strip().splitlines())
    return entries


VECTORS = [parse_vector(b) for b in VECTOR.findall(TEXT)]


def test_generated_blocks_match_the_code() -> None:
    names = {match.group(2) for match in BLOCK.finditer(TEXT)}
    assert names == set(RENDERERS)
    assert render_document(TEXT) == TEXT, (
        "firmware_protocol.md is stale: run `python -m drivers.protocol.spec firmware_protocol.md`"
    )


def test_every_message_type_has_a_vector() -> None:
    assert {v["message"] for v in VECTORS} == set(m.BY_NAME)


def _expected(vector: dict[str, str]) -> Message:
    fields = json.loads(vector["fields"])
    definition = m.BY_NAME[vector["message"]]
    for f in definition.fields:
        if f.fmt.endswith("s"):
            fields[f.name] = bytes.fromhex(fields[f.name])
    records = None
    if "records" in vector:
        rows = json.loads(vector["records"])
        dtype = definition.record_dtype
        assert dtype is not None and dtype.names is not None  # structured records
        records = np.array([tuple(r[n] for n in dtype.names) for r in rows], dtype)
        fields.pop(definition.count)
    return message(vector["message"], int(vector["seq"]), records=records,
                   text=vector.get("text", ""), **fields)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["message"] for v in VECTORS])
def test_vector_encodes_to_its_wire_bytes(vector: dict[str, str]) -> None:
    assert encode(_expected(vector)) == bytes.fromhex(vector["wire"])


@pytest.mark.parametrize("vector", VECTORS, ids=[v["message"] for v in VECTORS])
def test_vector_wire_bytes_decode_to_its_fields(vector: dict[str, str]) -> None:
    wire = bytes.fromhex(vector["wire"])
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    assert decode(wire[1:-1]) == _expected(vector)


def test_crc_variant_is_the_documented_one() -> None:
    import zlib

    assert zlib.crc32(b"123456789") == 0xCBF43926
    assert "0xCBF43926" in TEXT


def test_a_vector_ends_in_a_full_cobs_group_and_its_other_form_is_refused() -> None:
    """Section 1.2: a frame whose last zero-free piece is 254 bytes long ends in the full group
    (0xFF and 254 bytes) with no 0x01 after it; the form with the 0x01 (an encoder that always
    closes with a final group) decodes to the same bytes but is not canonical: dropped."""
    full = [bytes.fromhex(v["wire"])[1:-1] for v in VECTORS]
    full = [e for e in full if len(e) > 255 and e[-255] == 0xFF and 0 not in e[-254:]]
    assert full, "no vector ends in a full 254-byte COBS group"
    encoded = full[0]
    other = encoded + b"\x01"
    with pytest.raises(FrameError, match="non-canonical"):
        decode_frame(other)
    decoder = FrameDecoder()
    assert decoder.feed(b"\0" + other + b"\0") == [] and decoder.errors == 1
    assert len(decoder.feed(b"\0" + encoded + b"\0")) == 1


def test_run_limit_is_max_wire_frame_without_delimiters() -> None:
    """Section 1.2: the longest valid run is MAX_FRAME + ceil(MAX_FRAME/254) bytes; a run longer
    than MAX_WIRE_FRAME bytes (delimiters not counted) is discarded whole, as one dropped frame,
    and the frame after it is received."""
    assert m.MAX_FRAME + -(-m.MAX_FRAME // 254) == 4123 == m.MAX_WIRE_FRAME - 3
    assert "4123" in TEXT and "4125" in TEXT
    good = bytes.fromhex(VECTORS[0]["wire"])
    for run in (m.MAX_WIRE_FRAME, m.MAX_WIRE_FRAME + 1):
        decoder = FrameDecoder()
        frames = decoder.feed(b"\0" + b"\x01" * run + good)
        assert len(frames) == 1 and decoder.errors == 1
