"""The Ray Serve peer of ``tsadapt lab bench --peers rayserve``: its settings (no Ray needed)
and a short real run on loopback (needs the ``peers`` extra, which CI installs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tsadapt.experiments.bench import BenchConfig, run_bench
from tsadapt.experiments.bench_schedule import resolve_scenario
from tsadapt.experiments.peers.rayserve_app import TUNED_ONGOING_PER_BATCH, peer_settings
from tsadapt.experiments.peers.rayserve_bench import ray_processes, status_reader
from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.policy.sim.scenario import load_scenario


@pytest.mark.parametrize("name", ["surge", "co-surge", "bursty"])
def test_settings_are_our_registration_defaults_and_the_scenarios_bounds(name: str) -> None:
    scenario = load_scenario(resolve_scenario(name))
    settings = peer_settings(scenario, cores=2)
    assert [s.model for s in settings] == scenario.model_names
    for s in settings:
        reg, entry = DEMO_MODELS[s.model], scenario.model(s.model)
        assert s.max_batch_size == reg.batch_size
        assert s.batch_wait_timeout_s == pytest.approx(reg.max_batch_delay_ms / 1000)
        assert (s.min_replicas, s.max_replicas) == (max(1, entry.min_workers), entry.max_workers)
        assert s.min_replicas <= s.initial_replicas <= s.max_replicas
        assert s.max_ongoing_requests == TUNED_ONGOING_PER_BATCH * reg.batch_size
        assert set(s.autoscaling_config()) == {"min_replicas", "max_replicas", "initial_replicas"}
    # every model's max_replicas fit in the cores Ray is given
    assert sum(s.replica_num_cpus * s.max_replicas for s in settings) <= 2.0 + 1e-9


def test_status_file_gives_replicas_per_model(tmp_path: Path) -> None:
    scenario = load_scenario(resolve_scenario("surge"))
    status = tmp_path / "status.json"
    status.write_text(json.dumps({"t_epoch": 1000.0, "replicas": {"image": 2, "text": 1,
                                                                   "tabular": 1}}))  # fmt: skip
    samples = {s.model: s for s in status_reader(status, scenario)()}
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
    """Ray Serve serves the same arrivals through the bench's Locust file, the report has
    its row, and no Ray process outlives the run."""
    pytest.importorskip("ray", reason="the peers extra (pip install .[peers]) is not installed")
    scenario = tmp_path / "peer-smoke.yaml"
    scenario.write_text(PEER_SCENARIO)
    cfg = BenchConfig(
        scenario=str(scenario),
        controllers=(),
        peers=("rayserve",),
        duration_s=15.0,
        max_requests=400,
        out_dir=tmp_path / "results",
        runs_dir=tmp_path / "runs",
        command="pytest",
    )
    results, md = run_bench(cfg)
    assert [r.controller for r in results] == ["rayserve"]
    res = results[0]
    assert res.status == "ok", res.reason
    total = res.rates[-1]
    assert total.sent == total.scheduled > 100
    for name in ("text", "tabular"):
        r = res.per_model[name]
        assert r.completed == r.requests > 0  # every request answered 2xx
        assert r.worker_seconds == pytest.approx(15.0, rel=0.3)  # one replica (30 s upscale)
    text = md.read_text()
    assert "| rayserve | tabular |" in text and "max_ongoing_requests" in text
    assert res.rundir is not None
    status = res.rundir / "rayserve-status.json"
    assert len(json.loads(status.read_text())["pids"]) >= 3  # GCS, raylet, replicas, ...
    assert ray_processes(status) == []
