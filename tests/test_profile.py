"""The one home of latency profiles (``tsadapt.profile``): the timing loop, the fit, the file
format with its version, the old unversioned files, and the simulator's API kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tsadapt.constants import REPO_DIR
from tsadapt.profile import (
    PROFILE_FORMAT,
    PROFILE_VERSION,
    LatencyModel,
    ProfileFormatError,
    latency_of,
    profile_from_times,
    read_profiles,
    slo_feasible_batch,
    timed_rounds,
    write_profiles,
)

RESULTS = REPO_DIR / "docs" / "results"


def test_timed_rounds_times_only_the_repeats() -> None:
    calls: list[int] = []
    ticks: list[int] = []
    rounds = timed_rounds(lambda: calls.append(1) or len(calls), 2, 3, lambda: ticks.append(1))
    assert len(calls) == len(ticks) == 5
    assert [r for _, r in rounds] == [3, 4, 5]
    assert all(ms >= 0 for ms, _ in rounds)


def test_profile_from_times_medians_and_fit() -> None:
    times = {b: [2.0 * b + 5.0 + d for d in (-0.5, 0.0, 0.5)] for b in (1, 2, 4, 8)}
    p = profile_from_times("m", 2, times)
    assert p.batch_sizes == [1, 2, 4, 8] and p.median_ms == [7.0, 9.0, 13.0, 21.0]
    assert p.fit.alpha_ms == pytest.approx(2.0) and p.fit.beta_ms == pytest.approx(5.0)
    assert p.latency().batch_ms(4) == pytest.approx(13.0)


def test_round_trip_is_versioned(tmp_path: Path) -> None:
    p = profile_from_times("m", 1, {1: [3.0], 4: [6.0]})
    path = write_profiles(tmp_path / "p.json", [p], command="tsadapt models profile")
    doc = json.loads(path.read_text())
    assert (doc["format"], doc["version"]) == (PROFILE_FORMAT, PROFILE_VERSION)
    (row,) = read_profiles(path)
    assert row["model"] == "m" and latency_of(row) == p.latency()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"format": PROFILE_FORMAT, "version": 99, "profiles": []}, "version 99"),
        ({"format": "other", "version": 1, "profiles": []}, "'other'"),
        ({"something": 1}, "not a profile file"),
        ([{"model": "m", "batch_sizes": [1, 2], "median_ms": [1.0]}], "equal-length"),
        ([{"batch_sizes": [1], "median_ms": [1.0]}], "KeyError"),
    ],
)
def test_bad_files_are_named(tmp_path: Path, doc: object, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileFormatError, match=message) as info:
        read_profiles(path)
    assert str(path) in str(info.value)


def test_old_serve_document_is_read_per_worker_count(tmp_path: Path) -> None:
    """``tsadapt profile``'s file before the version field: raw points, medians per workers
    (the handler's time, else the client's)."""
    nan = float("nan")
    points = [
        {"workers": 1, "batch": 1, "handler_ms": 4.0, "client_ms": 9.0},
        {"workers": 1, "batch": 1, "handler_ms": 6.0, "client_ms": 9.0},
        {"workers": 1, "batch": 4, "handler_ms": nan, "client_ms": 12.0},
        {"workers": 2, "batch": 1, "handler_ms": 8.0, "client_ms": 9.0},
    ]
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"model": "m", "points": points}))
    rows = read_profiles(path)
    assert [(r["workers"], r["batch_sizes"], r["median_ms"]) for r in rows] == [
        (1, [1, 4], [5.0, 12.0]),
        (2, [1], [8.0]),
    ]


@pytest.mark.parametrize("name", ["model-profiles.json", "gpu-profiles.json"])
def test_committed_unversioned_files_still_read(name: str) -> None:
    rows = read_profiles(RESULTS / name)
    assert {r["model"] for r in rows} == {"image", "text", "tabular"}
    for r in rows:
        assert np.all(np.asarray(latency_of(r).batch_ms(np.arange(1, 9))) > 0)


def test_the_simulator_api_is_the_home_not_a_copy() -> None:
    from tsadapt.policy.sim import control, specs

    assert specs.LatencyModel is LatencyModel
    assert control.slo_feasible_batch is slo_feasible_batch
