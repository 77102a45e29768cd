"""The treatment record: durable, hash-chained, tamper-evident, exportable."""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.record import RecordError, TreatmentRecord
from drivers.protocol.messages import SPOT_DTYPE


def session_args(passes: int = 1, spots: int = 100, **body: Any) -> dict[str, Any]:
    """Arguments of :meth:`TreatmentRecord.new_session` for a session as co2scan writes it:
    ``passes`` passes of ``spots`` spots, stored with it; ``body`` adds or replaces keys."""
    records = np.zeros(spots, SPOT_DTYPE)
    records["index"] = np.arange(spots)
    return {"pass_spots": dict.fromkeys(range(passes), records), "operator": "dr a",
            "patient_ref": "p1", "field_size_um": 20_000,
            "passes": [{"pass": k, "spots": spots, "device_checksum": zlib.crc32(records.tobytes()),
                        "rep_rate_hz": 500} for k in range(passes)], **body}


def filled(path: Path) -> TreatmentRecord:
    rec = TreatmentRecord(path)
    sid = rec.new_session(**session_args())
    rec.append(sid, "transition", old="READY", new="ARMED", cause="operator")
    rec.delivered(sid, 0, np.arange(0, 5), np.array([100, 101, 99, 100, -1]))
    rec.delivered(sid, 0, np.arange(5, 8), np.array([98, 97, 102]))
    rec.append(sid, "pass_end", pass_index=0, status="complete")
    return rec


def test_delivered_spots_come_back_exactly(tmp_path: Path) -> None:
    rec = filled(tmp_path / "r.db")
    index, measured = rec.delivered_spots(1, 0)
    assert index.tolist() == list(range(8))
    assert measured.tolist() == [100, 101, 99, 100, -1, 98, 97, 102]
    assert rec.verify().ok and rec.verify().entries == 5


def test_stored_spots_are_never_replaced(tmp_path: Path) -> None:
    """They are what was sent: another set for the same pass is refused, the first kept."""
    rec = filled(tmp_path / "r.db")
    other = np.zeros(100, SPOT_DTYPE)
    other["index"] = np.arange(100)
    other["energy_uj"] = 5
    with pytest.raises(RecordError, match="stored already"):
        rec.store_pass_spots(1, 0, other)
    stored = rec.pass_spots(1, 0, SPOT_DTYPE)
    assert stored is not None and not stored["energy_uj"].any()
    assert rec.verify().ok


def test_record_survives_reopen(tmp_path: Path) -> None:
    filled(tmp_path / "r.db").close()
    rec = TreatmentRecord(tmp_path / "r.db")
    rec.append(1, "note", text="reopened")
    assert rec.verify().ok
    assert [e.kind for e in rec.entries(1)][-1] == "note"


def _tamper(path: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(path)
    db.execute(sql, args)
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("sql", "args", "expected"),
    [
        ("UPDATE entries SET body = replace(body, '100', '150') WHERE seq = ?", (3,),
         "row 3 (delivered): content was edited"),
        ("DELETE FROM entries WHERE seq = ?", (2,), "rows 2..2 are missing"),
        ("DELETE FROM entries WHERE seq = ?", (5,), "rows were removed from the end"),
        ("UPDATE entries SET seq = -seq WHERE seq IN (3, 4)", (), "does not follow"),
    ],
    ids=["edited", "removed", "last-removed", "reordered"],
)
def test_verify_names_the_tampering(tmp_path: Path, sql: str, args: tuple, expected: str) -> None:
    filled(tmp_path / "r.db").close()
    if "seq = -seq" in sql:  # swap rows 3 and 4
        _tamper(tmp_path / "r.db", sql)
        _tamper(tmp_path / "r.db", "UPDATE entries SET seq = 7 - seq WHERE seq < 0")
    else:
        _tamper(tmp_path / "r.db", sql, *args)
    result = TreatmentRecord(tmp_path / "r.db").verify()
    assert not result.ok
    assert any(expected in p for p in result.problems), result.problems


def test_missing_head_file_is_reported(tmp_path: Path) -> None:
    filled(tmp_path / "r.db").close()
    (tmp_path / "r.db.head").unlink()
    assert "missing" in TreatmentRecord(tmp_path / "r.db").verify().problems[0]


def test_a_new_record_verifies_before_its_first_entry(tmp_path: Path) -> None:
    """Its chain head is written when it is created (a co2scan run refused before it recorded
    anything leaves such a record); without the head it does not verify, as any record."""
    with TreatmentRecord(tmp_path / "r.db") as rec:
        assert rec.verify().ok and rec.verify().entries == 0
    with TreatmentRecord(tmp_path / "r.db") as rec:  # reopened: the head is not rewritten
        assert rec.verify().ok
    (tmp_path / "r.db.head").unlink()
    with TreatmentRecord(tmp_path / "r.db") as rec:
        assert "missing" in rec.verify().problems[0]


def test_non_contiguous_delivery_is_refused(tmp_path: Path) -> None:
    rec = TreatmentRecord(tmp_path / "r.db")
    with pytest.raises(RecordError, match="not contiguous"):
        rec.delivered(1, 0, np.array([1, 3]), np.array([1, 1]))


def test_export_json_and_csv(tmp_path: Path) -> None:
    rec = filled(tmp_path / "r.db")
    data = json.loads(rec.export(1, "json", tmp_path / "s.json").read_text())
    assert [d["kind"] for d in data["entries"]] == ["session", "transition", "delivered",
                                                    "delivered", "pass_end"]
    assert [s["measured_stack_uj"] for s in data["delivered_spots"]] == \
        [100, 101, 99, 100, -1, 98, 97, 102]
    lines = rec.export(1, "csv", tmp_path / "s.csv").read_text().splitlines()
    assert lines[0].startswith("session,pass,pass_index,spot_index,x_mm,y_mm,") and len(lines) == 9
    assert lines[5].startswith("1,1,0,4,") and ",-1,lost," in lines[5]
    with pytest.raises(RecordError, match="not one of json, csv"):
        rec.export(1, "xml", tmp_path / "s.xml")


@given(st.lists(st.integers(1, 40), min_size=1, max_size=10))
def test_any_batching_reassembles_to_the_same_spots(tmp_path_factory: pytest.TempPathFactory,
                                                  sizes: list[int]) -> None:
    rec = TreatmentRecord(tmp_path_factory.mktemp("rec") / "r.db")
    start = 0
    for n in sizes:
        rec.delivered(1, 2, np.arange(start, start + n), np.arange(start, start + n) * 3)
        start += n
    index, measured = rec.delivered_spots(1, 2)
    assert index.tolist() == list(range(start)) and measured.tolist() == [3 * i for i in index]
    assert rec.verify().ok


def test_delivered_summary_counts_without_reading_energies(tmp_path: Path) -> None:
    rec = filled(tmp_path / "r.db")
    assert rec.delivered_summary(1, 0) == (8, 7)
    assert rec.delivered_summary(1, 3) == (0, -1)


def test_a_record_in_a_missing_folder_is_refused_not_the_folder_created(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--record missing_dir/x.db`` created the folder: a typo in a path scattered records
    around the disk (audit). The record file itself is still created in an existing folder."""
    from controller.cli import main
    from tests.test_cli_run import FAST, SCRIPT

    path = tmp_path / "missing_dir" / "x.db"
    with pytest.raises(RecordError, match=f"no folder {tmp_path / 'missing_dir'}"):
        TreatmentRecord(path)
    script = tmp_path / "s.toml"
    script.write_text(SCRIPT, encoding="utf-8")
    capsys.readouterr()
    assert main(["run", str(script), "--device", FAST, "--yes", "--record", str(path)]) == 3
    err = capsys.readouterr().err  # wrapped, at hyphens too
    assert "cannot create treatment record" in err and "Traceback" not in err
    assert f"{path}:thereisnofolder{path.parent}" in "".join(err.split())
    assert not path.parent.exists()
    with TreatmentRecord(tmp_path / "x.db") as rec:
        assert rec.verify().ok
