"""Many slot actions per tick: autoregressive picks over candidates listed again for the
layout each pick leaves, the incremental layout estimate, and the environment's ticks."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from tsadapt.fleet.agent import Picks, after
from tsadapt.fleet.candidates import Load, candidates
from tsadapt.fleet.catalog import build_catalogue
from tsadapt.fleet.env import FleetEnv, start
from tsadapt.fleet.guards import GuardState
from tsadapt.fleet.sim import FleetSim
from tsadapt.fleet.types import EMPTY, SlotAction


def _placed(gpus: int, models: int, mix: str = "diurnal", ticks: int = 20):
    cat = build_catalogue(gpus, models, mix, 120.0)
    sim = FleetSim(cat, seed=0)
    start(sim, cat, GuardState())
    for t in range(1, ticks + 1):
        sim.advance(float(t))
    return cat, sim, sim.observe()


@pytest.mark.parametrize(("gpus", "models", "mix"), [(8, 10, "diurnal"), (32, 50, "bursty")])
def test_the_incremental_layout_equals_one_computed_afresh(gpus: int, models: int, mix: str):
    """After every kind of candidate, :meth:`Load.after` gives what a fresh :class:`Load` of
    the simulator's layout after the same action gives (the simulator applies it)."""
    cat, sim, obs = _placed(gpus, models, mix)
    load = Load(obs, cat)
    cands = candidates(obs, cat, load)[1:]
    occupied = [(g, k) for g, row in enumerate(obs.slots) for k, s in enumerate(row) if not s.empty]
    removals = [SlotAction(g, k, EMPTY, 1) for g, k in occupied[:3]]
    assert {c.kind for c in cands} >= {"grow", "batch"}
    for action in [c.action for c in cands] + removals:
        inc = load.after(action)
        probe = FleetSim(cat, seed=0)
        probe.apply([a for g, row in enumerate(obs.slots) for a in _row(g, row)], ready=True)
        probe.apply([action], ready=True)
        fresh = Load(after(obs, inc), cat)
        assert inc.slots == [list(r) for r in probe.slots]
        for key in ("cap", "busy_now", "cycle", "mem", "slot_lat", "slot_slo"):
            np.testing.assert_allclose(getattr(inc, key), getattr(fresh, key), err_msg=key)
        assert inc.caps == fresh.caps


def _row(g, row):
    return [
        SlotAction(g, k, s.model, s.batch, s.parallel) for k, s in enumerate(row) if not s.empty
    ]


def test_picks_stop_at_the_noop_and_at_the_cap() -> None:
    cat, _, obs = _placed(8, 10)
    p = Picks(obs, cat, cap=3)
    assert p.pick(0) is False and p.actions == []
    p = Picks(obs, cat, cap=3)
    picked = []
    for _ in range(3):
        i = next(i for i, c in enumerate(p.cands) if c.action is not None)
        picked.append(p.cands[i].action)
        more = p.pick(i)
    assert more is False and p.actions == picked


def test_a_slot_is_changed_once_per_tick_and_the_observation_follows() -> None:
    cat, _, obs = _placed(32, 50)
    p = Picks(obs, cat, cap=8)
    while p.pick(next((i for i, c in enumerate(p.cands) if c.action is not None), 0)):
        pass
    slots = [(a.gpu, a.slot) for a in p.actions]
    assert len(p.actions) == 8 and len(set(slots)) == len(slots)
    load = Load(obs, cat)
    for a in p.actions[:-1]:
        load = load.after(a)
    assert p.obs.slots == tuple(tuple(r) for r in load.slots)
    want = {m: sum(s.model == m for r in load.slots for s in r) for m in range(len(cat.models))}
    assert {v.index: v.slots for v in p.obs.models} == want


def test_picks_per_tick_must_be_positive() -> None:
    cat, _, obs = _placed(2, 3, ticks=2)
    with pytest.raises(ValueError, match="picks per tick"):
        Picks(obs, cat, cap=0)
    with pytest.raises(ValueError, match="picks_per_tick"):
        FleetEnv([cat], picks_per_tick=0)


@pytest.fixture(scope="module")
def cats():
    return [build_catalogue(4, 6, mix, 60.0) for mix in ("diurnal", "bursty")]


def test_env_with_picks_passes_gymnasiums_checker(cats) -> None:
    check_env(FleetEnv(cats, episode_ticks=5, picks_per_tick=4), skip_render_check=True)


def test_a_tick_runs_after_the_noop_or_the_last_pick(cats) -> None:
    env = FleetEnv(cats, episode_ticks=50, picks_per_tick=3)
    env.reset(seed=2)
    t0 = env.sim.now
    acted = []
    for _ in range(2):  # two picks: no tick yet, no reward
        i = next(i for i, c in enumerate(env._picks.cands) if c.action is not None)
        acted.append(env._picks.cands[i].action)
        _, r, _, _, info = env.step(i)
        assert env.sim.now == t0 and r == 0.0 and "r_slo" not in info
    _, r, _, _, info = env.step(0)  # done: the tick runs with both actions
    assert env.sim.now == t0 + 1.0 and "r_slo" in info and info["picks"] == 2
    for a in acted:
        if info["overrides"] == 0:
            assert env.sim.slots[a.gpu][a.slot] == a.slot_value()
