"""``co2scan log``: list, show, verify and export the treatment record."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from controller.commands import add_command
from controller.commands.run import add_record_argument
from controller.record import RecordError, TreatmentRecord

HELP = """read the treatment record: list sessions, show one, verify the chain, export

examples:
  co2scan log list
  co2scan log show 1
  co2scan log verify --record clinic.db
  co2scan log export 1 --format csv -o session1.csv
"""


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _open(path: str) -> TreatmentRecord:
    if not Path(path).exists():
        raise RecordError(f"no treatment record at {path}")
    return TreatmentRecord(path)


def run(args: argparse.Namespace) -> int:
    try:
        record = _open(args.record)
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    with record:
        if args.action == "list":
            ends = {e.session: e.body["status"] for e in record.entries(kind="session_end")}
            print(f"{'id':>5}  {'started':<23}  {'operator':<16}  {'patient':<12}  passes  status")
            for e in record.sessions():
                print(f"{e.seq:>5}  {_when(e.at):<23}  {e.body.get('operator', ''):<16.16}  "
                      f"{e.body.get('patient_ref', ''):<12.12}  {len(e.body.get('passes', [])):>6}"
                      f"  {ends.get(e.seq, 'open')}")
            return 0
        if args.action == "verify":
            result = record.verify()
            print(f"{result.entries} entries: " + ("chain verified" if result.ok else
                                                   "TAMPERED\n  " + "\n  ".join(result.problems)))
            return 0 if result.ok else 4
        if args.session is None:
            print(f"error: `log {args.action}` needs a session id", file=sys.stderr)
            return 2
        entries = list(record.entries(args.session))
        if not entries:
            print(f"error: no session {args.session} in {args.record}", file=sys.stderr)
            return 3
        if args.action == "show":
            for e in entries:
                body = dict(e.body)
                if e.kind == "delivered":
                    body["measured_uj"] = f"[{len(body['measured_uj'])} values]"
                print(f"{e.seq:>6}  {_when(e.at)}  {e.kind:<20} {json.dumps(body)[:200]}")
            return 0
        out = Path(args.output or f"session{args.session}.{args.format}")
        try:
            record.export(args.session, args.format, out)
        except OSError as exc:
            print(f"error: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"wrote {out}")
        return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "log", "list, show, verify or export the record", HELP)
    parser.add_argument("action", choices=("list", "show", "verify", "export"))
    parser.add_argument("session", nargs="?", type=int, metavar="ID", help="session id")
    parser.add_argument("--format", choices=("json", "csv"), default="json",
                        help="export format (default json)")
    parser.add_argument("-o", "--output", metavar="FILE", help="export file")
    add_record_argument(parser)
    parser.set_defaults(handler=run)
