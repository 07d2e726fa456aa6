"""``tsadapt lab fidelity``: comparison, calibration and report logic; one short real run."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from tsadapt.experiments import fidelity as F
from tsadapt.experiments import hostcpu
from tsadapt.policy.sim.metrics import summarize
from tsadapt.policy.sim.scenario import scenario_from_dict
from tsadapt.policy.sim.static_run import run_static
from tsadapt.policy.types import ModelSettings

NAN = math.nan


def _result(name: str, lat: list[float], slo: float, requests: int | None = None):
    lat_a = np.asarray(lat, dtype=float)
    return summarize(name, lat_a, slo, len(lat) if requests is None else requests, 10.0)


# --------------------------------------------------------------------------- comparison


@pytest.mark.parametrize(
    "real, sim, expected",
    [(100.0, 120.0, 0.2), (100.0, 80.0, -0.2), (50.0, 50.0, 0.0), (0.0, 10.0, NAN),
     (NAN, 10.0, NAN), (10.0, NAN, NAN), (-5.0, 1.0, NAN)],
)  # fmt: skip
def test_p99_relative_error(real: float, sim: float, expected: float) -> None:
    got = F.p99_relative_error(real, sim)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


@pytest.mark.parametrize(
    "real, sim, expected", [(0.9, 0.93, 3.0), (0.95, 0.9, -5.0), (1.0, 1.0, 0.0)]
)
def test_attainment_points(real: float, sim: float, expected: float) -> None:
    assert F.attainment_points(real, sim) == pytest.approx(expected)


@pytest.mark.parametrize(
    "p99_real, p99_sim, att_real, att_sim, p99_ok, att_ok",
    [
        (100.0, 120.0, 0.90, 0.93, True, True),  # both exactly at the targets
        (100.0, 80.0, 0.93, 0.90, True, True),
        (100.0, 120.5, 0.90, 0.90, False, True),
        (100.0, 100.0, 0.90, 0.931, True, False),
        (100.0, 79.0, 0.99, 0.90, False, False),
        (NAN, 100.0, 0.5, 0.5, False, True),  # no real answers: p99 cannot agree
    ],
)
def test_row_pass_fail_at_the_targets(
    p99_real: float, p99_sim: float, att_real: float, att_sim: float, p99_ok: bool, att_ok: bool
) -> None:
    real = F.Side(100, 100, 0, 0, 10.0, p99_real, att_real)
    sim = F.Side(100, 100, 0, 0, 10.0, p99_sim, att_sim)
    row = F.Row("s", "m", 100.0, real, sim)
    assert row.p99_ok is p99_ok and row.attainment_ok is att_ok
    assert row.ok is (p99_ok and att_ok)
    d = row.as_dict()
    assert d["pass"] is row.ok and d["p99_pass"] is p99_ok and d["attainment_pass"] is att_ok
    json.dumps(d)  # JSON-ready (NaN -> None)


def test_compare_rows_per_model_then_overall_and_scenario_verdict() -> None:
    real = {"a": _result("a", [10, 20, 30], 25), "b": _result("b", [5, 6], 10, 3)}
    sim = {"a": _result("a", [10, 20, 31], 25), "b": _result("b", [5, 6, 7], 10)}
    ro, so = _result("overall", [1.0], 10), _result("overall", [1.0], 10)
    rows = F.compare("sc", real, sim, ro, so)
    assert [r.model for r in rows] == ["a", "b", "overall"]
    assert rows[1].real.requests == 3 and rows[1].real.completed == 2
    assert rows[1].attainment_diff == pytest.approx(100 * (1.0 - 2 / 3))
    assert not rows[1].attainment_ok and not F.scenario_agrees(rows)
    assert F.scenario_agrees(rows[:1]) and not F.scenario_agrees([])
    with pytest.raises(ValueError, match="one side only"):
        F.compare("sc", real, {"a": sim["a"]})


# --------------------------------------------------------------------------- report


def _run(name: str, rows: list[F.Row], status: str = "ok") -> F.ScenarioRun:
    return F.ScenarioRun(
        name, f"loadtests/scenarios/{name}.yaml", 60.0, 3,
        {"image": ModelSettings(8, 20.0, 1)}, tuple(rows), status,
        "" if status == "ok" else "boom", "runs/x", F.CpuLoad(70.0, 2, 1.1, 0.9), 75.0, True, 4.0,
    )  # fmt: skip


def _rows(scenario: str, ok: bool) -> list[F.Row]:
    real = F.Side(100, 99, 1, 0, 20.0, 100.0, 0.95)
    sim = F.Side(100, 100, 0, 0, 21.0, 110.0 if ok else 150.0, 0.96)
    return [F.Row(scenario, "image", 200.0, real, sim)]


def test_report_json_and_markdown(tmp_path: Path) -> None:
    runs = [
        _run("bursty", _rows("bursty", True)),
        _run("step", _rows("step", False)),
        _run("diurnal", [], status="failed"),
    ]
    cal = {"notes": ["calibration note"], "per_scenario": {}}
    md, js = F.write_report(runs, tmp_path, "tsadapt lab fidelity --duration 60", "2026-01-01", cal)
    doc = json.loads(js.read_text())
    assert doc["command"] == "tsadapt lab fidelity --duration 60"
    assert doc["machine"]["cores"] >= 1
    assert doc["targets"] == {"p99_rel_error_max": 0.2, "attainment_diff_points_max": 3.0,
                              "scenarios_needed": 3}  # fmt: skip
    assert doc["scenarios_agreeing"] == ["bursty"] and doc["acceptance_pass"] is False
    first = doc["scenarios"][0]
    assert first["cpu"]["others_busy_cores"] == pytest.approx(0.2)
    assert first["static_configs"]["image"]["batch_size"] == 8
    row = first["rows"][0]
    for key in ("real", "sim", "p99_rel_error", "attainment_diff_points", "pass"):
        assert key in row
    assert row["real"]["requests"] == 100 and row["p99_rel_error"] == pytest.approx(0.1)
    assert doc["scenarios"][2]["status"] == "failed" and not doc["scenarios"][2]["agrees"]
    text = md.read_text()
    assert "**Acceptance (issue #5, Fidelity): FAIL**" in text
    assert "| bursty | image | 200 | 100 |" in text and "+10.0%" in text
    assert "`step` / image: p99 150.0 ms simulated vs 100.0 ms real (+50.0%)" in text
    assert "the real run failed: boom" in text and "calibration note" in text
    assert "2 CPU cores" in text or f"{doc['machine']['cores']} CPU cores" in text


def test_report_shows_how_far_a_second_real_run_agrees(tmp_path: Path) -> None:
    from dataclasses import replace

    runs = [
        replace(_run("bursty", _rows("bursty", True)), repeat_rows=tuple(_rows("bursty", True)),
                repeat_rundir="runs/y"),
        replace(_run("step", _rows("step", True)), repeat_rows=tuple(_rows("step", False))),
        _run("diurnal", _rows("diurnal", True)),
    ]  # fmt: skip
    assert [r.repeat_agrees for r in runs] == [True, False, None]
    md, js = F.write_report(runs, tmp_path, "tsadapt lab fidelity --repeat", "2026-01-01",
                            {"notes": [], "per_scenario": {}})  # fmt: skip
    doc = json.loads(js.read_text())
    assert doc["scenarios"][0]["repeat"]["agrees"] is True
    assert doc["scenarios"][0]["repeat"]["rundir"] == "runs/y"
    assert doc["scenarios"][1]["repeat"]["rows"][0]["p99_rel_error"] == pytest.approx(0.5)
    assert doc["scenarios"][2]["repeat"] is None
    text = md.read_text()
    assert "## Repeatability: the real server against itself" in text
    assert "**1 of 2 scenarios** agree with themselves (bursty)" in text
    assert "| p99 run 1 | p99 run 2 | p99 change |" in text
    repeat_table = F.table_rows(runs, repeat=True)
    assert [r[0] for r in repeat_table] == ["bursty", "step"]
    assert repeat_table[1][8] == "+50.0%" and repeat_table[1][-1] == "FAIL"


def test_no_repeat_section_without_second_runs(tmp_path: Path) -> None:
    md, _ = F.write_report([_run("bursty", _rows("bursty", True))], tmp_path, "c", "d",
                           {"notes": [], "per_scenario": {}})  # fmt: skip
    assert "Repeatability" not in md.read_text()


def test_table_rows_show_both_request_counts_when_they_differ() -> None:
    real = F.Side(100, 99, 1, 0, 20.0, 100.0, 0.95)
    sim = F.Side(101, 101, 0, 0, 21.0, 100.0, 0.95)
    rows = F.table_rows([_run("x", [F.Row("x", "m", 50.0, real, sim)])])
    assert rows[0][3] == "100 / 101" and rows[0][-1] == "PASS"


# --------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("shift", [0.0, 4.0, 25.0])
def test_overhead_quantiles_of_a_pure_shift(shift: float) -> None:
    sim = np.random.default_rng(1).gamma(4.0, 5.0, 5000)
    q = F.overhead_quantiles(sim + shift, sim)
    assert len(q) == F.OVERHEAD_QUANTILES + 1
    np.testing.assert_allclose(q, shift, atol=1e-6)


def test_overhead_quantiles_clip_sort_and_reject_empty() -> None:
    rng = np.random.default_rng(2)
    real = rng.exponential(10.0, 2000)
    sim = rng.exponential(20.0, 2000)  # slower than real: negative differences clip to 0
    q = F.overhead_quantiles(real, sim, n=10)
    assert len(q) == 11 and min(q) >= 0 and list(q) == sorted(q)
    with pytest.raises(ValueError):
        F.overhead_quantiles(np.array([np.nan]), sim)


def test_fit_overhead_quantiles_deconvolves_an_independent_overhead() -> None:
    rng = np.random.default_rng(3)
    sim = rng.gamma(4.0, 5.0, 4000)  # what the simulator gives without overhead
    true_o = rng.exponential(6.0, 4000)  # independent of it, heavy-ish tail
    real = rng.permutation(sim) + true_o
    q = F.fit_overhead_quantiles(real, sim)
    assert list(q) == sorted(q) and min(q) >= 0
    # the fitted overhead's median is the true one (ln 2 * 6), not real p50 - sim p50
    assert F.quantile_of(q, 0.5) == pytest.approx(6.0 * math.log(2), abs=0.8)
    naive = F.overhead_quantiles(real, sim)
    assert abs(F.quantile_of(naive, 0.5) - 6.0 * math.log(2)) > abs(
        F.quantile_of(q, 0.5) - 6.0 * math.log(2)
    )
    # sim + independent draws from the fit reproduce the real quantiles
    u = rng.random(40_000) * F.OVERHEAD_QUANTILES
    o = np.interp(u, np.arange(F.OVERHEAD_QUANTILES + 1), q)
    both = np.resize(rng.permutation(sim), u.size) + o
    for p in (0.1, 0.5, 0.9, 0.99):
        assert np.quantile(both, p) == pytest.approx(np.quantile(real, p), rel=0.05)


@pytest.mark.parametrize(
    "p50, p90, cv",
    [(10.0, 10.0, 0.0), (10.0, 5.0, 0.0), (0.0, 1.0, 0.0),
     (10.0, 10.0 * math.exp(1.2815515655446004 * 0.5), math.sqrt(math.expm1(0.25)))],
)  # fmt: skip
def test_lognormal_cv(p50: float, p90: float, cv: float) -> None:
    assert F.lognormal_cv(p50, p90) == pytest.approx(cv)


def test_quantile_of_interpolates_a_table() -> None:
    q = (0.0, 10.0, 30.0)
    assert F.quantile_of(q, 0.0) == 0 and F.quantile_of(q, 0.5) == 10
    assert F.quantile_of(q, 0.75) == pytest.approx(20.0) and F.quantile_of(q, 1.0) == 30


def _log_line(t: float, model: str, ms: int) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f",{int(t * 1000) % 1000:03d}"
    return (
        f"{stamp} [INFO ] W-9000-{model}_1.0 org.pytorch.serve.wlm.WorkerThread - "
        f"Backend response time: {ms}\n"
    )


def test_backend_batches_parse_dedupe_and_since() -> None:
    t0 = 1_800_000_000.0
    lines = [
        _log_line(t0 - 5, "image", 900),  # the model load, before the run
        _log_line(t0 + 1.0, "image", 20),
        _log_line(t0 + 1.0, "image", 20),  # written twice by two appenders
        _log_line(t0 + 2.5, "text", 7),
        "2026-01-01T00:00:00,000 [INFO ] something else\n",
    ]
    b = F.backend_batches(lines, since_epoch=t0)
    assert sorted(b) == ["image", "text"]
    assert len(b["image"]) == 1 and b["image"].duration_ms[0] == 20
    assert b["image"].end_s[0] == pytest.approx(t0 + 1.0, abs=1e-3)
    assert b["image"].start_s[0] == pytest.approx(t0 + 0.98, abs=1e-3)


def test_solo_mask_finds_batches_that_overlap_another_models() -> None:
    # image: [0, 1], [2, 3], [4, 5]; text: [0.5, 0.6] (inside the first), [3.5, 3.9] (between)
    b = {
        "image": F.Batches(np.array([1.0, 3.0, 5.0]), np.array([1000.0, 1000.0, 1000.0])),
        "text": F.Batches(np.array([0.6, 3.9]), np.array([100.0, 400.0])),
        "tabular": F.Batches(np.array([4.95]), np.array([100.0])),  # [4.85, 4.95]
    }
    assert F.solo_mask(b, "image").tolist() == [False, True, False]
    assert F.solo_mask(b, "text").tolist() == [False, True]
    assert F.solo_mask(b, "tabular").tolist() == [False]


SMALL = {
    "name": "cal",
    "duration_s": 30,
    "seed": 4,
    "devices": [{"name": "cpu", "cores": 2}],
    "models": [
        {"name": "text", "slo_ms": 150, "profile": {"alpha_ms": 1.0, "beta_ms": 1.0},
         "threads": 2, "min_workers": 1, "max_workers": 2, "max_batch": 32},
    ],
    "workload": [{"model": "text", "kind": "poisson", "rate": 3}],
    "budget": {"workers": 2},
}  # fmt: skip


def test_derive_calibration_on_synthetic_measurements() -> None:
    sc = scenario_from_dict(SMALL)
    # worker time per batch: log-normal with median 6 ms, sigma 0.3; all batches alone
    rng = np.random.default_rng(5)
    dur = np.round(6.0 * np.exp(0.3 * rng.standard_normal(400)))
    backend = {"text": F.Batches(np.arange(400, dtype=float), dur)}
    profiles = [{"model": "text", "threads": 2, "batch_sizes": [1, 2], "median_ms": [2.0, 3.0]}]
    # real latencies: what the calibrated simulator gives, 9 ms later
    cv = F.lognormal_cv(float(np.percentile(dur, 50)), float(np.percentile(dur, 90)))
    w = float(np.percentile(dur, 50)) * math.sqrt(1 + cv * cv) - 2.0
    d = json.loads(json.dumps(SMALL))
    d["models"][0].update(exec_cv=cv, batch_overhead_ms=w)
    expected = F.simulate(scenario_from_dict(d), 4, 30.0)
    real = expected.latencies_ms["text"] + 9.0
    [cal] = F.derive_calibration(sc, {"text": real}, backend, profiles, 4, 30.0)
    assert cal.model == "text" and cal.profile_b1_ms == 2.0
    assert cal.exec_cv == pytest.approx(cv, abs=1e-3)
    assert cal.batch_overhead_ms == pytest.approx(w, abs=1e-3)
    assert cal.overhead_p50_ms == pytest.approx(9.0, abs=0.3)
    assert cal.solo_batches == 400 and cal.requests == real.size
    doc = cal.as_dict()
    assert len(doc["overhead_quantiles_ms"]) == F.OVERHEAD_QUANTILES + 1
    json.dumps(doc)
    with pytest.raises(ValueError, match="no backend times"):
        F.derive_calibration(sc, {"text": real}, {}, profiles, 4, 30.0)


# --------------------------------------------------------------------------- plumbing


def test_static_configs_are_the_registration_defaults() -> None:
    from tsadapt.handlers.catalog import DEMO_MODELS

    d = json.loads(json.dumps(SMALL))
    cfg = F.static_configs(scenario_from_dict(d))
    t = DEMO_MODELS["text"]
    assert cfg == {"text": ModelSettings(t.batch_size, float(t.max_batch_delay_ms), 1)}
    d["models"][0]["name"] = d["workload"][0]["model"] = "nope"
    with pytest.raises(ValueError, match="not a demo model"):
        F.static_configs(scenario_from_dict(d))


def test_simulate_honours_duration_and_seed() -> None:
    sc = scenario_from_dict(SMALL)
    a = F.simulate(sc, 4, 10.0)
    b = F.simulate(sc, 4, 10.0)
    assert a.duration_s == 10.0 and a.per_model["text"].requests == b.per_model["text"].requests
    assert F.simulate(sc, 4).duration_s == 30.0


def test_wait_for_quiet_with_a_fake_probe() -> None:
    readings = iter([1.5, 0.8, 0.1])
    ok, waited = hostcpu.wait_for_quiet(0.25, 60.0, probe=lambda w: next(readings))
    assert ok and waited >= 0
    ok, _ = hostcpu.wait_for_quiet(0.25, 0.0, probe=lambda w: 2.0)
    assert not ok


def test_cpu_monitor_and_load() -> None:
    mon = hostcpu.CpuMonitor(period_s=0.05)
    mon.start()
    cpu0 = time.process_time()
    while time.process_time() - cpu0 < 0.1:  # 0.1 s of our own CPU: 10 clock ticks, not ~1
        sum(i * i for i in range(10_000))
    load = mon.stop()
    assert load.wall_s > 0 and load.cores >= 1
    assert load.ours_cores > 0 and load.others_cores >= 0
    assert set(load.as_dict()) == {
        "wall_s", "cores", "box_busy_cores", "ours_busy_cores", "others_busy_cores"
    }  # fmt: skip


def test_cli_parses_fidelity() -> None:
    from tsadapt.cli.lab.sim import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fidelity", "--scenarios", "bursty,step", "--duration", "30"])
    assert args.fidelity_action == "compare" and args.scenarios == "bursty,step"
    assert args.duration == 30.0 and args.seed is None and args.quiet_wait == F.QUIET_TIMEOUT_S
    args = parser.parse_args(["fidelity", "calibrate", "--quiet-wait", "0"])
    assert args.fidelity_action == "calibrate" and args.quiet_wait == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["fidelity", "--duration", "-1"])


# --------------------------------------------------------------------------- real run

REAL_SCENARIO = """
name: tiny
duration_s: 60
seed: 9
devices:
  - {name: cpu, cores: 2}
models:
  - {name: text, slo_ms: 150, profile: {alpha_ms: 0.7, beta_ms: 9}, threads: 2,
     overhead_ms: 8, min_workers: 1, max_workers: 2, max_batch: 32}
  - {name: tabular, slo_ms: 50, profile: {alpha_ms: 0.1, beta_ms: 3}, threads: 2,
     overhead_ms: 5, min_workers: 1, max_workers: 2, max_batch: 64}
workload:
  - {model: text, kind: bursty, base_rate: 3, spike_rate: 9, spike_s: 5, period_s: 20}
  - {model: tabular, kind: poisson, rate: 15}
budget: {workers: 4}
"""


@pytest.mark.server
@pytest.mark.slow
def test_fidelity_real_run_writes_the_report(tmp_path: Path, runs_dir: Path) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(REAL_SCENARIO)
    cfg = F.FidelityConfig(
        scenarios=(str(scenario),),
        duration_s=20.0,
        out_dir=tmp_path / "results",
        runs_dir=runs_dir,
        command="pytest",
        quiet=F.Quiet(0.0, 0.0),
    )
    runs, md, js = F.run_fidelity(cfg)
    [run] = runs
    assert run.status == "ok", run.reason
    assert [r.model for r in run.rows] == ["text", "tabular", "overall"]
    for r in run.rows:
        assert r.real.requests == r.sim.requests > 0  # the same arrivals on both sides
        assert 0.0 <= r.real.slo_attainment <= 1.0 and 0.0 <= r.sim.slo_attainment <= 1.0
        assert math.isfinite(r.real.p99_ms) and math.isfinite(r.sim.p99_ms)
    doc = json.loads(js.read_text())
    assert doc["command"] == "pytest" and doc["machine"]["cores"] >= 1
    [sc] = doc["scenarios"]
    assert sc["duration_s"] == 20.0 and sc["seed"] == 9 and sc["status"] == "ok"
    assert sc["cpu"]["ours_busy_cores"] > 0
    assert {r["model"] for r in sc["rows"]} == {"text", "tabular", "overall"}
    for r in sc["rows"]:
        assert {"p99_rel_error", "attainment_diff_points", "p99_pass", "attainment_pass"} <= set(r)
    text = md.read_text()
    assert "| tiny | text |" in text and "Acceptance" in text
    assert (Path(sc["rundir"]) / "requests.csv").is_file() or (
        Path.cwd() / sc["rundir"] / "requests.csv"
    ).is_file()


def test_bench_warm_up_sends_bursts_up_to_the_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from tsadapt.experiments import bench
    from tsadapt.handlers.catalog import DEMO_MODELS

    calls: dict[str, int] = {}
    lock = threading.Lock()

    class FakeClient:
        def predict(self, model: str, payload: dict):  # noqa: ANN202
            with lock:
                calls[model] = calls.get(model, 0) + 1
            return argparse.Namespace(ok=True)

    class FakeServer:
        def client(self, timeout_s: float = 30.0) -> FakeClient:
            return FakeClient()

    monkeypatch.setattr(bench, "WARMUP_SETTLE_S", 0.0)
    ok = bench.warm_up(FakeServer(), ["text", "tabular"], rounds=2)

    def burst_total(b: int) -> int:
        return sum(2**i for i in range(b.bit_length()) if 2**i <= b)

    want = {m: 2 * burst_total(DEMO_MODELS[m].batch_size) for m in ("text", "tabular")}
    assert calls == want and ok == sum(want.values())


def test_cpu_monitor_splits_worker_cpu_from_the_rest_between_marks() -> None:
    import subprocess
    import sys

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass"
    mon = hostcpu.CpuMonitor(period_s=0.05)
    mon.start()
    mon.mark("load")
    # a child whose command line names it a TorchServe worker, and one that does not
    worker = subprocess.Popen([sys.executable, "-c", burn, hostcpu.WORKER_PROCESS])
    other = subprocess.Popen([sys.executable, "-c", burn.replace("0.4", "0.2")])
    worker.wait()
    other.wait()
    mon.mark("drain")
    cpu = mon.stop()
    wall, workers, rest = mon.between("load", "drain")
    assert workers == pytest.approx(0.4, abs=0.15)
    assert rest == pytest.approx(0.2, abs=0.15)
    assert cpu.load_worker_cpu_s == workers and cpu.load_host_cpu_s == rest
    assert cpu.load_s == pytest.approx(wall) and wall > 0
    assert F.host_cpu_per_request_ms(cpu, 100) == pytest.approx(1000 * rest / 100)


def test_host_cpu_per_request_is_zero_when_unmeasured() -> None:
    assert F.host_cpu_per_request_ms(F.CpuLoad(10.0, 2, 1.0, 0.5), 100) == 0.0
    assert F.host_cpu_per_request_ms(F.CpuLoad(10.0, 2, 1.0, 0.5, 5.0, 1.0, 2.0), 0) == 0.0


def test_simulate_pools_replications_of_the_same_arrivals() -> None:
    d = json.loads(json.dumps(SMALL))
    d["models"][0]["exec_cv"] = 0.3
    sc = scenario_from_dict(d)
    one = F.simulate(sc, 4, 10.0, replications=1)
    short = F.with_duration(sc, 10.0)
    assert one.per_model == run_static(short, F.static_configs(short), 4).per_model
    pooled = F.simulate(sc, 4, 10.0)
    assert pooled.latencies_ms["text"].size == F.SIM_REPLICATIONS * one.per_model["text"].completed
    assert pooled.per_model["text"].requests == one.per_model["text"].requests
    with pytest.raises(ValueError, match="replications must be >= 1"):
        F.simulate(sc, 4, 10.0, replications=0)
