"""Scenario files, run_static, metrics, and the benchmark command."""

from __future__ import annotations

import argparse
import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest

from tsadapt.cli.lab import sim as commands
from tsadapt.experiments.sim_speed import bench
from tsadapt.policy.sim.metrics import goodput_rps, percentile, slo_attainment, summarize
from tsadapt.policy.sim.scenario import load_scenario, scenario_from_dict
from tsadapt.policy.sim.static_run import pool_replications, run_static
from tsadapt.policy.types import ModelSettings

SCENARIOS = Path(__file__).resolve().parents[1] / "configs" / "scenarios"

BASE = {
    "duration_s": 30,
    "seed": 1,
    "devices": [{"name": "cpu", "cores": 2}],
    "models": [
        {"name": "a", "slo_ms": 100, "profile": {"alpha_ms": 2, "beta_ms": 5},
         "min_workers": 1, "max_workers": 2, "max_batch": 16},
        {"name": "b", "slo_ms": 50, "profile": {"alpha_ms": 0.5, "beta_ms": 1},
         "min_workers": 1, "max_workers": 2, "max_batch": 32},
    ],
    "workload": [
        {"model": "a", "kind": "poisson", "rate": 50},
        {"model": "b", "kind": "step", "rates": [20, 80], "step_s": 15},
        {"model": "b", "kind": "poisson", "rate": 10},
    ],
    "budget": {"workers": 3},
}  # fmt: skip
CFG = {
    "a": {"batch_size": 4, "max_batch_delay_ms": 10, "workers": 1},
    "b": {"batch_size": 8, "max_batch_delay_ms": 5, "workers": 2},
}


@pytest.mark.parametrize("name", ["bursty", "diurnal", "step"])
def test_example_scenarios_load_and_run(name):
    sc = load_scenario(SCENARIOS / f"{name}.yaml")
    assert sc.model_names == ["image", "text", "tabular"]
    cfg = {m: ModelSettings(8, 20, 2 if m != "tabular" else 1) for m in sc.model_names}
    r = run_static(sc, cfg)
    for res in [*r.per_model.values(), r.overall]:
        assert 0.0 <= res.slo_attainment <= 1.0
        assert res.unfinished == 0
        assert res.completed + res.rejected + res.failed == res.requests
        assert res.p50_ms <= res.p99_ms
    assert r.overall.requests == sum(x.requests for x in r.per_model.values())
    assert r.overall.worker_seconds == pytest.approx(5 * sc.duration_s)


def test_run_static_is_deterministic_and_seed_matters():
    sc = scenario_from_dict(BASE)
    a, b = run_static(sc, CFG), run_static(sc, CFG)
    assert a.overall == b.overall
    assert run_static(sc, CFG, seed=7).overall.requests != a.overall.requests


def test_workloads_for_one_model_add_up():
    sc = scenario_from_dict(BASE)
    assert sc.workload_for("b").rate_at(20.0) == 90
    r = run_static(sc, CFG)
    assert r.per_model["b"].requests == pytest.approx(20 * 15 + 80 * 15 + 10 * 30, rel=0.15)


def test_more_workers_help_an_overloaded_model():
    d = copy.deepcopy(BASE)
    d["workload"][0]["rate"] = 400
    sc = scenario_from_dict(d)
    one = run_static(
        sc,
        {
            **CFG,
            "a": {"batch_size": 1, "max_batch_delay_ms": 0, "workers": 1},
            "b": {**CFG["b"], "workers": 1},
        },
    )
    batched = run_static(
        sc,
        {
            **CFG,
            "a": {"batch_size": 16, "max_batch_delay_ms": 10, "workers": 2},
            "b": {**CFG["b"], "workers": 1},
        },
    )
    assert one.per_model["a"].rejected > 0
    assert batched.per_model["a"].slo_attainment > one.per_model["a"].slo_attainment


def _mutate(path: str, value):
    d = copy.deepcopy(BASE)
    keys = re.findall(r"[^.\[\]]+", path)
    cur = d
    for k in keys[:-1]:
        cur = cur[int(k)] if k.isdigit() else cur[k]
    last = keys[-1]
    if value is KeyError:
        del cur[last]
    else:
        cur[int(last) if last.isdigit() else last] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("models.1.slo_ms", 0, "models[1].slo_ms must be > 0"),
        ("models.0.slo_ms", KeyError, "models[0].slo_ms is required"),
        ("duration_s", KeyError, "scenario.duration_s is required"),
        ("duration_s", -5, "duration_s must be > 0"),
        ("seed", 1.5, "seed must be an integer"),
        ("models.0.max_workers", 0, "models[0].max_workers must be > 0"),
        ("models.1.min_workers", 3, "models[1].max_workers must be >= min_workers"),
        ("models.0.max_batch", 5000, "models[0].max_batch must be <= 1024"),
        ("models.0.profile", {"alpha_ms": 1}, "models[0].profile.beta_ms is required"),
        ("models.0.profile", "nope.csv", "models[0].profile: no such profile file"),
        ("models.0.colour", "red", "models[0]: unknown field 'colour'"),
        ("models.1.name", "a", "models[1].name 'a' is a duplicate"),
        ("models.1.device", "gpu0", "models[1].device 'gpu0' is not one of ['cpu']"),
        ("budget.workers", 1, "budget.workers (1) is below the models' minimum workers (2)"),
        ("budget", KeyError, "scenario.budget is required"),
        ("workload.0.kind", "zipf", "workload[0]: workload.kind: unknown kind 'zipf'"),
        ("workload.0.rate", -1, "workload[0]: poisson.rate must be >= 0"),
        ("workload.0.model", "c", "workload[0].model 'c' is not one of ['a', 'b']"),
        ("workload", [], "workload must be a non-empty list"),
        ("devices.0", {"name": "cpu"}, "devices[0]: give exactly one of 'cores' or 'capacity'"),
        ("devices.0", {"name": "cpu", "cores": 2, "cpu_scale": 0}, "devices[0].cpu_scale"),
        ("typo", 1, "scenario: unknown field 'typo'"),
    ],
)
def test_scenario_validation_names_the_field(path, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        scenario_from_dict(_mutate(path, value))


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"a": CFG["a"]}, "config: missing model(s) ['b']"),
        ({**CFG, "a": {**CFG["a"], "batch_size": 32}}, "config[a].batch_size must be <= max_batch"),
        ({**CFG, "a": {**CFG["a"], "workers": 3}}, "config[a].workers must be in [1, 2]"),
        ({**CFG, "a": {**CFG["a"], "workers": 2}}, "exceed budget.workers (3)"),
        ({**CFG, "a": {**CFG["a"], "delay": 2}}, "config[a]: unknown field 'delay'"),
    ],
)
def test_run_static_validates_config(cfg, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        run_static(scenario_from_dict(BASE), cfg)


def test_load_scenario_resolves_relative_paths(tmp_path):
    (tmp_path / "prof.csv").write_text("batch,latency_ms\n1,5\n8,12\n")
    (tmp_path / "rates.csv").write_text("second,rate\n0,10\n1,20\n")
    d = copy.deepcopy(BASE)
    d["models"][0]["profile"] = "prof.csv"
    d["workload"][0] = {"model": "a", "kind": "trace", "path": "rates.csv"}
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    sc = load_scenario(tmp_path / "s.yaml")
    assert sc.name == "s" and sc.model("a").latency.batch_ms(8) == pytest.approx(12)
    assert sc.workload_for("a").rate_at(1.5) == 20


def test_metrics_count_rejections_as_violations():
    lat = np.array([10.0, 20.0, 30.0, 300.0])
    assert slo_attainment(lat, 100.0) == 0.75
    assert slo_attainment(lat, 100.0, requests=6) == pytest.approx(0.5)
    assert slo_attainment(np.empty(0), 100.0, requests=0) == 1.0
    assert goodput_rps(lat, 100.0, 2.0) == 1.5
    assert math.isnan(percentile(np.empty(0), 99))
    assert percentile(lat, 50) == pytest.approx(25.0)
    r = summarize("x", lat, 100.0, 6, 2.0, rejected=2)
    assert (r.good, r.unfinished, r.slo_attainment) == (3, 0, 0.5)
    with pytest.raises(ValueError):
        slo_attainment(lat, 100.0, requests=2)


def test_bench_and_cli_subcommand(capsys):
    row = bench(8, requests=20_000)
    assert row.requests > 15_000 and row.mean_batch == pytest.approx(8, rel=0.05)
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sim-bench", "--requests", "5000", "--batch-sizes", "1", "4"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "sim req/s" in out and len(out.strip().splitlines()) == 4


@pytest.mark.slow
def test_simulator_speed_floor():
    # the issue asks for >= 200k simulated requests/s at realistic batch sizes
    assert bench(16, requests=300_000).req_per_s >= 200_000


def _noisy() -> dict:
    """BASE with service-time jitter on both models (what replications draw anew)."""
    d = copy.deepcopy(BASE)
    for m in d["models"]:
        m["exec_cv"] = 0.3
    return d


def test_replications_keep_the_arrivals_and_draw_the_rest_anew():
    sc = scenario_from_dict(_noisy())
    first, again, other = (run_static(sc, CFG, 3, k) for k in (0, 0, 1))
    assert run_static(sc, CFG, 3).per_model == first.per_model  # 0 is the plain run
    assert again.per_model == first.per_model
    for name in sc.model_names:
        assert other.per_model[name].requests == first.per_model[name].requests
        assert not np.array_equal(other.latencies_ms[name], first.latencies_ms[name])
    with pytest.raises(ValueError, match="replication must be >= 0"):
        run_static(sc, CFG, 3, -1)


def test_pool_replications_pools_percentiles_and_averages_counts():
    sc = scenario_from_dict(_noisy())
    runs = [run_static(sc, CFG, 3, k) for k in range(4)]
    pooled = pool_replications(runs)
    for model in sc.models:
        name = model.name
        lat = np.concatenate([r.latencies_ms[name] for r in runs])
        got = pooled.per_model[name]
        assert got.p99_ms == pytest.approx(percentile(lat, 99.0))
        assert got.requests == runs[0].per_model[name].requests
        assert got.slo_attainment == pytest.approx(
            sum(r.per_model[name].good for r in runs)
            / sum(r.per_model[name].requests for r in runs)
        )
        assert got.worker_seconds == pytest.approx(
            np.mean([r.per_model[name].worker_seconds for r in runs])
        )
        assert got.slo_ms == model.slo_ms
    assert pooled.overall.requests == sum(m.requests for m in pooled.per_model.values())
    everything = np.concatenate([pooled.latencies_ms[n] for n in sc.model_names])
    assert pooled.overall.p99_ms == pytest.approx(percentile(everything, 99.0))
    assert pool_replications(runs[:1]).per_model == runs[0].per_model
    with pytest.raises(ValueError, match="no replications"):
        pool_replications([])


def test_on_slower_machine_scales_every_device_and_renames():
    sc = scenario_from_dict(BASE)
    slow = sc.on_slower_machine(1.5).on_slower_machine(2.0)
    assert slow.name == f"{sc.name}-cpu1.5-cpu2"
    assert [d.cpu_scale for d in slow.devices] == [3.0] * len(sc.devices)
    assert slow.models == sc.models and slow.workload == sc.workload
    with pytest.raises(ValueError, match="cpu_scale"):
        sc.on_slower_machine(0.0)
