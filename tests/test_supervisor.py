"""The rule-driven action designs: the policy picks a fast rule and a worker bias per tick
(``supervisor``), or a rule plus learned offsets (``residual``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from controller_helpers import config, limits, model_obs, observation
from gymnasium.utils.env_checker import check_env

from tsadapt.policy.agent_view import STEP_DIRS
from tsadapt.policy.learn.gym_env import AdaptEnv
from tsadapt.policy.learn.ppo_train import train
from tsadapt.policy.learn.train_config import EnvConfig, PPOConfig, RandomiseConfig, TrainConfig
from tsadapt.policy.ppo_policy import PolicyFileError, PPOPolicy, read_metadata
from tsadapt.policy.rules import AimdPolicy, QueuePolicy
from tsadapt.policy.sim.control import controller_config_for, run_controlled
from tsadapt.policy.sim.scenario import load_scenario
from tsadapt.policy.supervisor import (
    BATCH_OFFSETS,
    MODES,
    RESIDUAL_RULES,
    SUPERVISOR_NOOP,
    WORKER_BIAS,
    RuleSetPoints,
    action_spec,
    decode,
    residual,
    supervise,
)
from tsadapt.policy.types import Action, PolicyState

REPO = Path(__file__).resolve().parent.parent
CFG = config(limits(max_workers=3, max_batch=32, max_delay_ms=40))
TINY = TrainConfig(
    seed=4,
    total_timesteps=128,
    env=EnvConfig(episode_ticks=16, background=("static",), action_design="supervisor"),
    randomise=RandomiseConfig(models=(1, 2), max_rate_rps=80.0),
    ppo=PPOConfig(n_steps=64, batch_size=64, n_epochs=1, n_envs=2, net_arch=(16,)),
)


def test_action_specs() -> None:
    assert action_spec("direct").nvec == (10, 3, 3)
    sup = action_spec("supervisor")
    assert sup.nvec == (3, 3) and sup.noop == SUPERVISOR_NOOP
    assert MODES[sup.noop[0]] == "hold" and WORKER_BIAS[sup.noop[1]] == 0
    with pytest.raises(ValueError, match="action_design"):
        action_spec("bandit")


@pytest.mark.parametrize(
    ("mode", "bias", "expected"),
    [
        ("hold", 0, Action("tabular", batch_size=8, max_batch_delay_ms=10, workers=2)),
        ("hold", 1, Action("tabular", batch_size=8, max_batch_delay_ms=10, workers=3)),
        ("aimd", 0, Action("tabular", batch_size=10, max_batch_delay_ms=10, workers=2)),
        ("queue", 0, Action("tabular", batch_size=4, max_batch_delay_ms=25, workers=1)),
        ("queue", 1, Action("tabular", batch_size=4, max_batch_delay_ms=25, workers=2)),
    ],
)
def test_supervise_takes_the_chosen_rule_plus_the_bias(mode, bias, expected) -> None:
    m = model_obs(batch_size=8, delay=10, workers=2)
    proposals = {
        "hold": None,
        "aimd": Action("tabular", batch_size=10),
        "queue": Action("tabular", batch_size=4, max_batch_delay_ms=25, workers=1),
    }
    a = supervise((MODES.index(mode), WORKER_BIAS.index(bias)), m, CFG.limits("tabular"), proposals)
    assert a == expected


def test_bias_stays_within_the_limits() -> None:
    m = model_obs(workers=1)
    low = supervise((0, 0), m, CFG.limits("tabular"), {"hold": None})
    assert low.workers == 1  # min_workers


def test_propose_is_what_each_rule_decides() -> None:
    obs = observation(model_obs(batch_size=8, queue=30, rate=300.0, p99=150.0, fill=0.9))
    rules = RuleSetPoints.for_config(CFG)
    props, state = rules.propose(obs, PolicyState())
    aimd, _ = AimdPolicy(CFG.models, CFG.aimd).decide(obs, PolicyState())
    queue, q_state = QueuePolicy(CFG.models, CFG.queue).decide(obs, PolicyState())
    assert props["tabular"]["aimd"] == (aimd[0] if aimd else None)
    assert props["tabular"]["queue"] == (queue[0] if queue else None)
    assert props["tabular"]["hold"] is None
    assert state == q_state


def test_supervisor_env_passes_check_env() -> None:
    env = AdaptEnv(TINY)
    check_env(env, skip_render_check=True)
    assert list(env.action_space.nvec) == [3, 3]
    env.reset(seed=1)
    with pytest.raises(ValueError, match="action must be in"):
        env.step(np.array([1, 1, 1]))


@pytest.fixture(scope="module")
def tiny_supervisor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sup") / "sup.zip"
    train(TINY, out, command="pytest tiny supervisor")
    return out


def test_supervisor_file_runs_numpy_and_torch_alike(tiny_supervisor: Path) -> None:
    meta = read_metadata(tiny_supervisor)
    assert meta["action_design"] == "supervisor" and meta["action_nvec"] == [3, 3]
    sc = load_scenario(REPO / "configs" / "scenarios" / "bursty.yaml")
    cfg = controller_config_for(sc)
    fast = PPOPolicy.from_file(tiny_supervisor, cfg)
    slow = PPOPolicy.from_file(tiny_supervisor, cfg, torch=True)
    a = run_controlled(sc, fast, cfg, seed=3)
    b = run_controlled(sc, slow, cfg, seed=3)
    assert a.overall.goodput_rps == b.overall.goodput_rps
    assert a.overall.requests > 0


def test_a_file_with_an_unknown_design_is_refused(tiny_supervisor: Path, tmp_path: Path) -> None:
    import json
    import zipfile

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(tiny_supervisor) as z, zipfile.ZipFile(bad, "w") as out:
        meta = json.loads(z.read("metadata.json"))
        out.writestr("metadata.json", json.dumps(replace_design(meta, "bandit")))
        out.writestr("policy.pt", z.read("policy.pt"))
    with pytest.raises(PolicyFileError, match="bandit"):
        PPOPolicy.from_file(bad, CFG)


def replace_design(meta: dict, design: str) -> dict:
    return {**meta, "action_design": design}


def test_env_config_rejects_an_unknown_design() -> None:
    with pytest.raises(ValueError, match="env.action_design"):
        replace(TINY.env, action_design="bandit")


RESIDUAL_TINY = replace(TINY, env=replace(TINY.env, action_design="residual"))
PROPOSALS = {
    "hold": None,
    "aimd": Action("tabular", batch_size=10),
    "queue": Action("tabular", batch_size=4, max_batch_delay_ms=25, workers=1),
}


def res(rule: str, batch: int, delay: int, workers: int) -> tuple[int, ...]:
    return (
        RESIDUAL_RULES.index(rule),
        BATCH_OFFSETS.index(batch),
        STEP_DIRS.index(delay),
        STEP_DIRS.index(workers),
    )


def test_residual_spec_decodes_its_noop_as_following_aimd() -> None:
    spec = action_spec("residual")
    assert spec.nvec == (2, 5, 3, 3) and not spec.skip_noop and spec.uses_rules
    m = model_obs(batch_size=8, delay=10, workers=2)
    lim = CFG.limits("tabular")
    follow = decode(spec, spec.noop, m, lim, PROPOSALS, 10)
    assert follow == Action("tabular", batch_size=10, max_batch_delay_ms=10, workers=2)
    # the other designs' no-op leaves the model alone
    assert decode(action_spec("direct"), action_spec("direct").noop, m, lim, {}, 10) is None
    sup = action_spec("supervisor")
    assert decode(sup, sup.noop, m, lim, PROPOSALS, 10) is None


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (("aimd", 0, 0, 0), (10, 10, 2)),
        (("aimd", -2, 1, 1), (8, 20, 3)),
        (("queue", 0, 0, 0), (4, 25, 1)),
        (("queue", 2, -1, -1), (6, 15, 1)),  # workers held at min_workers
        (("queue", -2, 1, 0), (2, 35, 1)),
    ],
)
def test_residual_adds_the_offsets_to_the_chosen_rule(action, expected) -> None:
    m = model_obs(batch_size=8, delay=10, workers=2)
    a = residual(res(*action), m, CFG.limits("tabular"), PROPOSALS, 10)
    assert (a.batch_size, a.max_batch_delay_ms, a.workers) == expected


def test_residual_offsets_the_current_settings_where_the_rule_proposes_none() -> None:
    m = model_obs(batch_size=31, delay=35, workers=3)
    a = residual(res("aimd", 2, 1, 1), m, CFG.limits("tabular"), {"aimd": None}, 10)
    assert (a.batch_size, a.max_batch_delay_ms, a.workers) == (32, 40, 3)  # the limits


def test_residual_env_passes_check_env_and_its_file_runs_numpy_and_torch_alike(
    tmp_path: Path,
) -> None:
    env = AdaptEnv(RESIDUAL_TINY)
    check_env(env, skip_render_check=True)
    assert list(env.action_space.nvec) == [2, 5, 3, 3]
    out = tmp_path / "res.zip"
    train(RESIDUAL_TINY, out, command="pytest tiny residual")
    assert read_metadata(out)["action_design"] == "residual"
    sc = load_scenario(REPO / "configs" / "scenarios" / "bursty.yaml")
    cfg = controller_config_for(sc)
    a = run_controlled(sc, PPOPolicy.from_file(out, cfg), cfg, seed=3)
    b = run_controlled(sc, PPOPolicy.from_file(out, cfg, torch=True), cfg, seed=3)
    assert a.overall.goodput_rps == b.overall.goodput_rps and a.overall.requests > 0
