"""``co2scan sim set`` / ``sim fault`` / ``sim serve --fault``: the control channel takes
untrusted words. A bad one gets one clear error naming it and what it takes (never a Python
message or a pointer to source code) and changes nothing in the simulator."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli import main
from sim_hw.config import SimConfig
from sim_hw.control import describe, send
from sim_hw.faults import FAULT_WORDS, fault_word
from sim_hw.tcp_server import TcpServer, serve_tcp

#: What every fault error and `fault help` list: each word with the values it takes.
EVERY_FAULT = ("drop=0..1", "corrupt_next=0..1000000", "delay_ms=0..60000",
               "direction=in|out|both", "drift=-100..100", "overtemp=on|off", "galvo=stuck|ok",
               "reset", "disconnect", "clear")
INPUTS = "key=on|off, door=closed|open, estop=released|pressed, footswitch=down|up"


@pytest.fixture
def served() -> Iterator[TcpServer]:
    with serve_tcp(SimConfig(), 0, 0) as running:
        yield running


def snapshot(served: TcpServer) -> tuple[object, ...]:
    """Everything a control command can change: state, inputs, link and device faults."""
    device, faults = served._device, served.faults
    with served.lock:
        links = [dataclasses.astuple(d.settings) for d in faults._dirs.values()]
        return (describe(served._device), links, device.laser.drift_percent,
                device.laser.temperature_dc, device.galvo.stuck, faults._disconnect)


def control(capsys: pytest.CaptureFixture[str], served: TcpServer, command: str,
            *words: str, status: int = 1) -> str:
    """Run ``co2scan sim COMMAND --control PORT WORDS``; return its output on one line."""
    capsys.readouterr()
    assert main(["sim", command, "--control", str(served.control_port), *words]) == status
    out, err = capsys.readouterr()
    text = " ".join((out + err).split())
    for python in ("Traceback", "could not convert", "invalid literal", "sequence element",
                   "Faults.command", "see Faults"):
        assert python not in text
    return text


def refused(capsys: pytest.CaptureFixture[str], served: TcpServer, command: str,
            *words: str) -> str:
    """A refused control command: exit 1, ``error:``, and the simulator as it was."""
    before = snapshot(served)
    text = control(capsys, served, command, *words)
    assert text.startswith("error: "), text
    assert snapshot(served) == before, "a refused command changed the simulator"
    return text


def test_set_without_a_value_names_the_word_and_the_inputs(
        capsys: pytest.CaptureFixture[str], served: TcpServer) -> None:
    text = refused(capsys, served, "set", "footswitch=down", "door")
    assert "set 'door': expected INPUT=VALUE" in text and INPUTS in text


def test_set_and_fault_without_a_word_say_what_they_take(
        capsys: pytest.CaptureFixture[str], served: TcpServer) -> None:
    """They changed nothing and answered ``ok``: a script that lost its words by a quoting
    slip went on as if the door were closed or the fault injected."""
    assert refused(capsys, served, "set") == f"error: set needs at least one INPUT=VALUE; " \
        f"inputs: {INPUTS}, interlock=closed|open"
    text = refused(capsys, served, "fault")
    assert text.startswith("error: fault needs at least one fault word; faults: ")
    assert all(word in text for word in EVERY_FAULT)
    port = served.control_port
    assert port is not None
    assert send(port, "set  \t ").startswith("error: set needs at least one INPUT=VALUE")


def test_a_link_fault_that_is_not_a_number_names_the_fault_and_its_range(
        capsys: pytest.CaptureFixture[str], served: TcpServer) -> None:
    text = refused(capsys, served, "fault", "drop=abc")
    assert text == "error: fault 'drop=abc': expected drop=0..1 (a probability per frame)"


def test_an_unknown_fault_or_value_lists_the_faults_not_the_source(
        capsys: pytest.CaptureFixture[str], served: TcpServer) -> None:
    text = refused(capsys, served, "fault", "galvo=broken")
    assert text == "error: fault 'galvo=broken': expected galvo=stuck|ok"
    text = refused(capsys, served, "fault", "explode")
    assert text.startswith("error: unknown fault 'explode'; faults: ")
    assert all(word in text for word in EVERY_FAULT)
    listed = control(capsys, served, "fault", "help", status=0)  # asked for: no error
    assert listed.startswith("faults: ") and all(word in listed for word in EVERY_FAULT)
    capsys.readouterr()
    with pytest.raises(SystemExit) as shown:
        main(["sim", "fault", "--help"])
    assert shown.value.code == 0
    usage = capsys.readouterr().out
    for name, word in FAULT_WORDS.items():
        assert f"  {fault_word(name)} " in usage and word.does.split()[0] in usage


def test_drift_must_be_a_finite_percentage(capsys: pytest.CaptureFixture[str],
                                           served: TcpServer) -> None:
    for value in ("nan", "1e9", "inf", "-101"):
        text = refused(capsys, served, "fault", f"drift={value}")
        assert text == f"error: fault 'drift={value}': expected drift=-100..100 (percent)"
    for percent in (math.nan, 1e9):  # the same range for callers in Python
        with pytest.raises(ValueError, match=r"drift=.* outside -100\.\.100"):
            served.faults.drift(percent)
    assert served._device.laser.drift_percent == 0.0
    assert control(capsys, served, "fault", "drift=-100", status=0).startswith("ok applied")
    assert served._device.laser.drift_percent == -100.0


def test_a_refused_word_leaves_the_words_before_it_unapplied(
        capsys: pytest.CaptureFixture[str], served: TcpServer) -> None:
    refused(capsys, served, "fault", "drop=0.5", "galvo=stuck", "drift=x")
    refused(capsys, served, "set", "footswitch=down", "door=ajar")
    refused(capsys, served, "set", "door=open", "interlock=closed")  # the same input twice


@pytest.mark.parametrize(("command", "words", "message"), [
    ("set", ["=x"], f"unknown input ''; inputs: {INPUTS}"),
    ("set", ["a=b=c"], f"unknown input 'a'; inputs: {INPUTS}"),
    ("set", ["door=closed=x"], "input door='closed=x': expected door=closed|open"),
    ("set", ["interlock=ajar"], "input interlock='ajar': expected interlock=closed|open"),
    ("fault", ["=x"], "unknown fault '=x'; faults: drop=0..1"),
    ("fault", ["a=b=c"], "unknown fault 'a=b=c'; faults: drop=0..1"),
    ("fault", ["drop="], "fault 'drop=': expected drop=0..1"),
    ("fault", ["drop=nan"], "fault 'drop=nan': expected drop=0..1"),
    ("fault", ["corrupt=-0.1"], "fault 'corrupt=-0.1': expected corrupt=0..1"),
    ("fault", ["drop_next=1.5"], "fault 'drop_next=1.5': expected drop_next=0..1000000 "
                                 "(a number of frames)"),
    ("fault", ["drop_next=-1"], "fault 'drop_next=-1': expected drop_next=0..1000000"),
    ("fault", ["drop_next=" + "9" * 30], "expected drop_next=0..1000000"),
    ("fault", ["delay_next=٣"], "fault 'delay_next=٣': expected delay_next=0..1000000"),
    ("fault", ["delay_ms=-5"], "fault 'delay_ms=-5': expected delay_ms=0..60000 (milliseconds)"),
    ("fault", ["delay_ms=1e400"], "fault 'delay_ms=1e400': expected delay_ms=0..60000"),
    ("fault", ["direction="], "fault 'direction=': expected direction=in|out|both"),
    ("fault", ["overtemp"], "fault 'overtemp': expected overtemp=on|off"),
    ("fault", ["reset=1"], "fault 'reset=1': expected reset, without a value"),
])
def test_other_bad_words_name_themselves_and_what_is_allowed(
        capsys: pytest.CaptureFixture[str], served: TcpServer, command: str,
        words: list[str], message: str) -> None:
    assert message in refused(capsys, served, command, *words)


def test_serve_checks_its_start_faults_before_it_starts(tmp_path: Path) -> None:
    """A bad --fault refuses the start before anything exists: no state file (a new one
    written by the device's first power-on would make the next start a power loss)."""
    state = tmp_path / "nvm.json"
    cmd = [sys.executable, "-m", "controller.cli", "sim", "serve", "--tcp", "0", "--state",
           str(state), "--fault", "drop=0.1", "--fault", "drift=nan"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as served:
        pytest.fail(f"it served: {served.stdout!r}")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "error: fault 'drift=nan': expected drift=-100..100 (percent)\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("option", "message"), [
    ("seed=-2", "seed=-2 outside 0..4294967295"),
    ("seed=" + "9" * 30, "seed=" + "9" * 30 + " outside 0..4294967295"),
    ("seed=٣", "seed='٣': expected an integer 0..4294967295"),
    ("noise_percent=nan", "noise_percent='nan': expected a number 0..100"),
    ("noise_percent=-5", "noise_percent=-5.0 outside 0..100"),
    ("drift_percent=inf", "drift_percent='inf': expected a number -100..100"),
    ("drift_percent=1e400", "drift_percent=inf outside -100..100"),
    ("temperature_dc=99999999999", "temperature_dc=99999999999 outside -32768..32767"),
    ("over_temperature_dc=-32768", "over_temperature_dc=-32768 outside -32767..32767"),
    ("serial=", "serial='': expected 1..16 printable ASCII characters"),
    ("serial=" + "A" * 17, "serial='" + "A" * 17 + "': expected 1..16 printable ASCII"),
    ("serial=é", "serial='é': expected 1..16 printable ASCII characters"),
    ("watchdog_ms=x", "watchdog_ms='x': expected an integer 1..65535"),
    ("rep_rate_hz=1e3", "rep_rate_hz='1e3': expected an integer 1..rep_rate_max_hz"),
])
def test_a_serve_option_out_of_its_range_is_refused_naming_the_range(
        option: str, message: str) -> None:
    """Each of these was taken (and served a device whose STATUS or IDENTIFY could not be
    encoded, or whose monitor read NaN), or refused in Python's words."""
    key, _, value = option.partition("=")
    with pytest.raises(ValueError) as caught:
        SimConfig.from_query({key: value})
    assert str(caught.value).startswith(message)


def test_serve_names_the_range_of_its_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "serve", "--tcp", "0", "--seed", "-2"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", "error: seed=-2 outside 0..4294967295\n")


@pytest.mark.parametrize(("word", "message"), [
    ("door=open\nfault reset", "word 'door=open\\nfault reset': expected printable text"),
    ("\udcff", "word '\\udcff': expected printable text"),
    ("footswitch=" + "d" * 5000, "the command is 5015 bytes; the control channel takes at most "
                                 "4096"),
])
def test_a_word_that_would_not_arrive_as_written_is_not_sent(
        capsys: pytest.CaptureFixture[str], served: TcpServer, word: str, message: str) -> None:
    """A line break in a word made a second command (this one reset the device); bytes that
    are not text ended in a UnicodeEncodeError; a long line in 'no simulator control port'."""
    before = snapshot(served)
    capsys.readouterr()
    assert main(["sim", "set", "--control", str(served.control_port), word]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: {message}") and "Traceback" not in err
    assert snapshot(served) == before


def test_the_channel_answers_a_line_too_long(served: TcpServer) -> None:
    """Other clients than co2scan's: the line is refused with a reply (was a closed
    connection, no reply)."""
    port = served.control_port
    assert port is not None
    before = snapshot(served)
    for length in (4100, 9000):  # within two reads, and beyond
        assert send(port, "set footswitch=" + "d" * length) == (
            "error: a command line is at most 4096 bytes")
    assert snapshot(served) == before


def test_status_and_truth_take_no_words(capsys: pytest.CaptureFixture[str],
                                        served: TcpServer) -> None:
    text = refused(capsys, served, "status", "door=open")
    assert text == "error: status takes no words, got 'door=open'"
    port = served.control_port
    assert port is not None
    assert send(port, "arm now") == ("error: unknown command 'arm'; commands: set, fault, "
                                     "status, truth, help")


def test_an_option_without_a_value_lists_the_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "serve", "--tcp", "0", "--option", "seed"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: --option 'seed': expected KEY=VALUE; keys: ")
    assert all(f" {key}," in err for key in ("clock", "drift_percent", "seed", "serial"))


def test_a_usb_start_that_cannot_identify_stops_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its server thread and control port were left running, and a state file it held was
    discarded by the caller while still in use."""
    from sim_hw import cli, probe, server

    stopped: list[object] = []
    stop = server.Served.stop

    def noting(self: server.Served) -> None:
        stopped.append(self)
        stop(self)

    def no_reply(self: object, name: str, **values: object) -> object:
        raise TimeoutError(f"{name}: no reply")

    monkeypatch.setattr(server.Served, "stop", noting)
    monkeypatch.setattr(probe.RawHost, "request", no_reply)
    with pytest.raises(TimeoutError, match="IDENTIFY: no reply"):
        cli._start_usb(SimConfig(), 0, None)
    assert len(stopped) == 1
