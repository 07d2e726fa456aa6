"""The candidate slot actions PPO scores: each is an action of DNN-Adapt's space, the masks
drop moves that break an SLO by construction, and the encoding does not depend on the fleet."""

from __future__ import annotations

import numpy as np
import pytest

from tsadapt.fleet.candidates import (
    CAND_FEATURES,
    MAX_BUSY,
    QUOTA,
    K,
    Load,
    candidates,
    encode,
    obs_size,
)
from tsadapt.fleet.catalog import build_catalogue
from tsadapt.fleet.constants import SLOTS_PER_GPU
from tsadapt.fleet.env import start
from tsadapt.fleet.guards import GuardState
from tsadapt.fleet.sim import FleetSim
from tsadapt.fleet.types import EMPTY, FleetObservation, ModelView, Slot


def _placed(gpus: int, models: int, mix: str = "diurnal", ticks: int = 30):
    cat = build_catalogue(gpus, models, mix, 120.0)
    sim = FleetSim(cat, seed=0)
    start(sim, cat, GuardState())
    for t in range(1, ticks + 1):
        sim.advance(float(t))
    return cat, sim.observe()


@pytest.mark.parametrize(("gpus", "models"), [(2, 3), (8, 10), (32, 50)])
def test_every_candidate_is_a_slot_action_within_quota(gpus: int, models: int) -> None:
    cat, obs = _placed(gpus, models)
    cands = candidates(obs, cat)
    assert cands[0].kind == "noop" and cands[0].action is None
    assert len(cands) <= K
    for kind, n in QUOTA.items():
        assert sum(c.kind == kind for c in cands) <= n
    for c in cands[1:]:
        a = c.action
        assert 0 <= a.gpu < gpus and 0 <= a.slot < SLOTS_PER_GPU
        assert a.model == EMPTY or 1 <= a.batch <= cat.models[a.model].max_batch
        assert obs.slots[a.gpu][a.slot] != a.slot_value()  # every candidate changes a slot


@pytest.mark.parametrize(("gpus", "models"), [(2, 3), (8, 10), (32, 50), (128, 200)])
def test_the_encoding_has_one_size_for_every_fleet(gpus: int, models: int) -> None:
    cat = build_catalogue(gpus, models, "bursty", 60.0)
    obs = FleetSim(cat).observe(rates=[m.mean_rate for m in cat.models])
    load = Load(obs, cat)
    x = encode(obs, cat, candidates(obs, cat, load), load)
    assert x.shape == (obs_size(),) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_padding_rows_are_marked_invalid() -> None:
    cat, obs = _placed(2, 3)
    load = Load(obs, cat)
    cands = candidates(obs, cat, load)
    rows = encode(obs, cat, cands, load)[: K * CAND_FEATURES].reshape(K, CAND_FEATURES)
    assert rows[: len(cands), 0].tolist() == [1.0] * len(cands)
    assert not rows[len(cands) :].any()


def _obs(cat, slots, rates) -> FleetObservation:
    counts = [sum(1 for r in slots for s in r if s.model == i) for i in range(len(cat.models))]
    views = tuple(
        ModelView(i, m.slo_ms, rates[i], 0, 1.0, counts[i]) for i, m in enumerate(cat.models)
    )
    return FleetObservation(10.0, views, tuple(tuple(r) for r in slots))


def test_a_new_slot_waits_one_cycle_and_runs_within_the_slo() -> None:
    cat = build_catalogue(2, 3, "diurnal", 60.0)
    m0 = cat.models[0]
    slots = [[Slot(0, m0.max_batch), Slot(), Slot(), Slot()], [Slot()] * 4]
    load = Load(_obs(cat, slots, [1.0, 1.0, 0.0]), cat)
    m1 = cat.models[1]
    b = load.fit_batch(0, 1)
    cycle = m0.batch_ms(m0.max_batch)
    assert b == 1 or cycle + 2 * m1.batch_ms(b) <= m1.slo_ms
    assert b == m1.max_batch or cycle + 2 * m1.batch_ms(b + 1) > m1.slo_ms
    assert load.fit_batch(1, 1) == m1.max_batch  # alone on an empty GPU: its SLO batch


def test_masks_drop_a_removal_that_would_overload_the_model() -> None:
    cat = build_catalogue(2, 3, "diurnal", 60.0)
    m = cat.models[0]
    b = m.max_batch
    slots = [[Slot(0, b), Slot(), Slot(), Slot()], [Slot(0, b), Slot(), Slot(), Slot()]]
    busy = 1.5 * m.throughput(b)  # one slot alone would run at 1.5x its capacity
    cands = candidates(_obs(cat, slots, [busy, 0.0, 0.0]), cat)
    assert not [c for c in cands if c.kind == "remove"]
    light = 0.2 * m.throughput(b)
    cands = candidates(_obs(cat, slots, [light, 0.0, 0.0]), cat)
    removes = [c for c in cands if c.kind == "remove"]
    assert removes and all(c.after[0] <= MAX_BUSY for c in removes)
    assert {c.after[4] for c in removes} == {-1}  # either removal empties a GPU


def test_grow_under_pressure_offers_an_empty_gpu() -> None:
    cat = build_catalogue(2, 3, "diurnal", 60.0)
    m = cat.models[0]
    slots = [[Slot(0, m.max_batch), Slot(), Slot(), Slot()], [Slot()] * 4]
    cands = candidates(_obs(cat, slots, [2.0 * m.throughput(m.max_batch), 0.0, 0.0]), cat)
    grows = [c for c in cands if c.kind == "grow" and c.model == 0]
    assert any(c.action.gpu == 1 and c.after[4] == 1 for c in grows)
    for c in grows:
        assert c.after[0] < 2.0  # the pressure after it is below the pressure before
