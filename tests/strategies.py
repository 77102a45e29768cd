"""Hypothesis strategies for protocol messages, shared by codec, simulator and fuzz tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from drivers.protocol import Message, message
from drivers.protocol import messages as m


def field_values(f: m.Field) -> st.SearchStrategy:
    if f.fmt.endswith("s"):
        return st.binary(min_size=f.size, max_size=f.size)
    if f.enum is not None:
        return st.sampled_from([int(v) for v in f.enum])
    lo, hi = f.bounds()  # type: ignore[misc]
    return st.integers(lo, hi)


def ordered(definition: m.MessageDef, values: dict) -> dict:
    """``values`` with each relation of ``definition.order`` made to hold: the pair sorted,
    and for a strict one an equal pair moved apart within the fields' bounds."""
    fields = {f.name: f for f in definition.fields}
    for small, large, strict in definition.order:
        a, b = sorted((values[small], values[large]))
        if strict and a == b:
            if b < fields[large].bounds()[1]:  # type: ignore[index]
                b += 1
            else:
                a -= 1
        values[small], values[large] = a, b
    return values


@st.composite
def records(draw: st.DrawFn, definition: m.MessageDef, max_count: int = 20) -> np.ndarray:
    count_field = next(f for f in definition.fields if f.name == definition.count)
    lo = count_field.bounds()[0]  # type: ignore[index]
    n = draw(st.integers(lo, max_count))
    out = np.zeros(n, definition.record_dtype)
    for f in definition.record:
        out[f.name] = draw(st.lists(field_values(f), min_size=n, max_size=n))
    return out


@st.composite
def messages(draw: st.DrawFn, names: list[str] | None = None) -> Message:
    """Any valid message (optionally restricted to ``names``)."""
    definition = m.BY_NAME[draw(st.sampled_from(names or sorted(m.BY_NAME)))]
    values = ordered(definition, {
        f.name: draw(field_values(f)) for f in definition.fields if f.name != definition.count
    })
    recs = draw(records(definition)) if definition.record else None
    text = draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                        max_size=m.MAX_NACK_TEXT)) if definition.text else ""
    return message(definition.name, draw(st.integers(0, 0xFFFF)), records=recs, text=text,
                   **values)
