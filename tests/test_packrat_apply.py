"""Packrat live apply: placement files, plan parsing, spike metrics, online decisions.

The unit tests need no server; the ``server`` tests switch a real TorchServe between
configurations under open-loop load and check that no request fails and that the workers
really run with the planned threads and cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tsadapt.experiments.packrat_bench import (
    BatchRow,
    BenchReport,
    BurstResult,
    render_markdown,
    report_json,
)
from tsadapt.experiments.packrat_switch import spike_of
from tsadapt.handlers.placement import (
    Placement,
    PlacementError,
    WorkerPlacement,
    core_sets,
    read_placement,
    write_placement,
)
from tsadapt.packrat_cpu.apply import PlanFileError, ServingConfig
from tsadapt.packrat_cpu.estimator import EstimatorConfig
from tsadapt.packrat_cpu.online import OnlineConfig, OnlineState, config_for, online_decide
from tsadapt.packrat_cpu.profile_table import ProfileTable

# --------------------------------------------------------------------------- placement


@pytest.mark.parametrize(
    ("workers", "threads", "cores", "expected"),
    [
        (1, 2, [0, 1], ((0, 1),)),
        (2, 1, [0, 1], ((0,), (1,))),
        (2, 2, [7, 1, 3, 5], ((1, 3), (5, 7))),
        (3, 1, [4, 5, 6, 7], ((4,), (5,), (6,))),
    ],
)
def test_core_sets_are_disjoint_and_contiguous(workers, threads, cores, expected) -> None:
    assert core_sets(workers, threads, cores) == expected


@pytest.mark.parametrize(("workers", "threads"), [(3, 1), (1, 3), (0, 1), (1, 0)])
def test_core_sets_refuse_what_does_not_fit(workers: int, threads: int) -> None:
    with pytest.raises(PlacementError):
        core_sets(workers, threads, [0, 1])


@pytest.mark.parametrize(
    "data",
    [
        {"threads": 1, "core_sets": [[0]]},
        {"generation": 1, "threads": 0, "core_sets": [[0]]},
        {"generation": 1, "threads": 1, "core_sets": []},
        {"generation": 1, "threads": 1, "core_sets": [[0], [0]]},
        {"generation": 1, "threads": 1, "core_sets": [["a"]]},
        [1, 2],
    ],
)
def test_bad_placement_is_a_clear_error(data) -> None:
    with pytest.raises(PlacementError):
        Placement.from_json(data)


def test_write_placement_bumps_the_generation(tmp_path: Path) -> None:
    assert read_placement(tmp_path, "m") is None
    first = write_placement(tmp_path, "m", 2, [[0, 1]])
    second = write_placement(tmp_path, "m", 1, [[0], [1]])
    assert (first.generation, second.generation) == (1, 2)
    assert read_placement(tmp_path, "m") == second
    assert not list(tmp_path.glob("*.tmp-*"))


WORKER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import torch
    from tsadapt.handlers.placement import WorkerPlacement
    wp = WorkerPlacement(sys.argv[1], "m")
    seen = None
    deadline = time.time() + 20
    while time.time() < deadline:
        wp.maybe_apply()
        state = (wp.applied.generation if wp.applied else None, wp.slot,
                 torch.get_num_threads(), sorted(os.sched_getaffinity(0)))
        if state != seen:
            print(json.dumps(state), flush=True)
            seen = state
        if os.path.exists(os.path.join(sys.argv[1], "stop")):
            break
        time.sleep(0.01)
    """
)


def _read_state(proc: subprocess.Popen, generation: int) -> list:
    while True:
        line = proc.stdout.readline()
        assert line, "worker exited early"
        state = json.loads(line)
        if state[0] == generation:
            return state


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 usable cores")
def test_two_workers_take_disjoint_slots_and_follow_the_file(tmp_path: Path) -> None:
    cores = sorted(os.sched_getaffinity(0))[:2]
    write_placement(tmp_path, "m", 1, [[cores[0]], [cores[1]]])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        first = [_read_state(p, 1) for p in procs]
        assert sorted(s[1] for s in first) == [0, 1]
        assert all(s[2] == 1 for s in first)
        assert sorted(s[3][0] for s in first) == cores and all(len(s[3]) == 1 for s in first)
        # Scale down to one wide worker: kill slot 0's owner; the survivor moves to slot 0.
        victim = next(p for p, s in zip(procs, first, strict=True) if s[1] == 0)
        survivor = next(p for p in procs if p is not victim)
        victim.kill()
        victim.wait()
        write_placement(tmp_path, "m", 2, [cores])
        assert _read_state(survivor, 2)[1:] == [0, 2, cores]
    finally:
        (tmp_path / "stop").touch()
        for p in procs:
            p.kill()
            p.wait()


def test_worker_placement_without_a_file_changes_nothing(tmp_path: Path) -> None:
    wp = WorkerPlacement(tmp_path, "m")
    assert wp.maybe_apply() is False
    assert wp.applied is None and wp.header_value() is None


# --------------------------------------------------------------------------- plan files


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"instances": [{"threads": 1, "batch": 4}, {"threads": 1, "batch": 4}]},
            ServingConfig(2, 1, 4),
        ),
        ({"instances": [{"threads": 2, "batch": 8}]}, ServingConfig(1, 2, 8)),
        ({"workers": 3, "threads": 2, "batch": 16}, ServingConfig(3, 2, 16)),
    ],
)
def test_plan_files_parse(data, expected: ServingConfig) -> None:
    assert ServingConfig.from_plan_json(data) == expected


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"instances": [{"threads": 1, "batch": 4}, {"threads": 1, "batch": 8}]}, "heterogeneous"),
        ({"instances": []}, "instances"),
        ({"workers": 2, "threads": 1}, "batch"),
        ({"workers": 0, "threads": 1, "batch": 4}, "workers"),
        ({"workers": 1, "threads": "2", "batch": 4}, "threads"),
        ("2x1x4", "object"),
    ],
)
def test_bad_plan_files_name_the_problem(data, field: str) -> None:
    with pytest.raises(PlanFileError, match=field):
        ServingConfig.from_plan_json(data)


# --------------------------------------------------------------------------- spike metric


def _records(latency_by_second: list[float], per_second: int = 20) -> np.ndarray:
    rows = []
    for second, latency in enumerate(latency_by_second):
        for k in range(per_second):
            rows.append((second + k / per_second, latency, 200))
    return np.array(rows, dtype=float)


def test_spike_of_measures_height_and_duration() -> None:
    records = _records([10, 10, 10, 10, 40, 30, 10, 10])
    spike = spike_of(records, at_s=4.0, apply_s=0.1, baseline=(2.0, 4.0), until_s=8.0)
    assert spike.baseline_mean_ms == pytest.approx(10.0)
    assert spike.spike_ratio == pytest.approx(4.0)
    assert spike.disturbed_s == pytest.approx(2.0)
    assert spike.failed == 0 and spike.requests == 80


def test_spike_of_is_flat_without_disturbance() -> None:
    records = _records([10] * 8)
    spike = spike_of(records, at_s=4.0, apply_s=0.1, baseline=(2.0, 4.0), until_s=8.0)
    assert spike.spike_ratio == pytest.approx(1.0) and spike.disturbed_s == 0.0


def test_spike_of_does_not_count_a_slower_steady_state_as_a_spike() -> None:
    records = _records([10, 10, 10, 10, 25, 20, 20, 20])
    spike = spike_of(
        records, at_s=4.0, apply_s=0.1, baseline=(2.0, 4.0), until_s=8.0, settled=(6.0, 8.0)
    )
    assert spike.baseline_mean_ms == pytest.approx(20.0)
    assert spike.spike_ratio == pytest.approx(1.25)
    assert spike.disturbed_s == 0.0


def test_spike_of_counts_failures() -> None:
    records = _records([10] * 6)
    records[100, 2] = 500
    spike = spike_of(records, at_s=4.0, apply_s=0.1, baseline=(2.0, 4.0), until_s=6.0)
    assert spike.failed == 1


# --------------------------------------------------------------------------- online


def _profile() -> ProfileTable:
    latency = {}
    for batch in (1, 2, 4, 8, 16):
        latency[(1, batch)] = 2.0 + 2.0 * batch
        latency[(2, batch)] = 1.5 + 1.2 * batch
    return ProfileTable.from_mapping(latency)


def test_config_for_clamps_to_what_the_profile_serves() -> None:
    assert config_for(_profile(), 2, 1024).batch * config_for(_profile(), 2, 1024).workers <= 32


def test_online_decide_follows_the_queue_with_hysteresis_and_dwell() -> None:
    config = OnlineConfig(cores=2, estimator=EstimatorConfig(confirm=2), min_dwell_s=3.0)
    profile, state, switches = _profile(), OnlineState(), []
    now = 0.0

    def feed(depth: float, seconds: float) -> None:
        nonlocal state, now
        for _ in range(int(seconds / 0.02)):
            state, target = online_decide(state, now, depth, profile, config)
            if target is not None:
                switches.append((round(now, 2), target))
            now += 0.02

    feed(1, 5.0)
    assert len(switches) == 1  # the first decision always plans
    feed(16, 0.5)  # a spike shorter than the confirm interval: no switch
    assert len(switches) == 1
    feed(16, 5.0)
    assert len(switches) == 2
    assert switches[1][1].batch * switches[1][1].workers == 16
    assert switches[1][0] - switches[0][0] >= config.min_dwell_s


# --------------------------------------------------------------------------- bench report


def _burst(config: str, batch: int, ms: float) -> BurstResult:
    return BurstResult(config, batch, 3, (ms, ms, ms), (ms / 2,) * (3 * batch), 0)


def test_bench_report_states_speedups_cores_and_command() -> None:
    rows = tuple(
        BatchRow(
            b,
            ServingConfig(2, 1, b // 2),
            ServingConfig(1, 2, b),
            predicted_plan_ms=10.0,
            predicted_fat_ms=15.0,
            planned=_burst("plan", b, 20.0),
            baseline=_burst("fat", b, 30.0 if b == 4 else 20.0),
        )
        for b in (4, 8)
    )
    report = BenchReport(
        "text", (0, 1), "p.csv", rows, None, "tsadapt lab packrat bench --model text"
    )
    assert report.mean_speedup == pytest.approx((1.5 + 1.0) / 2)
    text = render_markdown(report)
    assert "**2**" in text and "tsadapt lab packrat bench --model text" in text
    row = "| 4 | 2 x <1 thread, batch 2> | 15.0 / 10.0 | 1.50x | 30.0 / 30.0 | 20.0 / 20.0 | 1.50x"
    assert row in text
    assert "Mean measured speedup: 1.25x" in text
    data = report_json(report)
    assert data["cores"] == [0, 1] and data["rows"][0]["speedup"] == pytest.approx(1.5)
