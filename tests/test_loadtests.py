"""Open-loop schedules, dispatch and records (pure), and the Locust shapes on a real server."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tsadapt.constants import REPO_DIR
from tsadapt.experiments.bench_schedule import (
    LOADTESTS_DIR,
    RECORD_FIELDS,
    UNFINISHED,
    check_loopback,
    dispatch,
    mix_schedule,
    parse_weights,
    rate_checks,
    read_records,
    record_row,
    records_from_rows,
    resolve_scenario,
    scenario_schedule,
    windows,
    workload_of,
)
from tsadapt.policy.sim.scenario import load_scenario
from tsadapt.policy.sim.workloads import Poisson, Step

SHAPES = ("bursty", "diurnal", "step", "trace")
SCENARIO_FILES = sorted(
    [
        *(REPO_DIR / "configs" / "scenarios").glob("*.yaml"),
        *(LOADTESTS_DIR / "scenarios").glob("*.yaml"),
    ]
)


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_scenario_schedule_is_the_simulators_arrivals(path: Path) -> None:
    scenario = load_scenario(path)
    configs = {m: scenario.default_config(m) for m in scenario.model_names}
    sim = scenario.simulator(configs, 7)
    schedule = scenario_schedule(scenario, seed=7)
    for name in scenario.model_names:
        np.testing.assert_array_equal(schedule.times_of(name), sim._models[name].arr)
    assert np.all(np.diff(schedule.times) >= 0)
    assert schedule.slo_ms == {m.name: m.slo_ms for m in scenario.models}


def test_scenario_schedule_seed_duration_and_cap() -> None:
    scenario = load_scenario(resolve_scenario("bursty"))
    a = scenario_schedule(scenario, seed=1, duration_s=30)
    b = scenario_schedule(scenario, seed=1, duration_s=30)
    c = scenario_schedule(scenario, seed=2, duration_s=30)
    np.testing.assert_array_equal(a.times, b.times)
    assert not np.array_equal(a.times[:50], c.times[:50])
    assert a.times.max() < 30 and a.duration_s == 30
    capped = scenario_schedule(scenario, seed=1, duration_s=30, max_requests=100)
    assert len(capped) == 100 and capped.truncated
    np.testing.assert_array_equal(capped.times, a.times[:100])


def test_mix_schedule_splits_by_weight_and_keeps_the_intensity() -> None:
    wl = Poisson(200.0)
    s = mix_schedule(wl, {"tabular": 3, "text": 1}, 50.0, seed=5)
    assert len(s) == pytest.approx(200 * 50, rel=0.05)
    share = s.times_of("tabular").size / len(s)
    assert share == pytest.approx(0.75, abs=0.02)
    assert s.intended_mean_rate("tabular") == pytest.approx(150.0)
    assert s.intended_mean_rate() == pytest.approx(200.0)
    again = mix_schedule(wl, {"tabular": 3, "text": 1}, 50.0, seed=5)
    np.testing.assert_array_equal(s.model_idx, again.model_idx)
    with pytest.raises(ValueError):
        mix_schedule(wl, {"tabular": 0.0}, 10.0, seed=1)


def test_workload_of_superposes_lists_and_resolves_traces() -> None:
    w = workload_of([{"kind": "poisson", "rate": 3}, {"kind": "poisson", "rate": 4}])
    assert w.rate_at(1.0) == pytest.approx(7.0)
    trace = workload_of({"kind": "trace", "path": "traces/demo.csv"})
    assert trace.rate_at(0.5) > 0


def test_parse_weights_and_loopback_and_resolution() -> None:
    assert parse_weights("tabular=0.7, text=0.3") == {"tabular": 0.7, "text": 0.3}
    with pytest.raises(ValueError):
        parse_weights("tabular")
    assert check_loopback("http://127.0.0.1:8080")
    with pytest.raises(ValueError, match="loopback"):
        check_loopback("http://10.0.0.1:8080")
    assert resolve_scenario("bursty") == (LOADTESTS_DIR / "scenarios" / "bursty.yaml").resolve()
    assert resolve_scenario("step").parent.name == "scenarios"
    with pytest.raises(ValueError, match="unknown scenario"):
        resolve_scenario("no-such-scenario")


# --------------------------------------------------------------------------- dispatch


class FakeClock:
    def __init__(self, fire_cost_s: float = 0.0) -> None:
        self.now = 100.0
        self.fire_cost_s = fire_cost_s

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        assert s > 0
        self.now += s


def test_dispatch_fires_each_request_at_its_time() -> None:
    clock = FakeClock()
    times = np.asarray([0.0, 0.5, 0.5, 1.25, 3.0])
    fired: list[tuple[int, float, float]] = []
    n = dispatch(times, lambda i, t: fired.append((i, t, clock() - 100.0)), clock, clock.sleep)
    assert n == 5
    assert [f[0] for f in fired] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose([f[2] for f in fired], times)


def test_dispatch_never_skips_when_late_and_stops_on_request() -> None:
    clock = FakeClock()
    times = np.arange(10) * 0.01
    sent: list[float] = []

    def slow_fire(i: int, t: float) -> None:  # each hand-off costs 50 ms: the loop falls behind
        sent.append(clock() - 100.0)
        clock.now += 0.05

    assert dispatch(times, slow_fire, clock, clock.sleep) == 10
    assert sent[-1] == pytest.approx(0.45)  # late, but every request went out
    stop_after = iter(range(100))
    assert (
        dispatch(times, lambda i, t: None, clock, clock.sleep, lambda: next(stop_after) >= 4) == 4
    )


# --------------------------------------------------------------------------- records


def _records_for(schedule, late_s: float = 0.0, stretch: float = 1.0, latency_ms: float = 10.0):
    rows = [
        record_row(
            1_000.0 + t * stretch + late_s,
            t,
            t * stretch + late_s,
            schedule.model_of(i),
            latency_ms,
            200,
            True,
        )
        for i, t in enumerate(schedule.times)
    ]
    return records_from_rows(rows)


def test_record_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    rows = [
        record_row(1.5, 0.1, 0.102, "tabular", 12.3456, 200, True),
        record_row(1.6, 0.2, 0.203, "text", None, 0, False, UNFINISHED),
        record_row(1.4, 0.05, 0.051, "text", 5.0, 503, False, "HTTPError: 503\nx"),
    ]
    path.write_text(",".join(RECORD_FIELDS) + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    rec = read_records(path)
    assert list(rec.model) == ["text", "tabular", "text"]  # sorted by send time
    assert rec.status.tolist() == [503, 200, 0]
    assert rec.ok.tolist() == [False, True, False]
    assert math.isnan(rec.latency_ms[2]) and rec.latency_ms[1] == pytest.approx(12.346)
    np.testing.assert_allclose(rec.lateness_ms, [1.0, 2.0, 3.0], atol=1e-6)
    assert rec.error[2] == UNFINISHED
    (tmp_path / "bad.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="header"):
        read_records(tmp_path / "bad.csv")


def test_rate_checks_detect_a_slow_dispatcher() -> None:
    s = mix_schedule(Step((40.0, 80.0), 10.0), {"tabular": 0.8, "text": 0.2}, 20.0, seed=3)
    good = rate_checks(s, _records_for(s, late_s=0.002))
    assert all(rc.within() for rc in good)
    assert all(rc.sent == rc.scheduled for rc in good)
    assert good[-1].model == "all" and good[-1].lateness_p50_ms == pytest.approx(2.0)
    assert good[-1].intended_rps == pytest.approx(60.0)
    slow = rate_checks(s, _records_for(s, stretch=1.1))  # sends 10% too slow
    assert not slow[-1].within()
    assert slow[-1].error_vs_scheduled == pytest.approx(-0.09, abs=0.01)


def test_windows_attainment_per_model() -> None:
    s = mix_schedule(Poisson(50.0), {"tabular": 1.0}, 20.0, seed=4, slo_ms={"tabular": 50.0})
    rec = _records_for(s, latency_ms=10.0)
    rec.latency_ms[s.times >= 10.0] = 80.0  # second half misses the 50 ms SLO
    w = windows(s, rec, "tabular", window_s=5.0)
    np.testing.assert_allclose(w.slo_attainment, [1, 1, 0, 0])
    np.testing.assert_allclose(w.intended_rps, 50.0)
    assert w.achieved_rps.sum() * 5.0 == len(s)
    np.testing.assert_allclose(w.p50_ms, [10, 10, 80, 80])


# --------------------------------------------------------------------------- shape files


def test_each_shape_file_has_one_shape_and_the_dispatcher() -> None:
    """Loaded by Locust's own loader in a subprocess (importing locust patches gevent)."""
    code = f"""
import json, types
from locust.util.load_locustfile import load_locustfile
out = {{}}
for name in {list(SHAPES)!r}:
    users, shapes = load_locustfile("{LOADTESTS_DIR}/" + name + ".py")
    import openloop
    opts = types.SimpleNamespace(scenario="", duration="", seed="", max_requests="", weights="")
    s = openloop.build_schedule(shapes[0], opts)
    out[name] = [sorted(users), len(shapes), len(s), s.duration_s, s.intended_mean_rate()]
print(json.dumps(out))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for name in SHAPES:
        users, n_shapes, n_req, duration, rate = out[name]
        assert users == ["OpenLoopDispatcher"] and n_shapes == 1
        assert n_req == pytest.approx(rate * duration, rel=0.1)
        assert 20 <= rate <= 60


def test_a_scenario_replays_whole_past_the_shapes_own_cap(tmp_path: Path) -> None:
    """A scenario of more requests than the shape's ``max_requests`` is replayed whole (the
    bench counts all of its arrivals); only ``--max-requests`` cuts it."""
    scenario = tmp_path / "big.yaml"
    scenario.write_text(
        "duration_s: 20\nseed: 3\nmodels:\n"
        "  - {name: tabular, slo_ms: 50, profile: {alpha_ms: 0.1, beta_ms: 1}, "
        "min_workers: 1, max_workers: 1, max_batch: 8}\n"
        "workload:\n  - {model: tabular, kind: poisson, rate: 800}\nbudget: {workers: 1}\n"
    )
    code = f"""
import json, types
from locust.util.load_locustfile import load_locustfile
users, shapes = load_locustfile("{LOADTESTS_DIR}/bursty.py")
import openloop
out = []
for cap in ("", "5000"):
    opts = types.SimpleNamespace(scenario="{scenario}", duration="", seed="",
                                 max_requests=cap, weights="")
    out.append(len(openloop.build_schedule(shapes[0], opts)))
print(json.dumps([shapes[0].max_requests, *out]))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    shape_cap, whole, cut = json.loads(res.stdout.strip().splitlines()[-1])
    expected = len(scenario_schedule(load_scenario(scenario), None, None, None))
    assert whole == expected > shape_cap
    assert cut == 5000


# --------------------------------------------------------------------------- real server

RUN_S = 20


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory, model_store: Path):
    """A server for the shapes, started with the bench's retry.

    (The session ``torchserve`` fixture can fail on a loaded box: ``server._wait_healthy``
    may read ``key_file.json`` while TorchServe is still writing it.)
    """
    from tsadapt.experiments.bench import _start_server
    from tsadapt.serve.server import ServerConfig, start, stop

    config = ServerConfig.with_free_ports(
        workdir=tmp_path_factory.mktemp("loadtests-server"), model_store=model_store
    )
    server = _start_server(start, config)
    try:
        yield server
    finally:
        stop(config.workdir)


#: Mostly the cheap model: the check is the dispatcher's rate, not the server's capacity.
TEST_WEIGHTS = "tabular=0.9,text=0.1"


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES)
def test_shape_runs_open_loop_at_the_intended_rate(live_server, tmp_path: Path, shape: str) -> None:
    records = tmp_path / f"{shape}.csv"
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOADTESTS_DIR / f"{shape}.py"),
        "--headless", "--only-summary", "--loglevel", "WARNING",
        "--run-time", f"{RUN_S + 30}s",
        "--server-workdir", str(live_server.workdir),
        "--duration", str(RUN_S), "--records", str(records), "--weights", TEST_WEIGHTS,
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_S + 90)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(records.with_suffix(".summary.json").read_text())
    print(res.stdout[-2500:])
    for rate in report["rates"]:
        assert rate["sent"] == rate["scheduled"], rate
        assert abs(rate["error_vs_scheduled"]) <= 0.05, rate
        assert rate["lateness_p99_ms"] < 50, rate
    total = report["rates"][-1]
    # The schedule is one Poisson sample of the intensity: its own deviation is sampling
    # noise, bounded here at 4 sigma (the dispatcher's accuracy is checked against it above).
    assert total["model"] == "all"
    assert abs(total["error_vs_intended"]) <= 4 / math.sqrt(total["scheduled"]), total
    assert all(s["failed"] == 0 and s["rejected"] == 0 for s in report["slo"]), report["slo"]
    rec = read_records(records)
    assert len(rec) == total["scheduled"] and rec.ok.all()
    assert set(rec.model) <= {"tabular", "text", "image"}


@pytest.mark.server
@pytest.mark.slow
def test_the_whole_folder_runs_one_shape(live_server, tmp_path: Path) -> None:
    """``locust -f loadtests``: every file loads once (no option registered twice), and one
    shape, the one ``--shape`` names, sends one schedule."""
    records = tmp_path / "folder.csv"
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOADTESTS_DIR), "--shape", "step",
        "--headless", "--only-summary", "--loglevel", "INFO", "--run-time", "40s",
        "--server-workdir", str(live_server.workdir), "--duration", "3",
        "--max-requests", "30", "--records", str(records), "--weights", TEST_WEIGHTS,
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "Traceback" not in out, out[-4000:]
    assert "shape StepShape of 4 (--shape)" in out, out[-4000:]
    assert out.count("open loop: ") == 2, out[-4000:]  # the shape line and one schedule
    report = json.loads(records.with_suffix(".summary.json").read_text())
    total = report["rates"][-1]
    assert 0 < total["scheduled"] <= 30 and total["sent"] == total["scheduled"], total
    assert len(read_records(records)) == total["scheduled"]


@pytest.mark.slow
def test_the_whole_folder_names_an_unknown_shape(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOADTESTS_DIR), "--shape", "nope",
        "--headless", "--host", "http://127.0.0.1:9", "--run-time", "5s",
        "--records", str(tmp_path / "r.csv"),
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "--shape 'nope': no such shape loaded; loaded: bursty, diurnal, step, trace" in (
        res.stderr
    )
