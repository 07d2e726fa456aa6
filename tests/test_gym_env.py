"""The Gymnasium environment over the simulator."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from tsadapt.policy.agent_view import NOOP_ACTION, OBS_LAYOUT
from tsadapt.policy.guards import emergency_reason
from tsadapt.policy.learn.gym_env import AdaptEnv
from tsadapt.policy.learn.reward import RewardWeights
from tsadapt.policy.learn.train_config import EnvConfig, RandomiseConfig, TrainConfig
from tsadapt.policy.sim.scenario import Scenario, scenario_from_dict

SMALL = TrainConfig(
    env=EnvConfig(episode_ticks=12, background=("static",)),
    randomise=RandomiseConfig(models=(1, 2), max_rate_rps=100.0),
)


def _rollout(env: AdaptEnv, seed: int, action: tuple[int, int, int], n: int = 8) -> list:
    obs, info = env.reset(seed=seed)
    out = [(obs.copy(), info["focus"])]
    for _ in range(n):
        obs, r, term, trunc, info = env.step(np.array(action))
        out.append((obs.copy(), r, info["settings"]))
    return out


def test_check_env() -> None:
    check_env(AdaptEnv(SMALL), skip_render_check=True)


def test_spaces_and_layout() -> None:
    env = AdaptEnv(SMALL)
    assert env.observation_space.shape == (len(OBS_LAYOUT),)
    assert list(env.action_space.nvec) == [10, 3, 3]
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_same_seed_same_episode_different_seed_differs() -> None:
    a = _rollout(AdaptEnv(SMALL), 3, (5, 1, 1))
    b = _rollout(AdaptEnv(SMALL), 3, (5, 1, 1))
    c = _rollout(AdaptEnv(SMALL), 4, (5, 1, 1))
    for x, y in zip(a[1:], b[1:], strict=True):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1] == y[1] and x[2] == y[2]
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c, strict=True))


def test_batch_delta_moves_batch_size_through_guards() -> None:
    env = AdaptEnv(SMALL)
    env.reset(seed=1)
    b0 = env._observation.model(env.focus).settings.batch_size
    lim = env.controller.limits(env.focus)
    _, _, _, _, info = env.step(np.array([9, 1, 1]))  # +5
    assert info["settings"]["batch_size"] == min(b0 + 5, lim.max_batch)
    # cooldown guard: the next change within cooldown_s is vetoed
    _, _, _, _, info2 = env.step(np.array([9, 1, 1]))
    assert info2["settings"]["batch_size"] == info["settings"]["batch_size"]
    assert info2["changed"] == 0


def test_worker_delta_and_noop() -> None:
    env = AdaptEnv(SMALL)
    for seed in range(200):  # a calm start with budget to spare for every model
        env.reset(seed=seed)
        obs, cfg = env._observation, env.controller
        w0 = obs.model(env.focus).settings.workers
        spare = cfg.worker_budget - obs.total_workers
        calm = all(emergency_reason(m, cfg) is None for m in obs.models)
        if calm and w0 < cfg.limits(env.focus).max_workers and spare >= len(cfg.models):
            break
    else:
        pytest.fail("no seed with spare worker budget")
    _, _, _, _, info = env.step(np.array(NOOP_ACTION))
    assert info["changed"] == 0 and info["r_ssr"] == 1.0
    assert info["settings"]["workers"] == w0
    _, _, _, _, info = env.step(np.array([4, 1, 2]))  # workers + 1, nothing else
    assert info["settings"]["workers"] == w0 + 1
    assert info["changed"] == 1 and info["r_ssr"] == pytest.approx(2 / 3)


def test_truncates_after_episode_ticks() -> None:
    env = AdaptEnv(SMALL)
    env.reset(seed=0)
    done, steps = False, 0
    while not done:
        _, r, term, trunc, info = env.step(np.array(NOOP_ACTION))
        assert not term and np.isfinite(r)
        done, steps = trunc, steps + 1
    assert steps == SMALL.env.episode_ticks - 1


def test_rejects_bad_action() -> None:
    env = AdaptEnv(SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(np.array([10, 0, 0]))


def _calm_and_overloaded() -> Scenario:
    """Two models on two cores: ``calm`` is light, ``hot`` gets about eight times its capacity."""
    profile = {"alpha_ms": 1.0, "beta_ms": 9.0}
    model = {"profile": profile, "max_batch": 8, "min_workers": 1, "max_workers": 1}
    return scenario_from_dict(
        {
            "name": "calm-and-hot",
            "duration_s": 20,
            "devices": [{"name": "cpu", "cores": 2}],
            "models": [
                {"name": "calm", "slo_ms": 100, **model},
                {"name": "hot", "slo_ms": 100, **model},
            ],
            "workload": [
                {"model": "calm", "kind": "poisson", "rate": 20},
                {"model": "hot", "kind": "poisson", "rate": 4000},
            ],
            "budget": {"workers": 2},
        }
    )


@pytest.mark.parametrize(("team", "charged"), [(0.0, False), (1.0, True)])
def test_team_weight_charges_focus_for_neighbours_misses(team: float, charged: bool) -> None:
    """R_SLO of a calm model: its own (1.0) at team 0, the host's (well below) at team 1."""
    config = replace(
        SMALL, env=replace(SMALL.env, episode_ticks=10), reward=RewardWeights(team=team)
    )
    env = AdaptEnv(config, scenarios=(_calm_and_overloaded(),))
    seed = next(s for s in range(50) if env.reset(seed=s)[1]["focus"] == "calm")
    env.reset(seed=seed)
    r_slos = [env.step(env.noop())[4]["r_slo"] for _ in range(9)]
    if charged:
        assert min(r_slos[3:]) < 0.5
    else:
        assert r_slos == [1.0] * 9
