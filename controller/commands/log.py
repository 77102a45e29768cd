"""``co2scan log``: list, show, verify and export the treatment record."""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.commands import add_command, session_id, to_stderr
from controller.commands.run import add_record_argument
from controller.outcomes import outcome_text, percent, session_outcomes
from controller.record import RecordError, TreatmentRecord, Verification

HELP = """read the treatment record: list sessions, show one, verify the chain, export

  list            every session (no ID): operator and patient whole (cut with "…"
                  only beyond 40 columns), passes, spots delivered/planned, and its
                  last outcome: completed, aborted, cancelled, fault (cause), paused,
                  waiting, interrupted (signal or error), open (none recorded:
                  delivering, or its co2scan stopped without one)
  show ID         the entries of session ID: the session entry in full (operator,
                  patient, device, each pass's planned spots), delivered batches
                  summarised, every other entry whole; passes are named "pass N"
                  from 1, beside the pass_index (N - 1) the record stores
  verify          recompute the hash chain and check every entry (no ID); exit 4 if
                  it does not verify (a problem names the row, session, kind, field); a
                  note names a last row after the chain head (a killed co2scan leaves
                  one; the next entry written updates the head)
  export ID       write session ID as csv (one row per delivered spot: session, pass
                  from 1, pass_index from 0, spot_index, x_mm, y_mm, set_pulse_uj, stack,
                  set_stack_uj, pulse_us, measured_stack_uj with -1 for a lost reading,
                  reading ok/lost, batch_recorded_utc; README "Exports") or json (the
                  same spots, the passes, the units and every entry) to -o FILE, by
                  default sessionID.FORMAT in the current directory (session1.json,
                  session1.csv); a record that does not verify is refused
                  (exit 4, nothing written), and so is an existing file unless --force (never
                  anything but a regular file)

list and show verify the record first. A record that does not verify is still shown (a
damaged record must stay readable, to find out what happened), but marked: the first line
of the output says TAMPERED, the problems follow on stderr, and the exit status is 4, so
neither a reader nor a script takes it for a trustworthy record. export and report refuse
such a record instead: what they write would leave the warning behind.

A record (--record FILE) is more than one file. FILE (SQLite) holds the entries; FILE.head
holds the chain head (last row and its hash) and is part of the record: a copy or backup
must include it, else the copy does not verify ("chain head file ... is missing"). While a
co2scan uses the record, or after one was killed, SQLite's write-ahead log FILE-wal (with
its index FILE-shm) may hold committed entries not yet merged into FILE: copy it too, or
copy when no co2scan uses the record (`co2scan log verify` then merges and removes it).
FILE.lock is the file the writers lock (holding the writer's process id while locked); it
need not be copied.

examples:
  co2scan log list
  co2scan log show 1
  co2scan log verify --record clinic.db
  co2scan log export 1 --format csv -o session1.csv
  cp clinic.db clinic.db.head backup/      # a copy that verifies (no co2scan using it)
"""

#: Exit status of a record whose hash chain does not verify (``log verify``; ``log list`` and
#: ``log show``, which still show it; ``log export`` and ``report``, which refuse it).
EXIT_TAMPERED = 4
NEEDS_SESSION = ("show", "export")


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def verified(record: TreatmentRecord, refused: str, check: Verification | None = None) -> bool:
    """Whether ``record``'s hash chain verifies (``check``: its ``verify()`` if already
    made); if not, say so on stderr with every problem and ``refused`` (what is therefore not
    done, e.g. "no report drawn"), and the caller exits :data:`EXIT_TAMPERED` without using
    the record."""
    check = record.verify() if check is None else check
    if not check.ok:
        to_stderr(f"error: {record.path} does not verify (TAMPERED), {refused}:\n  "
                  + "\n  ".join(check.problems))
    return check.ok


def _safe(value: object) -> str:
    """Record text for a terminal: control characters (an escape sequence, a line break in
    an edited record) shown escaped, not acted on."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))


def _tampered_banner(record: TreatmentRecord) -> list[str]:
    """Verify ``record`` for ``list``/``show``: the problems (empty when the chain holds);
    if any, the output begins with a TAMPERED line, so that a copy of it says so too."""
    check = record.verify()
    if not check.ok:
        print(f"TAMPERED RECORD: {record.path} does not verify; what follows cannot be "
              "trusted (co2scan log verify)")
    return check.problems


def _warn_tampered(record: TreatmentRecord, problems: list[str]) -> int:
    """After a ``list``/``show`` of a record that does not verify, name its problems on stderr;
    the exit status (:data:`EXIT_TAMPERED` then, else 0)."""
    if not problems:
        return 0
    sys.stdout.flush()  # the warning after the entries on a terminal
    to_stderr(f"warning: {record.path} does not verify (TAMPERED); shown for inspection "
              "only, its entries cannot be trusted:\n  " + "\n  ".join(problems))
    return EXIT_TAMPERED


def run(args: argparse.Namespace) -> int:
    """``log list``, ``show``, ``verify`` or ``export`` on the record, opened read-only; the exit
    status (1: export not written, 2: an ID missing or not wanted, 3: record unreadable or
    session not found, 4: the record does not verify)."""
    if (args.session is None) == (args.action in NEEDS_SESSION):
        need = "needs a session id" if args.session is None else \
            f"takes no session id (got {args.session})"
        to_stderr(f"error: `log {args.action}` {need}; see co2scan log --help")
        return 2
    try:
        record = TreatmentRecord(args.record, read_only=True)
    except RecordError as exc:
        to_stderr(f"error: {exc}")
        return 3
    with record:
        try:
            return _act(record, args)
        except RecordError as exc:  # unreadable, or its writers' lock held by a stalled one
            to_stderr(f"error: {exc}")
            return 3


def _act(record: TreatmentRecord, args: argparse.Namespace) -> int:
    """``log list``, ``show``, ``verify`` or ``export`` on the open record; the exit status."""
    if args.action in ("list", "show"):
        return _inspect(record, args.session)
    if args.action == "verify":
        result = record.verify()
        print(f"{result.entries} entries: " + ("chain verified" if result.ok else
                                               "TAMPERED\n  " + "\n  ".join(result.problems)))
        for note in result.notes:
            print(f"  note: {note}")
        return 0 if result.ok else EXIT_TAMPERED
    out = Path(args.output or f"session{args.session}.{args.format}")
    if not verified(record, f"nothing exported to {out}"):
        return EXIT_TAMPERED
    try:
        record.export(args.session, args.format, out, overwrite=args.force)
    except OSError as exc:
        to_stderr(f"error: cannot write {out}: {exc.strerror or exc}")
        return 1
    print(f"wrote {out}")
    return 0


def _inspect(record: TreatmentRecord, session: int | None) -> int:
    """``log list`` (``session`` None) or ``log show``, marked when the record does not verify
    (exit 4 then, even when the session is not found: its rows may be what was removed); an
    entry that cannot be shown (not as co2scan writes it) is named, and ends the output."""
    problems = _tampered_banner(record)
    try:
        found = _list(record) if session is None else _show(record, session)
    except RecordError as exc:
        to_stderr(f"error: {exc}")
        found = False
    return _warn_tampered(record, problems) or (0 if found else 3)


#: Operator and patient are shown whole up to this display width; beyond it, cut with "…".
NAME_WIDTH = 40


def _width(text: str) -> int:
    """Display width on a terminal: wide and fullwidth characters (CJK) take two columns,
    combining marks none."""
    return sum(0 if unicodedata.combining(c) else
               2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _fit(text: str, width: int) -> str:
    """``text`` padded to ``width`` display columns, or cut to them with a visible "…"."""
    if _width(text) > width:
        while _width(text) > width - 1:
            text = text[:-1]
        text += "…"
    return text + " " * (width - _width(text))


def _list(record: TreatmentRecord) -> bool:
    """Print one line per session: who, whom, passes, spots delivered of planned, outcome."""
    outcomes = session_outcomes(record)
    rows = []
    for e in record.sessions():
        passes = e.body.get("passes", [])
        delivered = sum(record.delivered_summary(e.seq, p["pass"])[0] for p in passes)
        planned = sum(p["spots"] for p in passes)
        rows.append((e, _safe(e.body.get("operator", "")), _safe(e.body.get("patient_ref", "")),
                     f"{delivered}/{planned}", outcome_text(outcomes.get(e.seq, ("open", "")))))
    op_w = min(NAME_WIDTH, max([_width("operator"), *(_width(r[1]) for r in rows)]))
    pt_w = min(NAME_WIDTH, max([_width("patient"), *(_width(r[2]) for r in rows)]))
    sp_w = max([len("spots"), *(len(r[3]) for r in rows)])
    print(f"{'id':>5}  {'started':<23}  {_fit('operator', op_w)}  {_fit('patient', pt_w)}  "
          f"passes  {'spots':>{sp_w}}  status")
    for e, operator, patient, spots, status in rows:
        print(f"{e.seq:>5}  {_when(e.at):<23}  {_fit(operator, op_w)}  {_fit(patient, pt_w)}  "
              f"{len(e.body.get('passes', [])):>6}  {spots:>{sp_w}}  {_safe(status)}")
    return True


def _show(record: TreatmentRecord, session: int) -> bool:
    """Print the entries of ``session``; whether there are any. The session entry is shown
    whole and readably (who, whom, the device, each pass's planned spots); delivered entries
    summarised (their spots and readings); every other entry in full."""
    entries = list(record.entries(session))
    if not entries:
        to_stderr(f"error: no session {session} in {record.path}")
        return False
    print(f"session {session}: passes are numbered from 1 (pass N); the record stores "
          "pass_index = N - 1")
    for e in entries:
        lines = _describe(e.kind, e.body)
        print(f"{e.seq:>6}  {_when(e.at)}  {e.kind:<20} {lines[0]}".rstrip())
        for line in lines[1:]:
            print(f"{'':>6}  {'':<23}  {'':<20} {line}")
    return True


#: A JSON ``\\u00XX`` escape of a C0 control character or DEL (not one of an escaped
#: backslash): shown as ``\\xXX``, as :func:`_safe` shows it elsewhere.
_JSON_CONTROL = re.compile(r"(?<!\\)((?:\\\\)*)\\u00([01][0-9a-f]|7f)")


def _json_text(value: object) -> str:
    """``value`` as JSON for a terminal: non-ASCII text as it is (not ``\\u`` escapes),
    control characters escaped as :func:`_safe` escapes them (``\\x1b``, ``\\n``)."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return _safe(_JSON_CONTROL.sub(lambda m: f"{m[1]}\\x{m[2]}", text))


def _pass_name(pass_index: object) -> str:
    """A recorded 0-based ``pass_index`` as co2scan's messages name the pass."""
    if type(pass_index) is int:
        return f"pass {pass_index + 1} (pass_index {pass_index})"
    return f"pass ? (pass_index {_json_text(pass_index)})"


def _describe(kind: str, body: dict[str, Any]) -> list[str]:
    """The lines ``log show`` prints for an entry (the first beside its row, time and kind)."""
    rest = dict(body)
    if kind == "session":
        return _describe_session(rest)
    head = ""
    if isinstance(rest.get("worst_deviation"), (int, float)):  # recorded as a fraction
        rest["worst_deviation"] = percent(rest["worst_deviation"])
    if "pass_index" in rest:
        head = _pass_name(rest.pop("pass_index")) + ": "
    if kind == "delivered":
        measured = rest.pop("measured_uj")
        first, count = rest.pop("first"), rest.pop("count")
        read = [v for v in measured if v >= 0]
        spots = f"spot {first}" if count == 1 else f"spots {first}..{first + count - 1} ({count})"
        text = (f"{head}{spots}, measured "
                + (f"{min(read)}..{max(read)} µJ per stack" if read else "nothing"))
        if len(read) < len(measured):
            text += f", {len(measured) - len(read)} readings lost (-1)"
        return [text + (f" {_json_text(rest)}" if rest else "")]
    return [head + _json_text(rest) if rest or not head else head.rstrip(": ")]


def _describe_session(body: dict[str, Any]) -> list[str]:
    """The session entry in full: operator, patient, device, each pass's plan, the rest."""
    lines = [f"operator: {_safe(body.pop('operator'))}",
             f"patient:  {_safe(body.pop('patient_ref'))}"]
    device = [f"serial {_safe(body.pop('device_serial'))}" if "device_serial" in body else
              "serial not recorded"]
    if "firmware" in body:
        device.append(f"firmware {_safe(body.pop('firmware'))}")
    if "device_url" in body:
        device.append(f"at {_safe(body.pop('device_url'))}")
    device.append(f"field {body.pop('field_size_um'):g} µm")
    lines.append("device:   " + ", ".join(device))
    if "handpieces" in body:
        lines.append("handpieces: " + ", ".join(_safe(h) for h in body.pop("handpieces")))
    for p in body.pop("passes"):
        p = dict(p)
        text = (f"{_pass_name(p.pop('pass'))}: {p.pop('spots')} spots planned, "
                f"{p.pop('rep_rate_hz'):g} Hz")
        if "handpiece" in p:
            text += f", handpiece {_safe(p.pop('handpiece'))}"
        if "device_pass_index" in p:
            text += f", device pass index {p.pop('device_pass_index')}"
        text += f", spots checksum {p.pop('device_checksum')}"
        if "plan_checksum" in p:
            text += f", plan checksum {p.pop('plan_checksum')}"
        lines.append(text + (f"; {_json_text(p)}" if p else ""))
    if body:
        lines.append(f"also: {_json_text(body)}")
    return lines


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``co2scan log`` command to the CLI's subcommands."""
    parser = add_command(subparsers, "log", "list, show, verify or export the record", HELP)
    parser.add_argument("action", choices=("list", "show", "verify", "export"))
    parser.add_argument("session", nargs="?", type=session_id, metavar="ID",
                        help="session id (show and export only)")
    parser.add_argument("--format", choices=("json", "csv"), default="json",
                        help="export format (default json)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="export file (default sessionID.FORMAT in the current directory, "
                             "e.g. session1.json; not stdout)")
    parser.add_argument("--force", action="store_true",
                        help="export: replace an existing regular file (never a device, FIFO, "
                             "link or folder)")
    add_record_argument(parser)
    parser.set_defaults(handler=run)
