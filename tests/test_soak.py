"""``tsadapt lab soak``: the report's arithmetic on made-up samples, and a 75-second real run (a
fresh TorchServe, the demo models and a plain BaseHandler MLP, the PPO controller, bursty
open-loop load) whose report must hold together."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from tsadapt.experiments import soak_report
from tsadapt.experiments.bench_schedule import Schedule
from tsadapt.experiments.soak import SoakConfig, run_soak
from tsadapt.experiments.soak_load import Sent
from tsadapt.experiments.soak_probe import ProbeSample, ProcStat


def _samples(rss: list[float], fds: list[int], worker_pid: int = 7) -> list[ProbeSample]:
    return [
        ProbeSample(
            10.0 * i,
            ProcStat(1, r, f, 50),
            ProcStat(2, 50.0, 7, 3),
            {"m": [ProcStat(worker_pid, 200.0, 5, 3)]},
            100 * i,
        )
        for i, (r, f) in enumerate(zip(rss, fds, strict=True))
    ]


@pytest.mark.parametrize(
    ("rss", "fds", "rss_ok", "fds_flat"),
    [
        ([100.0] * 12, [80] * 12, True, True),
        ([100.0] * 6 + [104.0] * 6, [80] * 6 + [84] * 6, True, True),
        ([100.0 + 2 * i for i in range(12)], [80 + 3 * i for i in range(12)], False, False),
        ([100.0] * 11 + [300.0], [80] * 11 + [200], True, True),  # one spike does not decide
    ],
)
def test_process_trends_judge_growth_by_the_ends_medians(
    rss: list[float], fds: list[int], rss_ok: bool, fds_flat: bool
) -> None:
    rows = soak_report.process_trends(_samples(rss, fds), 0.0)
    jvm = next(r for r in rows if r["process"] == "frontend (JVM)")
    assert jvm["rss_ok"] is rss_ok and jvm["fds_flat"] is fds_flat
    assert [r["process"] for r in rows] == ["frontend (JVM)", "sidecar", "worker m (pid 7)"]


def test_workers_replaced_in_the_window_are_judged_by_their_mean() -> None:
    first, second = _samples([100.0] * 6, [80] * 6), _samples([100.0] * 6, [80] * 6, 8)
    samples = first + [dataclasses.replace(s, t_s=s.t_s + 60.0) for s in second]
    rows = soak_report.process_trends(samples, 0.0)
    workers = [r for r in rows if r["process"].startswith("worker")]
    assert [r["process"] for r in workers] == [
        "workers m (mean per worker, replaced in the window)"
    ]
    assert workers[0]["complete"] and workers[0]["rss_growth_pct"] == 0.0


def test_outcomes_count_shed_apart_from_failed() -> None:
    schedule = Schedule(
        np.arange(6, dtype=float), np.array([0, 0, 0, 1, 1, 1]), ("a", "b"), 6.0, 0, (),
        {"a": 100.0, "b": 100.0},
    )  # fmt: skip
    sent = Sent(6)
    sent.status[:] = [200, 503, 0, 200, 200, 500]
    sent.latency_ms[:] = [50.0, 1.0, math.nan, 150.0, 20.0, 3.0]
    out = soak_report.outcomes(schedule, sent)
    assert (out["a"]["answered"], out["a"]["shed"], out["a"]["failed"]) == (1, 1, 1)
    assert (out["b"]["answered"], out["b"]["shed"], out["b"]["failed"]) == (2, 0, 1)
    assert out["b"]["attainment"] == pytest.approx(1 / 3)


@pytest.mark.server
@pytest.mark.slow
def test_a_short_soak_holds_together(model_store: Path, tmp_path: Path) -> None:
    """75 s: past the keys' 1-minute lifetime, sampled every 5 s (15 samples)."""
    cfg = SoakConfig(
        duration_s=75.0,
        sample_s=5.0,
        out_dir=tmp_path / "out",
        runs_dir=tmp_path / "runs",
        model_store=model_store,
        command="tsadapt lab soak --duration 75 --sample-s 5 --token-expiration-min 1",
        token_expiration_min=1,  # the keys expire during the run: every client must renew
    )
    report = run_soak(cfg, on_progress=lambda *_: None)
    saved = json.loads((cfg.out_dir / "soak.json").read_text())
    md = (cfg.out_dir / "soak.md").read_text()
    assert md.splitlines()[2].startswith("Written by `tsadapt lab soak --duration 75 --sample")
    assert (cfg.out_dir / "soak.png").stat().st_size > 0
    assert report["requests_not_done"] == 0
    assert report["sidecar_alive_at_end"] and report["sidecar_exit_code"] == 0
    assert set(saved["totals"]) == {"image", "text", "tabular", "usermlp"}
    for model, t in saved["totals"].items():
        assert t["sent"] > 0 and t["answered"] + t["shed"] + t["failed"] == t["sent"], model
        assert f"| {model} | {t['slo_ms']:.0f} | {t['sent']} | {t['answered']} |" in md
    samples = saved["samples"]
    assert len(samples) >= 12
    sizes = [s["decision_log_bytes"] for s in samples]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    assert saved["verdicts"]["every_process_watched"]
    sidecar = next(r for r in saved["processes"] if r["process"] == "sidecar")
    assert sidecar["fds_flat"] and sidecar["threads_flat"]
    # no HTTP error but 503 (a request unanswered in 30 s on a starved box is load, not a bug)
    sent = np.load(Path(saved["run_dir"]) / "requests.npz")
    assert set(np.unique(sent["status"])) <= {0, 200, 503}
    assert saved["controller"]["ticks"] >= 10 and saved["controller"]["changes_failed"] == 0
