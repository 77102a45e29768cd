"""Test configuration: hypothesis profiles (``CO2SCAN_FUZZ=long`` for the long campaign), and
the treatment record fixture of the session tests."""

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
