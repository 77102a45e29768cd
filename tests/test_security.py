"""Security: the service-mode lock, replay, the device key's secrecy, tamper evidence of the
record through the CLI, and treatment scripts confined to the paths the operator gave."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from controller.cli import main
from controller.record import TreatmentRecord
from controller.script import ScriptError, load_script, parse_script
from drivers import Device, open_device
from drivers.errors import AuthFailed, DeviceTimeout, LimitError, NotAuthenticated
from drivers.protocol.messages import AUTH_CONTEXT, KEY_SIZE, DeviceFlag, State
from sim_hw.config import DEV_KEY
from tests.test_session import FAST, session_for

WRONG_KEY = bytes(range(KEY_SIZE))
DATA_DIR = (Path(__file__).resolve().parent.parent / "controller" / "data").resolve()
SCRIPT = """operator = "Dr Sec"
patient_ref = "S-1"
[[pass]]
pattern = "square"
size_mm = 3.0
density_percent = 8.0
depth_um = 200.0
"""


def service_mode(dev: Device) -> bool:
    return bool(dev.status().flags & DeviceFlag.SERVICE_MODE)


def try_every_service_command(dev: Device) -> list[type[Exception] | type[None]]:
    """Each service command's outcome: the type of the exception it raised, or type(None)
    when accepted."""
    outcomes: list[type[Exception] | type[None]] = []
    commands = (
        lambda: dev.set_limits(energy_max_uj=100_000, rep_rate_max_hz=500,
                               avg_power_max_mw=20_000),
        lambda: dev.set_device_key(WRONG_KEY),
        lambda: dev.link.request("SET_CALIBRATION", field_size_um=21_000, x_gain_ppm=1000,
                                 y_gain_ppm=0, x_offset_lsb=5, y_offset_lsb=0),
    )
    for command in commands:
        try:
            command()
        except Exception as exc:  # the outcome is what is checked
            outcomes.append(type(exc))
        else:
            outcomes.append(type(None))
    return outcomes


def test_service_commands_are_refused_without_the_hmac_challenge_response() -> None:
    with open_device("sim://") as dev:
        factory = dev.info.limits
        refused = [NotAuthenticated] * 3
        assert try_every_service_command(dev) == refused
        with pytest.raises(AuthFailed):  # a response without a challenge
            dev.link.request("AUTH_RESPONSE", mac=bytes(32))
        with pytest.raises(AuthFailed):
            dev.authenticate(WRONG_KEY)
        assert not service_mode(dev)
        assert try_every_service_command(dev) == refused
        assert dev.identify().limits == factory  # nothing changed
        # With the key: accepted; AUTH_END and leaving STANDBY end service mode.
        dev.authenticate(DEV_KEY)
        assert service_mode(dev)
        dev.set_limits(energy_max_uj=150_000, rep_rate_max_hz=800, avg_power_max_mw=25_000)
        assert dev.info.limits.energy_max_uj == 150_000
        dev.end_service()
        assert try_every_service_command(dev) == refused
        dev.authenticate(DEV_KEY)
        dev.link.request("LOAD_PLAN", pass_index=0, spot_count=10, plan_checksum=1,
                         first_index=0)
        assert dev.status().state is State.READY and not service_mode(dev)
        dev.abort()
        assert try_every_service_command(dev) == refused
        assert len(dev.simulator.device.ground_truth) == 0


def test_a_replayed_auth_response_is_refused() -> None:
    with open_device("sim://") as dev:
        nonce = bytes(dev.link.request("AUTH_BEGIN")["nonce"])
        mac = hmac.new(DEV_KEY, AUTH_CONTEXT + nonce, hashlib.sha256).digest()
        dev.link.request("AUTH_RESPONSE", mac=mac)
        assert service_mode(dev)
        dev.end_service()
        with pytest.raises(AuthFailed):  # the challenge was consumed by its first response
            dev.link.request("AUTH_RESPONSE", mac=mac)
        fresh = bytes(dev.link.request("AUTH_BEGIN")["nonce"])
        assert fresh != nonce
        with pytest.raises(AuthFailed):  # the old response does not answer the new nonce
            dev.link.request("AUTH_RESPONSE", mac=mac)
        right = hmac.new(DEV_KEY, AUTH_CONTEXT + fresh, hashlib.sha256).digest()
        with pytest.raises(AuthFailed):  # a wrong answer consumed that challenge too
            dev.link.request("AUTH_RESPONSE", mac=right)
        assert not service_mode(dev)
        assert try_every_service_command(dev) == [NotAuthenticated] * 3


def test_nonces_are_fresh_across_requests_and_device_resets() -> None:
    with open_device("sim://") as dev:
        nonces = set()
        for round_ in range(3):
            for _ in range(20):
                nonces.add(bytes(dev.link.request("AUTH_BEGIN")["nonce"]))
            dev.simulator.faults.reset_device()
            dev.reset_fault()
            assert len(nonces) == 20 * (round_ + 1)


def key_forms(key: bytes) -> list[str]:
    """Every way a key could plausibly be written into text."""
    return [key.hex(), key.hex().upper(), base64.b64encode(key).decode(), repr(key),
            str(list(key)), key.decode("latin-1")]


def assert_secret_absent(key: bytes, text: str, where: str) -> None:
    for form in key_forms(key):
        assert form not in text, f"device key found in {where} as {form[:20]}..."


def test_the_device_key_never_reaches_logs_errors_or_the_record(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    new_key = hashlib.sha256(b"co2scan test key, never to be logged").digest()
    errors: list[str] = []
    with open_device(f"sim://?{FAST}") as dev:
        faults = dev.simulator.faults
        dev.authenticate(DEV_KEY)
        dev.set_device_key(new_key)
        dev.end_service()
        for attempt in (lambda: dev.authenticate(DEV_KEY),  # the old key no longer works
                        lambda: dev.set_device_key(new_key[:-1]),  # wrong length
                        lambda: dev.set_device_key(new_key)):  # not in service mode
            with pytest.raises((AuthFailed, LimitError, NotAuthenticated)) as info:
                attempt()
            errors.append(str(info.value))
        dev.authenticate(new_key)
        faults.next_frames("drop", 1, "out")  # the ACK of SET_DEVICE_KEY is lost
        with pytest.raises(DeviceTimeout) as timeout:
            dev.set_device_key(new_key)
        errors.append(str(timeout.value))
        faults.next_frames("corrupt", 2, "in")  # damaged requests: logged warnings, retries
        dev.status()
        dev.authenticate(new_key)
        dev.end_service()
        record = TreatmentRecord(tmp_path / "t.db")
        session = session_for(dev, record, plan={"passes": 1, "size_mm": 3.0})
        assert session.run().status == "completed"
        session.close()
        record.close()
    assert any(r.levelno >= logging.WARNING for r in caplog.records)  # logging was exercised
    logged = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    assert_secret_absent(new_key, logged + caplog.text, "the log")
    assert_secret_absent(new_key, "\n".join(errors), "an error message")
    for path in tmp_path.iterdir():
        blob = path.read_bytes()
        assert new_key not in blob, f"device key in {path.name}"
        assert_secret_absent(new_key, blob.decode("latin-1"), path.name)


# -- tamper evidence through the CLI -------------------------------------------------------------

@pytest.fixture(scope="module")
def treated_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A record of one delivered session, closed (WAL checkpointed into the file)."""
    path = tmp_path_factory.mktemp("record") / "clinic.db"
    with open_device(f"sim://?{FAST}") as dev, TreatmentRecord(path) as record:
        session = session_for(dev, record, plan={"passes": 1, "size_mm": 3.0})
        assert session.run().status == "completed"
        session.close()
    return path


def copy_record(source: Path, target_dir: Path) -> Path:
    target = target_dir / source.name
    for suffix in ("", ".head"):
        shutil.copy(str(source) + suffix, str(target) + suffix)
    return target


def execute(path: Path, sql: str) -> None:
    db = sqlite3.connect(path)
    db.execute(sql)
    db.commit()
    db.close()


TAMPERING = {
    "last row deleted": (lambda p: execute(p, "DELETE FROM entries WHERE seq = "
                                              "(SELECT MAX(seq) FROM entries)"),
                         "removed from the end"),
    "delivered spot edited": (lambda p: execute(
        p, "UPDATE entries SET body = replace(body, '\"count\":', '\"count\": ') WHERE seq = "
           "(SELECT MIN(seq) FROM entries WHERE kind = 'delivered')"), "content was edited"),
    "middle row deleted": (lambda p: execute(p, "DELETE FROM entries WHERE seq = 3"),
                           "are missing"),
    "head file deleted": (lambda p: Path(str(p) + ".head").unlink(), "missing or unreadable"),
}


def test_cli_log_verify_accepts_the_untouched_record(treated_record: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = copy_record(treated_record, tmp_path)
    assert main(["log", "verify", "--record", str(path)]) == 0
    assert "chain verified" in capsys.readouterr().out


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
def test_cli_log_verify_detects_tampering(treated_record: Path, tmp_path: Path, tampering: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = copy_record(treated_record, tmp_path)
    damage, expected = TAMPERING[tampering]
    damage(path)
    assert main(["log", "verify", "--record", str(path)]) == 4
    out = capsys.readouterr().out
    assert "TAMPERED" in out and expected in out, out


# -- treatment scripts stay inside the paths the operator gave ------------------------------------

@contextmanager
def file_activity() -> Iterator[list[tuple[str, str, bool]]]:
    """(event, path, writes) of every file this process opens, renames, removes or creates
    while the block runs (audit hooks cannot be removed; this one goes quiet afterwards)."""
    seen: list[tuple[str, str, bool]] = []
    active = [True]

    def hook(event: str, args: tuple) -> None:
        if not active[0]:
            return
        if event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            mode, flags = args[1], args[2]
            writes = (any(c in mode for c in "wax+") if isinstance(mode, str) else
                      bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
            seen.append((event, os.fsdecode(args[0]), writes))
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "sqlite3.connect"):
            if isinstance(args[0], str | bytes | os.PathLike):
                seen.append((event, os.fsdecode(args[0]), True))
            if event == "os.rename":
                seen.append((event, os.fsdecode(args[1]), True))

    sys.addaudithook(hook)
    try:
        yield seen
    finally:
        active[0] = False


HOSTILE_SCRIPTS = {
    "include key": 'include = "/etc/passwd"\n[[pass]]\n',
    "path key": 'path = "../../outside.db"\n[[pass]]\n',
    "record key": '[[pass]]\nrecord = "/tmp/elsewhere.db"\npattern = "square"\n',
    "output in device": '[device]\nurl = "sim://"\noutput = "x.log"\n[[pass]]\n',
    "file in handpiece": '[handpiece]\nname = "spot120"\nfile = "/etc/shadow"\n[[pass]]\n',
    "device url is a file": '[device]\nurl = "/etc/passwd"\n[[pass]]\n',
    "device url dot-dot": '[device]\nurl = "/dev/../etc/passwd"\n[[pass]]\n',
    "serial url to a file": '[device]\nurl = "serial:///etc/passwd"\n[[pass]]\n',
    "file url": '[device]\nurl = "file:///etc/passwd"\n[[pass]]\n',
    "tty path escape": '[device]\nurl = "/dev/ttyUSB0/../../etc/passwd"\n[[pass]]\n',
    "handpiece name is a path": '[handpiece]\nname = "../../../etc/passwd"\n[[pass]]\n',
    "handpiece name absolute": '[handpiece]\nname = "/etc/passwd"\n[[pass]]\n',
}


@pytest.mark.parametrize("name", sorted(HOSTILE_SCRIPTS))
def test_scripts_cannot_name_files(tmp_path: Path, name: str) -> None:
    script = tmp_path / "hostile.toml"
    script.write_text(HOSTILE_SCRIPTS[name], encoding="utf-8")
    with file_activity() as seen, pytest.raises(ScriptError):
        load_script(script)
    opened = {Path(path).resolve() for _, path, _ in seen}
    outside = {p for p in opened if p != script.resolve() and DATA_DIR not in p.parents}
    assert not outside, f"the loader touched {outside}"
    assert not any(writes for _, _, writes in seen)


def test_text_fields_are_only_text(tmp_path: Path) -> None:
    text = SCRIPT.replace('"Dr Sec"', '"../../../tmp/evil"').replace('"S-1"', '"/etc/passwd"')
    script = parse_script(text, tmp_path / "s.toml")
    assert script.operator == "../../../tmp/evil" and script.device_url == "sim://"


def test_run_writes_only_the_record_it_was_given(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cwd, scripts, records = (tmp_path / d for d in ("cwd", "scripts", "records"))
    for d in (cwd, scripts, records):
        d.mkdir()
    text = SCRIPT.replace('"Dr Sec"', '"../records/evil"').replace('"S-1"', '"evil.db"')
    script = scripts / "treatment.toml"
    script.write_text(text, encoding="utf-8")
    record = records / "clinic.db"
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("CO2SCAN_RECORD", raising=False)
    with file_activity() as seen:
        code = main(["run", str(script), "--device", f"sim://?{FAST}", "--yes",
                     "--record", str(record)])
    assert code == 0
    assert list(cwd.iterdir()) == []
    assert [p.name for p in scripts.iterdir()] == ["treatment.toml"]
    allowed = {record.name + suffix for suffix in ("", ".head", ".head.tmp", ".lock", "-wal",
                                                   "-shm", "-journal")}
    assert {p.name for p in records.iterdir()} <= allowed
    written = {Path(path).resolve() for event, path, writes in seen
               if writes and "__pycache__" not in path
               and not (event == "os.mkdir" and Path(path).resolve() in record.parents)}
    assert written, "the audit hook saw no write at all"
    strays = {p for p in written if p.parent != records.resolve() or p.name not in allowed}
    assert not strays, f"co2scan run wrote outside --record: {strays}"
    with TreatmentRecord(record) as rec:
        assert rec.verify().ok
