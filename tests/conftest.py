"""Test configuration: hypothesis profiles (``CO2SCAN_FUZZ=long`` for the long campaign), the
treatment record fixture of the session tests, and a record holding one ``co2scan run`` for
the CLI tests."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from controller.record import TreatmentRecord

settings.register_profile("ci", deadline=None, max_examples=100,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", deadline=None, max_examples=20_000,
                          suppress_health_check=list(HealthCheck))
settings.load_profile("long" if os.environ.get("CO2SCAN_FUZZ") == "long" else "ci")


@pytest.fixture
def record(tmp_path: Path) -> Iterator[TreatmentRecord]:
    """An empty treatment record in the test's directory."""
    rec = TreatmentRecord(tmp_path / "treatments.db")
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def run_record(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The path of a record holding one session (id 1) that ``co2scan run`` completed."""
    from controller.cli import main
    from tests.test_cli_run import FAST, SCRIPT

    where = tmp_path_factory.mktemp("record")
    script = where / "s.toml"
    script.write_text(SCRIPT, encoding="utf-8")
    db = str(where / "t.db")
    assert main(["run", str(script), "--device", FAST, "--yes", "--record", db]) == 0
    return db
