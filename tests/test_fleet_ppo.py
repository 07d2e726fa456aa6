"""PPO on the fleet env: a short training writes one policy that the runtime loads and runs
behind the guards on fleets of any size; a file that is not such a policy is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsadapt.fleet.catalog import build_catalogue
from tsadapt.fleet.ppo import FleetPPOPolicy, policy_path, train
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


def test_train_needs_steps(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timesteps"):
        train([build_catalogue(2, 3, "diurnal", 40.0)], 0, tmp_path / "p.pt")
