"""PPO: a tiny training run, the policy file round-trip, and clear errors on bad files."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tsadapt.policy.agent_view import OBS_LAYOUT
from tsadapt.policy.learn.ppo_train import train
from tsadapt.policy.learn.train_config import EnvConfig, PPOConfig, RandomiseConfig, TrainConfig
from tsadapt.policy.ppo_policy import (
    META_MEMBER,
    WEIGHTS_MEMBER,
    PolicyFileError,
    PPOPolicy,
    load_policy_file,
    make_ppo_policy,
    read_metadata,
)
from tsadapt.policy.sim.control import controller_config_for, run_controlled
from tsadapt.policy.sim.scenario import load_scenario

REPO = Path(__file__).resolve().parent.parent
TINY = TrainConfig(
    seed=3,
    total_timesteps=128,
    env=EnvConfig(episode_ticks=16, background=("static",)),
    randomise=RandomiseConfig(models=(1, 2), max_rate_rps=80.0),
    ppo=PPOConfig(n_steps=64, batch_size=64, n_epochs=1, n_envs=2, net_arch=(16,)),
)


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ppo") / "tiny.zip"
    meta = train(TINY, out, command="pytest tiny")
    assert meta["total_timesteps"] >= TINY.total_timesteps
    return out


def _rewrite(
    src: Path, dst: Path, meta_change: dict | None = None, weights: bytes | None = None
) -> Path:
    with zipfile.ZipFile(src) as z:
        meta = json.loads(z.read(META_MEMBER))
        raw = z.read(WEIGHTS_MEMBER)
    meta.update(meta_change or {})
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr(META_MEMBER, json.dumps(meta))
        z.writestr(WEIGHTS_MEMBER, raw if weights is None else weights)
    return dst


def test_metadata_records_layout_config_seed_versions(tiny_policy: Path) -> None:
    meta = read_metadata(tiny_policy)
    assert meta["observation_layout"] == list(OBS_LAYOUT)
    assert meta["seed"] == 3 and meta["command"] == "pytest tiny"
    assert meta["train_config"]["ppo"]["net_arch"] == [16]
    assert {"torch", "stable_baselines3", "gymnasium", "numpy", "python"} <= set(meta["versions"])
    assert tiny_policy.stat().st_size < 1_000_000


def test_round_trip_same_actions(tiny_policy: Path, tmp_path: Path) -> None:
    net, meta = load_policy_file(tiny_policy)
    copy = _rewrite(tiny_policy, tmp_path / "copy.zip")
    net2, _ = load_policy_file(copy)
    x = np.random.default_rng(0).random((32, len(OBS_LAYOUT))).astype(np.float32)
    a1, _ = net.predict(x, deterministic=True)
    a2, _ = net2.predict(x, deterministic=True)
    np.testing.assert_array_equal(a1, a2)


def test_ppo_runs_behind_guards_in_simulation(tiny_policy: Path) -> None:
    sc = load_scenario(REPO / "configs" / "scenarios" / "step.yaml")
    cfg = controller_config_for(sc)
    pol = make_ppo_policy(tiny_policy, cfg)
    assert isinstance(pol, PPOPolicy) and pol.name == "ppo"
    r = run_controlled(sc, pol, cfg, seed=0)
    assert r.overall.requests > 0
    # guards hold: never more workers than the budget allows (worker-seconds bound)
    assert r.overall.worker_seconds <= sc.budget.workers * sc.duration_s + 1e-6


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"observation_layout": list(OBS_LAYOUT[:-1])}, "observation layout does not fit"),
        ({"observation_layout": list(reversed(OBS_LAYOUT))}, "different order"),
        ({"format_version": 99}, "format_version 99"),
        ({"feature_constants": {"RATE_SCALE_RPS": 1.0}}, "normalisation constants"),
        ({"action_nvec": [3, 3, 3]}, "action layout"),
        ({"net_arch": [32, 32]}, "weights do not fit net_arch"),
        ({"format": "something-else"}, "expected 'tsadapt-ppo-policy'"),
    ],
)
def test_misfit_files_give_clear_errors(
    tiny_policy: Path, tmp_path: Path, change: dict, match: str
) -> None:
    bad = _rewrite(tiny_policy, tmp_path / "bad.zip", change)
    with pytest.raises(PolicyFileError, match=match):
        load_policy_file(bad)


def test_not_a_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="no such file"):
        load_policy_file(tmp_path / "missing.zip")
    junk = tmp_path / "junk.zip"
    junk.write_text("hello")
    with pytest.raises(PolicyFileError, match="not a zip archive"):
        load_policy_file(junk)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("x.txt", "x")
    with pytest.raises(PolicyFileError, match="needs metadata.json"):
        load_policy_file(other)


def test_corrupt_weights(tiny_policy: Path, tmp_path: Path) -> None:
    bad = _rewrite(tiny_policy, tmp_path / "w.zip", weights=b"not torch")
    with pytest.raises(PolicyFileError, match="weights do not fit"):
        load_policy_file(bad)


def test_ppo_needs_a_file() -> None:
    sc = load_scenario(REPO / "configs" / "scenarios" / "step.yaml")
    with pytest.raises(PolicyFileError, match="--policy-file"):
        make_ppo_policy(None, controller_config_for(sc))


def test_shipped_policy_loads() -> None:
    shipped = REPO / "policy" / "trained" / "ppo.zip"
    if not shipped.exists():
        pytest.skip("no shipped policy yet")
    net, meta = load_policy_file(shipped)
    assert shipped.stat().st_size < 1_000_000
    assert meta["command"].startswith("tsadapt train")


def test_train_config_file_and_errors(tmp_path: Path) -> None:
    from tsadapt.policy.learn.train_config import load_train_config

    cfg = load_train_config(REPO / "configs" / "train.yaml")
    assert cfg.reward.mask in ("gate", "paper") and cfg.total_timesteps > 0
    assert load_train_config(REPO / "configs" / "train.yaml", seed=7).seed == 7
    bad = tmp_path / "bad.yaml"
    bad.write_text("reward: {slo: -1}\n")
    with pytest.raises(ValueError, match="reward.slo"):
        load_train_config(bad)
    bad.write_text("ppo: {bogus: 1}\n")
    with pytest.raises(ValueError, match="ppo.bogus: unknown field"):
        load_train_config(bad)
