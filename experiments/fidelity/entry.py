"""``tsadapt lab fidelity``: every scenario in turn, real then simulated, and the report, with
what the simulator was given and where it came from (:func:`run_fidelity`)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tsadapt.experiments.fidelity.common import (
    CALIBRATION_FILE,
    CALIBRATION_SCENARIO,
    FidelityConfig,
    _fmt,
    _rel,
)
from tsadapt.experiments.fidelity.report import model_calibration, write_report
from tsadapt.experiments.fidelity.runs import ScenarioRun, run_scenario, static_configs
from tsadapt.policy.sim.scenario import Scenario, load_scenario


def calibration_summary(scenarios: Sequence[Scenario]) -> dict[str, Any]:
    """What the simulator was given, per scenario and model, and where it came from."""
    notes = [
        "Each compared scenario file carries its calibration (see the comments in it); none "
        "of it comes from the runs above:",
        "",
        "- **service time** per batch = the handler-only batch latency measured in-process on "
        "this box by `tsadapt lab demo-models profile` (`docs/results/model-profiles.json`, "
        "medians, interpolated between batch sizes) + `batch_overhead_ms`, the worker's work that "
        "profile misses (the hop to the Python backend and back, request decoding, metrics, "
        "waking an idle worker), with log-normal jitter `exec_cv`;",
        "- **contention**: `threads` = the intra-op threads the profile was measured with (= "
        "what each worker uses), the device has the box's cores; a batch starting when more "
        "is runnable than there are cores is slowed by (threads executing + host load) / "
        "cores, where the host load is the cores the frontend, Locust and request handling "
        "outside the workers keep busy: `host_cpu_ms` per request (measured in the "
        "calibration run) times the requests arriving in that second;",
        "- **outside overhead**: per request, a draw from `overhead_quantiles_ms` (client, "
        "HTTP, frontend, and whatever else the simulator misses), added to the latency "
        "without occupying the worker;",
        "- `batch_overhead_ms`, `exec_cv` and `overhead_quantiles_ms` come from `tsadapt "
        f"fidelity calibrate` (`{_rel(CALIBRATION_FILE)}`), a separate real run (scenario "
        f"`{CALIBRATION_SCENARIO}`: steady Poisson load at the compared scenarios' mean rates, "
        "none of their spikes, cycles or steps, a seed of its own). TorchServe's *Backend "
        "response time* of the batches that ran while no other model's did is fitted by a "
        "log-normal through its p50 and p90: its cv is `exec_cv`, its mean - profile(1) is "
        "`batch_overhead_ms`; the outside overhead's distribution is fitted so that the "
        "simulated latencies plus independent draws from it have the real latencies' "
        "quantiles in that run.",
    ]
    try:
        measured = json.loads(CALIBRATION_FILE.read_text())
    except (OSError, ValueError):
        measured = {}
    if isinstance(measured.get("models"), dict):
        notes += [
            "",
            f"Worker time per batch in the calibration run ({measured.get('generated', '?')}, "
            f"`{measured.get('rundir', '?')}`): batches that ran alone against batches that "
            "overlapped another model's (the simulator slows those by the proportional share "
            "only):",
            "",
            "| model | alone: batches | p50 ms | p90 ms | overlapped: batches | p50 ms | p90 ms |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, c in measured["models"].items():
            notes.append(
                f"| {name} | {c.get('solo_batches', '–')} | {_fmt(_f(c, 'backend_p50_ms'))} | "
                f"{_fmt(_f(c, 'solo_p90_ms'))} | {c.get('overlapped_batches', '–')} | "
                f"{_fmt(_f(c, 'overlapped_p50_ms'))} | {_fmt(_f(c, 'overlapped_p90_ms'))} |"
            )
    return {
        "notes": notes,
        "per_scenario": {s.name: model_calibration(s) for s in scenarios},
    }


def _f(d: Mapping[str, Any], key: str) -> float:
    v = d.get(key)
    return float(v) if isinstance(v, int | float) else math.nan


def run_fidelity(cfg: FidelityConfig) -> tuple[list[ScenarioRun], Path, Path]:
    """Every scenario in turn (real, then sim); write the report; return runs and paths."""
    from rich.console import Console

    from tsadapt.experiments.bench_schedule import resolve_scenario

    console = Console(stderr=True)
    started = time.strftime("%Y-%m-%d %H:%M")
    scenarios = [load_scenario(resolve_scenario(n)) for n in cfg.scenarios]
    for s in scenarios:
        static_configs(s)  # fail early on a scenario the real server cannot run
    runs: list[ScenarioRun] = []
    for name, sc in zip(cfg.scenarios, scenarios, strict=True):
        duration = sc.duration_s if cfg.duration_s is None else cfg.duration_s
        console.print(f"fidelity [bold]{sc.name}[/]: real run ({duration:.0f} s of load) ...")
        last = [0.0]

        def tick(elapsed: float, what: str, last: list[float] = last) -> None:
            if elapsed - last[0] >= 15.0 or what not in ("load running", "draining"):
                last[0] = elapsed
                console.print(f"  {elapsed:5.0f} s  {what}")

        run = run_scenario(
            name, cfg.seed, cfg.duration_s, cfg.runs_dir, cfg.command, tick, cfg.quiet,
            cfg.attempts, cfg.max_others_cores, cfg.repeat,
        )  # fmt: skip
        runs.append(run)
        console.print(f"  {sc.name}: {run.status} {'agrees' if run.agrees else 'differs'}")
    calibration = calibration_summary(scenarios)
    calibration["notes"] = [*calibration["notes"], *cfg.extra_notes]
    md, js = write_report(runs, cfg.out_dir, cfg.command, started, calibration)
    return runs, md, js
