"""Typed errors of the controller layer: each says what was wrong, the value, what is allowed."""

from __future__ import annotations


def pass_field(index: int, key: str) -> str:
    """The field ``key`` of the pass with this index (from 0) as errors and findings name it:
    ``pass 1: key`` for the first, since people read passes numbered from 1."""
    return f"pass {index + 1}: {key}"


class SettingsError(ValueError):
    """A treatment setting (or a handpiece data field) is invalid; nothing was planned.

    ``field`` is the dotted setting name (e.g. ``density.pitch_um``), ``value`` the rejected
    value and ``allowed`` a human-readable description of the allowed range.
    """

    def __init__(self, field: str, value: object, allowed: str, reason: str = "") -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        self.reason = reason
        why = f" ({reason})" if reason else ""
        super().__init__(f"{field} = {shown(value)} rejected{why}; allowed: {allowed}")


class SessionBusy(RuntimeError):
    """run(), abort(), cancel() or operator_reset() called while another of them is under way,
    of this session or of another session on the same Device; or the session's record closed
    (``TreatmentRecord.close()``) while one of them is under way on it."""


#: The most of a rejected value a message shows (a 1 MB operator name was echoed whole).
MAX_SHOWN_CHARS = 80


def shown(value: object) -> str:
    """``repr(value)``, cut to MAX_SHOWN_CHARS with the length it had."""
    text = repr(value)
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[:MAX_SHOWN_CHARS - 20]}... ({len(text):,} characters)"
