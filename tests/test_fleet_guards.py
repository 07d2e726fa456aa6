"""The fleet guards, each on its own."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tsadapt.fleet.catalog import build_catalogue
from tsadapt.fleet.constants import GPU_MEMORY_GIB, SWITCH_COOLDOWN_S, WORKER_START_S
from tsadapt.fleet.guards import GuardState, bounds, cooldown, guard, keep_served, memory
from tsadapt.fleet.sim import FleetSim
from tsadapt.fleet.types import EMPTY, FleetObservation, ModelView, Slot, SlotAction


@pytest.fixture
def cat():
    return build_catalogue(2, 3, "diurnal", 60.0)


def _obs(cat, slots, rates=(10.0, 10.0, 0.0)) -> FleetObservation:
    counts = [sum(1 for r in slots for s in r if s.model == i) for i in range(3)]
    views = tuple(
        ModelView(i, m.slo_ms, rates[i], 0, 1.0, counts[i]) for i, m in enumerate(cat.models)
    )
    return FleetObservation(5.0, views, tuple(tuple(r) for r in slots))


def _slots(*rows):
    return [list(r) + [Slot()] * (4 - len(r)) for r in rows]


def test_bounds_clamp_the_batch_and_drop_unknown_slots(cat) -> None:
    obs = _obs(cat, _slots([], []))
    hi = cat.models[0].max_batch
    kept, over = bounds([SlotAction(0, 0, 0, hi + 9), SlotAction(5, 0, 0, 1)], obs, cat)
    assert kept == [SlotAction(0, 0, 0, hi)]
    assert [o.guard for o in over] == ["bounds", "bounds"]
    assert "no slot" in over[1].reason


@pytest.mark.parametrize(("since", "vetoed"), [(1.0, True), (SWITCH_COOLDOWN_S + 1, False)])
def test_cooldown_vetoes_a_quick_second_switch(cat, since: float, vetoed: bool) -> None:
    obs = _obs(cat, _slots([Slot(0, 4)], []))
    state = GuardState({(0, 0): 100.0 - since})
    kept, over = cooldown([SlotAction(0, 0, 1, 4)], obs, state, 100.0)
    assert (kept == []) == vetoed and len(over) == int(vetoed)


def test_cooldown_lets_a_batch_change_through(cat) -> None:
    obs = _obs(cat, _slots([Slot(0, 4)], []))
    kept, _ = cooldown([SlotAction(0, 0, 0, 6)], obs, GuardState({(0, 0): 99.0}), 100.0)
    assert kept == [SlotAction(0, 0, 0, 6)]


def test_keep_served_keeps_the_last_slot_of_a_model_with_traffic(cat) -> None:
    obs = _obs(cat, _slots([Slot(0, 4), Slot(2, 4)], []))
    kept, over = keep_served([SlotAction(0, 0, EMPTY, 1), SlotAction(0, 1, EMPTY, 1)], obs)
    assert kept == [SlotAction(0, 1, EMPTY, 1)]  # model 2 has no traffic: it may go
    assert [o.guard for o in over] == ["keep_served"]


def test_memory_vetoes_a_worker_that_does_not_fit(cat) -> None:
    need = cat.models[0].memory_gib
    n = int(GPU_MEMORY_GIB // need)
    obs = _obs(cat, [[Slot()] * (n + 1), [Slot()] * (n + 1)])
    acts = [SlotAction(0, k, 0, 1) for k in range(n + 1)]
    kept, over = memory(acts, obs, cat)
    assert len(kept) == n and [o.guard for o in over] == ["memory"]


@pytest.mark.parametrize(("draining", "vetoed"), [(0.0, False), (GPU_MEMORY_GIB, True)])
def test_memory_counts_workers_that_still_drain(cat, draining: float, vetoed: bool) -> None:
    obs = replace(_obs(cat, _slots([], [])), draining_gib=(draining, 0.0))
    kept, over = memory([SlotAction(0, 0, 0, 1)], obs, cat)
    assert (not kept and [o.guard for o in over] == ["memory"]) if vetoed else len(kept) == 1


def test_the_simulator_reports_a_replaced_workers_memory_until_it_goes(cat) -> None:
    sim = FleetSim(cat, seed=0)
    sim.apply([SlotAction(0, 0, 0, 1)], ready=True)
    sim.advance(1.0)
    sim.apply([SlotAction(0, 0, 1, 1)])  # model 1 replaces model 0 on GPU 0
    assert sim.observe().draining_gib[0] == pytest.approx(cat.models[0].memory_gib)
    for t in range(2, 2 + int(WORKER_START_S) + 1):
        sim.advance(float(t))
    assert sim.observe().draining_gib == (0.0, 0.0)


def test_guard_records_switches(cat) -> None:
    obs = _obs(cat, _slots([], []))
    state = GuardState()
    guard([SlotAction(1, 2, 0, 4)], obs, cat, state, 7.0)
    assert state.last_switch == {(1, 2): 7.0}
