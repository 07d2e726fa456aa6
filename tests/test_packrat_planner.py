"""Tests for the Packrat CPU planner (tsadapt.packrat_cpu)."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from pathlib import Path

import pytest

from tsadapt.cli.main import main as tsadapt_main
from tsadapt.cli.packrat_commands import EXIT_BAD_INPUT, EXIT_INFEASIBLE, EXIT_OK, main
from tsadapt.experiments import packrat_planner_speed as bench_planner
from tsadapt.packrat_cpu.estimator import (
    DEFAULT_SAMPLE_PERIOD_S,
    EstimatorConfig,
    EstimatorState,
    decide,
    floor_pow2,
    mode_recent,
    observe,
)
from tsadapt.packrat_cpu.planner import (
    PlanError,
    baseline,
    plan,
    plan_uniform,
    quantize,
)
from tsadapt.packrat_cpu.profile_table import (
    BUNDLED_DIR,
    ProfileTable,
    load_profile,
    parse_profile,
    save_profile,
)

# Packrat paper, Table 2 (anchors.md): BERT at 16 cores, B -> <instances, threads, batch>.
BERT_TABLE2 = {
    8: (2, 8, 4),
    16: (4, 4, 4),
    32: (4, 4, 8),
    64: (4, 4, 16),
    128: (4, 4, 32),
    256: (8, 2, 32),
    512: (8, 2, 64),
    1024: (8, 2, 128),
}
PUBLISHED_MODELS = ("bert", "gpt2", "inception", "resnet")
BRUTE_SEEDS = range(300)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def published() -> dict[str, ProfileTable]:
    return {m: load_profile(BUNDLED_DIR / f"{m}.profile.csv") for m in PUBLISHED_MODELS}


@pytest.fixture(scope="module")
def bert(published: dict[str, ProfileTable]) -> ProfileTable:
    return published["bert"]


@pytest.fixture
def even_only() -> ProfileTable:
    """Only even batch sizes: odd batches are unreachable."""
    return ProfileTable.from_mapping({(1, 2): 4.0, (2, 2): 3.0, (1, 4): 7.0, (2, 4): 5.0})


# --------------------------------------------------------------------------- brute force


def brute_force(table: ProfileTable, cores: int, batch: int):
    """Enumerate every multiset of profiled points; return the best key or None.

    Key = (max quantized latency, #instances, sum quantized latency, sorted (t, b) tuple).
    """
    items = [(t, b, quantize(lat)) for t, b, lat in table.points]  # canonical (t, b) order
    best = None

    def rec(start: int, t_left: int, b_left: int, chosen: list[tuple[int, int, int]]) -> None:
        nonlocal best
        if b_left == 0:
            if chosen:
                key = (
                    max(q for _, _, q in chosen),
                    len(chosen),
                    sum(q for _, _, q in chosen),
                    tuple((t, b) for t, b, _ in chosen),
                )
                if best is None or key < best:
                    best = key
            return
        for k in range(start, len(items)):
            t, b, q = items[k]
            if t <= t_left and b <= b_left:
                chosen.append(items[k])
                rec(k, t_left - t, b_left - b, chosen)
                chosen.pop()

    rec(0, cores, batch, [])
    return best


def brute_force_uniform(table: ProfileTable, cores: int, batch: int):
    best = None
    for t, b, lat in table.points:
        n = batch // b
        if n * b == batch and n * t <= cores:
            q = quantize(lat)
            key = (q, n, n * q, tuple([(t, b)] * n))
            best = key if best is None or key < best else best
    return best


def plan_key(p):
    qs = [quantize(i.latency_ms) for i in p.instances]
    return (max(qs), len(qs), sum(qs), tuple((i.threads, i.batch) for i in p.instances))


def random_table(seed: int) -> tuple[ProfileTable, int, int]:
    """Small random table; integer latencies from a small range so ties are frequent."""
    rng = random.Random(seed)
    threads = sorted(rng.sample(range(1, 5), rng.randint(1, 3)))
    batches = sorted(rng.sample([1, 2, 3, 4, 6], rng.randint(1, 4)))
    lat = {(t, b): float(rng.randint(1, 12)) for t in threads for b in batches}
    if rng.random() < 0.5:  # sparse table: drop some points but keep at least one
        for key in list(lat)[1:]:
            if rng.random() < 0.3:
                del lat[key]
    if rng.random() < 0.3:  # non-integer latencies too
        lat = {k: v + rng.random() for k, v in lat.items()}
    return ProfileTable.from_mapping(lat), rng.randint(1, 7), rng.randint(1, 9)


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("seed", BRUTE_SEEDS)
def test_plan_matches_brute_force(seed: int) -> None:
    table, cores, batch = random_table(seed)
    expected = brute_force(table, cores, batch)
    if expected is None or cores < table.threads[0]:
        with pytest.raises(PlanError):
            plan(table, cores, batch)
        return
    got = plan(table, cores, batch)
    assert plan_key(got) == expected  # max, count, sum and the canonical tie-break order
    assert sum(i.batch for i in got.instances) == batch
    assert got.threads_used <= cores
    assert got.latency_ms == max(table.latency(i.threads, i.batch) for i in got.instances)


@pytest.mark.parametrize("seed", BRUTE_SEEDS)
def test_plan_uniform_matches_brute_force(seed: int) -> None:
    table, cores, batch = random_table(seed)
    expected = brute_force_uniform(table, cores, batch)
    if expected is None or brute_force(table, cores, batch) is None:
        with pytest.raises(PlanError):
            plan_uniform(table, cores, batch)
        return
    got = plan_uniform(table, cores, batch)
    assert plan_key(got) == expected
    assert got.uniform and got.optimal_latency_ms == plan(table, cores, batch).latency_ms
    assert got.uniform_gap_ms >= 0 and got.uniform_gap_ratio >= 1


def test_tie_break_needs_two_passes() -> None:
    """Regression: a one-pass DP over (max, count, sum) returns 4 instances here.

    Sub-plan 3x<1,1> (max 5, 3 instances) beats <1,1>+<1,2> (max 10, 2 instances) at
    (3 cores, batch 3), but after adding a 10 ms instance the latter is better.
    """
    table = ProfileTable.from_mapping({(1, 1): 5.0, (1, 2): 10.0})
    got = plan(table, cores=4, batch=5)
    assert [(i.threads, i.batch) for i in got.instances] == [(1, 1), (1, 2), (1, 2)]
    assert got.latency_ms == 10.0


@pytest.mark.parametrize(
    ("lat", "cores", "batch", "expected"),
    [
        # equal max 6: 2 instances (sum 12) beat 3 instances (6+1+1 = 8); 4 x <1,1> needs 4 cores
        ({(1, 1): 1.0, (1, 2): 6.0}, 3, 4, [(1, 2), (1, 2)]),
        # equal max and count: lower sum wins (2 x <2,1> would need 4 cores)
        ({(1, 1): 6.0, (2, 1): 2.0}, 3, 2, [(1, 1), (2, 1)]),
        # full tie: lexicographically smallest sorted (threads, batch) list
        ({(1, 1): 3.0, (2, 1): 3.0}, 4, 2, [(1, 1), (1, 1)]),
    ],
)
def test_tie_break_rules(lat: dict, cores: int, batch: int, expected: list) -> None:
    got = plan(ProfileTable.from_mapping(lat), cores=cores, batch=batch)
    assert [(i.threads, i.batch) for i in got.instances] == expected


# --------------------------------------------------------------------------- published data


@pytest.mark.parametrize("batch", sorted(BERT_TABLE2))
def test_bert_table2_latency(bert: ProfileTable, batch: int) -> None:
    _, threads, per_instance = BERT_TABLE2[batch]
    paper_latency = bert.latency(threads, per_instance)
    assert plan(bert, 16, batch).latency_ms == pytest.approx(paper_latency, abs=1e-9)


@pytest.mark.parametrize("batch", sorted(BERT_TABLE2))
def test_bert_table2_configuration(bert: ProfileTable, batch: int) -> None:
    """Stronger than the latency check: the tie-break lands on the paper's configuration."""
    assert plan(bert, 16, batch).groups == (BERT_TABLE2[batch],)
    assert plan_uniform(bert, 16, batch).groups == (BERT_TABLE2[batch],)


def test_resnet_b32_speedup(published: dict[str, ProfileTable]) -> None:
    got = plan(published["resnet"], 16, 32)
    assert got.baseline_latency_ms == pytest.approx(273.8053)
    assert got.latency_ms == pytest.approx(113.0018)
    assert got.speedup >= 2.4
    assert got.groups == ((8, 2, 4),)


@pytest.mark.parametrize("model", PUBLISHED_MODELS)
@pytest.mark.parametrize("batch", [2**k for k in range(11)])
def test_published_plans_never_worse_than_fat(
    published: dict[str, ProfileTable], model: str, batch: int
) -> None:
    table = published[model]
    got = plan(table, 16, batch)
    assert got.baseline is not None and got.baseline.batches == (batch,)
    assert got.baseline_latency_ms == table.latency(16, batch)
    assert got.latency_ms <= got.baseline_latency_ms
    assert got.speedup >= 1.0
    assert plan_uniform(table, 16, batch).latency_ms >= got.latency_ms


def test_large_case_completes() -> None:
    table = bench_planner.synthetic_profile()
    got = plan(table, 64, 1024)
    assert sum(i.batch for i in got.instances) == 1024
    assert got.threads_used <= 64
    assert got.latency_ms <= got.baseline_latency_ms


# --------------------------------------------------------------------------- uniform / baseline


def test_uniform_gap_reported(bert: ProfileTable) -> None:
    hetero = plan(bert, 16, 3)  # 3 = 2 + 1: two different instances
    uni = plan_uniform(bert, 16, 3)  # only 3 x <t, 1> with 3t <= 16
    assert len(set(hetero.instances)) == 2
    assert uni.groups == ((3, 5, 1),)
    assert uni.latency_ms == bert.latency(5, 1)
    assert uni.optimal_latency_ms == hetero.latency_ms
    assert uni.uniform_gap_ms == pytest.approx(uni.latency_ms - hetero.latency_ms)
    assert uni.uniform_gap_ms > 0
    data = uni.to_json()
    assert data["uniform"] is True
    assert data["uniform_gap_ratio"] == pytest.approx(uni.latency_ms / hetero.latency_ms)


def test_baseline_runs_unprofiled_batch_in_turn(bert: ProfileTable) -> None:
    fat = baseline(bert, 16, 3)
    assert fat.threads == 16 and fat.batches == (2, 1)
    assert fat.latency_ms == pytest.approx(bert.latency(16, 2) + bert.latency(16, 1))


def test_baseline_uses_most_profiled_threads_within_cores(bert: ProfileTable) -> None:
    assert baseline(bert, 64, 8).threads == 16
    assert baseline(bert, 6, 8).threads == 6


def test_baseline_none_when_fat_cannot_run_batch() -> None:
    table = ProfileTable.from_mapping({(1, 1): 1.0, (2, 2): 1.0})
    assert baseline(table, 2, 1) is None
    got = plan(table, 2, 1)
    assert got.baseline_latency_ms is None and got.speedup is None


# --------------------------------------------------------------------------- infeasible


@pytest.mark.parametrize(
    ("cores", "batch", "field", "fragment"),
    [
        (16, 0, "batch", "batch must be >= 1"),
        (16, -4, "batch", "batch must be >= 1"),
        (0, 8, "cores", "cores must be >= 1"),
        (1, 3, "batch", "not a sum of profiled batch sizes"),
        (1, 6, "cores", "needs at least 2 cores"),
    ],
)
def test_infeasible(
    even_only: ProfileTable, cores: int, batch: int, field: str, fragment: str
) -> None:
    with pytest.raises(PlanError, match=fragment) as info:
        plan(even_only, cores, batch)
    assert info.value.field == field


def test_cores_below_min_threads() -> None:
    table = ProfileTable.from_mapping({(4, 1): 1.0, (8, 1): 0.5})
    with pytest.raises(PlanError, match="smallest profiled thread count") as info:
        plan(table, 2, 1)
    assert info.value.field == "cores"


@pytest.mark.parametrize("bad", [2.0, "4", True, None])
def test_non_integer_inputs(bert: ProfileTable, bad: object) -> None:
    with pytest.raises(PlanError, match="must be an integer"):
        plan(bert, bad, 8)  # type: ignore[arg-type]


def test_size_limit(bert: ProfileTable) -> None:
    with pytest.raises(PlanError, match="planner limit") as info:
        plan(bert, 100_000, 1_000)
    assert info.value.field == "cores"


def test_infeasible_large_batch_is_fast(bert: ProfileTable) -> None:
    with pytest.raises(PlanError, match="cannot be split"):
        plan(bert, 1, 2_000_000)


def test_uniform_infeasible_but_heterogeneous_feasible() -> None:
    table = ProfileTable.from_mapping({(1, 2): 1.0, (1, 3): 1.0})
    assert plan(table, 2, 5).groups == ((1, 1, 2), (1, 1, 3))
    with pytest.raises(PlanError, match="no uniform configuration"):
        plan_uniform(table, 2, 5)


# --------------------------------------------------------------------------- profile table


def test_load_published(bert: ProfileTable) -> None:
    assert len(bert) == 176
    assert bert.threads == tuple(range(1, 17))
    assert bert.batches == tuple(2**k for k in range(11))
    assert bert.latency(1, 1) == 120.2486


def test_save_load_round_trip(bert: ProfileTable, tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    save_profile(bert, path)
    assert load_profile(path) == bert


def test_extra_columns_ignored() -> None:
    text = ["threads,batch,latency_ms,min,max,std\n", "1,1,2.5,2,3,0.1\n", "2,1,1.5,1,2,0.1\n"]
    table = parse_profile(text)
    assert table.latencies == {(1, 1): 2.5, (2, 1): 1.5}


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        (["threads,batch\n", "1,1\n"], "missing column(s) latency_ms"),
        (["threads,batch,latency_ms\n"], "no data rows"),
        (["threads,batch,latency_ms\n", "x,1,1.0\n"], "line 2: field 'threads'"),
        (["threads,batch,latency_ms\n", "1,1,1.0\n", "1,0,1.0\n"], "line 3: field 'batch'"),
        (["threads,batch,latency_ms\n", "1,1,-1\n"], "line 2: field 'latency_ms'"),
        (["threads,batch,latency_ms\n", "1,1,nan\n"], "line 2: field 'latency_ms'"),
        (["threads,batch,latency_ms\n", "1,1,\n"], "line 2: field 'latency_ms'"),
        (["threads,batch,latency_ms\n", "1,1\n"], "line 2: expected 3 fields"),
        (["threads,batch,latency_ms\n", "1,1,1.0\n", "1,1,2.0\n"], "line 3: duplicate point"),
    ],
)
def test_bad_rows(rows: list[str], fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_profile(rows, source="t.csv")
    assert fragment in str(info.value)
    assert str(info.value).startswith("t.csv")


def test_table_is_immutable(bert: ProfileTable) -> None:
    with pytest.raises(AttributeError):
        bert.points = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        bert.latencies[(1, 1)] = 0.0  # type: ignore[index]


# --------------------------------------------------------------------------- CLI


def test_cli_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        ["packrat", "plan", "--profile", "resnet", "--cores", "16", "--batch", "32", "--json"]
    )
    assert rc == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert {"instances", "latency_ms", "baseline_latency_ms", "speedup"} <= set(data)
    assert data["instances"] == [{"threads": 2, "batch": 4}] * 8
    assert data["latency_ms"] == pytest.approx(113.0018)
    assert data["baseline_latency_ms"] == pytest.approx(273.8053)
    assert math.isclose(data["speedup"], 273.8053 / 113.0018)
    assert "uniform_gap_ms" not in data


def test_cli_uniform_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["packrat", "plan", "--profile", "bert", "--cores", "16", "--batch", "3"]
    assert main([*argv, "--uniform", "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["uniform"] is True
    assert data["uniform_gap_ms"] > 0
    assert sum(i["batch"] for i in data["instances"]) == 3


def test_cli_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["packrat", "plan", "--profile", "bert", "--cores", "16", "--batch", "256"]) == 0
    out = capsys.readouterr().out
    assert "8 x <2 threads, batch 32>" in out
    assert "speedup" in out


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--cores", "0", "--batch", "8"], EXIT_BAD_INPUT, "--cores: cores must be >= 1"),
        (["--cores", "16", "--batch", "0"], EXIT_BAD_INPUT, "--batch: batch must be >= 1"),
        (["--cores", "abc", "--batch", "8"], EXIT_BAD_INPUT, "argument --cores"),
        (["--cores", "16"], EXIT_BAD_INPUT, "--batch"),
        (["--cores", "1", "--batch", "3"], EXIT_INFEASIBLE, "--cores: batch=3 needs at least 2"),
    ],
)
def test_cli_errors(
    capsys: pytest.CaptureFixture[str], args: list[str], code: int, fragment: str
) -> None:
    assert main(["packrat", "plan", "--profile", "bert", *args]) == code
    captured = capsys.readouterr()
    assert fragment in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_cli_bad_profile(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    assert main(["packrat", "plan", "--profile", str(missing), "--cores", "2", "--batch", "2"]) == 2
    assert "--profile: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("threads,batch,latency_ms\n1,1,oops\n")
    assert main(["packrat", "plan", "--profile", str(bad), "--cores", "2", "--batch", "2"]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "latency_ms" in err


def test_cli_unreachable_batch(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "even.csv"
    path.write_text("threads,batch,latency_ms\n1,2,1.0\n")
    assert main(["packrat", "plan", "--profile", str(path), "--cores", "4", "--batch", "3"]) == 1
    assert "--batch: batch=3 is not a sum of profiled batch sizes [2]" in capsys.readouterr().err


def test_bench_planner_runs(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["lab", "packrat", "bench-planner", "--cores", "8", "--batch", "16", "--repeat", "1"]
    assert tsadapt_main([*argv, "bert"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "synthetic 7x11 T=8 B=16" in out and "bert (176 points)" in out


# --------------------------------------------------------------------------- estimator


class FakeClock:
    """Drives the estimator: one queue sample per ``period`` seconds."""

    def __init__(self, period: float = DEFAULT_SAMPLE_PERIOD_S) -> None:
        self.now = 0.0
        self.period = period

    def run(self, state, depths, config):
        """Feed samples, deciding after each; return (state, [(time, new_batch), ...])."""
        switches = []
        for depth in depths:
            self.now += self.period
            state = observe(state, depth, config)
            state, new = decide(state, self.now, config)
            if new is not None:
                switches.append((round(self.now, 6), new))
        return state, switches


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 1), (1, 1), (1.49, 1), (1.5, 2), (3.49, 2), (3.5, 4), (63.6, 64), (5000, 1024)],
)
def test_floor_pow2(value: float, expected: int) -> None:
    assert floor_pow2(value, 1024) == expected


def test_mode_recent_breaks_ties_by_recency() -> None:
    assert mode_recent((4, 4, 8, 8)) == 8
    assert mode_recent((8, 4, 4, 8, 4)) == 4


def test_estimator_tracks_steady_load() -> None:
    config = EstimatorConfig()
    clock = FakeClock()
    state, switches = clock.run(EstimatorState(), [37] * 400, config)  # 2 s of samples
    assert switches == [(0.005, 32)]  # first sample decides; 37 rounds down to 32
    assert state.current == 32


def test_estimator_ignores_spike_and_decides_once_per_interval() -> None:
    config = EstimatorConfig()
    clock = FakeClock()
    state, _ = clock.run(EstimatorState(), [16] * 200, config)
    # a 20 ms burst to 400 moves the EWMA only briefly; the mode of 10 filters it
    depths = [16] * 100 + [400] * 4 + [16] * 296
    state, switches = clock.run(state, depths, config)
    assert all(t >= 1.0 for t, _ in switches)
    assert len(switches) <= 2  # at most one decision per 1 s interval
    state, switches = clock.run(state, [16] * 400, config)
    assert state.current == 16


def test_estimator_follows_load_change_each_interval() -> None:
    config = EstimatorConfig()
    clock = FakeClock()
    state, _ = clock.run(EstimatorState(), [8] * 150, config)  # load changes at t = 0.75 s
    state, switches = clock.run(state, [130] * 400, config)
    assert switches[0] == (1.005, 128)  # next decision; the EWMA settled in ~0.2 s
    assert state.current == 128


def test_estimator_reaches_exact_power_of_two() -> None:
    """The EWMA converges to 64 from below; plain round-down would stay at 32."""
    clock = FakeClock()
    state, _ = clock.run(EstimatorState(), [8] * 100 + [64] * 2000, EstimatorConfig())
    assert state.ewma < 64 and state.current == 64


def test_estimator_hysteresis_delays_switch() -> None:
    eager, lazy = EstimatorConfig(), EstimatorConfig(confirm=3)
    results = {}
    for name, config in (("eager", eager), ("lazy", lazy)):
        clock = FakeClock()
        state, _ = clock.run(EstimatorState(), [8] * 300, config)
        state, switches = clock.run(state, [64] * 800, config)
        results[name] = switches
    assert results["eager"][0][1] == results["lazy"][0][1] == 64
    # two more confirming decisions, one interval each
    assert results["lazy"][0][0] - results["eager"][0][0] == pytest.approx(2.0, abs=0.01)


def test_estimator_hysteresis_resets_on_flap() -> None:
    config = EstimatorConfig(confirm=2)
    state = EstimatorState(estimates=(8,), current=8, last_decision_s=0.0)
    state, new = decide(replace(state, estimates=(16,) * 10), 1.0, config)
    assert new is None and state.pending == 16
    state, new = decide(replace(state, estimates=(8,) * 10), 2.0, config)
    assert new is None and state.pending is None  # back to current: pending cleared
    state, new = decide(replace(state, estimates=(16,) * 10), 3.0, config)
    assert new is None and state.pending_count == 1


@pytest.mark.parametrize(
    "kwargs", [{"alpha": 0.0}, {"alpha": 1.5}, {"window": 0}, {"interval_s": 0}, {"confirm": 0}]
)
def test_estimator_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        EstimatorConfig(**kwargs)
