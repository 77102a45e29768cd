"""The treatment record: an append-only, hash-chained SQLite log that survives a killed host.

Every entry (session start, plan, state transition, delivered spots, pass end...) is one row of
``entries``; its hash covers the previous row's hash, so editing, removing or reordering a row
breaks the chain. SQLite runs in WAL mode with ``synchronous=FULL``: a committed entry
survives SIGKILL and power loss.

Every row read is checked against what co2scan writes (:data:`BODIES`: the keys it reads back,
their types and ranges, and the pass and spots an entry names among its session's): the chain
has no key, so a record edited and chained again, or written by another program, may hold a
string where a count belongs, or a count of 10^15. :meth:`TreatmentRecord.verify` names such
a row as a problem (so nothing is appended to the record, and no session of it is resumed);
reading one raises RecordError naming the row, its session and kind, and the field.

The chain head (last sequence number and hash) is also kept in a sidecar file
``<record>.head``, replaced whole and durably after every commit. It catches what the chain
alone cannot: rows removed from the end (the rest still chains), a database put back from an
older copy. A writer commits its row, then writes the head, so a writer killed in between (a
host crash, which the README tells users to ``--resume`` after) leaves its row one after the
head: :meth:`TreatmentRecord.verify` accepts exactly that, when the row follows the head's row
and hash, and says so in a note; the next entry written brings the head up to date. A head
ahead of the record, more than one row behind it, or naming its row by another hash does not
verify. What the head does not do: it is not keyed, so whoever can write both files can remove
rows from the end and rewrite the head to match (or add rows, whose hashes anyone can
compute), and the one row after the head that a crash leaves can be removed unseen until the
next entry is written. The chain and its head make damage and edits of the database alone
evident; against someone who edits the files deliberately, only keeping them (or copies)
where that person cannot write protects.

A writer refuses (RecordError, nothing written) to append to a record that does not verify: a
row chained onto it would make a removed last row (a session's end, say) verify again, and its
session look open. It checks the whole record before its first append, without the writers'
lock (other writers need not wait for it), then under the lock, at each append, only what
changed since it last checked (see :meth:`TreatmentRecord._end_to_append_to`).

Several processes may write one record (two devices of a clinic sharing ``clinic.db``): each
append takes an exclusive lock on ``<record>.lock`` (flock; msvcrt on Windows), continues the
chain from the row last committed by anyone, and writes the head file before it lets go. It
waits for the lock at most ``lock_timeout_s`` (a writer stalled while holding it hung every
other writer, and a session delivering, for as long as it stalled), then raises
:class:`RecordLocked` naming the lock file and its holder's process id, which a holder
writes into the lock file while it holds it.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import sqlite3
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from time import monotonic, sleep  # the lock's wait (time.time, the entries' clock, apart)
from typing import Any

import numpy as np

from controller.errors import SessionBusy, SettingsError, shown
from drivers.galvo import lsb_to_um
from drivers.protocol.messages import SPOT_DTYPE

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

GENESIS = "0" * 64
#: The chain head file: ``<last row's seq> <its hash>`` and a newline (CR LF on Windows, whose
#: text files _write_head writes), nothing else.
HEAD_LINE = re.compile(rb"([0-9]{1,18}) ([0-9a-f]{64})\r?\n")
#: The longest head line: what is read of a head file (a 2 GB one was read whole).
HEAD_MAX_BYTES = 18 + 1 + 64 + 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    session INTEGER NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_session ON entries(session, kind);
CREATE TABLE IF NOT EXISTS pass_spots (
    session INTEGER NOT NULL,
    pass_index INTEGER NOT NULL,
    checksum INTEGER NOT NULL,
    records BLOB NOT NULL,
    PRIMARY KEY (session, pass_index)
);
"""


#: The columns of a CSV export (and the keys of the JSON export's ``delivered_spots``): one
#: row per delivered spot. ``pass`` counts from 1, ``pass_index`` is the record's 0-based one.
EXPORT_COLUMNS = ("session", "pass", "pass_index", "spot_index", "x_mm", "y_mm",
                  "set_pulse_uj", "stack", "set_stack_uj", "pulse_us", "measured_stack_uj",
                  "reading", "batch_recorded_utc")
#: What each export column holds, in its unit (the JSON export carries it as ``units``).
EXPORT_UNITS = {
    "session": "session id (its first entry's row)",
    "pass": "pass number, from 1",
    "pass_index": "pass index as recorded, from 0 (pass - 1)",
    "spot_index": "spot index in its pass, from 0",
    "x_mm": "mm from the field centre on the skin, galvo LSB converted with the session's "
            "field_size_um (nominal: no distortion correction)",
    "y_mm": "mm from the field centre on the skin, as x_mm",
    "set_pulse_uj": "set energy per pulse, µJ",
    "stack": "pulses fired on the spot",
    "set_stack_uj": "set energy of the whole stack (set_pulse_uj x stack), µJ",
    "pulse_us": "pulse length, µs",
    "measured_stack_uj": "energy the monitor measured, whole stack, µJ; -1: no reading "
                         "(lost, e.g. with the link: the spot was fired, its energy unknown)",
    "reading": "ok, or lost (measured_stack_uj -1)",
    "batch_recorded_utc": "when the host recorded the batch of spots the device confirmed "
                          "(UTC, ISO 8601); its spots fired shortly before",
}


def _umask() -> int:
    """The process's file mode creation mask (read where the system says it, so that no
    other thread creates a file while it is changed to be read)."""
    with contextlib.suppress(OSError, ValueError), \
            open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def lsb_to_mm(lsb: np.ndarray, field_um: float) -> np.ndarray:
    """Skin positions (mm from the field centre) of galvo positions: the drivers'
    :func:`drivers.galvo.lsb_to_um` (the inverse of the host's conversion), in mm."""
    return lsb_to_um(lsb, field_um) / 1000.0


class RecordError(Exception):
    """The treatment record cannot be opened or written."""


@dataclass(frozen=True)
class Entry:
    """One entry of the record as read back: ``seq`` (its id; a session's id is its opening
    entry's), the ``session`` it belongs to, when it was written (``at``, Unix time in s), its
    ``kind`` and ``body``."""

    seq: int
    session: int
    at: float
    kind: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Verification:
    """Result of :meth:`TreatmentRecord.verify`: ``problems`` is empty when the chain holds;
    ``notes`` name what is in order but worth knowing (a last row after the chain head, as a
    killed writer leaves it)."""

    entries: int
    problems: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the chain holds (no problems; notes do not count)."""
        return not self.problems


@dataclass
class _ChainEnd:
    """Where a walk along the chain ended: the last row's sequence number and hash, the hash
    it names as its predecessor (None when no row was walked past the start), the rows walked
    and what was wrong with them."""

    seq: int
    hash: str
    prev: str | None = None
    rows: int = 0
    problems: list[str] = field(default_factory=list)


# -- entry bodies, as co2scan writes them -------------------------------------------------

class _Malformed(Exception):
    """A row is not as co2scan writes it (the message names the row and what is wrong)."""


#: What a value in an entry body must be: given the value and its name, what is wrong with
#: it (None: nothing).
Check = Callable[[Any, str], "str | None"]


def _is(expected: str, test: Callable[[Any], bool]) -> Check:
    return lambda value, name: None if test(value) else f"{name} is {shown(value)}, not {expected}"


def _integer(lo: int, hi: int) -> Check:
    return _is(f"an integer in {lo}..{hi}", lambda v: type(v) is int and lo <= v <= hi)


def _number(lo: float, hi: float) -> Check:
    """A finite number in ``lo..hi`` (NaN and infinities are not: JSON has none)."""
    return _is(f"a number in {lo:g}..{hi:g}",
               lambda v: type(v) in (int, float) and lo <= v <= hi)


def _list(item: Check, least: int = 0) -> Check:
    def check(value: Any, name: str) -> str | None:
        if not isinstance(value, list) or len(value) < least:
            return f"{name} is {shown(value)}, not a list of {least} or more"
        return next(filter(None, (item(v, f"{name}[{i}]") for i, v in enumerate(value))), None)
    return check


def _integers(lo: int, hi: int) -> Check:
    """A list of integers in ``lo..hi``, checked at C speed (a delivered entry holds one per
    spot); the message names the first that is not."""
    each = _list(_integer(lo, hi))

    def check(value: Any, name: str) -> str | None:
        if (isinstance(value, list) and set(map(type, value)) <= {int}
                and (not value or (lo <= min(value) and max(value) <= hi))):
            return None
        return each(value, name)
    return check


def _object(keys: dict[str, Check]) -> Check:
    """An object with ``keys`` (a name ending in ``?`` may be missing); others are let be."""
    fields = [(key.rstrip("?"), key.endswith("?"), item) for key, item in keys.items()]

    def check(value: Any, name: str) -> str | None:
        if not isinstance(value, dict):
            return f"{name} is {shown(value)}, not an object"
        for key, optional, item in fields:
            where = f"{name}.{key}" if name else key
            if key not in value:
                if not optional:
                    return f"{where} is missing"
            elif problem := item(value[key], where):
                return problem
        return None
    return check


U32_MAX = 2**32 - 1
TEXT = _is("text", lambda v: isinstance(v, str))
INDEX = _integer(0, U32_MAX)
COUNT = _integer(1, U32_MAX)
#: An entry's kind: a name (messages show it).
KIND = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: An entry's time: seconds from 1970 to the end of 9999 (what a date shows).
AT = _is("a time from 1970 to 9999", lambda v: type(v) in (int, float) and 0 <= v < 253402300800)
#: The bodies co2scan reads back, by entry kind: the keys read (``?``: may be missing), their
#: types and ranges. Other keys and kinds are let be (shown and exported as they are).
BODIES: dict[str, Check] = {
    "session": _object({
        "operator": TEXT, "patient_ref": TEXT, "device_serial?": TEXT,
        "field_size_um": _number(1, 1e6), "handpieces?": _list(TEXT),
        "passes": _list(_object({
            "pass": INDEX, "spots": COUNT, "device_checksum": INDEX,
            "device_pass_index?": _integer(0, 255), "plan_checksum?": INDEX,
            "rep_rate_hz": _number(1, 1e6), "handpiece?": TEXT}), least=1)}),
    "session_end": _object({"status": TEXT}),
    "run_stopped": _object({"status": TEXT, "cause": TEXT, "detail": TEXT}),
    "delivered": _object({"pass_index": INDEX, "first": INDEX, "count": COUNT,
                          "measured_uj": _integers(-1, U32_MAX)}),
    "pass_start": _object({"pass_index": INDEX, "first_index": INDEX}),
    "pass_end": _object({"pass_index": INDEX}),
    "pass_confirmed": _object({"pass_index": INDEX, "last": _integer(-1, U32_MAX)}),
    "device_pass_index": _object({"pass_index": INDEX, "device_pass_index": _integer(0, 255)}),
}
#: How far into its pass an entry reaches: the spots it names must be among the pass's.
REACH: dict[str, Callable[[dict[str, Any]], int]] = {
    "delivered": lambda body: body["first"] + body["count"],
    "pass_start": lambda body: body["first_index"],
    "pass_confirmed": lambda body: body["last"] + 1,
}


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not a JSON number")


#: JSON as co2scan writes it: without NaN or infinities.
_DECODER = json.JSONDecoder(parse_constant=_refuse)


def _json(text: object) -> Any:
    """``text`` parsed as JSON, None if it is not JSON text."""
    try:
        return _DECODER.decode(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        return None


def _plain(value: object) -> str:
    """A row's session or kind in a message: as it is if well-formed, else shown."""
    ok = type(value) is int or (isinstance(value, str) and KIND.fullmatch(value))
    return str(value) if ok else shown(value)


def _parse(row: tuple[Any, ...], passes_of: Callable[[int], list[dict[str, Any]] | None]
           ) -> Entry:
    """The entry of a row (``seq, session, at, kind, body``) checked as co2scan writes it:
    :data:`BODIES`, and the pass and spots it names among its session's (``passes_of``, None
    without a well-formed session entry); else _Malformed naming the row, its session and
    kind, and what is wrong."""
    seq, session, at, kind, text = row
    body = _json(text)
    if problem := _row_problem(seq, session, at, kind, body, passes_of):
        raise _Malformed(f"row {seq} (session {_plain(session)}, {_plain(kind)}) is not as "
                         f"co2scan writes it: {problem}")
    return Entry(seq, session, float(at), kind, body)


def _row_problem(seq: int, session: Any, at: Any, kind: Any, body: Any,
                 passes_of: Callable[[int], list[dict[str, Any]] | None]) -> str | None:
    """What is wrong with a row (its body parsed: None if it is not JSON), or None."""
    if type(session) is not int or not 1 <= session <= seq:
        return f"session is {shown(session)}, not a session id from 1 to {seq} (the row's)"
    if not isinstance(kind, str) or not KIND.fullmatch(kind):
        return f"kind is {shown(kind)}, not a name"
    if not isinstance(body, dict):
        return "its body is not a JSON object"
    if problem := AT(at, "time") or BODIES.get(kind, lambda value, name: None)(body, ""):
        return problem
    if kind == "session" and session != seq:
        return f"it opens session {session}, not its own row's"
    if kind == "session" and [p["pass"] for p in body["passes"]] != [*range(len(body["passes"]))]:
        return "passes[].pass are not 0, 1, ... in order"
    if kind == "delivered" and len(body["measured_uj"]) != body["count"]:
        return f"measured_uj holds {len(body['measured_uj'])} values, count is {body['count']}"
    if kind in BODIES and "pass_index" in body and (passes := passes_of(session)) is not None:
        k = body["pass_index"]
        if k >= len(passes):
            return f"pass_index is {k}, its session has {len(passes)} passes"
        if (reach := REACH.get(kind, lambda body: 0)(body)) > passes[k]["spots"]:
            return f"it reaches spot {reach} of pass {k + 1}, which has {passes[k]['spots']}"
    return None


def _walk(rows: Iterable[tuple[Any, ...]], start: _ChainEnd,
          entry: Callable[[tuple[Any, ...]], Entry]) -> _ChainEnd:
    """Follow ``rows`` (``seq, session, at, kind, body, prev, hash`` in seq order) on from
    ``start``, recomputing each hash; name every edited, removed or reordered row, and every
    row that ``entry`` finds malformed."""
    end = _ChainEnd(start.seq, start.hash, start.prev)
    for seq, session, at, kind, body, stored_prev, stored_hash in rows:
        end.rows += 1
        if seq != end.seq + 1:
            end.problems.append(f"rows {end.seq + 1}..{seq - 1} are missing")
        if stored_prev != end.hash:
            end.problems.append(f"row {seq}: does not follow the row before it "
                                "(removed or reordered rows)")
        if _hash(stored_prev, seq, session, at, kind, body) != stored_hash:
            end.problems.append(f"row {seq} ({_plain(kind)}): content was edited")
        try:
            entry((seq, session, at, kind, body))
        except _Malformed as exc:
            end.problems.append(str(exc))
        end.seq, end.hash, end.prev = seq, stored_hash, stored_prev
    return end


def _pass_named(session: object, pass_index: object) -> str:
    """A pass as messages name it: numbered from 1, with its index."""
    number = pass_index + 1 if type(pass_index) is int else "?"
    return f"session {session} pass {number} (pass_index {pass_index})"


#: How long a writer waits by default for another writer to let go of ``<record>.lock``
#: (s). A writer holds it for one entry (a commit and the head's fsyncs: milliseconds; an
#: object's first append checks the whole record before it takes it); what holds it longer
#: has stalled, and what waits for it cannot write (a session stops emission: what it fires
#: could not be recorded).
LOCK_TIMEOUT_S = 5.0
#: The longest lock_timeout_s taken (s).
MAX_LOCK_TIMEOUT_S = 3600.0
#: The longest pause between two tries to take a lock another writer holds (s).
LOCK_POLL_MAX_S = 0.01
#: What a writer holding the lock writes into it: its process id (a waiter that gives up
#: names it). Anything else found there is not shown.
LOCK_HOLDER = re.compile(rb"([0-9]{1,10})\n")


class RecordLocked(RecordError):
    """Another writer held the record's lock file (``lock_path``) longer than the writer's
    ``lock_timeout_s``; nothing was written. ``holder_pid``: the process that holds it, as it
    wrote it into the lock file (None: not known, a holder that does not write it)."""

    def __init__(self, message: str, lock_path: Path, holder_pid: int | None) -> None:
        super().__init__(message)
        self.lock_path = lock_path
        self.holder_pid = holder_pid


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock of an open file if no one holds it (True), without waiting."""
    if sys.platform == "win32":
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except PermissionError:  # EACCES: locked by another
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    """Let go of the exclusive lock of an open file."""
    if sys.platform == "win32":
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _name_holder(fd: int, pid: int | None) -> None:
    """Write ``pid`` (None: nothing) into the lock file this process holds, for a writer that
    gives up waiting to name. Best effort: the lock works without it."""
    text = b"" if pid is None else f"{pid}\n".encode()
    with contextlib.suppress(OSError):
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, text)
        os.ftruncate(fd, len(text))


def _holder(fd: int) -> int | None:
    """The process id the lock file's holder wrote into it (None: none, or that process is
    no longer running: the system let go of its lock, someone else holds it now)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        found = LOCK_HOLDER.fullmatch(os.read(fd, 16))
    except OSError:
        return None
    pid = int(found[1]) if found else 0
    if pid < 1:
        return None
    if sys.platform != "win32":  # (on Windows os.kill would end the process)
        try:
            os.kill(pid, 0)  # signal 0: only whether it exists
        except PermissionError:
            pass  # it runs, as another user
        except (OSError, OverflowError):
            return None
    return pid


def _fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX; Windows has no directory handles to sync and
    makes its renames durable itself)."""
    if sys.platform == "win32":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _spot_rows(session: int, spots: Mapping[int, np.ndarray]) -> list[tuple[Any, ...]]:
    """``pass_spots`` rows of a session's passes' SPOT records: their bytes and CRC-32."""
    blobs = {k: np.ascontiguousarray(records).tobytes() for k, records in spots.items()}
    return [(session, k, zlib.crc32(blob), blob) for k, blob in blobs.items()]


def _canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _hash(prev: str, seq: int, session: int, at: float, kind: str, body: str) -> str:
    text = f"{prev}|{seq}|{session}|{at!r}|{kind}|{body}"
    return hashlib.sha256(text.encode()).hexdigest()


class TreatmentRecord:
    """Append-only record of treatment sessions in one SQLite file.

    ``read_only``: open an existing record only to read it (``co2scan log``, ``report``):
    nothing is written (appending raises RecordError), and a record in a read-only file,
    folder or medium is read in SQLite's read-only mode. A writer needs to write the file and
    its folder (the head, WAL and lock files beside it), and says so if it cannot.

    ``lock_timeout_s``: how long a write (and :meth:`verify`) waits for another writer of the
    record to let go of its lock file before it gives up with :class:`RecordLocked` (a
    RecordError), nothing written; a session meeting it stops emission. None:
    :data:`LOCK_TIMEOUT_S`."""

    def __init__(self, path: str | Path, *, read_only: bool = False,
                 lock_timeout_s: float | None = None) -> None:
        if lock_timeout_s is None:
            lock_timeout_s = LOCK_TIMEOUT_S
        if isinstance(lock_timeout_s, bool) or not isinstance(lock_timeout_s, (int, float)) \
                or not 0.0 <= lock_timeout_s <= MAX_LOCK_TIMEOUT_S:
            raise SettingsError("lock_timeout_s", lock_timeout_s,
                                f"0..{MAX_LOCK_TIMEOUT_S:g} s (a number)")
        self.path = Path(path)
        self.read_only = read_only
        self.lock_timeout_s = float(lock_timeout_s)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self._lock = threading.RLock()  # events arrive on the link's subscriber threads too
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_fd: int | None = None
        #: The deadlines (time.monotonic()) of the open :meth:`lock_waits_end_by` blocks, by
        #: a token of each; a separate lock, as a writer waiting for the lock file holds
        #: ``_lock`` (a block must open while the link's thread waits).
        self._wait_deadlines: dict[object, float] = {}
        self._deadlines_lock = threading.Lock()
        #: The end of the chain as this object last verified or wrote it (its appends check
        #: only what came after); None until its first append checks the whole record.
        self._checked: _ChainEnd | None = None
        #: The passes of each session looked up (None: no well-formed session entry).
        self._passes: dict[int, list[dict[str, Any]] | None] = {}
        self._closed = False
        #: What uses the record and must finish its entries before it is closed (a session's
        #: run(): :meth:`in_use`), by a token of each use.
        self._users: dict[object, str] = {}
        try:
            self._db = self._open_to_read() if read_only else self._open_to_write()
        except (sqlite3.Error, OSError) as exc:
            self._release_lock_file()
            raise RecordError(f"cannot open treatment record {self.path}: {exc}") from exc
        except RecordError:
            self._release_lock_file()
            raise

    def _open_to_write(self) -> sqlite3.Connection:
        """The database opened to append, created (with its head) if it does not exist."""
        if not self.path.parent.is_dir():  # a typo in a path must not scatter records
            raise RecordError(f"cannot create treatment record {self.path}: there is no "
                              f"folder {self.path.parent} (it is not created)")
        for needed in (self.path, self.path.parent):
            if needed.exists() and not os.access(needed, os.W_OK):
                raise RecordError(f"cannot write treatment record {self.path}: {needed} is "
                                  "read-only (a writer writes the file and, beside it, its head, "
                                  "WAL and lock files; co2scan log and report only read)")
        if not self.path.exists():
            self._start_chain()
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        return db

    def _open_to_read(self) -> sqlite3.Connection:
        """The database opened to read only (``query_only``: nothing can change through it).
        Where this process may write the file and its folder, as a writer opens it, so that
        closing merges a WAL a killed writer left (and removes it, as the README says); else
        in SQLite's read-only mode. In a folder it cannot write, SQLite cannot create the
        index it reads a WAL through; without a WAL there, everything committed is in the
        file and no writer can be at work (it would need one): the file is read as it is
        (``immutable``)."""
        if not self.path.is_file():
            raise RecordError(f"no treatment record at {self.path}")
        uri = self.path.resolve().as_uri()
        if all(os.access(p, os.W_OK) for p in (self.path, self.path.parent)):
            return self._reader(uri + "?mode=rw")
        try:
            return self._reader(uri + "?mode=ro")
        except sqlite3.OperationalError:
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() or os.access(self.path.parent, os.W_OK):
                raise
        return self._reader(uri + "?mode=ro&immutable=1")

    def _reader(self, uri: str) -> sqlite3.Connection:
        """A query-only connection to ``uri``, once it is known to hold a treatment record."""
        db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA query_only=ON")
            tables = {name for name, in db.execute("SELECT name FROM sqlite_master")}
            if not {"entries", "pass_spots"} <= tables:
                raise RecordError(f"{self.path} is not a treatment record (no entries table)")
        except BaseException:
            db.close()
            raise
        return db

    def _start_chain(self) -> None:
        """Give a record about to be created its chain head (row 0: no row yet) before the
        database exists, so that an empty record verifies and a process killed while creating
        it leaves nothing, or a head without a database (which the database then created
        matches), never a database without its head. A head file that is missing stays a
        sign of a copy without it or a removal. Another process creating the record at the
        same time may have written the head already; a head left by a removed record is kept
        (it shows the removal)."""
        with self._writing():
            if not self.path.exists() and not self.head_path.exists():
                self._write_head(0, GENESIS)

    @contextmanager
    def _using(self, operation: str) -> Iterator[None]:
        """The database for ``operation`` ("read", "write to"...), this thread alone (close()
        waits for it): RecordError naming the file and the operation if the record was closed
        or SQLite fails (a full disk, an I/O error), never an sqlite3 exception."""
        with self._lock:
            if self._closed:
                raise RecordError(f"cannot {operation} {self.path}: record closed")
            try:
                yield
            except sqlite3.Error as exc:
                raise RecordError(f"cannot {operation} {self.path}: {exc}") from exc

    @contextmanager
    def _writing(self, reading: bool = False) -> Iterator[None]:
        """This thread alone, and this process alone among the record's writers (an exclusive
        lock on ``<record>.lock``, which the system drops if the process dies). ``reading``: go
        on without it where it cannot be taken (a record on read-only media: nobody writes)."""
        if self.read_only and not reading:
            raise RecordError(f"{self.path} was opened read-only: nothing is written to it")
        with self._lock:
            try:
                fd = self._take_lock_file("verify" if reading else "write to")
            except OSError as exc:
                if not reading:
                    raise RecordError(f"cannot lock {self._lock_path}: {exc}") from exc
                yield
                return
            try:
                yield
            finally:
                _name_holder(fd, None)
                _unlock(fd)

    def _take_lock_file(self, what: str) -> int:
        """Lock ``<record>.lock`` (its descriptor), waiting at most ``lock_timeout_s`` (and
        until an open :meth:`lock_waits_end_by` block's deadline) for another writer to let go
        of it (RecordLocked naming the file and its holder), and write this process's id into
        it for a writer that gives up waiting."""
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        fd = self._lock_fd
        started = monotonic()
        deadline = started + self.lock_timeout_s
        pause_s = 0.0005
        while not _try_lock(fd):  # tried once at least, whatever the deadlines
            ends = min([deadline, *self._wait_deadlines.values()])
            left_s = ends - monotonic()
            if left_s <= 0.0:
                raise self._locked(fd, what, None if ends == deadline else ends - started)
            sleep(min(pause_s, left_s))
            pause_s = min(2.0 * pause_s, LOCK_POLL_MAX_S)
        _name_holder(fd, os.getpid())
        return fd

    @contextmanager
    def lock_waits_end_by(self, deadline: float) -> Iterator[None]:
        """In the block, every wait for the writers' lock (a write's, or :meth:`verify`'s), on
        any thread and one already under way included, gives up (RecordLocked) by ``deadline``
        (a time.monotonic() time) at the latest; each still gives up after lock_timeout_s,
        and takes the lock if it is free, however late. A session's entries after it stopped
        delivering share one such deadline: a writer stalled on the lock made each of them
        wait lock_timeout_s in turn (run() returned after 4 x 5 s)."""
        token = object()
        with self._deadlines_lock:
            self._wait_deadlines = {**self._wait_deadlines, token: deadline}
        try:
            yield
        finally:
            with self._deadlines_lock:
                self._wait_deadlines = {k: v for k, v in self._wait_deadlines.items()
                                        if k is not token}

    def _locked(self, fd: int, what: str, cut_s: float | None = None) -> RecordLocked:
        """The RecordLocked of a wait that gave up: after lock_timeout_s, or after ``cut_s``
        (a :meth:`lock_waits_end_by` deadline ended it sooner)."""
        pid = _holder(fd)
        holder = ("a writer that did not name itself (not co2scan, or an older one)"
                  if pid is None else f"process {pid}"
                  + (" (this one: another TreatmentRecord of the same file)"
                     if pid == os.getpid() else ""))
        waited = (f"the {self.lock_timeout_s:g} s this writer waits" if cut_s is None else
                  f"the {max(cut_s, 0.0):.2g} s this writer waited (the writes after a "
                  f"session stopped share one wait of lock_timeout_s, "
                  f"{self.lock_timeout_s:g} s)")
        return RecordLocked(
            f"cannot {what} {self.path}: its lock file {self._lock_path} was held by "
            f"{holder} for {waited}"
            + ("; nothing was written" if what != "verify" else "")
            + " (a writer holds it for milliseconds: a longer hold is a stalled process)",
            self._lock_path, pid)

    def _last(self) -> tuple[int, str]:
        """Sequence number and hash of the last committed row (0 and GENESIS when empty)."""
        row = self._db.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    # -- writing ----------------------------------------------------------------------------
    def append(self, session: int, kind: str, **body: Any) -> int:
        """Commit one entry durably (and update the sidecar head); returns its sequence."""
        with self._appending():
            return self._insert(session, kind, body)

    @contextmanager
    def _appending(self) -> Iterator[None]:
        """This thread alone and the writers' lock held, to append. A record this object has
        not checked is checked whole first, without the lock (:meth:`_check_whole`); under
        it, :meth:`_end_to_append_to` then checks what came after."""
        with self._using("write to"):
            if self._checked is None and not self.read_only:  # (read-only: refused below)
                self._check_whole()
            with self._writing():
                yield

    def _check_whole(self) -> None:
        """Check the whole chain and the stored spots, as they stand in one snapshot, without
        the writers' lock (other writers append meanwhile); RecordError and nothing written if
        they do not verify. Under the lock, :meth:`_end_to_append_to` checks what other writers
        added since and that the last row checked is unchanged, as between any two appends.
        Walked under the lock, the chain held it about 1.7 s per 100,000 rows, and a writer of
        another device waits for it lock_timeout_s at most (5 s: 300,000 rows of a shared
        record, and its session stopped emission)."""
        with self._snapshot():
            end = _walk(self._db.execute("SELECT seq, session, at, kind, body, prev, hash "
                                         "FROM entries ORDER BY seq"), _ChainEnd(0, GENESIS),
                        self._entry)
            end.problems += self._verify_pass_spots(end.seq)
        if end.problems:
            raise self._refusal(end.problems)
        self._checked = end

    def _refusal(self, problems: list[str]) -> RecordError:
        """The RecordError of an append refused: the record does not verify."""
        self._checked = None
        return RecordError(
            f"{self.path} does not verify, so nothing was written to it (an entry "
            "appended would hide the damage): " + "; ".join(problems) + ". The record "
            f"must be inspected: co2scan log verify --record {self.path}")

    def _insert(self, session: int | None, kind: str, body: dict[str, Any],
                spots: Mapping[int, np.ndarray] | None = None) -> int:
        """Append after the last committed row, the lock held, with the stored ``spots`` of
        its passes in the same commit; ``session`` None: the row's own sequence number (a new
        session's id)."""
        text = _canonical(body)
        last = self._end_to_append_to()
        seq, at = last.seq + 1, time.time()
        session = seq if session is None else session
        digest = _hash(last.hash, seq, session, at, kind, text)
        self._commit([(seq, session, at, kind, text, last.hash, digest)],
                     _spot_rows(session, spots or {}))
        self._checked = _ChainEnd(seq, digest, last.hash)
        self._write_head(seq, digest)
        return seq

    def _end_to_append_to(self) -> _ChainEnd:
        """The end of the chain, once it is known to verify (the lock held), with the head
        naming it; else RecordError and nothing written, for a row chained onto a record that
        does not verify would make it verify again and hide the damage (a removed last row, a
        session end among them, would no longer show, its session would look open).

        This object's first append has checked the whole record before it took the lock
        (:meth:`_check_whole`; here, if it has not); each append checks only that the row
        this object last checked or wrote is still there, unchanged, that any rows other
        writers added since follow it, and the head: two indexed reads and a small file in the
        usual case of no other writer. A head one row behind (a writer killed before it wrote
        it) is brought up to the last row first, so that it is never two behind.
        """
        head = self._read_head()
        try:
            if self._checked is None:
                end = _walk(self._db.execute("SELECT seq, session, at, kind, body, prev, hash "
                                             "FROM entries ORDER BY seq"), _ChainEnd(0, GENESIS),
                            self._entry)
                end.problems += self._verify_pass_spots(end.seq)
            else:
                end = _walk(self._db.execute("SELECT seq, session, at, kind, body, prev, hash "
                                             "FROM entries WHERE seq > ? ORDER BY seq",
                                             (self._checked.seq,)), self._checked, self._entry)
                known = self._checked
                if known.seq and self._db.execute("SELECT hash FROM entries WHERE seq = ?",
                                                  (known.seq,)).fetchone() != (known.hash,):
                    end.problems.append(f"row {known.seq}, the last one this writer wrote or "
                                        "checked, was removed or replaced")
        except sqlite3.Error as exc:
            raise RecordError(f"cannot read {self.path}: {exc}") from exc
        problems = end.problems + self._check_head(head, end)[0]
        if problems:
            raise self._refusal(problems)
        if head != (end.seq, end.hash):
            self._write_head(end.seq, end.hash)
        self._checked = end
        return end

    def _write_head(self, seq: int, digest: str) -> None:
        """Replace the head file whole (a temporary file, fsynced, renamed over it), then fsync
        the directory: once this returns, the head on disk names this row even after a power
        loss, so it is never more than the one row being appended behind the record."""
        tmp = self.head_path.with_name(self.head_path.name + ".tmp")
        try:
            try:
                with open(tmp, "w", encoding="ascii") as f:
                    f.write(f"{seq} {digest}\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.head_path)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            _fsync_directory(self.head_path.parent)
        except OSError as exc:
            raise RecordError(f"cannot write {self.head_path}: {exc}") from exc

    def _read_head(self) -> tuple[int, str] | None:
        """The chain head file's row number and hash; None when it is missing or is not one
        (a head file is only ever replaced whole, so anything else was not written by us)."""
        try:  # a FIFO put in its place must not block, a huge file not be read whole
            fd = os.open(self.head_path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            try:
                text = os.read(fd, HEAD_MAX_BYTES + 1)
            finally:
                os.close(fd)
        except OSError:
            return None
        match = HEAD_LINE.fullmatch(text)
        return (int(match[1]), match[2].decode()) if match else None

    def _commit(self, entries: list[tuple[Any, ...]], spots: list[tuple[Any, ...]]) -> None:
        """Insert rows of ``entries`` and ``pass_spots`` in one transaction: all or none."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", entries)
            self._db.executemany("INSERT INTO pass_spots VALUES (?, ?, ?, ?)", spots)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):  # the error to report is the first
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            raise RecordError(f"cannot write to {self.path}: {exc}") from exc

    def new_session(self, pass_spots: Mapping[int, np.ndarray] | None = None,
                    **body: Any) -> int:
        """Start a session; returns its id (the sequence number of its first entry).
        ``pass_spots``: the SPOT records sent for each pass (by pass index), stored in the same
        commit as the entry that names them (for reports: see :meth:`store_pass_spots`)."""
        with self._appending():
            return self._insert(None, "session", body, pass_spots)

    def store_pass_spots(self, session: int, pass_index: int, records: np.ndarray) -> int:
        """Keep the SPOT records sent for a pass (for reports); returns their CRC-32.

        Not part of the hash chain (too large); :meth:`verify` checks that every pass the
        session entries name has its records stored, matching the CRC-32 named there.
        """
        rows = _spot_rows(session, {pass_index: records})
        with self._using("write to"), self._writing():
            if self._db.execute("SELECT 1 FROM pass_spots WHERE session = ? AND pass_index = ?",
                                (session, pass_index)).fetchone() is not None:
                raise RecordError(f"{self.path}: the spots of {_pass_named(session, pass_index)}"
                                  " are stored already; the record keeps what was sent")
            self._commit([], rows)
        return int(rows[0][2])

    def pass_spots(self, session: int, pass_index: int, dtype: np.dtype) -> np.ndarray | None:
        """The SPOT records stored for a pass, or None; RecordError if they are not as many
        as its session entry names."""
        with self._using("read"):
            row = self._db.execute("SELECT records FROM pass_spots WHERE session = ? AND "
                                   "pass_index = ?", (session, pass_index)).fetchone()
            passes = [] if row is None else self._passes_of(session) or []
        if row is None:
            return None
        spots = passes[pass_index]["spots"] if 0 <= pass_index < len(passes) else 0
        if not isinstance(row[0], bytes) or len(row[0]) != spots * dtype.itemsize:
            raise RecordError(f"{self.path}: the stored spots of {_pass_named(session, pass_index)}"
                              f" are not the {spots} its session entry names")
        return np.frombuffer(row[0], dtype)

    def delivered(self, session: int, pass_index: int, index: np.ndarray,
                  measured_uj: np.ndarray) -> None:
        """Record spots the device confirmed as fired (contiguous ascending indices)."""
        index = np.asarray(index, np.int64)
        if not index.size:
            return
        if np.any(np.diff(index) != 1):
            raise RecordError(f"delivered indices of pass {pass_index + 1} (pass_index "
                              f"{pass_index}) are not contiguous")
        self.append(session, "delivered", pass_index=pass_index, first=int(index[0]),
                    count=int(index.size), measured_uj=[int(v) for v in measured_uj])

    # -- reading ----------------------------------------------------------------------------
    def entries(self, session: int | None = None, kind: str | None = None) -> Iterator[Entry]:
        """The entries in record order, of one session and of one kind if given."""
        query = "SELECT seq, session, at, kind, body FROM entries"
        clauses: list[str] = []
        args: list[int | str] = []
        if session is not None:
            clauses.append("session = ?")
            args.append(session)
        if kind is not None:
            clauses.append("kind = ?")
            args.append(kind)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        with self._using("read"):
            rows = self._db.execute(query + " ORDER BY seq", args)
        while True:  # the lock held for a batch of rows, not while the caller iterates
            batch: list[Entry] = []
            with self._using("read"):
                try:
                    for row in rows.fetchmany(256):
                        batch.append(self._entry(row))
                except _Malformed as exc:
                    malformed: _Malformed | None = exc
                else:
                    malformed = None
            yield from batch
            if malformed is not None:  # the entries before it are shown
                raise RecordError(f"{self.path}: {malformed}")
            if not batch:
                return

    def _entry(self, row: tuple[Any, ...]) -> Entry:
        """The entry of ``row``, checked (:func:`_parse`); _Malformed if it is not one."""
        return _parse(row, self._passes_of)

    def _passes_of(self, session: int) -> list[dict[str, Any]] | None:
        """The passes the entry of ``session`` names; None without a well-formed one."""
        if session not in self._passes:
            row = self._db.execute("SELECT seq, session, at, kind, body FROM entries WHERE "
                                   "seq = ? AND kind = 'session'", (session,)).fetchone()
            try:
                self._passes[session] = None if row is None else self._entry(row).body["passes"]
            except _Malformed:
                self._passes[session] = None
        return self._passes[session]

    def sessions(self) -> list[Entry]:
        """Every session's opening entry (its id is the entry's ``seq``)."""
        return list(self.entries(kind="session"))

    def delivered_summary(self, session: int, pass_index: int) -> tuple[int, int]:
        """(spots delivered, last index delivered or -1) of a pass, without reading energies
        (as they were checked: a writer appends only to a record that verifies)."""
        with self._using("read"):
            row = self._db.execute(
                "SELECT COALESCE(SUM(json_extract(body, '$.count')), 0), COALESCE(MAX("
                "json_extract(body, '$.first') + json_extract(body, '$.count')), 0) - 1"
                " FROM entries WHERE session = ? AND kind = 'delivered' "
                "AND json_extract(body, '$.pass_index') = ?", (session, pass_index)).fetchone()
        return int(row[0]), int(row[1])

    def delivered_spots(self, session: int, pass_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and measured energies (µJ, -1 unknown) of the spots delivered in a pass."""
        index: list[np.ndarray] = []
        measured: list[np.ndarray] = []
        for e in self.entries(session, "delivered"):
            if e.body["pass_index"] == pass_index:
                index.append(np.arange(e.body["first"], e.body["first"] + e.body["count"]))
                measured.append(np.asarray(e.body["measured_uj"], np.int64))
        if not index:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(index), np.concatenate(measured)

    def verify(self) -> Verification:
        """Recompute the chain; name every edited, removed or reordered row, and stored spots
        that are missing or do not match."""
        with self._using("verify"), self._snapshot():
            # The last row and the head as one writer left them; other processes' writers
            # wait only for this, not for the whole chain (rows up to it never change).
            with self._writing(reading=True):
                end = self._last()[0]
                head = self._read_head()
            return self._verify(end, head)

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One read transaction: its reads see the record as one commit left it (WAL mode),
        a session's entry and stored spots together or neither."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    def _verify(self, end: int, head: tuple[int, str] | None) -> Verification:
        chain = _walk(self._db.execute("SELECT seq, session, at, kind, body, prev, hash FROM "
                                       "entries WHERE seq <= ? ORDER BY seq", (end,)),
                      _ChainEnd(0, GENESIS), self._entry)
        problems, notes = self._check_head(head, chain)
        return Verification(chain.rows,
                            chain.problems + self._verify_pass_spots(end) + problems, notes)

    def _check_head(self, head: tuple[int, str] | None, end: _ChainEnd
                    ) -> tuple[list[str], list[str]]:
        """Problems and notes of the chain head ``head`` against the chain's last row ``end``.

        The head names the last row, or the row before it: a writer commits a row, then
        writes the head, so one killed in between (a host crash, an expected event) leaves
        the last row after the head; the row must then follow the head's row and hash.
        Anything else (a head ahead of the record, more than one row behind it, or naming a
        row by another hash) is a problem: rows were removed or replaced.
        """
        name = self.head_path.name
        if head is None:
            return [f"chain head file {name} is missing or unreadable; it is part of the "
                    "record: a copy or backup of a record FILE must include FILE.head, copied "
                    f"with it (here {name})"], []
        head_seq, head_hash = head
        if head_seq > end.seq:
            return [f"chain head says row {head_seq} is last, the record ends at row "
                    f"{end.seq}: rows were removed from the end (from row {end.seq + 1} on)"], []
        if head_seq < end.seq - 1:
            return [f"chain head says row {head_seq} is last, the record goes on to row "
                    f"{end.seq}: rows {head_seq + 1}..{end.seq} were added without it, or an "
                    f"older {name} was put back (a writer that stops leaves at most its last "
                    "row after the head)"], []
        if head_hash != (end.hash if head_seq == end.seq else end.prev):
            return [f"chain head names row {head_seq} by another hash than the record's row "
                    f"{head_seq}: rows up to it were replaced, or {name} is another "
                    "record's"], []
        if head_seq < end.seq:
            return [], [f"row {end.seq}, the last, is after the chain head (row {head_seq}): "
                        "its writer stopped between committing it and updating "
                        f"{name} (a killed host); it follows the head's row, and the next "
                        "entry written brings the head up to date (until then, removing row "
                        f"{end.seq} would not show)"]
        return [], []

    def _verify_pass_spots(self, end: int) -> list[str]:
        """Every pass that the sessions up to row ``end`` name has its stored spots, matching
        the CRC-32 named there (a session's entry and its spots are committed together)."""
        named = {(session, p["pass"]): p["device_checksum"]
                 for session, in self._db.execute("SELECT seq FROM entries WHERE kind = "
                                                  "'session' AND seq <= ?", (end,))
                 for p in self._passes_of(session) or []}
        problems = []
        for session, pass_index, checksum, blob in self._db.execute(
                "SELECT session, pass_index, checksum, records FROM pass_spots "
                "ORDER BY session, pass_index"):
            if (named.pop((session, pass_index), None) != checksum
                    or not isinstance(blob, bytes) or zlib.crc32(blob) != checksum):
                problems.append(f"stored spots of {_pass_named(session, pass_index)} do not "
                                "match the checksum the record names")
        return problems + [f"stored spots of {_pass_named(session, pass_index)} are missing "
                           "(removed from the record)" for session, pass_index in named]

    # -- export -----------------------------------------------------------------------------
    def own_files(self) -> list[Path]:
        """The files that make up the record: the database, its chain head (and the temporary
        file it is written through), SQLite's WAL and shared-memory files, and the writers'
        lock."""
        return [self.path, self.head_path, self.head_path.with_name(self.head_path.name + ".tmp"),
                self.path.with_name(self.path.name + "-wal"),
                self.path.with_name(self.path.name + "-shm"), self._lock_path]

    def export(self, session: int, fmt: str, out: Path, overwrite: bool = False) -> Path:
        """Write one session as ``csv`` (one row per delivered spot, :data:`EXPORT_COLUMNS`) or
        ``json`` (the same spots, the passes, the units and every entry), whole or
        not at all (a temporary file beside ``out``, renamed). Refused (RecordError) onto one
        of the record's own files, onto anything but a regular file (a device, a FIFO, a
        symbolic link, a folder: renaming over it replaced /dev/null), and onto an existing
        file unless ``overwrite`` (it replaced another record, or a treatment script)."""
        if fmt not in ("json", "csv"):
            raise RecordError(f"export format {fmt!r} is not one of json, csv")
        if any(os.path.realpath(out) == os.path.realpath(own) for own in self.own_files()):
            raise RecordError(f"export to {out} refused: it is one of the record's own files")
        if os.path.lexists(out):
            if out.is_symlink() or not out.is_file():
                raise RecordError(f"export to {out} refused: it exists and is not a regular "
                                  "file")
            if not overwrite:
                raise RecordError(f"export to {out} refused: the file exists (replace it with "
                                  "--force)")
        entries = list(self.entries(session))
        if not entries:
            raise RecordError(f"no session {session} in {self.path}")
        spots = self.delivered_spot_rows(session, entries)
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        tmp = Path(name)
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # as open() creates files (mkstemp: 0600)
            with open(fd, "w", newline="", encoding="utf-8") as f:
                if fmt == "json":
                    f.write(json.dumps(self._export_json(session, entries, spots), indent=1,
                                       ensure_ascii=False))
                else:
                    writer = csv.writer(f)
                    writer.writerow(EXPORT_COLUMNS)
                    writer.writerows([row[c] for c in EXPORT_COLUMNS] for row in spots)
            os.replace(tmp, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return out

    def delivered_spot_rows(self, session: int, entries: list[Entry] | None = None
                            ) -> list[dict[str, Any]]:
        """One row per delivered spot of ``session`` (keys :data:`EXPORT_COLUMNS`), in the
        order the record holds them: what was fired, where and how (from the pass's stored
        SPOT records, positions converted as the host converted them) and what the monitor
        measured, with the time its batch was recorded."""
        entries = list(self.entries(session)) if entries is None else entries
        head = next((e for e in entries if e.kind == "session"), None)
        if head is None:
            raise RecordError(f"no session {session} in {self.path}")
        field_um = float(head.body["field_size_um"])
        stored: dict[int, np.ndarray] = {}
        rows: list[dict[str, Any]] = []
        for e in entries:
            if e.kind != "delivered":
                continue
            k = e.body["pass_index"]
            if k not in stored:
                records = self.pass_spots(session, k, SPOT_DTYPE)
                if records is None:
                    raise RecordError(f"{self.path}: the spots of {_pass_named(session, k)} "
                                      "are not stored")
                stored[k] = records
            first, count = e.body["first"], e.body["count"]
            fired = stored[k][first:first + count]
            x_mm, y_mm = lsb_to_mm(fired["x_lsb"], field_um), lsb_to_mm(fired["y_lsb"], field_um)
            when = datetime.fromtimestamp(e.at, UTC).isoformat(timespec="microseconds")
            for i, measured in enumerate(e.body["measured_uj"]):
                spot = fired[i]
                pulse_uj, stack = int(spot["energy_uj"]), int(spot["stack"])
                rows.append({
                    "session": session, "pass": k + 1, "pass_index": k,
                    "spot_index": first + i, "x_mm": round(float(x_mm[i]), 6),
                    "y_mm": round(float(y_mm[i]), 6), "set_pulse_uj": pulse_uj,
                    "stack": stack, "set_stack_uj": pulse_uj * stack,
                    "pulse_us": int(spot["pulse_us"]), "measured_stack_uj": measured,
                    "reading": "ok" if measured >= 0 else "lost",
                    "batch_recorded_utc": when.replace("+00:00", "Z")})
        return rows

    def _export_json(self, session: int, entries: list[Entry],
                     spots: list[dict[str, Any]]) -> dict[str, Any]:
        """The JSON export: the session, its passes (planned and delivered spot counts), one
        object per delivered spot (as the CSV's rows), the units, and every entry."""
        head = next(e for e in entries if e.kind == "session")
        delivered: dict[int, int] = {}
        for row in spots:
            delivered[row["pass_index"]] = delivered.get(row["pass_index"], 0) + 1
        return {
            "format": "co2scan session export 2",
            "session": session,
            "units": EXPORT_UNITS,
            "passes": [{"pass": p["pass"] + 1, "pass_index": p["pass"],
                        "planned_spots": p["spots"],
                        "delivered_spots": delivered.get(p["pass"], 0)}
                       for p in head.body["passes"]],
            "delivered_spots": spots,
            "entries": [e.__dict__ for e in entries],
        }

    @contextmanager
    def in_use(self, by: str) -> Iterator[None]:
        """The record stays open in the block: :meth:`close` meanwhile raises SessionBusy
        naming ``by``. A session holds it while its run(), abort(), cancel() or
        operator_reset() is under way, so that these write their entries to the end (a record
        closed under a delivering session ended it without them: no run_stopped, spots fired
        and not recorded, the session shown as open)."""
        token = object()
        with self._lock:
            self._users[token] = by
        try:
            yield
        finally:
            with self._lock:
                del self._users[token]

    def close(self) -> None:
        """Close the database (SQLite merges its WAL) and release the writers' lock, once no
        other thread uses them (the link's event thread may be appending a transition); then
        reading or writing raises RecordError ("record closed"). Closing again does nothing.
        SessionBusy, the record left open, while a session uses it (:meth:`in_use`: from its
        run() to its return; end a delivery with request_abort(), then close)."""
        with self._lock:
            if self._users and not self._closed:
                raise SessionBusy(
                    f"close() of {self.path} refused: {', '.join(self._users.values())} is "
                    "under way on it, and writes its entries to the end (let run() return "
                    "first: request_abort() ends a delivery); the record stays open")
            try:
                if not self._closed:
                    self._closed = True
                    self._db.close()
            except sqlite3.Error as exc:
                raise RecordError(f"cannot close {self.path}: {exc}") from exc
            finally:
                self._release_lock_file()

    def _release_lock_file(self) -> None:
        with self._lock:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> TreatmentRecord:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
