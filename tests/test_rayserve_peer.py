"""The Ray Serve peer of ``tsadapt lab bench --peers rayserve``: its settings in both modes (no
Ray needed) and a short real run on loopback (needs ``make install-peers``, which CI runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tsadapt.experiments.bench import BenchConfig, run_bench
from tsadapt.experiments.bench_schedule import resolve_scenario
from tsadapt.experiments.peers.envs import peer_python
from tsadapt.experiments.peers.rayserve_app import (
    RAY_DEFAULTS,
    TUNED_ONGOING_PER_BATCH,
    UPSCALE_DELAY_S,
    peer_settings,
    setting_rows,
)
from tsadapt.experiments.peers.rayserve_bench import ray_processes, status_reader
from tsadapt.experiments.peers.settings import adaptive_batch_caps, replica_caps
from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.policy.sim.scenario import load_scenario


@pytest.mark.parametrize("name", ["surge", "co-surge", "bursty"])
def test_fixed_mode_is_torchserve_static(name: str) -> None:
    scenario = load_scenario(resolve_scenario(name))
    settings = peer_settings(scenario, "fixed", cores=2)
    assert [s.model for s in settings] == scenario.model_names
    for s in settings:
        reg = DEMO_MODELS[s.model]
        assert s.max_batch_size == reg.batch_size
        assert s.batch_wait_timeout_s == pytest.approx(reg.max_batch_delay_ms / 1000)
        assert s.num_replicas == reg.min_workers
        assert s.max_queued_requests == reg.job_queue_size
        assert s.max_ongoing_requests == TUNED_ONGOING_PER_BATCH * reg.batch_size
        opts = s.deployment_options()
        assert opts["num_replicas"] == s.num_replicas and "autoscaling_config" not in opts
    assert sum(s.replica_num_cpus * s.num_replicas for s in settings) <= 2.0 + 1e-9


@pytest.mark.parametrize("name", ["surge", "co-surge", "bursty"])
def test_auto_mode_fits_the_budget_and_reacts_to_surges(name: str) -> None:
    scenario = load_scenario(resolve_scenario(name))
    settings = peer_settings(scenario, "auto", cores=2)
    caps, batches = replica_caps(scenario), adaptive_batch_caps(scenario)
    assert sum(s.max_replicas for s in settings) <= scenario.budget.workers
    for s in settings:
        cfg = s.deployment_options()["autoscaling_config"]
        assert cfg["max_replicas"] == caps[s.model] >= cfg["initial_replicas"] >= 1
        assert s.max_batch_size == batches[s.model]
        assert cfg["target_ongoing_requests"] == s.max_batch_size
        assert cfg["upscale_delay_s"] == UPSCALE_DELAY_S <= 1.0
        assert s.max_queued_requests == DEMO_MODELS[s.model].job_queue_size
    assert sum(s.replica_num_cpus * s.max_replicas for s in settings) <= 2.0 + 1e-9


def test_co_surge_caps_split_the_budget_of_six() -> None:
    scenario = load_scenario(resolve_scenario("co-surge"))
    assert replica_caps(scenario) == {"image": 2, "text": 2, "tabular": 2}


@pytest.mark.parametrize("mode", ["fixed", "auto"])
def test_settings_table_names_each_changed_setting_with_its_default(mode: str) -> None:
    scenario = load_scenario(resolve_scenario("co-surge"))
    rows = setting_rows(f"rayserve-{mode}", peer_settings(scenario, mode, cores=2))
    names = [r.setting for r in rows]
    assert len(names) == len(set(names))
    assert {"max_queued_requests", "max_ongoing_requests", "max_batch_size"} <= set(names)
    assert ("num_replicas" in names) == (mode == "fixed")
    assert ("upscale_delay_s" in names) == (mode == "auto")
    for r in rows:
        assert r.default == RAY_DEFAULTS[r.setting] and r.value and r.reason


def test_unknown_mode_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="mode"):
        peer_settings(load_scenario(resolve_scenario("surge")), "elastic")


def test_status_file_gives_replicas_per_model(tmp_path: Path) -> None:
    scenario = load_scenario(resolve_scenario("surge"))
    status = tmp_path / "status.json"
    status.write_text(json.dumps({"t_epoch": 1000.0, "replicas": {"image": 2, "text": 1,
                                                                   "tabular": 1}}))  # fmt: skip
    samples = {s.model: s for s in status_reader(status, scenario, "fixed")()}
    assert samples["image"].workers == 2 and samples["image"].batch_size == 8
    assert samples["image"].max_batch_delay_ms == 20 and samples["text"].t_epoch == 1000.0
    assert ray_processes(status) == []  # no pids recorded


PEER_SCENARIO = """
name: peer-smoke
duration_s: 15
seed: 3
models:
  - {name: text, slo_ms: 300, profile: {alpha_ms: 3, beta_ms: 8},
     min_workers: 1, max_workers: 2, max_batch: 32}
  - {name: tabular, slo_ms: 200, profile: {alpha_ms: 0.1, beta_ms: 1},
     min_workers: 1, max_workers: 2, max_batch: 64}
workload:
  - {model: text, kind: poisson, rate: 5}
  - {model: tabular, kind: poisson, rate: 10}
budget: {workers: 4}
"""


@pytest.mark.server
@pytest.mark.slow
def test_rayserve_peer_real_run(tmp_path: Path) -> None:
    """Ray Serve (autoscaling) serves the same arrivals through the bench's Locust file, the
    reports have its rows and settings, and no Ray process outlives the run."""
    python, why = peer_python("rayserve")
    if python is None:
        pytest.skip(why)
    scenario = tmp_path / "peer-smoke.yaml"
    scenario.write_text(PEER_SCENARIO)
    cfg = BenchConfig(
        scenario=str(scenario), controllers=(), peers=("rayserve-auto",), duration_s=15.0,
        max_requests=400, out_dir=tmp_path / "results", runs_dir=tmp_path / "runs",
        command="pytest", capacity_s=0.0,
    )  # fmt: skip
    results, md = run_bench(cfg)
    assert [r.controller for r in results] == ["rayserve-auto"]
    res = results[0]
    assert res.status == "ok", res.reason
    total = res.rates[-1]
    assert total.sent == total.scheduled > 100
    for name in ("text", "tabular"):
        r = res.per_model[name]
        assert r.completed == r.requests > 0  # every request answered 2xx
        assert 10.0 < r.worker_seconds <= 2 * 15.0 + 1e-6  # 1..2 replicas
    assert "| rayserve-auto" in md.read_text()
    peers_md = (tmp_path / "results" / "peers.md").read_text()
    assert "`max_queued_requests`" in peers_md and "`upscale_delay_s`" in peers_md
    assert res.rundir is not None
    status = res.rundir / "rayserve-status.json"
    assert len(json.loads(status.read_text())["pids"]) >= 3  # GCS, raylet, replicas, ...
    assert ray_processes(status) == []
    # the replicas' time accounts reached the run folder
    assert {p.name.split("-")[0] for p in (res.rundir / "timing").glob("*.json")} == {
        "text", "tabular"}  # fmt: skip
