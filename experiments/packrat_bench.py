"""``tsadapt lab packrat bench``: planned configuration vs the fat instance, on a real TorchServe.

For each batch size ``B`` the uniform Packrat plan for the profile (``i`` workers x <``t``
threads, batch ``b``>) and the fat baseline (1 worker x <all cores, batch ``B``>) are applied
alternately (3 turns each) to the same live server with :func:`apply_config` (no restart);
together they serve ``rounds`` bursts of ``B`` concurrent requests per configuration. The
latency of a configuration is the mean time from sending a burst to its last answer
(Packrat's batch latency); the speedup is fat / planned, side by side in one run. A
live-switch run between the two configurations under steady open-loop load then measures
the spike (``switch.py``).

Everything goes to ``docs/results/packrat.md`` and ``packrat.json``, with the core count,
the profile used and the command line.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.client import TorchServeClient
from tsadapt.experiments.loadgen import timed_post
from tsadapt.experiments.packrat_switch import SwitchRun, run_switches
from tsadapt.handlers.catalog import demo_model
from tsadapt.packrat_cpu.apply import ServingConfig, apply_config, uniform_config
from tsadapt.packrat_cpu.profile_table import ProfileTable
from tsadapt.plugin.adapt_client import AdaptClient

DEFAULT_BATCHES = (2, 4, 8, 16, 32)
DEFAULT_ROUNDS = 30
#: Alternations of fat and planned per batch size (the rounds are split between them).
DEFAULT_REPEATS = 3
#: Long enough that a burst of B requests, sent within a few ms, forms full batches.
BENCH_BATCH_DELAY_MS = 50
DEFAULT_OUT = Path("docs/results")
DEFAULT_WORKDIR = Path("runs/packrat/bench")


@dataclass(frozen=True)
class BurstResult:
    """``rounds`` bursts of ``batch`` concurrent requests against one configuration."""

    config: str
    batch: int
    rounds: int
    burst_ms: tuple[float, ...]
    request_ms: tuple[float, ...]
    failed: int

    @property
    def mean_burst_ms(self) -> float:
        return statistics.fmean(self.burst_ms)

    @property
    def median_burst_ms(self) -> float:
        return statistics.median(self.burst_ms)

    @property
    def mean_request_ms(self) -> float:
        return statistics.fmean(self.request_ms)


def measure_bursts(
    client: TorchServeClient, model: str, batch: int, rounds: int, seed: int, config: str
) -> BurstResult:
    """Send ``rounds`` bursts of ``batch`` requests (plus one untimed warm-up burst)."""
    rng = np.random.default_rng(seed)
    bodies = [json.dumps(demo_model(model).example(rng)).encode() for _ in range(batch)]
    bursts: list[float] = []
    requests_ms: list[float] = []
    failed = 0
    with ThreadPoolExecutor(max_workers=batch) as pool:
        for round_ in range(rounds + 1):
            t0 = time.perf_counter()
            results = list(pool.map(lambda body: timed_post(client, model, body), bodies))
            if round_ == 0:
                continue  # threads, connections and caches warm up
            failed += sum(status != 200 for _, _, status in results)
            bursts.append((max(end for _, end, _ in results) - t0) * 1000.0)
            requests_ms.extend((end - start) * 1000.0 for start, end, _ in results)
            time.sleep(0.05)
    return BurstResult(config, batch, rounds, tuple(bursts), tuple(requests_ms), failed)


@dataclass(frozen=True)
class BatchRow:
    """One batch size: the plan, the prediction and both measurements."""

    batch: int
    plan: ServingConfig
    fat: ServingConfig
    predicted_plan_ms: float
    predicted_fat_ms: float | None
    planned: BurstResult
    baseline: BurstResult

    @property
    def predicted_speedup(self) -> float | None:
        if self.predicted_fat_ms is None:
            return None
        return self.predicted_fat_ms / self.predicted_plan_ms

    @property
    def speedup(self) -> float:
        return self.baseline.mean_burst_ms / self.planned.mean_burst_ms

    @property
    def median_speedup(self) -> float:
        return self.baseline.median_burst_ms / self.planned.median_burst_ms


def _pooled(parts: list[BurstResult]) -> BurstResult:
    first = parts[0]
    return BurstResult(
        first.config,
        first.batch,
        sum(p.rounds for p in parts),
        tuple(x for p in parts for x in p.burst_ms),
        tuple(x for p in parts for x in p.request_ms),
        sum(p.failed for p in parts),
    )


def bench_batches(
    client: TorchServeClient,
    adapt: AdaptClient,
    placement_dir: Path,
    model: str,
    profile: ProfileTable,
    cores: tuple[int, ...],
    batches: tuple[int, ...],
    rounds: int,
    progress: Any = None,
    repeats: int = DEFAULT_REPEATS,
) -> list[BatchRow]:
    """Measure planned vs fat for each batch size.

    Per B the two configurations alternate ``repeats`` times (fat, plan, fat, plan, ...),
    each turn serving its share of the ``rounds`` bursts, so slow drifts of a shared machine
    fall on both sides alike.
    """
    rows = []
    turns = max(1, min(repeats, rounds))
    for batch in batches:
        plan_config, result = uniform_config(profile, len(cores), batch)
        fat = ServingConfig(1, len(cores), batch)
        parts: dict[str, list[BurstResult]] = {"fat": [], "plan": []}
        for turn in range(turns):
            share = rounds // turns + (1 if turn < rounds % turns else 0)
            for name, config in (("fat", fat), ("plan", plan_config)):
                apply_config(
                    client,
                    adapt,
                    placement_dir,
                    model,
                    config,
                    cores=cores,
                    max_batch_delay_ms=BENCH_BATCH_DELAY_MS,
                )
                parts[name].append(measure_bursts(client, model, batch, share, batch, str(config)))
        if progress is not None:
            progress()
        rows.append(
            BatchRow(
                batch,
                plan_config,
                fat,
                result.latency_ms,
                result.baseline.latency_ms if result.baseline is not None else None,
                _pooled(parts["plan"]),
                _pooled(parts["fat"]),
            )
        )
    return rows


@dataclass(frozen=True)
class BenchReport:
    model: str
    cores: tuple[int, ...]
    profile_source: str
    rows: tuple[BatchRow, ...]
    switch: SwitchRun | None
    command: str
    host: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_speedup(self) -> float:
        return statistics.fmean(r.speedup for r in self.rows)

    @property
    def mean_median_speedup(self) -> float:
        return statistics.fmean(r.median_speedup for r in self.rows)

    @property
    def failed(self) -> int:
        burst_failed = sum(r.planned.failed + r.baseline.failed for r in self.rows)
        return burst_failed + (self.switch.failed if self.switch else 0)


def host_facts() -> dict[str, Any]:
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def render_markdown(report: BenchReport) -> str:
    """The report page; every figure comes from ``report``."""
    lines = [
        f"# Packrat on TorchServe: planned vs fat instance ({report.model})",
        "",
        f"Generated by `{report.command}`.",
        "",
        f"- Cores: **{len(report.cores)}** (ids {list(report.cores)}), "
        f"{report.host.get('processor', '?')}, {report.host.get('logical_cpus', '?')} logical "
        "CPUs on the host.",
        f"- Profile: `{report.profile_source}` (`tsadapt packrat profile`).",
        "- Fat = 1 worker with every core and batch B. Planned = `tsadapt packrat plan "
        "--uniform` (identical instances: what one TorchServe model can run).",
        "- Latency = mean time from sending a burst of B concurrent requests to its last "
        f"answer, over {report.rows[0].planned.rounds if report.rows else 0} bursts per cell; "
        "both configurations measured on the same server, alternating 3 times per B, switched "
        "live with `tsadapt packrat apply`'s mechanism.",
        "",
        "| B | planned config | predicted fat / plan (ms) | predicted speedup "
        "| measured fat mean / median (ms) | measured plan mean / median (ms) "
        "| measured speedup (mean) | (median) | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        predicted_fat = f"{r.predicted_fat_ms:.1f}" if r.predicted_fat_ms is not None else "n/a"
        predicted_speedup = f"{r.predicted_speedup:.2f}x" if r.predicted_speedup else "n/a"
        lines.append(
            f"| {r.batch} | {r.plan} | {predicted_fat} / {r.predicted_plan_ms:.1f} "
            f"| {predicted_speedup} "
            f"| {r.baseline.mean_burst_ms:.1f} / {r.baseline.median_burst_ms:.1f} "
            f"| {r.planned.mean_burst_ms:.1f} / {r.planned.median_burst_ms:.1f} "
            f"| {r.speedup:.2f}x | {r.median_speedup:.2f}x "
            f"| {r.planned.failed + r.baseline.failed} |"
        )
    if report.rows:
        lines += [
            "",
            f"**Mean measured speedup: {report.mean_speedup:.2f}x** (of the medians: "
            f"{report.mean_median_speedup:.2f}x) over "
            f"{len(report.rows)} batch sizes on {len(report.cores)} cores.",
        ]
    if len(report.cores) <= 2:
        lines += [
            "",
            "With 2 cores the only plans are 1 x <2 threads> and 2 x <1 thread>, so the gain "
            "can only be small; Packrat's 1.43x-1.83x were on 16 cores.",
        ]
    if report.switch is not None:
        run = report.switch
        lines += [
            "",
            "## Live switch under load",
            "",
            f"Open-loop Poisson load at {run.rate_rps:g} req/s on `{run.model}`, switching "
            f"every {run.period_s:g} s: {run.sent} requests, **{run.failed} failed** "
            f"(HTTP statuses: {run.statuses}). "
            "Reference = the settled latency, the higher of the steady half-periods before the "
            "switch and before the next one (so a configuration that is simply slower at this "
            "load does not count as switching cost). Spike = worst 0.5 s window (by send time) "
            "after the switch call over the reference; disturbed = until the end of the last "
            "window whose mean is above 1.5x the reference mean. Packrat's own switch: about "
            "5 s at 2-3x latency.",
            "",
            "| switch | call took (s) | reference mean / p99 (ms) | worst window mean / p99 (ms) "
            "| spike (mean) | spike (p99) | disturbed (s) | failed |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in run.spikes:
            lines.append(
                f"| {s.before} -> {s.after} | {s.apply_s:.2f} "
                f"| {s.baseline_mean_ms:.1f} / {s.baseline_p99_ms:.1f} "
                f"| {s.peak_mean_ms:.1f} / {s.peak_p99_ms:.1f} | {s.spike_ratio:.2f}x "
                f"| {s.p99_ratio:.2f}x | {s.disturbed_s:.1f} | {s.failed} |"
            )
    return "\n".join(lines) + "\n"


def report_json(report: BenchReport) -> dict[str, Any]:
    rows = []
    for r in report.rows:
        rows.append(
            {
                "batch": r.batch,
                "plan": r.plan.to_json(),
                "fat": r.fat.to_json(),
                "predicted_plan_ms": r.predicted_plan_ms,
                "predicted_fat_ms": r.predicted_fat_ms,
                "predicted_speedup": r.predicted_speedup,
                "measured_plan_ms": r.planned.mean_burst_ms,
                "measured_fat_ms": r.baseline.mean_burst_ms,
                "measured_plan_request_ms": r.planned.mean_request_ms,
                "measured_fat_request_ms": r.baseline.mean_request_ms,
                "speedup": r.speedup,
                "median_speedup": r.median_speedup,
                "failed": r.planned.failed + r.baseline.failed,
                "plan_burst_ms": list(r.planned.burst_ms),
                "fat_burst_ms": list(r.baseline.burst_ms),
            }
        )
    switch = None
    if report.switch is not None:
        switch = {
            "rate_rps": report.switch.rate_rps,
            "period_s": report.switch.period_s,
            "sent": report.switch.sent,
            "failed": report.switch.failed,
            "statuses": report.switch.statuses,
            "spikes": [s.to_json() for s in report.switch.spikes],
            "steps": [r.to_json() for r in report.switch.reports],
        }
    return {
        "model": report.model,
        "cores": list(report.cores),
        "profile": report.profile_source,
        "command": report.command,
        "host": report.host,
        "mean_speedup": report.mean_speedup if report.rows else None,
        "mean_median_speedup": report.mean_median_speedup if report.rows else None,
        "rows": rows,
        "switch": switch,
    }


def write_report(report: BenchReport, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "packrat.md", out / "packrat.json"
    md.write_text(render_markdown(report))
    js.write_text(json.dumps(report_json(report), indent=1, default=asdict))
    return md, js


def switch_run(
    client: TorchServeClient,
    adapt: AdaptClient,
    placement_dir: Path,
    model: str,
    fat: ServingConfig,
    plan: ServingConfig,
    rate_rps: float,
    period_s: float,
    max_batch_delay_ms: int | None = None,
) -> SwitchRun:
    """fat -> plan -> fat -> plan under steady load."""
    return run_switches(
        client,
        adapt,
        placement_dir,
        model,
        [fat, plan, fat, plan],
        rate_rps,
        period_s,
        max_batch_delay_ms=max_batch_delay_ms,
    )
