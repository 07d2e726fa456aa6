"""PPO on the fleet env: a short training writes one policy that the runtime loads and runs
behind the guards on fleets of any size; a file that is not such a policy is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsadapt.fleet.catalog import build_catalogue
from tsadapt.fleet.ppo import FleetPPOPolicy, picks_of, policy_path, train
from tsadapt.fleet.run import run_fleet


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ppo")
    cats = [build_catalogue(2, 3, mix, 40.0) for mix in ("diurnal", "bursty")]
    meta = train(cats, 512, policy_path(out), episode_ticks=20)
    assert meta["timesteps"] >= 512 and meta["shapes"] == [(2, 3)]
    return out


@pytest.mark.parametrize(("gpus", "models"), [(2, 3), (4, 7)])
def test_trained_policy_runs_behind_the_guards(trained: Path, gpus: int, models: int) -> None:
    cat = build_catalogue(gpus, models, "diurnal", 40.0)
    r = run_fleet(cat, FleetPPOPolicy(policy_path(trained), cat), seed=1)
    assert r.policy == "ppo" and r.proposed <= 39
    assert r.reconfigurations <= r.proposed
    assert 0 < r.mean_gpus <= gpus


def test_a_missing_policy_names_the_command(tmp_path: Path) -> None:
    cat = build_catalogue(2, 3, "diurnal", 40.0)
    with pytest.raises(FileNotFoundError, match="tsadapt lab fleet train"):
        FleetPPOPolicy(policy_path(tmp_path), cat)


def test_train_needs_steps_and_a_positive_learning_rate(tmp_path: Path) -> None:
    cats = [build_catalogue(2, 3, "diurnal", 40.0)]
    with pytest.raises(ValueError, match="timesteps"):
        train(cats, 0, tmp_path / "p.pt")
    with pytest.raises(ValueError, match="learning_rate"):
        train(cats, 64, tmp_path / "p.pt", learning_rate=0.0)


def test_a_policy_trained_with_picks_acts_as_many_times_per_tick(trained: Path, tmp_path) -> None:
    """Fine-tuned from ``trained`` with 3 picks per tick: its metadata says so, the runtime
    takes up to 3 slot actions a tick, and ``picks`` overrides it."""
    cats = [build_catalogue(4, 7, "bursty", 40.0)]
    out = policy_path(tmp_path)
    meta = train(
        cats, 256, out, episode_ticks=20, picks_per_tick=3, init=policy_path(trained),
        learning_rate=2e-4,
    )  # fmt: skip
    assert meta["picks_per_tick"] == 3 and meta["init"] == str(policy_path(trained))
    assert meta["settings"]["learning_rate"] == 2e-4
    assert picks_of(out) == 3 and picks_of(policy_path(trained)) == 1
    cat = build_catalogue(4, 7, "diurnal", 40.0)
    assert FleetPPOPolicy(out, cat).picks == 3 and FleetPPOPolicy(out, cat, picks=5).picks == 5
    r = run_fleet(cat, FleetPPOPolicy(out, cat), seed=2)
    assert r.proposed <= 3 * 39 and 0 < r.mean_gpus <= 4
