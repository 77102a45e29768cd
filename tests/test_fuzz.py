"""Fuzzing: the host's frame and message decoders, the simulator's firmware parser and the
treatment-script loader get arbitrary and mutated input.

Each target has hypothesis properties (shrinking, the ``ci``/``long`` profiles of conftest) and
a campaign: a hand-rolled mutation loop with a fixed seed, fast enough for a million inputs per
target. ``make test`` runs a short campaign (``CAMPAIGN_INPUTS``); ``make fuzz``
(``CO2SCAN_FUZZ=long``) runs 1,000,000 inputs per target; ``CO2SCAN_FUZZ_INPUTS=N`` overrides
both. Each campaign prints its count and rate.

What must hold:

* host decoders: ``FrameDecoder.feed`` never raises; ``decode_payload`` raises only
  ``ProtocolError``; a message that decodes re-encodes to exactly the bytes it came from; after
  any garbage the next valid frame decodes (resynchronisation at the delimiter).
* simulator: ``SimDevice.receive`` never raises, never fires with emission forbidden (an
  interlock open, or the footswitch up), and answers a valid request after every input.
* script loader: ``parse_script`` raises only ``ScriptError``/``SettingsError``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import multiprocessing
import os
import random
import time
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from cobs import cobs
from hypothesis import given, settings
from hypothesis import strategies as st

import controller.script
from controller.errors import SettingsError
from controller.script import (
    DEVICE_KEYS,
    HANDPIECE_KEYS,
    PASS_KEYS,
    TOP_KEYS,
    ScriptError,
    parse_script,
)
from drivers.errors import TransportURLError
from drivers.protocol import (
    FrameDecoder,
    Message,
    ProtocolError,
    decode_payload,
    encode,
    encode_payload,
    message,
)
from drivers.protocol import messages as m
from drivers.protocol.messages import AUTH_CONTEXT, CRC, HEADER, State
from drivers.transports.registry import open_transport
from sim_hw.config import DEV_KEY, SimConfig
from sim_hw.device import SimDevice
from sim_hw.probe import make_spots, plan_checksum
from tests.strategies import messages, ordered

LONG = os.environ.get("CO2SCAN_FUZZ") == "long"
#: Hypothesis examples for the slow properties in the long campaign (the mutation campaigns
#: carry the bulk count; 20,000 examples of these would take most of an hour).
SLOW_EXAMPLES = settings(max_examples=3000 if LONG else 100)
CAMPAIGN_INPUTS = int(os.environ.get("CO2SCAN_FUZZ_INPUTS", 1_000_000 if LONG else 10_000))
SEED = 20240917
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPT_PATH = Path("fuzz.toml")


#: Long campaigns are split over this many processes (each with its own fixed seed).
WORKERS = max(1, min(os.cpu_count() or 1, 8))

Stats = Counter[str]


def campaign(run: Callable[[int, int], Stats], count: int) -> tuple[Stats, float]:
    """Run ``run(seed, n)`` for ``count`` inputs in total: in this process for short campaigns,
    else split over WORKERS spawned processes (so no thread of the test process is forked)."""
    started = time.perf_counter()
    if count < 100_000 or WORKERS == 1:
        stats = run(SEED, count)
    else:
        shares = [count // WORKERS + (w < count % WORKERS) for w in range(WORKERS)]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(WORKERS, mp_context=context) as pool:
            futures = [pool.submit(run, SEED + 1000 * w, n) for w, n in enumerate(shares)]
            stats = sum((f.result() for f in futures), Counter())
    return stats, time.perf_counter() - started


def report(capsys: pytest.CaptureFixture[str], target: str, stats: Stats, elapsed_s: float,
           detail: str) -> None:
    """Print a campaign's figures past pytest's capture (they are the point of the run)."""
    count = stats["inputs"]
    with capsys.disabled():
        print(f"\nfuzz {target}: {count:,} inputs in {elapsed_s:.1f} s "
              f"({count / max(elapsed_s, 1e-9):,.0f} inputs/s, {WORKERS if count >= 100_000 else 1}"
              f" process(es)); {detail.format_map(Counter(stats))}")


# -- the mutation engine -------------------------------------------------------------------------

INTERESTING = {1: (0, 1, 0x7F, 0x80, 0xFF), 2: (0, 1, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF),
               4: (0, 1, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)}


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    """One to eight random edits: bit flips, byte sets, inserts, deletes, boundary integers,
    chunk copies, truncation, splices with another corpus entry, delimiters."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        if not b:
            b += rng.randbytes(rng.randrange(1, 16))
            continue
        pos = rng.randrange(len(b))
        op = rng.randrange(11)
        if op == 0:
            b[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[pos] = rng.randrange(256)
        elif op == 2:
            b.insert(pos, rng.randrange(256))
        elif op == 3:
            del b[pos]
        elif op == 4:
            width = rng.choice((1, 2, 4))
            b[pos:pos + width] = rng.choice(INTERESTING[width]).to_bytes(width, "little")
        elif op == 5:
            n = rng.randrange(1, 64)
            b[pos:pos] = b[rng.randrange(len(b)):][:n]
        elif op == 6:
            del b[pos:]
        elif op == 7:
            other = rng.choice(corpus)
            b[pos:] = other[rng.randrange(len(other)):]
        elif op == 8:
            b.insert(pos, 0)
        elif op == 9:
            del b[pos:pos + rng.randrange(1, 32)]
        else:
            b[pos:pos] = rng.randbytes(rng.randrange(1, 32))
    return bytes(b)


def frame_body(wire: bytes) -> bytes:
    """Header + payload of one valid wire frame (COBS undone, CRC removed)."""
    return cobs.decode(wire[1:-1])[:-CRC.size]


def reframe(rng: random.Random, body: bytes) -> bytes:
    """Wire bytes of ``body`` with a correct CRC (and usually a correct length field), so the
    mutation reaches the message layer instead of being stopped by the CRC."""
    header_payload = bytearray(body)
    if len(header_payload) >= HEADER.size and rng.random() < 0.85:
        header_payload[4:6] = (len(header_payload) - HEADER.size & 0xFFFF).to_bytes(2, "little")
    raw = bytes(header_payload) + CRC.pack(zlib.crc32(header_payload))
    return b"\0" + cobs.encode(raw) + b"\0"


def random_value(rng: random.Random, f: m.Field) -> int | bytes:
    bounds = f.bounds()
    if bounds is None:
        return rng.randbytes(f.size)
    if f.enum is not None:
        return rng.choice([int(member) for member in f.enum])
    lo, hi = bounds
    return rng.choice((lo, hi, rng.randint(lo, hi), rng.randint(lo, min(hi, lo + 300))))


def random_message(rng: random.Random, definition: m.MessageDef) -> Message:
    """A valid message of ``definition`` with random field values (fast, no hypothesis)."""
    values = ordered(definition, {f.name: random_value(rng, f) for f in definition.fields
                                  if f.name != definition.count})
    records = None
    if definition.record_dtype is not None:
        records = np.zeros(rng.randint(1, 12), definition.record_dtype)
        for f in definition.record:
            records[f.name] = [random_value(rng, f) for _ in range(len(records))]
    text = "".join(chr(rng.randint(0x20, 0x7E)) for _ in range(rng.randint(0, 64))) \
        if definition.text else ""
    return message(definition.name, rng.randrange(0x10000), records=records, text=text,
                   **values)


def protocol_corpus(rng: random.Random, per_type: int = 8) -> list[bytes]:
    """Valid wire frames of every message type."""
    return [encode(random_message(rng, d)) for d in m.MESSAGES for _ in range(per_type)]


# -- target 1: the host's frame and message decoders ---------------------------------------------

class HostDecoderCheck:
    """Feeds untrusted bytes the way the link's reader thread does, checking every property."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.probe = encode(message("STATUS_REQUEST", seq=0xBEEF))
        self.frames = 0
        self.messages = 0

    def feed(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            self.frames += 1
            try:
                msg = decode_payload(frame)
            except ProtocolError:
                continue
            self.messages += 1
            # The decoder accepts only what the encoder produces: nothing lenient slips through.
            assert encode_payload(msg) == frame.payload, f"{msg.name} decoded from "\
                f"non-canonical payload {frame.payload.hex()}"
        # Whatever came before, the next valid frame decodes (resynchronisation).
        after = self.decoder.feed(self.probe)
        assert after and after[-1].type_id == 0x03 and after[-1].seq == 0xBEEF


@given(st.lists(st.binary(max_size=300), max_size=6))
def test_fuzz_host_decoder_arbitrary_chunks(chunks: list[bytes]) -> None:
    check = HostDecoderCheck()
    for chunk in chunks:
        check.feed(chunk)


@given(messages(), st.data())
def test_fuzz_host_decoder_mutated_frames(msg: Message, data: st.DataObject) -> None:
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    wire = encode(msg)
    check = HostDecoderCheck()
    check.feed(mutate(rng, wire, [wire]))
    check.feed(reframe(rng, mutate(rng, frame_body(wire), [frame_body(wire)])))


@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=200))
def test_fuzz_message_decoder_any_checked_frame(version: int, type_id: int,
                                                payload: bytes) -> None:
    body = HEADER.pack(version, type_id, 7, len(payload)) + payload
    check = HostDecoderCheck()
    check.feed(b"\0" + cobs.encode(body + CRC.pack(zlib.crc32(body))) + b"\0")


def host_decoder_campaign(seed: int, count: int) -> Stats:
    rng = random.Random(seed)
    corpus = protocol_corpus(rng)
    bodies = [frame_body(w) for w in corpus]
    check = HostDecoderCheck()
    for i in range(count):
        kind = i % 4
        if kind == 0:  # wire-level damage: framing must reject it
            data = mutate(rng, rng.choice(corpus), corpus)
        elif kind == 3 and i % 64 == 3:  # pure noise, sometimes long
            data = rng.randbytes(rng.choice((8, 64, 5000)))
        else:  # checked frames with damaged content: the message layer must reject it
            data = reframe(rng, mutate(rng, rng.choice(bodies), bodies))
        check.feed(data)
    return Counter(inputs=count, frames=check.frames, messages=check.messages)


def test_fuzz_campaign_host_decoders(capsys: pytest.CaptureFixture[str]) -> None:
    stats, elapsed = campaign(host_decoder_campaign, CAMPAIGN_INPUTS)
    assert stats["inputs"] == CAMPAIGN_INPUTS
    assert 0 < stats["messages"] < stats["frames"]  # both layers were reached
    report(capsys, "host frame+message decoders", stats, elapsed,
           "{frames:,} frames passed framing, {messages:,} decoded as messages and re-encoded "
           "byte for byte")


# -- target 2: the simulator's firmware parser ---------------------------------------------------

#: Configurations in which no spot may ever fire, whatever a host sends.
NO_EMISSION = {
    "door-open": SimConfig(door=False, footswitch=True, pre_emission_ms=0, seed=1),
    "key-off": SimConfig(key=False, footswitch=True, pre_emission_ms=0, seed=2),
    "estop-pressed": SimConfig(estop=False, footswitch=True, pre_emission_ms=0, seed=3),
    "footswitch-up": SimConfig(footswitch=False, pre_emission_ms=0, seed=4),
}
PRIME_SPOTS = make_spots(60)
PRIME_CHECKSUM = plan_checksum(PRIME_SPOTS)
HOST_DEFS = [d for d in m.MESSAGES if d.direction is m.Direction.HOST]


class SimParserCheck:
    """One simulated device under fuzzing: never raises, never fires, keeps answering."""

    def __init__(self, config: SimConfig) -> None:
        self.device = SimDevice(config)
        self.decoder = FrameDecoder()
        self.now_s = 0.0
        self.seq = 0
        self.answered = 0

    def step(self, dt_s: float = 0.002) -> bytes:
        self.now_s += dt_s
        self.device.advance(self.now_s)
        return self.device.transmit()

    def request(self, name: str, records: np.ndarray | None = None,
                **values: int | bytes) -> Message | None:
        """Send a valid request; return its reply (None only if the device did not answer)."""
        self.seq = (self.seq + 1) & 0xFFFF
        self.device.receive(encode(message(name, self.seq, records=records, text="", **values)))
        out = self.step(0.02)  # long enough for a queued GALVO_JUMP to settle
        for frame in self.decoder.feed(out):
            if frame.seq == self.seq and frame.type_id in (0x80, 0x81, 0x82, 0x83, 0x84, 0x85):
                return decode_payload(frame)
        return None

    def prime(self, kind: int) -> None:
        """Drive the device somewhere deeper, so that mutations reach more handlers."""
        self.request("ABORT")
        self.request("RESET_FAULT")
        if kind % 2:
            challenge = self.request("AUTH_BEGIN")
            if challenge is not None and challenge.name == "AUTH_CHALLENGE":
                mac = hmac.new(DEV_KEY, AUTH_CONTEXT + bytes(challenge["nonce"]),
                               hashlib.sha256).digest()
                self.request("AUTH_RESPONSE", mac=mac)
        else:
            self.request("LOAD_PLAN", pass_index=0, spot_count=60, plan_checksum=PRIME_CHECKSUM,
                         first_index=0)
            self.request("SPOT_BATCH", PRIME_SPOTS[:30])
            self.request("ARM", plan_checksum=PRIME_CHECKSUM)

    def feed(self, data: bytes) -> None:
        self.device.receive(data)
        self.step()
        assert self.device.fired_count == 0, "fired while emission is forbidden"
        assert self.device.state is not State.EMITTING
        assert not self.device.laser.shutter_open
        self.seq = (self.seq + 1) & 0xFFFF
        self.device.receive(status_request(self.seq))
        answers = [f for f in self.decoder.feed(self.step(0.02)) if f.seq == self.seq]
        assert any(f.type_id == 0x83 for f in answers), "stopped answering"
        self.answered += 1


@functools.cache
def status_request(seq: int) -> bytes:
    return encode(message("STATUS_REQUEST", seq))


@SLOW_EXAMPLES
@given(name=st.sampled_from(sorted(NO_EMISSION)), prime=st.integers(0, 1),
       chunks=st.lists(st.one_of(st.binary(max_size=120),
                                 messages([d.name for d in HOST_DEFS]).map(encode)),
                       max_size=8))
def test_fuzz_sim_parser_arbitrary_bytes(name: str, prime: int, chunks: list[bytes]) -> None:
    check = SimParserCheck(NO_EMISSION[name])
    check.prime(prime)
    for chunk in chunks:
        check.feed(chunk)


def sim_parser_campaign(seed: int, count: int) -> Stats:
    rng = random.Random(seed)
    corpus = [encode(random_message(rng, d)) for d in HOST_DEFS for _ in range(16)]
    corpus += [encode(message("SPOT_BATCH", 0, records=PRIME_SPOTS[i:i + n]))
               for i, n in ((0, 30), (30, 30), (29, 2), (0, 1))]
    bodies = [frame_body(w) for w in corpus]
    checks = [SimParserCheck(c) for c in NO_EMISSION.values()]
    for i in range(count):
        check = checks[i % len(checks)]
        if i % 400 < len(checks):
            check.prime(i // 400)
        kind = rng.randrange(8)
        if kind == 0:
            data = mutate(rng, rng.choice(corpus), corpus)
        elif kind == 1:
            data = rng.randbytes(rng.randrange(1, 80))
        elif kind == 2:  # a valid request in the wrong state, out of order or duplicated
            data = rng.choice(corpus) * rng.choice((1, 1, 2))
        else:
            data = reframe(rng, mutate(rng, rng.choice(bodies), bodies))
        check.feed(data)
    return Counter(inputs=count,
                   frames=sum(c.device.counters["frames_received"] for c in checks),
                   nacks=sum(c.device.counters["nacks_sent"] for c in checks),
                   fired=sum(c.device.fired_count for c in checks),
                   answered=sum(c.answered for c in checks))


def test_fuzz_campaign_sim_parser(capsys: pytest.CaptureFixture[str]) -> None:
    stats, elapsed = campaign(sim_parser_campaign, CAMPAIGN_INPUTS)
    assert stats["inputs"] == stats["answered"] == CAMPAIGN_INPUTS
    assert stats["fired"] == 0
    report(capsys, "simulator firmware parser", stats, elapsed,
           "{frames:,} frames handled, {nacks:,} NACKs, {fired} spots fired, {answered:,} "
           "liveness requests answered")


# -- target 3: the treatment-script loader -------------------------------------------------------

#: The example scripts without their comment-only lines (tomllib is pure Python: shorter texts
#: mean more inputs per second; the trailing comments that stay still exercise comments).
SCRIPT_SEEDS = ["\n".join(line for line in p.read_text(encoding="utf-8").splitlines()
                          if not line.lstrip().startswith("#"))
                for p in sorted(EXAMPLES.glob("*.toml"))] + [
    """operator = "Dr F"\npatient_ref = "F-1"\n[device]\nurl = "socket://127.0.0.1:9"\n"""
    """[handpiece]\nname = "spot120"\n[[pass]]\npattern = "polygon"\n"""
    """vertices_mm = [[0, 0], [5, 0], [5, 4], [0, 4]]\nspots_per_cm2 = 200\n"""
    """energy_mj = 20\nstack = 1\norder = "thermal-spread"\nmin_step_um = 900\n"""
    """neighbour_um = 900\nrelax_ms = 10\nseed = 3\n[[pass]]\npattern = "line"\n"""
    """size_mm = 6\npitch_um = 500\ndepth_um = 400\nrotation_deg = 30\noffset = false\n""",
    """[[pass]]\npattern = "hexagon"\nsize_mm = 8\ngrid = "hex"\ndensity_percent = 10\n"""
    """depth_um = 300\norder = "serpentine"\njitter_um = 20\n[[pass]]\noffset = true\n"""
    """pattern = "hexagon"\nsize_mm = 8\ngrid = "hex"\ndensity_percent = 10\n"""
    """depth_um = 300\norder = "serpentine"\njitter_um = 20\n""",
]
SCRIPT_KEYS = [*TOP_KEYS, *PASS_KEYS, *DEVICE_KEYS, *HANDPIECE_KEYS, "include", "path", "file",
               "record", "output"]
SCRIPT_VALUES = [
    "0", "-1", "1e309", "-0.0", "inf", "nan", "-inf", "9223372036854775807",
    "99999999999999999999999", "0x7fffffff", "1_000", "true", "false", '""', '"x"',
    '"/etc/passwd"', '"../../x"', '"file:///etc/passwd"', '"serial:///etc/shadow"',
    '"sim://?door=open"', '"\\u0000"', "[]", "[[]]", "[1, 2, 3]", '[1, "a"]', "[[1, 2], [3]]",
    "{}", "{a = 1}", "1979-05-27T07:32:00Z", "07:32:00", "1979-05-27", "'''multi\nline'''",
    '"square"', '"rectangle"', '"circle"', '"polygon"', '"thermal-spread"', '"interlaced"',
    "0.001", "1e-300", "100000", "3.5", "[12, 8]", "[0.0, 0.0]", "[[0,0],[1,0],[0,1]]",
    "[" * 1500 + "]" * 1500, "{a = " * 1500 + "1" + "}" * 1500,  # deeper than the stack
]
SCRIPT_LINES = ["[[pass]]", "[device]", "[handpiece]", "[pass]", "[[device]]", "[pass.x]",
                "[[pass.y]]", "x.y.z = 1", "# comment", "", "= 1", "[[", "]]", '"a" = 1']


def mutate_script(rng: random.Random, text: str) -> str:
    """Line- and token-level edits that keep much of the text valid TOML, plus raw damage."""
    lines = text.splitlines()
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        op = rng.randrange(9)
        pos = rng.randrange(len(lines) + 1)
        if op == 0 and lines:
            lines[pos % len(lines)] = (f"{rng.choice(SCRIPT_KEYS)} = "
                                       f"{rng.choice(SCRIPT_VALUES)}")
        elif op == 1:
            lines.insert(pos, f"{rng.choice(SCRIPT_KEYS)} = {rng.choice(SCRIPT_VALUES)}")
        elif op == 2 and lines:
            del lines[pos % len(lines)]
        elif op == 3 and lines:
            lines.insert(pos, lines[rng.randrange(len(lines))])
        elif op == 4:
            lines.insert(pos, rng.choice(SCRIPT_LINES))
        elif op == 5 and lines:  # replace the value of an existing key
            i = pos % len(lines)
            key, sep, _ = lines[i].partition("=")
            if sep:
                lines[i] = f"{key}= {rng.choice(SCRIPT_VALUES)}"
        elif op == 6 and lines:
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 7:
            raw = "\n".join(lines)
            cut = rng.randrange(len(raw) + 1)
            raw = raw[:cut] + rng.choice(("", "[", "]", '"', "'", "=", "\\", "\0", "é", "\n",
                                          "{", "}", ",", ".", "#", "\r")) + raw[cut + 1:]
            lines = raw.splitlines()
        else:
            lines.insert(pos, "[" * rng.randrange(1, 40) + "1" + "]" * rng.randrange(1, 40))
    return "\n".join(lines) + rng.choice(("\n", ""))


class ScriptLoaderCheck:
    def __init__(self) -> None:
        self.valid = 0
        self.refused = 0

    def feed(self, text: str) -> None:
        try:
            parse_script(text, SCRIPT_PATH)
        except (ScriptError, SettingsError):
            self.refused += 1
        else:
            self.valid += 1


@pytest.mark.parametrize("value", ["[" * 5000 + "]" * 5000, "{a = " * 5000 + "1" + "}" * 5000])
def test_fuzz_script_loader_deep_nesting_is_a_script_error(value: str) -> None:
    """tomllib recurses per nesting level: a deep enough value raised RecursionError."""
    with pytest.raises(ScriptError, match="TOML syntax"):
        parse_script(f"x = {value}\n", SCRIPT_PATH)


@pytest.mark.parametrize("url", ["socket://127.0.].1:9", "socket://[::1", "usb://[:1"])
def test_fuzz_device_url_with_a_bracket_is_a_script_error(url: str) -> None:
    with pytest.raises(ScriptError, match=r"device\.url"):
        parse_script(f'[device]\nurl = "{url}"\n[[pass]]\n', SCRIPT_PATH)


@pytest.mark.parametrize("url", ["socket://[::1", "usb://[:1", "sim://[?door=open"])
def test_fuzz_operator_device_url_with_a_bracket_is_a_url_error(url: str) -> None:
    with pytest.raises(TransportURLError):
        open_transport(url)


@SLOW_EXAMPLES
@given(st.text(max_size=400))
def test_fuzz_script_loader_arbitrary_text(text: str) -> None:
    ScriptLoaderCheck().feed(text)


@SLOW_EXAMPLES
@given(st.sampled_from(SCRIPT_SEEDS), st.integers(0, 2**32))
def test_fuzz_script_loader_mutated_scripts(seed_text: str, seed: int) -> None:
    ScriptLoaderCheck().feed(mutate_script(random.Random(seed), seed_text))


@SLOW_EXAMPLES
@given(st.sampled_from(SCRIPT_SEEDS), st.sampled_from(PASS_KEYS), st.sampled_from(SCRIPT_VALUES))
def test_fuzz_script_loader_every_key_every_value(seed_text: str, key: str, value: str) -> None:
    ScriptLoaderCheck().feed(seed_text + f"\n[[pass]]\n{key} = {value}\n")


def script_loader_campaign(seed: int, count: int) -> Stats:
    # The handpiece and pass-default files are trusted package data, read from disk on every
    # call; caching them (frozen dataclass, read-only dict) triples the rate without changing
    # what the untrusted text meets.
    controller.script.get_handpiece = functools.cache(controller.script.get_handpiece)
    controller.script._pass_defaults = functools.cache(controller.script._pass_defaults)
    rng = random.Random(seed)
    raw_seeds = [s.encode() for s in SCRIPT_SEEDS]
    check = ScriptLoaderCheck()
    for i in range(count):
        kind = i % 8
        if kind < 4:
            text = mutate_script(rng, rng.choice(SCRIPT_SEEDS))
        elif kind < 6:
            text = mutate_script(rng, mutate_script(rng, rng.choice(SCRIPT_SEEDS)))
        else:
            text = mutate(rng, rng.choice(raw_seeds), raw_seeds).decode("utf-8", "replace")
        check.feed(text)
    return Counter(inputs=count, valid=check.valid, refused=check.refused)


def test_fuzz_campaign_script_loader(capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("get_handpiece", "_pass_defaults"):  # undo the worker's caching in-process
        monkeypatch.setattr(controller.script, name, getattr(controller.script, name))
    stats, elapsed = campaign(script_loader_campaign, CAMPAIGN_INPUTS)
    assert stats["inputs"] == stats["valid"] + stats["refused"] == CAMPAIGN_INPUTS
    assert stats["valid"] > 0 and stats["refused"] > 0
    report(capsys, "treatment-script loader", stats, elapsed,
           "{valid:,} accepted, {refused:,} refused with ScriptError/SettingsError")
