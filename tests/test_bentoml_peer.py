"""The BentoML peer of ``tsadapt lab bench --peers bentoml``: its settings in both modes (no
BentoML needed) and a short real run on loopback (needs ``make install-peers``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_rayserve_peer import PEER_SCENARIO
from tsadapt.experiments.bench import BenchConfig, run_bench
from tsadapt.experiments.bench_schedule import resolve_scenario
from tsadapt.experiments.peers.bentoml_app import BENTO_DEFAULTS, bento_settings, setting_rows
from tsadapt.experiments.peers.envs import peer_python, requirements
from tsadapt.experiments.peers.settings import adaptive_batch_caps
from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.policy.sim.scenario import load_scenario


@pytest.mark.parametrize("name", ["surge", "co-surge", "bursty"])
def test_adaptive_mode_takes_the_slos_and_the_worker_budget(name: str) -> None:
    scenario = load_scenario(resolve_scenario(name))
    s = bento_settings(scenario, "adaptive")
    assert s.workers == scenario.budget.workers
    caps = adaptive_batch_caps(scenario)
    for m in scenario.models:
        api = s.apis[m.name]
        assert api.batchable and api.max_batch_size == caps[m.name]
        assert api.max_latency_ms == int(m.slo_ms)
    assert s.max_concurrency == sum(DEMO_MODELS[m].job_queue_size for m in scenario.model_names)


def test_fixed_mode_has_no_batching_and_static_workers() -> None:
    scenario = load_scenario(resolve_scenario("co-surge"))
    s = bento_settings(scenario, "fixed")
    assert s.workers == sum(DEMO_MODELS[m].min_workers for m in scenario.model_names)
    assert not any(a.batchable for a in s.apis.values())
    names = [r.setting for r in setting_rows("bentoml-nobatch", s)]
    assert "max_latency_ms" not in names and "workers" in names


def test_settings_rows_carry_the_defaults() -> None:
    s = bento_settings(load_scenario(resolve_scenario("co-surge")), "adaptive")
    rows = setting_rows("bentoml-adaptive", s)
    assert {r.setting for r in rows} >= {
        "workers",
        "batchable",
        "max_batch_size",
        "max_latency_ms",
        "traffic.max_concurrency",
    }
    assert all(r.default == BENTO_DEFAULTS[r.setting] for r in rows)


def test_each_peer_has_its_own_extra() -> None:
    assert any(r.startswith("bentoml") for r in requirements("bentoml"))
    assert any(r.startswith("ray[serve]") for r in requirements("rayserve"))


@pytest.mark.server
@pytest.mark.slow
def test_bentoml_peer_real_run(tmp_path: Path) -> None:
    """BentoML (adaptive batching) serves the same arrivals through the bench's Locust file,
    the reports have its rows, and no worker outlives the run."""
    python, why = peer_python("bentoml")
    if python is None:
        pytest.skip(why)
    scenario = tmp_path / "peer-smoke.yaml"
    scenario.write_text(PEER_SCENARIO)
    cfg = BenchConfig(
        scenario=str(scenario), controllers=(), peers=("bentoml-adaptive",), duration_s=15.0,
        max_requests=400, out_dir=tmp_path / "results", runs_dir=tmp_path / "runs",
        command="pytest", capacity_s=0.0,
    )  # fmt: skip
    results, md = run_bench(cfg)
    res = results[0]
    assert res.controller == "bentoml-adaptive" and res.status == "ok", res.reason
    total = res.rates[-1]
    assert total.sent == total.scheduled > 100
    for name in ("text", "tabular"):
        r = res.per_model[name]
        assert r.completed == r.requests > 0
        # 4 workers (the budget) for 15 s, split evenly over the two models
        assert r.worker_seconds == pytest.approx(4 * 15.0 / 2, rel=0.2)
    assert "| bentoml-adaptive" in md.read_text()
    peers = json.loads((tmp_path / "results" / "peers.json").read_text())
    assert {r["setting"] for r in peers["settings"]} >= {"max_latency_ms", "workers"}
    assert res.rundir is not None and (res.rundir / "bentoml-metrics.txt").is_file()
    log = (res.rundir / "bentoml.log").read_text()
    assert "Starting production HTTP BentoServer" in log
