"""Handpieces for tests of session mechanics (not of the thermal screen)."""

from dataclasses import replace

from controller.handpiece import get_handpiece
from controller.settings import Handpiece


def unscreened() -> Handpiece:
    """spot120 with its thermal limit at 1 (the whole reservoir may be damaged): no screen can
    fail, so none is run, and dense plans (soak, fault matrix) plan and start at once."""
    return replace(get_handpiece("spot120"), max_reservoir_damage_fraction=1.0)
