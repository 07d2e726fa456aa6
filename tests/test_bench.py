"""``tsadapt lab bench``: pure pieces (timeline accounting, controllers, CLI), a short real run."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import yaml

from tsadapt.cli.lab.bench import register
from tsadapt.experiments.bench import BenchConfig, run_bench, summarize_run
from tsadapt.experiments.bench_controllers import controller_unavailable, expand_controllers
from tsadapt.experiments.bench_report import table_rows
from tsadapt.experiments.bench_schedule import (
    UNFINISHED,
    mix_schedule,
    rate_checks,
    record_row,
    records_from_rows,
)
from tsadapt.experiments.bench_timeline import Sample, reconfigurations, worker_seconds
from tsadapt.policy.controller_config import ConfigError, load
from tsadapt.policy.sim.control import scenario_config, slo_feasible_batch
from tsadapt.policy.sim.scenario import load_scenario
from tsadapt.policy.sim.workloads import Poisson

REPO = Path(__file__).resolve().parents[1]


def _samples(points: list[tuple[float, int, int, int]], model: str = "tabular") -> list[Sample]:
    return [Sample(1000.0 + t, model, b, 5, w, w, 0) for t, b, w, _ in points]


def test_worker_seconds_integrates_running_workers() -> None:
    s = _samples([(0.0, 16, 1, 0), (10.0, 16, 2, 0), (15.0, 16, 1, 0)])
    assert worker_seconds(s, 1000.0, 20.0) == pytest.approx(10 * 1 + 5 * 2 + 5 * 1)
    late_first = _samples([(2.0, 16, 2, 0)])
    assert worker_seconds(late_first, 1000.0, 10.0) == pytest.approx(20.0)


def test_reconfigurations_count_changes_of_batch_delay_or_workers() -> None:
    s = _samples([(0, 16, 1, 0), (1, 16, 1, 0), (2, 32, 1, 0), (3, 32, 2, 0), (4, 32, 2, 0)])
    assert reconfigurations(s) == 2
    assert reconfigurations([]) == 0


def test_controllers_static_always_unknown_rejected() -> None:
    cfg = Path("configs/controller.yaml")
    sc = REPO / "loadtests" / "scenarios" / "bursty.yaml"
    assert controller_unavailable("static", cfg, sc) is None
    assert "unknown" in (controller_unavailable("nope", cfg, sc) or "")
    with pytest.raises(ValueError, match="unknown controller"):
        expand_controllers(["static", "nope"], cfg, sc)
    best = expand_controllers(["static", "best", "static"], cfg, sc)
    assert best[0] == "static" and len(best) == 2
    if best[1] != "best":
        assert controller_unavailable(best[1], cfg, sc) is None


def test_summarize_run_counts_failures_and_unsent_as_violations(tmp_path: Path) -> None:
    s = mix_schedule(Poisson(20.0), {"tabular": 1.0}, 10.0, seed=1, slo_ms={"tabular": 50.0})
    rows = []
    for i, t in enumerate(s.times[:-5]):  # the last 5 were never sent
        if i % 10 == 0:
            rows.append(record_row(1000 + t, t, t, "tabular", 3.0, 503, False, "HTTPError"))
        elif i % 10 == 1:
            rows.append(record_row(1000 + t, t, t, "tabular", None, 0, False, UNFINISHED))
        else:
            rows.append(record_row(1000 + t, t, t, "tabular", 20.0, 200, True))
    rec = records_from_rows(rows)
    res = summarize_run("static", s, rec, _samples([(0, 16, 1, 0)]), tmp_path)
    r = res.per_model["tabular"]
    ok = sum(1 for row in rows if row[6] == "1")
    assert r.requests == len(s)
    assert r.completed == ok and r.good == ok
    assert r.slo_attainment == pytest.approx(ok / len(s))
    assert r.rejected == sum(1 for row in rows if row[5] == "503")
    assert r.worker_seconds == pytest.approx(10.0)
    assert res.png is not None and res.png.stat().st_size > 10_000
    rows_txt = table_rows([res])
    assert rows_txt[0][:2] == ["static", "tabular"] and rows_txt[-1][1] == "overall"
    assert rows_txt[0][-1] == str(len(s) - ok)
    assert rate_checks(s, rec)[-1].sent == len(s) - 5


def test_controller_gets_the_scenarios_slos_and_feasible_batches() -> None:
    """The SLOs come from the scenario file alone: the shipped controller config states none,
    and each max_batch is the config's cap lowered by the profile rule."""
    base = REPO / "configs" / "controller.yaml"
    path = REPO / "configs" / "scenarios" / "bursty.yaml"
    sc = load_scenario(path)
    given = scenario_config(base, path)
    raw = yaml.safe_load(base.read_text())["models"]
    for m in sc.models:
        lim, entry = given.limits(m.name), raw[m.name]
        assert "slo_ms" not in entry and lim.slo_ms == m.slo_ms
        assert lim.max_batch == slo_feasible_batch(m.latency, m.slo_ms, entry["max_batch"])
        assert (lim.max_workers, lim.max_delay_ms) == (entry["max_workers"], entry["max_delay_ms"])


def test_an_slo_stated_twice_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "configs" / "controller.yaml").read_text())
    data["models"]["text"]["slo_ms"] = 150
    doubled = tmp_path / "controller.yaml"
    doubled.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"models\.text\.slo_ms: also stated in scenario"):
        scenario_config(doubled, REPO / "loadtests" / "scenarios" / "bursty.yaml")


def test_without_a_scenario_the_slo_is_required() -> None:
    with pytest.raises(ConfigError, match=r"models\.image\.slo_ms: is required"):
        load(REPO / "configs" / "controller.yaml")


def test_register_adds_bench() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["bench", "--scenario", "bursty", "--controllers", "static,aimd", "--duration", "30"]
    )
    assert args.scenario == "bursty" and args.controllers == "static,aimd"
    assert args.duration == 30.0 and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--scenario", "x", "--duration", "-1"])


SMALL_SCENARIO = """
name: small
duration_s: 20
seed: 5
models:
  - {name: text, slo_ms: 300, profile: {alpha_ms: 3, beta_ms: 8},
     min_workers: 1, max_workers: 2, max_batch: 32}
  - {name: tabular, slo_ms: 100, profile: {alpha_ms: 0.1, beta_ms: 1},
     min_workers: 1, max_workers: 2, max_batch: 64}
workload:
  - {model: text, kind: bursty, base_rate: 3, spike_rate: 9, spike_s: 5, period_s: 20, offset_s: 10}
  - {model: tabular, kind: poisson, rate: 20}
budget: {workers: 4}
"""


@pytest.mark.server
@pytest.mark.slow
def test_bench_static_real_run(tmp_path: Path, runs_dir: Path) -> None:
    scenario = tmp_path / "small.yaml"
    scenario.write_text(SMALL_SCENARIO)
    cfg = BenchConfig(
        scenario=str(scenario),
        controllers=("static",),
        duration_s=20.0,
        out_dir=tmp_path / "results",
        runs_dir=runs_dir,
        command="pytest",
    )
    results, md = run_bench(cfg)
    assert [r.controller for r in results] == ["static"]
    res = results[0]
    assert res.status == "ok", res.reason
    total = res.rates[-1]
    assert total.sent == total.scheduled and abs(total.error_vs_scheduled) <= 0.05
    for name in ("text", "tabular"):
        r = res.per_model[name]
        assert r.requests > 0 and 0.0 <= r.slo_attainment <= 1.0
        assert r.worker_seconds == pytest.approx(20.0, rel=0.25)  # 1 worker all along
        assert res.reconfigurations[name] == 0
        assert np.isfinite(r.p50_ms)
    text = md.read_text()
    assert "| static | tabular |" in text and "achieved vs scheduled" in text
    assert md.name == "bench-small.md"
    assert (md.parent / "bench-small-static.png").stat().st_size > 10_000


def test_a_scenario_with_fewer_models_gets_a_config_for_its_models() -> None:
    """bursty-shared serves image and text: the controller config keeps just those two."""
    path = REPO / "configs" / "scenarios" / "bursty-shared.yaml"
    config = scenario_config(REPO / "configs" / "controller.yaml", path)
    assert config.model_names == tuple(load_scenario(path).model_names)
