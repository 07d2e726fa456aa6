"""The peers report's light/heavy split without a server: which requests are light, how a
level's figures count unsent, rejected and late requests, and that invalid runs stay out."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.test_peers_report import run
from tsadapt.experiments.bench_schedule import (
    RECORD_FIELDS,
    Intensity,
    Schedule,
    read_records,
    record_row,
)
from tsadapt.experiments.peers.load_levels import LoadLevels, level_result, light_mask
from tsadapt.experiments.peers.peers_report import write_peers_report
from tsadapt.policy.sim.workloads import Bursty, Poisson

# image surges 10 -> 100 req/s for 10 s of every 30 (from t=5); tabular stays at 20.
SURGE = Bursty(base_rate=10, spike_rate=100, spike_s=10, period_s=30, offset_s=5)


def schedule(times: list[float], models: list[int]) -> Schedule:
    return Schedule(
        np.asarray(times), np.asarray(models), ("image", "tabular"), 30.0, 1,
        (Intensity("image", SURGE), Intensity("tabular", Poisson(20))),
        {"image": 100.0, "tabular": 50.0},
    )  # fmt: skip


def write_csv(path: Path, rows: list[tuple[float, str, float | None, int]]) -> Path:
    """(scheduled_s, model, latency_ms or None, status) -> a requests.csv."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(RECORD_FIELDS)]
    for at, model, lat, status in rows:
        ok = status == 200 and lat is not None
        lines.append(",".join(record_row(1e9 + at, at, at + 0.001, model, lat, status, ok)))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_light_is_at_most_the_mean_intended_rate() -> None:
    s = schedule([], [])
    # mean: image 10 + 90/3 = 40, tabular 20 -> 60 req/s; between surges 30, during 120.
    assert s.intended_mean_rate() == pytest.approx(60.0, rel=1e-3)
    assert light_mask(s, np.asarray([0.0, 4.9, 5.1, 14.9, 15.1, 29.9])).tolist() == [
        True, True, False, False, True, True,
    ]  # fmt: skip


def test_a_level_counts_unsent_rejected_and_late_requests_as_violations(tmp_path: Path) -> None:
    # light: image at 1 s (ok), tabular at 2 s (60 ms > 50 ms SLO), image at 3 s (never sent);
    # heavy: image at 6 s (ok), image at 7 s (503).
    s = schedule([1.0, 2.0, 3.0, 6.0, 7.0], [0, 1, 0, 0, 0])
    rec = read_records(write_csv(tmp_path / "requests.csv", [
        (1.0, "image", 20.0, 200), (2.0, "tabular", 60.0, 200),
        (6.0, "image", 30.0, 200), (7.0, "image", None, 503),
    ]))  # fmt: skip
    light, heavy = level_result(s, rec, "light"), level_result(s, rec, "heavy")
    assert (light.requests, light.completed, light.good) == (3, 2, 1)
    assert light.slo_attainment == pytest.approx(1 / 3)
    assert (heavy.requests, heavy.completed, heavy.rejected, heavy.good) == (2, 1, 1, 1)
    with pytest.raises(ValueError, match="level must be one of light, heavy"):
        level_result(s, rec, "medium")


def test_levels_leave_invalid_runs_out_and_reach_the_report(tmp_path: Path) -> None:
    s = schedule([1.0, 6.0], [0, 0])
    good = replace(run("static", 1.0), rundir=tmp_path / "static")
    late = replace(run("bentoml-nobatch", 1.0, late=500.0), rundir=tmp_path / "bentoml")
    for res in (good, late):
        rows = [(1.0, "image", 20.0, 200), (6.0, "image", 20.0, 200)]
        write_csv(res.rundir / "requests.csv", rows)
    levels = LoadLevels.of({3: [good, late]}, {3: s})
    assert set(levels.stats["light"]) == {"static"}
    assert levels.stats["heavy"]["static"]["slo_attainment_pct"].mean == pytest.approx(100.0)
    md = write_peers_report(
        tmp_path / "peers.md", "tsadapt lab bench --peers bentoml", "surge", 30.0,
        "2026-12-07 11:00", {3: [good, late]}, [], [], {}, levels=levels,
    )  # fmt: skip
    text = md.read_text()
    assert "## Light load and heavy load, within the same runs" in text
    assert "| static | 1/1 | 1 | 100.0 |" in text
    data = json.loads(md.with_suffix(".json").read_text())
    assert data["load_levels"]["light"]["static"]["requests"]["mean"] == 1.0
    assert "bentoml-nobatch" not in data["load_levels"]["heavy"]
