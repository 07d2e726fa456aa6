"""The fidelity report: ``fidelity.json`` (:func:`report_dict`) and ``fidelity.md``
(:func:`markdown`), with the comparison table the command line prints too
(:func:`table_rows`)."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tsadapt.experiments.fidelity.calibration import quantile_of
from tsadapt.experiments.fidelity.common import (
    ATTAINMENT_POINTS,
    P99_TOLERANCE,
    SCENARIOS_NEEDED,
    SIM_REPLICATIONS,
    WARMUP_ROUNDS,
    FidelityConfig,
    _fmt,
    _rel,
)
from tsadapt.experiments.fidelity.runs import ScenarioRun
from tsadapt.experiments.hostcpu import QUIET_CORES, QUIET_TIMEOUT_S
from tsadapt.markdown import table as markdown_table
from tsadapt.policy.sim.scenario import Scenario


def _quiet_text(r: ScenarioRun) -> str:
    if r.quiet is None:
        return "not checked"
    return f"{'yes' if r.quiet else 'NO'} (waited {r.quiet_wait_s:.0f} s)"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def model_calibration(scenario: Scenario) -> list[dict[str, Any]]:
    """What the simulator was given per model (for the report)."""
    devices = {d.name: d for d in scenario.devices}

    def q(m: Any, p: float) -> float:
        if m.overhead_quantiles_ms is None:
            return float(m.overhead_ms)
        return round(quantile_of(m.overhead_quantiles_ms, p), 3)

    return [
        {
            "model": m.name,
            "profile": _rel(m.profile_path) if m.profile_path else "alpha/beta",
            "service_b1_ms": round(float(m.latency.batch_ms(1)), 3),
            "service_b8_ms": round(float(m.latency.batch_ms(8)), 3),
            "batch_overhead_ms": m.batch_overhead_ms,
            "threads": m.threads,
            "device": m.device,
            "device_capacity": devices[m.device].capacity if m.device in devices else None,
            "exec_cv": m.exec_cv,
            "overhead_p50_ms": q(m, 0.5),
            "overhead_p99_ms": q(m, 0.99),
            "host_cpu_ms": m.host_cpu_ms,
        }
        for m in scenario.models
    ]


def report_dict(
    runs: Sequence[ScenarioRun], command: str, started: str, calibration: Mapping[str, Any]
) -> dict[str, Any]:
    agreeing = [r.scenario for r in runs if r.agrees]
    return {
        "command": command,
        "generated": started,
        "machine": {
            "arch": platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "targets": {
            "p99_rel_error_max": P99_TOLERANCE,
            "attainment_diff_points_max": ATTAINMENT_POINTS,
            "scenarios_needed": SCENARIOS_NEEDED,
        },
        "calibration": calibration,
        "sim_replications": SIM_REPLICATIONS,
        "scenarios": [
            {
                "scenario": r.scenario,
                "file": r.path,
                "duration_s": r.duration_s,
                "seed": r.seed,
                "status": r.status,
                "reason": r.reason,
                "rundir": r.rundir,
                "wall_s": round(r.wall_s, 1),
                "cpu": r.cpu.as_dict() if r.cpu else None,
                "quiet_at_start": r.quiet,
                "quiet_wait_s": round(r.quiet_wait_s, 1),
                "attempts": r.attempts,
                "static_configs": {n: asdict(c) for n, c in r.configs.items()},
                "agrees": r.agrees,
                "rows": [row.as_dict() for row in r.rows],
                "repeat": {
                    "rundir": r.repeat_rundir,
                    "agrees": r.repeat_agrees,
                    "rows": [row.as_dict() for row in r.repeat_rows],
                }
                if r.repeat_rows
                else None,
            }
            for r in runs
        ],
        "scenarios_agreeing": agreeing,
        "acceptance_pass": len(agreeing) >= SCENARIOS_NEEDED,
    }


#: Known gaps between the model and this box (static text of the report).
LIMITS = (
    "- **Tails from time-sliced threads.** When more threads are runnable than the box has "
    "cores, the OS time-slices them; the simulator slows a batch by the proportional share "
    "(threads executing + host load) / cores, fixed at the batch's start, but real batches "
    "that overlapped another model's (table under *Calibration*) have a longer tail than "
    "that share gives. The calibration puts the rest into the outside overhead, measured "
    "at one load: phases much busier than that run get tails too light, calmer ones too "
    "heavy. (With torch's default of one intra-op thread per core in every worker the "
    "effect was far larger -- OpenMP barriers wait for descheduled threads -- so the demo "
    "models now register with one thread per worker.)",
    "- **Host CPU.** Locust, the Java frontend and request handling share the cores with "
    "the workers; the simulator counts them as `host_cpu_ms` per request, one figure for "
    "every model (an image request's JSON costs more than a tabular one's), spread over the "
    "second the request arrives in.",
    "- **Other jobs on the box** are invisible to the simulator: the *others* column above "
    "says how much CPU they took during each real run.",
    "- **The calibration is itself one measurement** (one 60 s run): its tail quantiles and "
    "spreads carry that run's noise; `tsadapt lab fidelity calibrate` re-measures them.",
)

TABLE_HEADER = [
    "scenario", "model", "SLO ms", "requests", "p50 real", "p50 sim", "p99 real", "p99 sim",
    "p99 error", "p99", "attain. real", "attain. sim", "diff (points)", "attain.", "row",
]  # fmt: skip


REPEAT_HEADER = [
    "scenario", "model", "SLO ms", "requests", "p50 run 1", "p50 run 2", "p99 run 1",
    "p99 run 2", "p99 change", "p99", "attain. run 1", "attain. run 2", "diff (points)",
    "attain.", "row",
]  # fmt: skip


def table_rows(runs: Sequence[ScenarioRun], repeat: bool = False) -> list[list[str]]:
    """The comparison table (``repeat``: real run 2 against real run 1 instead)."""
    out = []
    for r in runs:
        if r.status != "ok":
            out.append([r.scenario, "–", "–", "–", *(["–"] * 10), f"{r.status}: {r.reason}"])
            continue
        for row in r.repeat_rows if repeat else r.rows:
            req = f"{row.real.requests}" + (
                "" if row.sim.requests == row.real.requests else f" / {row.sim.requests}"
            )
            out.append([
                r.scenario, row.model, _fmt(row.slo_ms or math.nan, ".0f"), req,
                _fmt(row.real.p50_ms), _fmt(row.sim.p50_ms), _fmt(row.real.p99_ms),
                _fmt(row.sim.p99_ms), _fmt(100 * row.p99_error, "+.1f", "%"),
                _verdict(row.p99_ok), _fmt(100 * row.real.slo_attainment, ".1f", "%"),
                _fmt(100 * row.sim.slo_attainment, ".1f", "%"),
                _fmt(row.attainment_diff, "+.1f"), _verdict(row.attainment_ok),
                _verdict(row.ok),
            ])  # fmt: skip
    return out


def markdown(report: Mapping[str, Any], runs: Sequence[ScenarioRun]) -> str:
    """``docs/results/fidelity.md`` from the report dict and the runs."""
    t = report["targets"]
    m = report["machine"]
    agreeing = report["scenarios_agreeing"]
    lines = [
        "# Fidelity: simulator against the real TorchServe",
        "",
        f"Generated by `{report['command']}` on {report['generated']}. Machine: {m['arch']}, "
        f"{m['cores']} CPU cores, Python {m['python']}; TorchServe, its three workers and "
        "Locust share those cores.",
        "",
        f"**Acceptance (issue #5, Fidelity): {_verdict(report['acceptance_pass'])}** -- "
        f"{len(agreeing)} of {len(runs)} scenarios agree "
        f"({', '.join(agreeing) if agreeing else 'none'}); {t['scenarios_needed']} needed. "
        f"A scenario agrees when every model and the pooled row have the simulated p99 within "
        f"{100 * t['p99_rel_error_max']:.0f}% of the real one and the simulated SLO attainment "
        f"within {t['attainment_diff_points_max']:.0f} points of the real one.",
        "",
        "Method: for each scenario, a fresh TorchServe with the demo models at their "
        "registration defaults (the `static` controller: nothing changes during the run), "
        f"warmed up ({WARMUP_ROUNDS} rounds of bursts per model), then Locust replays the "
        "scenario's exact arrivals (`tsadapt lab bench` machinery); the simulator runs the same "
        "arrivals (same seed and duration) with the same fixed configuration and the "
        f"scenario's calibrated profiles, {report['sim_replications']} times (each with its "
        "own draws of service-time jitter and outside overhead), and its figures pool the "
        "replications: what the model predicts, not one sample of its tail. Attainment counts "
        "every scheduled request (rejected, "
        "failed and unanswered ones are violations); p50/p99 are over answered requests; "
        "p99 error = (sim - real) / real. Nothing below was fitted to these runs: see "
        "*Calibration*.",
        "",
        *markdown_table(TABLE_HEADER, table_rows(runs)),
    ]
    repeated = [r for r in runs if r.repeat_rows]
    if repeated:
        same = [r.scenario for r in repeated if r.repeat_agrees]
        lines += [
            "",
            "## Repeatability: the real server against itself",
            "",
            f"`--repeat`: each scenario's real run was made a second time (same arrivals, "
            f"another fresh server) and compared with the first under the same tolerances. "
            f"**{len(same)} of {len(repeated)} scenarios** agree with themselves "
            f"({', '.join(same) if same else 'none'}): where the real server does not, no "
            "simulator can be held to the tolerances there.",
            "",
            *markdown_table(REPEAT_HEADER, table_rows(repeated, repeat=True)),
        ]
        lines += ["", "Second runs: " + ", ".join(f"`{r.repeat_rundir}`" for r in repeated)]
    lines += [
        "",
        "## Runs",
        "",
        "| scenario | file | duration s | seed | static config (batch/delay ms/workers) | "
        "quiet at start | box CPU busy (cores) | ours | others | attempts | real run dir |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        cfgs = ", ".join(
            f"{n} {c.batch_size}/{c.max_batch_delay_ms:.0f}/{c.workers}"
            for n, c in r.configs.items()
        )
        cpu = r.cpu
        lines.append(
            f"| {r.scenario} | `{r.path}` | {r.duration_s:.0f} | {r.seed} | {cfgs} | "
            f"{_quiet_text(r)} | {_fmt(cpu.box_cores if cpu else math.nan, '.2f')} | "
            f"{_fmt(cpu.ours_cores if cpu else math.nan, '.2f')} | "
            f"{_fmt(cpu.others_cores if cpu else math.nan, '.2f')} | {r.attempts} | "
            f"`{r.rundir}` |"
        )
    lines += [
        "",
        "*others* = CPU used by processes outside this command's process tree during the "
        "real run (other jobs on the box): they compete with the server for the same cores "
        "and the simulator does not see them. Each real run waited (at most "
        f"{QUIET_TIMEOUT_S:.0f} s) for others to use at most {QUIET_CORES} cores before "
        "starting; *quiet at start* says whether that happened. A run during which others "
        f"used more than {QUIET_CORES} cores on average was made again (at most "
        f"{FidelityConfig.attempts} runs; the last one counts).",
        "",
        "## Calibration",
        "",
    ]
    cal = report["calibration"]
    lines += list(cal.get("notes", []))
    lines += [
        "",
        "| scenario | model | service b=1 ms | b=8 ms | of which batch overhead | threads | "
        "cores | host CPU ms/request | exec_cv | outside overhead p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sc_name, models in cal.get("per_scenario", {}).items():
        for c in models:
            lines.append(
                f"| {sc_name} | {c['model']} | {c['service_b1_ms']:.2f} | "
                f"{c['service_b8_ms']:.2f} | {c['batch_overhead_ms']:.2f} | {c['threads']} | "
                f"{c['device_capacity']} | {c.get('host_cpu_ms', 0.0):.2f} | {c['exec_cv']:.3f} | "
                f"{c['overhead_p50_ms']:.2f} | {c['overhead_p99_ms']:.2f} |"
            )
    lines += ["", "## Where it does not agree", ""]
    failing = [row for r in runs for row in r.rows if not row.ok]
    if not failing and all(r.status == "ok" for r in runs):
        lines.append("Every row agrees.")
    for r in runs:
        if r.status != "ok":
            lines.append(f"- `{r.scenario}`: the real run {r.status}: {r.reason}")
    for row in failing:
        what = []
        if not row.p99_ok:
            what.append(
                f"p99 {_fmt(row.sim.p99_ms)} ms simulated vs {_fmt(row.real.p99_ms)} ms real "
                f"({_fmt(100 * row.p99_error, '+.1f')}%)"
            )
        if not row.attainment_ok:
            what.append(
                f"attainment {_fmt(100 * row.sim.slo_attainment, '.1f')}% simulated vs "
                f"{_fmt(100 * row.real.slo_attainment, '.1f')}% real "
                f"({_fmt(row.attainment_diff, '+.1f')} points)"
            )
        lines.append(f"- `{row.scenario}` / {row.model}: " + "; ".join(what))
    lines += ["", "## What the simulator does not model", "", *LIMITS]
    return "\n".join(lines) + "\n"


def write_report(
    runs: Sequence[ScenarioRun],
    out_dir: Path,
    command: str,
    started: str,
    calibration: Mapping[str, Any],
) -> tuple[Path, Path]:
    """``fidelity.md`` and ``fidelity.json`` under ``out_dir``."""
    report = report_dict(runs, command, started, calibration)
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "fidelity.json"
    js.write_text(json.dumps(report, indent=2) + "\n")
    md = out_dir / "fidelity.md"
    md.write_text(markdown(report, runs))
    return md, js
