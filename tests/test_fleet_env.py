"""DNN-Adapt's slot formulation: the Gym environment, candidate decoding and the reward."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from tsadapt.fleet.agent import FLEET_REWARD, decode, features, tick_reward
from tsadapt.fleet.candidates import K, obs_size
from tsadapt.fleet.catalog import build_catalogue
from tsadapt.fleet.env import FleetEnv
from tsadapt.fleet.sim import TickStats


@pytest.fixture(scope="module")
def cats():
    return [build_catalogue(2, 3, mix, 60.0) for mix in ("diurnal", "bursty")]


def test_env_passes_gymnasiums_checker(cats) -> None:
    check_env(FleetEnv(cats, episode_ticks=5), skip_render_check=True)


def test_one_env_serves_fleets_of_any_size(cats) -> None:
    env = FleetEnv([*cats, build_catalogue(6, 9, "bursty", 60.0)], episode_ticks=3)
    assert env.observation_space.shape == (obs_size(),) and env.action_space.n == K
    shapes = set()
    for seed in range(8):
        x, _ = env.reset(seed=seed)
        assert x.shape == (obs_size(),)
        shapes.add(env.cat.gpus)
    assert shapes == {2, 6}


def test_a_noop_episode_changes_no_slot(cats) -> None:
    env = FleetEnv(cats, episode_ticks=20)
    env.reset(seed=4)
    before = [list(r) for r in env.sim.slots]
    done, ssr = False, []
    while not done:
        _, r, term, trunc, info = env.step(0)
        ssr.append(info["r_ssr"])
        done = term or trunc
    assert [list(r) for r in env.sim.slots] == before
    assert ssr == [1.0] * 20


@pytest.mark.parametrize("action", [K, -1, np.array([0, 1])])
def test_env_rejects_out_of_space_actions(cats, action) -> None:
    env = FleetEnv(cats, episode_ticks=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be in"):
        env.step(action)


def test_env_needs_a_catalogue() -> None:
    with pytest.raises(ValueError, match="at least one catalogue"):
        FleetEnv([])


def test_a_candidate_step_enacts_its_slot_action(cats) -> None:
    env = FleetEnv(cats, episode_ticks=5)
    env.reset(seed=1)
    _, cands = features(env._obs, env.cat)
    i = next(i for i, c in enumerate(cands) if c.kind == "grow")
    a = decode(i, cands)
    env.step(i)
    assert env.sim.slots[a.gpu][a.slot].model == a.model


def test_decode_noop_and_padding(cats) -> None:
    env = FleetEnv(cats, episode_ticks=5)
    env.reset(seed=1)
    _, cands = features(env._obs, env.cat)
    assert decode(0, cands) is None and decode(K - 1 + len(cands), cands) is None


def test_tick_reward_is_eq2(cats) -> None:
    r, terms = tick_reward(TickStats(good=90, finished=100, fill_sum=5.0, batches=10), 2, 8, 1)
    assert terms == {"r_slo": 0.9, "r_gpu": 0.75, "r_bfr": 0.5, "r_ssr": 0.0}
    w = FLEET_REWARD
    assert r == pytest.approx(w.slo * 0.9 + (w.gpu * 0.75 + w.bfr * 0.5) * 0.9)


def test_fewer_gpus_score_higher(cats) -> None:
    tick = TickStats(good=100, finished=100, fill_sum=10.0, batches=10)
    assert tick_reward(tick, 2, 8, 0)[0] > tick_reward(tick, 6, 8, 0)[0]
