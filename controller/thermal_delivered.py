"""The heat a session actually delivered, rebuilt from the treatment record, for the report's
injury map.

Per delivered spot: its position from the stored SPOT records; residual heat = its pass's
handpiece's ``residual_heat_fraction`` x the measured energy (µJ, whole stack; -1 = not
measured: the set energy x stack); lesion radius and column depth from the set pulse energy
(the calibration's domain). Times: each ``delivered`` entry's host time ``at`` is taken as the
firing of its batch's last spot, and the batch's earlier spots are placed before it by their
relative fire times in the pass's timing model (its recorded spot rate and galvo timing).
Pauses, resumes and cooling waits therefore show as gaps. No spot is placed closer after the
one before it than the model allows (a host that recorded its batches late, or the
simulator's virtual clock, would compress them), and a batch with no reading at all (spots
the device confirmed afterwards: a reconciliation on resume) is placed right after the spot
before it, not at the time it was recorded. Spots never delivered contribute
nothing. Records written before passes stored their handpiece and galvo timing fall back to
the session's one handpiece and to :class:`GalvoTiming` defaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from controller.handpiece import get_handpiece
from controller.record import RecordError, TreatmentRecord
from controller.settings import Handpiece
from controller.thermal import ThermalResult, TissueParams, simulate_pass
from controller.thermal_screen import SpotHeat, announce, default_params, screening
from controller.timing import GalvoTiming, fire_times_us
from drivers.galvo import lsb_to_um
from drivers.protocol.messages import SPOT_DTYPE


def spot_positions_um(spots: np.ndarray, field_um: float) -> tuple[np.ndarray, np.ndarray]:
    """Skin positions (µm from the field centre) of SPOT records."""
    return lsb_to_um(spots["x_lsb"], field_um), lsb_to_um(spots["y_lsb"], field_um)


@dataclass(frozen=True)
class DeliveredPass:
    """One recorded pass: its entry in the session head (``stored``), its SPOT records and
    spot rate, and per delivered spot its index, measured energy (µJ, -1 unknown), and the
    host time and last index of its batch."""

    stored: dict[str, Any]
    spots: np.ndarray
    rep_rate_hz: float
    index: np.ndarray
    measured_uj: np.ndarray
    batch_at_s: np.ndarray
    batch_last: np.ndarray
    batch_unread: np.ndarray  # the spot's batch has no reading at all (reconciled)

    @property
    def set_uj(self) -> np.ndarray:
        """Set energy of each delivered spot, whole stack (µJ)."""
        return (self.spots["energy_uj"][self.index].astype(np.int64)
                * self.spots["stack"][self.index])


def recorded_passes(record: TreatmentRecord, session: int) -> Iterator[DeliveredPass]:
    """Every pass of ``session`` with its delivered spots, in pass order."""
    head = next(record.entries(session, "session"), None)
    if head is None:
        raise RecordError(f"no session {session} in {record.path}")
    batches: dict[int, list[tuple[np.ndarray, np.ndarray, float]]] = {}
    for e in record.entries(session, "delivered"):
        first, count = e.body["first"], e.body["count"]
        batches.setdefault(e.body["pass_index"], []).append(
            (np.arange(first, first + count), np.asarray(e.body["measured_uj"], np.int64), e.at))
    for p in head.body["passes"]:
        spots = record.pass_spots(session, p["pass"], SPOT_DTYPE)
        if spots is None:
            raise RecordError(f"session {session} pass {p['pass'] + 1}: planned spots not "
                              "stored")
        found = batches.get(p["pass"], [])
        sizes = [len(i) for i, _, _ in found]
        none = [np.empty(0, np.int64)]
        yield DeliveredPass(p, spots, float(p["rep_rate_hz"]),
                            np.concatenate([i for i, _, _ in found] + none),
                            np.concatenate([m for _, m, _ in found] + none),
                            np.repeat([at for _, _, at in found], sizes).astype(np.float64),
                            np.repeat([i[-1] for i, _, _ in found], sizes).astype(np.int64),
                            np.repeat([bool((m < 0).all()) for _, m, _ in found],
                                      sizes).astype(bool))


def pass_handpiece(record: TreatmentRecord, session: int, stored: dict[str, Any]) -> Handpiece:
    """The handpiece a recorded pass used: its own entry, or in older records the one
    handpiece the session names (they do not say which pass used which of several)."""
    if "handpiece" in stored:
        return get_handpiece(stored["handpiece"])
    names = next(record.entries(session, "session")).body.get("handpieces", [])
    if len(names) != 1:
        number = stored["pass"] + 1 if isinstance(stored.get("pass"), int) else "?"
        raise RecordError(f"session {session} pass {number}: no handpiece recorded and the "
                          f"session names {names}")
    return get_handpiece(names[0])


@dataclass(frozen=True)
class DeliveredHeat:
    """Model inputs of a session's delivered spots, and the lattice pitch that sizes the
    model's window (the largest of the passes' mean spacings)."""

    spots: SpotHeat
    pitch_um: float


def delivered_heat(record: TreatmentRecord, session: int) -> DeliveredHeat:
    """Model inputs of every delivered spot of ``session`` (see the module docstring), times
    in seconds from the first delivered spot; ``pass_start_s`` is each pass's first delivered
    spot (NaN for a pass with none). Raises RecordError when nothing was delivered, and
    SettingsError for a recorded handpiece or timing that is unknown or out of range."""
    field_um = float(next(record.entries(session, "session")).body["field_size_um"])
    parts: list[SpotHeat] = []
    pitch_um = 0.0
    for recorded in recorded_passes(record, session):
        spots, index = recorded.spots, recorded.index
        x_um, y_um = spot_positions_um(spots, field_um)
        area_um2 = np.ptp(x_um) * np.ptp(y_um) if len(spots) else 0.0
        pitch_um = max(pitch_um, float(np.sqrt(area_um2 / max(len(spots), 1))))
        stored_timing = recorded.stored.get("galvo")
        timing = (GalvoTiming(field_um=field_um) if stored_timing is None
                  else GalvoTiming.from_record(stored_timing))
        rel_s = fire_times_us(x_um, y_um, spots["pulse_us"].astype(np.int32),
                              spots["stack"].astype(np.int32), recorded.rep_rate_hz,
                              timing)[0] * 1e-6
        energy_uj = np.where(recorded.measured_uj >= 0, recorded.measured_uj, recorded.set_uj)
        parts.append(SpotHeat.of_pulses(
            pass_handpiece(record, session, recorded.stored), x_um[index], y_um[index],
            _as_fired(recorded.batch_at_s - (rel_s[recorded.batch_last] - rel_s[index]),
                      rel_s[index], recorded.batch_unread),
            energy_uj.astype(np.float64), spots["energy_uj"][index] * 1e-3,
            spots["stack"][index].astype(np.float64), source="recorded energy_uj"))
    starts_s = np.array([p.t_s.min() if len(p.t_s) else np.nan for p in parts])
    if np.isnan(starts_s).all():
        raise RecordError(f"session {session}: no spot was delivered")
    t0_s = np.nanmin(starts_s)
    heat = SpotHeat.joined(parts, starts_s - t0_s)
    return DeliveredHeat(replace(heat, t_s=heat.t_s - t0_s), pitch_um)


def _as_fired(anchored_s: np.ndarray, model_s: np.ndarray, unread: np.ndarray) -> np.ndarray:
    """Spot times from their batches' anchors (``anchored_s``), in delivery order, never closer
    together than the timing model's (``model_s``, from the pass start); an ``unread`` spot
    (no reading in its batch) right after the spot before it."""
    start_s = np.where(unread, -np.inf, anchored_s - model_s)  # the pass start each implies
    if len(start_s):
        start_s[0] = anchored_s[0] - model_s[0]
    return np.maximum.accumulate(start_s) + model_s


def simulate_delivered(record: TreatmentRecord, session: int,
                       params: TissueParams | None = None) -> ThermalResult:
    """The thermal model run on what ``session`` delivered (all its passes together, each
    with its own handpiece); ``params=None``: the plan screen's defaults for these spots."""
    heat = delivered_heat(record, session)
    s = heat.spots
    with screening(f"session {session}"):
        announce(f"delivered heat of {len(s.t_s)} spots")
    return simulate_pass(s.x_um, s.y_um, s.t_s, s.heat_uj, s.lesion_radius_um,
                         params or default_params(s, heat.pitch_um))
