"""firmware_protocol.md and drivers.protocol must agree: tables and test vectors, both ways."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from drivers.protocol import Message, decode, encode, message
from drivers.protocol import messages as m
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
