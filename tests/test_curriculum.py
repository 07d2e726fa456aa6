"""The Genet-style curriculum: gaps -> region weights -> the training draws, and one tiny
training run that re-weights its environments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tsadapt.policy.learn.curriculum import (
    SHARED,
    region_gaps,
    region_scenario,
    region_weights,
    regions,
    scenario_gap,
    simulated_goodput,
    weighted_randomise,
)
from tsadapt.policy.learn.ppo_train import train
from tsadapt.policy.learn.scenario_gen import random_scenario
from tsadapt.policy.learn.train_config import (
    CurriculumConfig,
    EnvConfig,
    PPOConfig,
    RandomiseConfig,
    TrainConfig,
    train_config_from_dict,
)

CFG = RandomiseConfig(max_rate_rps=80.0, models=(1, 2), kinds=("poisson", "onoff", "swing"))


@pytest.mark.parametrize(
    ("gaps", "explore", "expected"),
    [
        ({"a": 0.0, "b": 0.0}, 0.3, {"a": 0.5, "b": 0.5}),  # nobody trails: even
        ({"a": 0.2, "b": 0.0}, 0.2, {"a": 0.9, "b": 0.1}),  # 0.1 + 0.8 x 1, 0.1 + 0
        ({"a": 0.3, "b": 0.1}, 0.5, {"a": 0.25 + 0.375, "b": 0.25 + 0.125}),
        ({"a": -0.5, "b": 0.1}, 1.0, {"a": 0.5, "b": 0.5}),  # explore 1: always even
        ({"a": float("nan"), "b": 0.1}, 0.4, {"a": 0.2, "b": 0.8}),  # NaN counts as 0
    ],
)
def test_region_weights(gaps: dict, explore: float, expected: dict) -> None:
    w = region_weights(gaps, explore)
    assert w == pytest.approx(expected)
    assert sum(w.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("explore", [0.0, 1.5])
def test_region_weights_rejects_bad_explore(explore: float) -> None:
    with pytest.raises(ValueError, match="explore"):
        region_weights({"a": 1.0}, explore)


@pytest.mark.parametrize(
    ("policy", "rules", "expected"),
    [(90.0, [100.0, 80.0], 0.1), (120.0, [100.0], 0.0), (5.0, [0.0, 0.0], 0.0)],
)
def test_scenario_gap(policy: float, rules: list[float], expected: float) -> None:
    assert scenario_gap(policy, rules) == pytest.approx(expected)


def test_weights_change_what_the_generator_draws() -> None:
    w = {"poisson": 0.0, "onoff": 0.0, "swing": 0.8, SHARED: 0.2}
    cfg = weighted_randomise(CFG, w)
    assert cfg.kind_weights == (0.0, 0.0, 0.8) and cfg.shared_budget_prob == 0.2
    scs = [random_scenario(np.random.default_rng(s), cfg, 60.0) for s in range(40)]
    shared = [sc for sc in scs if sc.name.endswith("-shared")]
    assert 2 <= len(shared) <= 16
    kinds = {w.workload.kind for sc in scs if sc not in shared for w in sc.workload}
    assert kinds == {"mmpp"}  # swing only
    swings = [w.workload for sc in scs if sc not in shared for w in sc.workload]
    assert all(min(x.mean_hold_s) >= 1.0 for x in swings)  # not an onoff burst


@pytest.mark.parametrize("region", [*CFG.kinds, SHARED])
def test_region_scenario_is_of_its_region(region: str) -> None:
    sc = region_scenario(np.random.default_rng(1), CFG, region, 30.0, "x")
    if region == SHARED:
        assert sc.name == "x" and len(sc.models) >= 2 and sc.budget.workers == len(sc.models) + 1
    else:
        expected = "poisson" if region == "poisson" else "mmpp"
        assert {w.workload.kind for w in sc.workload} == {expected}


def test_region_gaps_in_the_simulator() -> None:
    cur = CurriculumConfig(per_region=1, horizon_s=15.0, rules=("aimd",))
    config = TrainConfig(randomise=CFG, curriculum=cur)
    run = simulated_goodput(None)
    same = region_gaps(config, 0, run, policy="aimd")  # the policy is the rule
    assert set(same) == set(regions(CFG)) and all(g == 0.0 for g in same.values())
    static = region_gaps(config, 0, run, policy="static")
    assert all(0.0 <= g <= 1.0 for g in static.values())
    assert static == region_gaps(config, 0, run, policy="static")  # same round, same draws


def test_curriculum_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="curriculum.explore"):
        train_config_from_dict({"curriculum": {"explore": 0}})
    with pytest.raises(ValueError, match="curriculum.rules"):
        train_config_from_dict({"curriculum": {"rules": ["ppo"]}})
    with pytest.raises(ValueError, match="kind_weights"):
        train_config_from_dict({"randomise": {"kinds": ["poisson"], "kind_weights": [1, 2]}})


@pytest.mark.slow
def test_training_reweights_its_environments(tmp_path: Path) -> None:
    config = TrainConfig(
        seed=5,
        total_timesteps=256,
        env=EnvConfig(episode_ticks=16, background=("static",)),
        randomise=CFG,
        ppo=PPOConfig(n_steps=64, batch_size=64, n_epochs=1, n_envs=2, net_arch=(16,)),
        curriculum=CurriculumConfig(every_steps=128, per_region=1, horizon_s=10.0),
    )
    meta = train(config, tmp_path / "p.zip")
    rounds = meta["curriculum"]
    assert len(rounds) >= 1
    for r in rounds:
        assert set(r["weights"]) == set(regions(CFG))
        assert sum(r["weights"].values()) == pytest.approx(1.0, abs=1e-3)
