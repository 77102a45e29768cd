"""Test configuration: hypothesis profiles (``CO2SCAN_FUZZ=long`` for the long campaign)."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", deadline=None, max_examples=100,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", deadline=None, max_examples=20_000,
                          suppress_health_check=list(HealthCheck))
settings.load_profile("long" if os.environ.get("CO2SCAN_FUZZ") == "long" else "ci")
