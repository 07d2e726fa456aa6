"""``tsadapt train --scenario``: time slices, profiles, the shipped policy left alone, and a
short fine-tune from the shipped weights."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from tsadapt.cli.main import main
from tsadapt.policy.learn.finetune import (
    finetune,
    finetune_config,
    is_shipped_policy,
    time_slices,
    with_profiles,
)
from tsadapt.policy.ppo_policy import (
    SHIPPED_POLICY,
    WEIGHTS_MEMBER,
    PolicyFileError,
    file_sha256,
    read_metadata,
)
from tsadapt.policy.ppo_runtime import load_actor, read_state_dict
from tsadapt.policy.sim.scenario import scenario_from_dict
from tsadapt.policy.sim.specs import LatencyModel

SCENARIO = {
    "name": "mine",
    "duration_s": 40,
    "seed": 3,
    "devices": [{"name": "cpu", "cores": 2}],
    "models": [
        {"name": "a", "slo_ms": 100, "profile": {"alpha_ms": 2, "beta_ms": 3},
         "min_workers": 1, "max_workers": 2, "max_batch": 16},
        {"name": "b", "slo_ms": 50, "profile": {"alpha_ms": 0.5, "beta_ms": 1},
         "min_workers": 1, "max_workers": 1, "max_batch": 32},
    ],
    "workload": [
        {"model": "a", "kind": "bursty", "base_rate": 10, "spike_rate": 60, "spike_s": 4,
         "period_s": 10},
        {"model": "b", "kind": "poisson", "rate": 30},
    ],
    "budget": {"workers": 3},
}  # fmt: skip


@pytest.fixture
def scenario():
    return scenario_from_dict(SCENARIO)


def test_slices_partition_the_arrivals(scenario, tmp_path: Path) -> None:
    s = time_slices(scenario, 10.0, 2, tmp_path)
    assert [x.name for x in s.train] == ["mine[0-10s]", "mine[20-30s]"]
    assert [x.name for x in s.heldout] == ["mine[10-20s]", "mine[30-40s]"]
    rng = np.random.default_rng(scenario.seed)
    for name in scenario.model_names:
        whole = np.sort(scenario.workload_for(name).arrivals(40.0, rng))
        parts = [
            sc.workload_for(name).arrivals(10.0, rng) + 10.0 * i
            for i, sc in enumerate(sorted(s.train + s.heldout, key=lambda x: x.name))
        ]
        np.testing.assert_allclose(np.sort(np.concatenate(parts)), whole, atol=1e-6)
    assert all(x.duration_s == 10.0 for x in s.train + s.heldout)


@pytest.mark.parametrize(
    ("slice_s", "every", "msg"),
    [(30.0, 2, "at least 2 are needed"), (10.0, 1, "--heldout-every must be >= 2"),
     (0.0, 2, "--slice-s must be > 0")],
)  # fmt: skip
def test_slice_options_checked(scenario, tmp_path: Path, slice_s, every, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        time_slices(scenario, slice_s, every, tmp_path)


def test_profiles_replace_latency_and_unknown_model_is_named(scenario) -> None:
    lat = LatencyModel(table=((1, 4.0), (8, 10.0)))
    sc = with_profiles(scenario, [("a", lat, "--profile a.json")])
    assert sc.model("a").latency == lat and sc.model("b") == scenario.model("b")
    with pytest.raises(ValueError, match=r"--profile z.json: model 'z' is not in the scenario"):
        with_profiles(scenario, [("z", lat, "--profile z.json")])


def test_finetune_config_is_short_and_slice_long() -> None:
    cfg = finetune_config(read_metadata(SHIPPED_POLICY), 10.0, 512, 7)
    base = read_metadata(SHIPPED_POLICY)["train_config"]
    assert cfg.env.episode_ticks == 10 and cfg.total_timesteps == 512 and cfg.seed == 7
    assert cfg.ppo.n_steps * cfg.ppo.n_envs <= max(512, 64 * cfg.ppo.n_envs)
    assert cfg.ppo.learning_rate < base["ppo"]["learning_rate"]
    assert list(cfg.ppo.net_arch) == base["ppo"]["net_arch"]


def test_shipped_policy_is_never_the_output(tmp_path: Path, capsys) -> None:
    link = tmp_path / "link.zip"
    link.symlink_to(SHIPPED_POLICY)
    assert is_shipped_policy(SHIPPED_POLICY) and is_shipped_policy(link)
    assert not is_shipped_policy(tmp_path / "mine.zip")
    sc = tmp_path / "s.yaml"
    sc.write_text("{}")
    before = file_sha256(SHIPPED_POLICY)
    for out in (None, link):
        argv = ["train", "--scenario", str(sc)] + ([] if out is None else ["--out", str(out)])
        assert main(argv) == 2
        assert "never overwrites it" in capsys.readouterr().err
    with pytest.raises(PolicyFileError, match="is the shipped policy"):
        finetune(SHIPPED_POLICY, None, link, 10)  # type: ignore[arg-type]
    assert file_sha256(SHIPPED_POLICY) == before


@pytest.mark.slow
def test_short_finetune_starts_from_the_base_weights(scenario, tmp_path: Path) -> None:
    slices = time_slices(scenario, 10.0, 2, tmp_path)
    out = tmp_path / "mine.zip"
    meta = finetune(SHIPPED_POLICY, slices, out, 128, seed=1, command="test")
    assert meta["finetuned_from"]["sha256"] == file_sha256(SHIPPED_POLICY)
    assert meta["total_timesteps"] >= 128
    actor, m = load_actor(out)  # numpy-only runtime reads it
    assert m["finetune"]["slices"].startswith("4 slices of 10 s")
    with zipfile.ZipFile(out) as a, zipfile.ZipFile(SHIPPED_POLICY) as b:
        new, old = read_state_dict(a.read(WEIGHTS_MEMBER)), read_state_dict(b.read(WEIGHTS_MEMBER))
    assert set(new) == set(old)
    diffs = [float(np.abs(new[k] - old[k]).max()) for k in old]
    v = m["finetune"]["validation"]["goodput_rps"]
    if m["finetune"]["kept"] == "fine-tuned":
        assert v["fine-tuned"] >= v["base"]
        assert max(diffs) > 0  # it trained ...
        assert max(diffs) < 0.5  # ... from the base weights, not from a fresh initialisation
    else:  # worse on the training slices: the base weights are kept
        assert m["finetune"]["kept"] == "base" and v["fine-tuned"] < v["base"]
        assert max(diffs) == 0
    assert not list(tmp_path.glob(".mine.zip.*"))  # no temporary file left
    assert out.stat().st_mode & 0o777 == 0o644
