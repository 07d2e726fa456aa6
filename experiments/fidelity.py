"""``tsadapt fidelity``: the simulator against the real TorchServe on the same workload.

For each scenario (a real-server scenario file, ``loadtests/scenarios``), with the same
seed and duration on both sides:

* **real**: a fresh TorchServe with the demo models at their registration defaults
  (``handlers/catalog.py``: the ``static`` controller, nothing changes during the run),
  warmed up, then Locust replays the scenario's exact arrivals -- all through
  :func:`tsadapt.experiments.bench.run_one`, the machinery of ``tsadapt bench``;
* **sim**: :func:`policy.scenario.run_static` with the same fixed configuration, the
  scenario's calibrated profiles (``profile``, ``threads``, ``exec_cv``, ``overhead_ms``,
  ``devices``) and the same arrivals (both sides draw them from the same seed streams).

Per model (and pooled) the report puts real against simulated p99 and SLO attainment and
checks them against the acceptance targets: p99 within :data:`P99_TOLERANCE` (relative to
the real one) and attainment within :data:`ATTAINMENT_POINTS` percentage points. A
scenario agrees when every row does. Nothing is tuned to the runs being reported: the
calibration comes from ``tsadapt models profile`` (handler-only batch latency) and
``tsadapt fidelity calibrate`` (a separate run with steady load, see :func:`calibrate`).

During each real run the box's CPU is sampled: the report says how many cores our own
processes (TorchServe, its workers, Locust, this process) used and how many others did,
since foreign load on a small box shows up directly in the real tail latencies.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.constants import REPO_DIR
from tsadapt.markdown import table as markdown_table
from tsadapt.policy.sim.metrics import ModelResult
from tsadapt.policy.sim.scenario import (
    Scenario,
    SimResult,
    load_scenario,
    pool_replications,
    run_static,
    with_batch_overhead,
)
from tsadapt.policy.types import ModelSettings

__all__ = [
    "ATTAINMENT_POINTS",
    "P99_TOLERANCE",
    "Calibration",
    "CpuLoad",
    "FidelityConfig",
    "Row",
    "ScenarioRun",
    "Side",
    "attainment_points",
    "calibrate",
    "compare",
    "p99_relative_error",
    "run_fidelity",
    "static_configs",
]

REPO = REPO_DIR
RESULTS_DIR = REPO / "docs" / "results"
#: Acceptance targets (issue #5, "Fidelity").
P99_TOLERANCE = 0.20
ATTAINMENT_POINTS = 3.0
#: Scenarios agreeing needed for the acceptance item.
SCENARIOS_NEEDED = 3
DEFAULT_SCENARIOS = ("bursty", "diurnal", "step", "surge")
#: The scenario ``tsadapt fidelity calibrate`` runs (not one of the compared).
CALIBRATION_SCENARIO = "calibrate"
CALIBRATION_FILE = RESULTS_DIR / "fidelity-calibration.json"
DEFAULT_RUNS = Path("runs/fidelity")
#: Warm-up rounds before the load (see :func:`tsadapt.experiments.bench.warm_up`).
WARMUP_ROUNDS = 2
#: Simulated runs per real one (same arrivals, other draws of the rest), pooled.
SIM_REPLICATIONS = 20
#: What the command line of a TorchServe worker process contains.
WORKER_PROCESS = "model_service_worker"
#: CPU sampling period of :class:`CpuMonitor` (s).
CPU_PERIOD_S = 0.5
#: Before each real run, wait (at most QUIET_TIMEOUT_S) until other processes use at most
#: QUIET_CORES cores (see :func:`wait_for_quiet`).
QUIET_CORES = 0.25
QUIET_TIMEOUT_S = 180.0
#: A calibration run during which other processes used more than this many cores (on
#: average) is repeated, up to CALIBRATION_ATTEMPTS runs: its tails would be theirs.
CALIBRATION_MAX_OTHERS = 0.1
CALIBRATION_ATTEMPTS = 3


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Side:
    """One side's figures for one model (or ``overall``)."""

    requests: int
    completed: int
    rejected: int
    failed: int
    p50_ms: float
    p99_ms: float
    slo_attainment: float  # 0..1

    @classmethod
    def of(cls, r: ModelResult) -> Side:
        return cls(
            int(r.requests),
            int(r.completed),
            int(r.rejected),
            int(r.failed),
            float(r.p50_ms),
            float(r.p99_ms),
            float(r.slo_attainment),
        )


def p99_relative_error(real_ms: float, sim_ms: float) -> float:
    """``(sim - real) / real``; NaN when either is missing or the real one is not > 0."""
    if not (math.isfinite(real_ms) and math.isfinite(sim_ms)) or real_ms <= 0:
        return math.nan
    return (sim_ms - real_ms) / real_ms


def attainment_points(real: float, sim: float) -> float:
    """Simulated minus real SLO attainment, in percentage points."""
    return 100.0 * (sim - real)


@dataclass(frozen=True)
class Row:
    """Real against simulated for one model of one scenario."""

    scenario: str
    model: str
    slo_ms: float | None
    real: Side
    sim: Side
    p99_tolerance: float = P99_TOLERANCE
    attainment_tolerance: float = ATTAINMENT_POINTS

    @property
    def p99_error(self) -> float:
        return p99_relative_error(self.real.p99_ms, self.sim.p99_ms)

    @property
    def attainment_diff(self) -> float:
        return attainment_points(self.real.slo_attainment, self.sim.slo_attainment)

    @property
    def p99_ok(self) -> bool:
        e = self.p99_error
        return math.isfinite(e) and abs(e) <= self.p99_tolerance + 1e-12

    @property
    def attainment_ok(self) -> bool:
        return abs(self.attainment_diff) <= self.attainment_tolerance + 1e-9

    @property
    def ok(self) -> bool:
        return self.p99_ok and self.attainment_ok

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "model": self.model,
            "slo_ms": self.slo_ms,
            "real": _clean(asdict(self.real)),
            "sim": _clean(asdict(self.sim)),
            "p99_rel_error": _num(self.p99_error),
            "attainment_diff_points": _num(self.attainment_diff),
            "p99_pass": self.p99_ok,
            "attainment_pass": self.attainment_ok,
            "pass": self.ok,
        }


def compare(
    scenario: str,
    real: Mapping[str, ModelResult],
    sim: Mapping[str, ModelResult],
    real_overall: ModelResult | None = None,
    sim_overall: ModelResult | None = None,
    p99_tolerance: float = P99_TOLERANCE,
    attainment_tolerance: float = ATTAINMENT_POINTS,
) -> list[Row]:
    """One :class:`Row` per model present on both sides (real's order), then ``overall``."""
    missing = sorted(set(real) ^ set(sim))
    if missing:
        raise ValueError(f"{scenario}: models on one side only: {missing}")
    rows = [
        Row(scenario, name, r.slo_ms, Side.of(r), Side.of(sim[name]), p99_tolerance,
            attainment_tolerance)
        for name, r in real.items()
    ]  # fmt: skip
    if real_overall is not None and sim_overall is not None:
        rows.append(
            Row(scenario, "overall", None, Side.of(real_overall), Side.of(sim_overall),
                p99_tolerance, attainment_tolerance)
        )  # fmt: skip
    return rows


def scenario_agrees(rows: Sequence[Row]) -> bool:
    """A scenario agrees when it has rows and every one (each model, pooled) passes."""
    return bool(rows) and all(r.ok for r in rows)


# --------------------------------------------------------------------------- CPU load


@dataclass(frozen=True)
class CpuLoad:
    """Mean cores busy over a run: the whole box, our process tree, the rest."""

    wall_s: float
    cores: int
    box_cores: float
    ours_cores: float
    #: over the load phase only (Locust sending, from its first to its last scheduled
    #: request): seconds, and CPU seconds of the TorchServe workers / the rest of our tree
    load_s: float = math.nan
    load_worker_cpu_s: float = math.nan
    load_host_cpu_s: float = math.nan

    @property
    def others_cores(self) -> float:
        return max(0.0, self.box_cores - self.ours_cores)

    def as_dict(self) -> dict[str, float]:
        d = {
            "wall_s": round(self.wall_s, 1),
            "cores": self.cores,
            "box_busy_cores": round(self.box_cores, 3),
            "ours_busy_cores": round(self.ours_cores, 3),
            "others_busy_cores": round(self.others_cores, 3),
        }
        if math.isfinite(self.load_s):
            d |= {
                "load_s": round(self.load_s, 1),
                "load_worker_cpu_s": round(self.load_worker_cpu_s, 2),
                "load_host_cpu_s": round(self.load_host_cpu_s, 2),
            }
        return d


def _busy_s() -> float:
    import psutil

    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle


class CpuMonitor(threading.Thread):
    """Samples the box's busy CPU time and that of this process and its descendants."""

    def __init__(self, period_s: float = CPU_PERIOD_S) -> None:
        super().__init__(daemon=True, name="fidelity-cpu")
        self.period_s = period_s
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._workers: set[int] = set()  # TorchServe worker processes among them
        self.marks: dict[str, tuple[float, dict[int, float]]] = {}
        self._t0 = time.monotonic()
        self._busy0 = _busy_s()
        self._sample(initial=True)

    def _sample(self, initial: bool = False) -> None:
        import psutil

        me = psutil.Process()
        try:
            procs = [me, *me.children(recursive=True)]
        except psutil.Error:
            procs = [me]
        with self._lock:
            for p in procs:
                try:
                    t = p.cpu_times()
                    if p.pid not in self._first and WORKER_PROCESS in " ".join(p.cmdline()):
                        self._workers.add(p.pid)
                except psutil.Error:
                    continue
                used = t.user + t.system
                # a process first seen after the start began during the run: count all of it
                self._first.setdefault(p.pid, used if initial else 0.0)
                self._last[p.pid] = used

    def mark(self, name: str) -> None:
        """Remember every process's CPU time now (once per name)."""
        if name in self.marks:
            return
        self._sample()
        with self._lock:
            self.marks[name] = (time.monotonic(), dict(self._last))

    def between(self, start: str, end: str) -> tuple[float, float, float]:
        """Seconds between two marks and the CPU seconds our tree used in them:
        (wall, TorchServe workers, the rest: frontend, Locust, this process)."""
        (t0, a), (t1, b) = self.marks[start], self.marks[end]
        used = {p: max(0.0, v - a.get(p, 0.0)) for p, v in b.items()}
        workers = sum(v for p, v in used.items() if p in self._workers)
        return t1 - t0, workers, sum(used.values()) - workers

    def run(self) -> None:
        while not self._halt.wait(self.period_s):
            self._sample()

    def stop(self) -> CpuLoad:
        self._sample()
        self._halt.set()
        if self.is_alive():
            self.join(5)
        wall = max(time.monotonic() - self._t0, 1e-9)
        ours = sum(max(0.0, self._last[p] - self._first[p]) for p in self._last)
        box = max(0.0, _busy_s() - self._busy0)
        load = (math.nan,) * 3
        if {"load", "drain"} <= set(self.marks):
            load = self.between("load", "drain")
        return CpuLoad(wall, os.cpu_count() or 0, box / wall, ours / wall, *load)


def others_busy_cores(window_s: float) -> float:
    """Cores busy over the next ``window_s`` seconds outside this process tree."""
    mon = CpuMonitor()
    time.sleep(window_s)
    return mon.stop().others_cores


def wait_for_quiet(
    max_others_cores: float,
    timeout_s: float,
    window_s: float = 3.0,
    probe: Callable[[float], float] = others_busy_cores,
) -> tuple[bool, float]:
    """Wait until other processes use at most ``max_others_cores`` over a ``window_s``
    window, at most ``timeout_s``; return (quiet, seconds waited). A shared box's other
    jobs land straight in the real tail latencies, so runs start in a quiet moment."""
    t0 = time.monotonic()
    while True:
        if probe(window_s) <= max_others_cores:
            return True, time.monotonic() - t0
        if time.monotonic() - t0 >= timeout_s:
            return False, time.monotonic() - t0


# --------------------------------------------------------------------------- both sides


def static_configs(scenario: Scenario) -> dict[str, ModelSettings]:
    """The configuration the real server runs under ``static``: the demo models'
    registration defaults (batch size, delay, ``min_workers`` workers)."""
    from tsadapt.handlers.catalog import DEMO_MODELS

    out = {}
    for m in scenario.models:
        if m.name not in DEMO_MODELS:
            raise ValueError(f"scenario {scenario.name!r}: {m.name!r} is not a demo model")
        d = DEMO_MODELS[m.name]
        out[m.name] = ModelSettings(d.batch_size, d.max_batch_delay_ms, max(1, d.min_workers))
    return out


def with_duration(scenario: Scenario, duration_s: float | None) -> Scenario:
    return scenario if duration_s is None else replace(scenario, duration_s=float(duration_s))


@dataclass(frozen=True)
class ScenarioRun:
    """Both sides of one scenario."""

    scenario: str
    path: str
    duration_s: float
    seed: int
    configs: Mapping[str, ModelSettings]
    rows: tuple[Row, ...]
    status: str = "ok"  # or the real run's status ("failed", ...)
    reason: str = ""
    rundir: str = ""
    cpu: CpuLoad | None = None
    wall_s: float = 0.0
    quiet: bool | None = None  # None: did not wait for a quiet box
    quiet_wait_s: float = 0.0
    attempts: int = 1  # real runs made (a run disturbed by other processes is repeated)
    #: ``--repeat``: a second real run of the same arrivals against the first (its "sim"
    #: side), under the same tolerances: how far the real server agrees with itself
    repeat_rows: tuple[Row, ...] = ()
    repeat_rundir: str = ""

    @property
    def agrees(self) -> bool:
        return self.status == "ok" and scenario_agrees(self.rows)

    @property
    def repeat_agrees(self) -> bool | None:
        return scenario_agrees(self.repeat_rows) if self.repeat_rows else None


def simulate(
    scenario: Scenario,
    seed: int,
    duration_s: float | None = None,
    replications: int = SIM_REPLICATIONS,
) -> SimResult:
    """The simulator's prediction under the static configuration: ``replications`` runs of
    the same arrivals (the real run's), each with its own draws of service-time jitter and
    outside overhead, pooled (:func:`~policy.scenario.pool_replications`).

    One draw is one sample of the simulator's tail (the p99 of a model's 1,000 requests is
    their 10th slowest); the pooled figure is what the model predicts for these arrivals."""
    if replications < 1:
        raise ValueError(f"replications must be >= 1, got {replications}")
    sc = with_duration(scenario, duration_s)
    configs = static_configs(sc)
    return pool_replications([run_static(sc, configs, seed, k) for k in range(replications)])


@dataclass(frozen=True)
class Quiet:
    """How long to wait for a quiet box before a real run (``timeout_s = 0``: do not)."""

    max_others_cores: float = QUIET_CORES
    timeout_s: float = QUIET_TIMEOUT_S


def run_real(
    scenario_path: Path,
    scenario: Scenario,
    seed: int,
    duration_s: float,
    runs_dir: Path,
    command: str = "",
    on_tick: Callable[[float, str], None] = lambda elapsed, what: None,
    quiet: Quiet = Quiet(0.0, 0.0),
) -> tuple[Any, CpuLoad, tuple[bool | None, float]]:
    """One ``static`` run on a fresh, warmed-up server (``tsadapt bench``'s ``run_one``),
    after waiting for a quiet box; the result, the CPU load and (quiet, seconds waited)."""
    from tsadapt.experiments.bench import BenchConfig, run_one
    from tsadapt.experiments.bench_schedule import scenario_schedule

    waited: tuple[bool | None, float] = (None, 0.0)
    if quiet.timeout_s > 0:
        on_tick(0.0, f"waiting for a quiet box (others <= {quiet.max_others_cores} cores)")
        waited = wait_for_quiet(quiet.max_others_cores, quiet.timeout_s)

    cfg = BenchConfig(
        scenario=str(scenario_path),
        controllers=("static",),
        duration_s=duration_s,
        seed=seed,
        runs_dir=runs_dir,
        command=command,
        warmup_rounds=WARMUP_ROUNDS,
    )
    schedule = scenario_schedule(scenario, seed, duration_s, cfg.max_requests)
    rundir = runs_dir / scenario.name / f"{time.strftime('%Y%m%d-%H%M%S')}-static"
    monitor = CpuMonitor()

    def tick(elapsed: float, what: str) -> None:
        # the load phase: from Locust's first tick to the end of its schedule
        if what == "load running":
            monitor.mark("load")
        elif what == "draining" and "load" in monitor.marks:
            monitor.mark("drain")
        on_tick(elapsed, what)

    monitor.start()
    try:
        res = run_one(cfg, scenario_path, scenario, schedule, "static", rundir, tick)
    finally:
        cpu = monitor.stop()
    return res, cpu, waited


def run_scenario(
    name: str,
    seed: int | None,
    duration_s: float | None,
    runs_dir: Path,
    command: str = "",
    on_tick: Callable[[float, str], None] = lambda elapsed, what: None,
    quiet: Quiet = Quiet(0.0, 0.0),
    attempts: int = 1,
    max_others_cores: float = math.inf,
    repeat: bool = False,
) -> ScenarioRun:
    """Real then simulated run of one scenario; the comparison rows (with ``repeat``, a
    second real run too, compared with the first).

    A real run during which other processes used more than ``max_others_cores`` (on
    average) is repeated, at most ``attempts`` runs in all; the last one counts. The
    criterion looks at the box only, never at the outcome.
    """
    from tsadapt.experiments.bench_schedule import resolve_scenario

    path = resolve_scenario(name)
    scenario = load_scenario(path)
    seed = scenario.seed if seed is None else int(seed)
    duration = scenario.duration_s if duration_s is None else float(duration_s)
    configs = static_configs(scenario)
    for attempt in range(1, max(1, attempts) + 1):
        t0 = time.monotonic()
        real, cpu, (calm, waited) = run_real(
            path, scenario, seed, duration, runs_dir, command, on_tick, quiet
        )
        wall = time.monotonic() - t0 - waited
        if real.status != "ok" or cpu.others_cores <= max_others_cores:
            break
        if attempt < attempts:
            on_tick(
                duration,
                f"attempt {attempt}: other processes used {cpu.others_cores:.2f} cores, run again",
            )
    common = {
        "scenario": scenario.name, "path": _rel(path), "duration_s": duration, "seed": seed,
        "configs": configs, "rundir": _rel(real.rundir) if real.rundir else "", "cpu": cpu,
        "wall_s": wall, "quiet": calm, "quiet_wait_s": waited, "attempts": attempt,
    }  # fmt: skip
    if real.status != "ok":
        return ScenarioRun(rows=(), status=real.status, reason=real.reason, **common)
    sim = simulate(scenario, seed, duration)
    rows = compare(scenario.name, real.per_model, sim.per_model, real.overall, sim.overall)
    if repeat:
        on_tick(duration, "repeat: the same arrivals on another fresh server")
        again, _, _ = run_real(path, scenario, seed, duration, runs_dir, command, on_tick, quiet)
        if again.status == "ok":
            common["repeat_rows"] = tuple(
                compare(scenario.name, real.per_model, again.per_model, real.overall,
                        again.overall)
            )  # fmt: skip
            common["repeat_rundir"] = _rel(again.rundir) if again.rundir else ""
    return ScenarioRun(rows=tuple(rows), **common)


# --------------------------------------------------------------------------- report


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 6)


def _clean(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _num(v) if isinstance(v, float) else v for k, v in d.items()}


def _rel(p: Path | str) -> str:
    p = Path(p)
    try:
        return str(p.resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def _fmt(x: float, spec: str = ".1f", suffix: str = "") -> str:
    return "–" if x is None or not math.isfinite(x) else f"{format(x, spec)}{suffix}"


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
    "spreads carry that run's noise; `tsadapt fidelity calibrate` re-measures them.",
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
        "scenario's exact arrivals (`tsadapt bench` machinery); the simulator runs the same "
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


# --------------------------------------------------------------------------- entry


@dataclass(frozen=True)
class FidelityConfig:
    scenarios: tuple[str, ...] = DEFAULT_SCENARIOS
    duration_s: float | None = None  # default: each scenario's
    seed: int | None = None  # default: each scenario's
    out_dir: Path = RESULTS_DIR
    runs_dir: Path = DEFAULT_RUNS
    command: str = "tsadapt fidelity"
    extra_notes: tuple[str, ...] = field(default_factory=tuple)
    quiet: Quiet = field(default_factory=Quiet)
    attempts: int = 2  # real runs per scenario at most (see run_scenario)
    max_others_cores: float = QUIET_CORES
    repeat: bool = False  # a second real run per scenario, compared with the first


def calibration_summary(scenarios: Sequence[Scenario]) -> dict[str, Any]:
    """What the simulator was given, per scenario and model, and where it came from."""
    notes = [
        "Each compared scenario file carries its calibration (see the comments in it); none "
        "of it comes from the runs above:",
        "",
        "- **service time** per batch = the handler-only batch latency measured in-process on "
        "this box by `tsadapt models profile` (`docs/results/model-profiles.json`, medians, "
        "interpolated between batch sizes) + `batch_overhead_ms`, the worker's work that "
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


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """Per-model values ``tsadapt fidelity calibrate`` derives (see :func:`calibrate`)."""

    model: str
    batch_overhead_ms: float
    exec_cv: float
    overhead_quantiles_ms: tuple[float, ...]
    backend_p50_ms: float  # the worker's time per batch, as the frontend saw it
    profile_b1_ms: float
    real_p50_ms: float
    real_p99_ms: float
    sim_p50_ms: float  # without the outside overhead
    requests: int
    solo_batches: int  # batches that ran alone (the worker time's sample)
    solo_p90_ms: float = math.nan
    overlapped_batches: int = 0  # batches that overlapped another model's (not used)
    overlapped_p50_ms: float = math.nan
    overlapped_p90_ms: float = math.nan
    host_cpu_ms: float = 0.0  # CPU per request outside the workers (the run's mean)

    @property
    def overhead_p50_ms(self) -> float:
        return quantile_of(self.overhead_quantiles_ms, 0.50)

    @property
    def overhead_p99_ms(self) -> float:
        return quantile_of(self.overhead_quantiles_ms, 0.99)

    def as_dict(self) -> dict[str, Any]:
        d = _clean(asdict(self))
        d["overhead_quantiles_ms"] = list(self.overhead_quantiles_ms)
        d["overhead_p50_ms"] = round(self.overhead_p50_ms, 3)
        d["overhead_p99_ms"] = round(self.overhead_p99_ms, 3)
        return d


#: Quantiles of the overhead distribution written by ``calibrate`` (at k / N, k = 0..N).
OVERHEAD_QUANTILES = 100
#: z-score of the 90th percentile of a standard normal.
_Z90 = 1.2815515655446004
#: TorchServe 0.12's frontend line per batch: the worker's round trip to its backend.
_BACKEND_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d),(?P<ms>\d{3}) .*W-\d+-(?P<model>\S+)_[^_\s]+ "
    r"org\.pytorch\.serve\.wlm\.WorkerThread - Backend response time: (?P<dur>\d+)\s*$"
)


def quantile_of(q: Sequence[float], p: float) -> float:
    """The ``p``-quantile (0..1) of a quantile table at equally spaced probabilities."""
    x = np.asarray(q, dtype=float)
    return float(np.interp(p * (x.size - 1), np.arange(x.size), x))


def lognormal_cv(p50: float, p90: float) -> float:
    """Coefficient of variation of the log-normal with this median and 90th percentile."""
    if not (p50 > 0 and p90 >= p50):
        return 0.0
    sigma = math.log(p90 / p50) / _Z90
    return math.sqrt(math.expm1(sigma * sigma))


@dataclass(frozen=True)
class Batches:
    """One model's batches from the server log: end times (s, epoch) and durations (ms)."""

    end_s: np.ndarray
    duration_ms: np.ndarray

    @property
    def start_s(self) -> np.ndarray:
        return self.end_s - self.duration_ms / 1000.0

    def __len__(self) -> int:
        return int(self.end_s.size)


def backend_batches(log_lines: Iterable[str], since_epoch: float = 0.0) -> dict[str, Batches]:
    """Per model, every batch's "Backend response time" (the worker's round trip to its
    backend, whole ms) and the time it was logged (its end), from TorchServe's ``ts_log``,
    for batches ending at or after ``since_epoch`` (local time stamps, as TorchServe writes
    them). A line the log holds twice (two appenders) counts once."""
    seen: set[str] = set()
    out: dict[str, list[tuple[float, float]]] = {}
    for line in log_lines:
        m = _BACKEND_LINE.match(line)
        if m is None or line in seen:
            continue
        seen.add(line)
        t = time.mktime(time.strptime(m["ts"], "%Y-%m-%dT%H:%M:%S")) + int(m["ms"]) / 1000.0
        if t >= since_epoch:
            out.setdefault(m["model"], []).append((t, float(m["dur"])))
    res = {}
    for k, v in out.items():
        a = np.asarray(sorted(v), dtype=float).reshape(-1, 2)
        res[k] = Batches(a[:, 0], a[:, 1])
    return res


def solo_mask(batches: Mapping[str, Batches], model: str) -> np.ndarray:
    """Which of ``model``'s batches ran from start to end while no other model's did.

    The simulator applies contention itself ((threads executing) / cores), so the worker's
    time per batch it is calibrated with must come from batches no other worker slowed.
    """
    mine = batches[model]
    start, end = mine.start_s, mine.end_s
    alone = np.ones(len(mine), dtype=bool)
    for other, b in batches.items():
        if other == model or len(b) == 0:
            continue
        order = np.argsort(b.end_s, kind="stable")
        o_start, o_end = b.start_s[order], b.end_s[order]
        # another batch overlaps when o_end > start and o_start < end
        first = np.searchsorted(o_end, start, side="right")
        # the earliest start among the batches ending after ``start`` (o_end[first:])
        earliest = np.minimum.accumulate(o_start[::-1])[::-1]
        has = first < o_start.size
        idx = np.minimum(first, o_start.size - 1)
        alone &= ~(has & (earliest[idx] < end))
    return alone


def overhead_quantiles(
    real_ms: np.ndarray, sim_ms: np.ndarray, n: int = OVERHEAD_QUANTILES
) -> tuple[float, ...]:
    """Quantiles (at k / n) of what the simulator misses per request, outside the worker:
    real minus simulated latency quantile by quantile, clipped at 0, sorted (monotone
    rearrangement: a quantile function must not decrease).

    A quantile-by-quantile difference is exact for a shift and treats the two parts as
    moving together otherwise (their sum's tail is then no lighter than the real one).
    """
    x = np.asarray(real_ms, dtype=float)
    y = np.asarray(sim_ms, dtype=float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size == 0 or y.size == 0:
        raise ValueError("need answered requests on both sides")
    p = np.linspace(0.0, 1.0, n + 1)
    d = np.sort(np.maximum(np.quantile(x, p) - np.quantile(y, p), 0.0))  # rearrangement
    return tuple(round(float(v), 3) for v in d)


#: Fixed-point iterations of :func:`fit_overhead_quantiles`.
FIT_ITERATIONS = 40
#: Monte Carlo draws per simulated latency in :func:`fit_overhead_quantiles`.
FIT_DRAWS = 20


def fit_overhead_quantiles(
    real_ms: np.ndarray,
    sim_ms: np.ndarray,
    n: int = OVERHEAD_QUANTILES,
    iterations: int = FIT_ITERATIONS,
    seed: int = 0,
) -> tuple[float, ...]:
    """Quantiles (at k / n) of an overhead O, independent of the simulated latency S, such
    that S + O has the real latencies' quantiles -- what the simulator does with it (one
    independent draw per request).

    Starts from the quantile-by-quantile difference (:func:`overhead_quantiles`) and
    corrects it by the remaining difference between the real quantiles and those of
    S + O (Monte Carlo with fixed draws), ``iterations`` times; clipped at 0, sorted.
    """
    x = np.asarray(real_ms, dtype=float)
    y = np.asarray(sim_ms, dtype=float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    q = np.asarray(overhead_quantiles(x, y, n), dtype=float)
    rng = np.random.default_rng(seed)
    u = rng.random(FIT_DRAWS * y.size) * n
    s = np.resize(rng.permutation(y), u.size)
    grid = np.linspace(0.0, 1.0, n + 1)
    target = np.quantile(x, grid)
    ks = np.arange(n + 1, dtype=float)
    for _ in range(iterations):
        q = np.sort(np.maximum(q + target - np.quantile(s + np.interp(u, ks, q), grid), 0.0))
    return tuple(round(float(v), 3) for v in q)


def host_cpu_per_request_ms(cpu: CpuLoad, requests: int) -> float:
    """CPU ms per request outside the workers over the run's load phase (0 if unmeasured)."""
    if requests <= 0 or not math.isfinite(cpu.load_host_cpu_s):
        return 0.0
    return 1000.0 * cpu.load_host_cpu_s / requests


def derive_calibration(
    scenario: Scenario,
    real_latencies_ms: Mapping[str, np.ndarray],
    backend: Mapping[str, Batches],
    profiles: Sequence[Mapping[str, Any]],
    seed: int,
    duration_s: float,
    host_cpu_ms: float = 0.0,
) -> list[Calibration]:
    """Per model, from the calibration run (``host_cpu_ms``: the CPU per request our process
    tree used outside the workers during its load phase, given to every model):

    * ``exec_cv``: the worker's time per batch (the frontend's backend round trip; at this
      load most batches hold one request), over the batches that ran while no other
      model's did (:func:`solo_mask`: the simulator adds contention itself), fitted by a
      log-normal through its p50 and p90;
    * ``batch_overhead_ms`` = that log-normal's mean - the profile at b = 1: the worker's
      work the in-process profile misses (the hop to the backend and back, request
      decoding, metrics, a worker woken from idle). The simulator's jitter has mean 1, so
      its times at b = 1 then have the real median and p90;
    * ``overhead_quantiles_ms``: the distribution of an outside overhead that, drawn
      independently per request and added to the simulated latency (with the two above),
      gives the real latencies' distribution (:func:`fit_overhead_quantiles`).
    """
    prof = {e["model"]: e for e in profiles}
    cal: dict[str, tuple[float, float, float, float, int]] = {}
    stats: dict[str, tuple[float, int, float, float]] = {}
    for m in scenario.models:
        if m.name not in backend or len(backend[m.name]) == 0:
            raise ValueError(f"no backend times for model {m.name!r} in the calibration run")
        solo = solo_mask(backend, m.name)
        bt = backend[m.name].duration_ms[solo]
        if bt.size < 10:
            raise ValueError(
                f"model {m.name!r}: only {bt.size} of its batches ran alone in the calibration "
                "run (need 10)"
            )
        b1 = float(m.latency.batch_ms(1)) - m.batch_overhead_ms
        if m.name in prof:
            e = prof[m.name]
            b1 = float(dict(zip(e["batch_sizes"], e["median_ms"], strict=True)).get(1, b1))
        p50, p90 = float(np.percentile(bt, 50)), float(np.percentile(bt, 90))
        cv = lognormal_cv(p50, p90)
        # the simulator's jitter has mean 1: the table must hold the mean of the log-normal
        # through p50 and p90, so that the simulated times have the real median and p90
        mean = p50 * math.sqrt(1.0 + cv * cv)
        cal[m.name] = (max(0.0, mean - b1), cv, p50, b1, int(bt.size))
        over = backend[m.name].duration_ms[~solo]
        stats[m.name] = (
            p90, int(over.size),
            float(np.percentile(over, 50)) if over.size else math.nan,
            float(np.percentile(over, 90)) if over.size else math.nan,
        )  # fmt: skip
    bare = replace(
        scenario,
        models=tuple(
            replace(
                m,
                latency=with_batch_overhead(m.latency, cal[m.name][0] - m.batch_overhead_ms),
                batch_overhead_ms=cal[m.name][0],
                exec_cv=cal[m.name][1],
                overhead_ms=0.0,
                overhead_quantiles_ms=None,
                host_cpu_ms=host_cpu_ms,
            )
            for m in scenario.models
        ),
    )
    sim = simulate(bare, seed, duration_s)
    out = []
    for m in scenario.models:
        lat = np.asarray(real_latencies_ms[m.name], dtype=float)
        w, cv, p50, b1, n_solo = cal[m.name]
        s = sim.per_model[m.name]
        out.append(
            Calibration(
                m.name, round(w, 3), round(cv, 3),
                fit_overhead_quantiles(lat, sim.latencies_ms[m.name]), round(p50, 3),
                round(b1, 3),
                round(float(np.percentile(lat, 50)), 3), round(float(np.percentile(lat, 99)), 3),
                round(s.p50_ms, 3), int(lat.size), n_solo, round(stats[m.name][0], 3),
                stats[m.name][1], round(stats[m.name][2], 3), round(stats[m.name][3], 3),
                round(host_cpu_ms, 3),
            )
        )  # fmt: skip
    return out


def calibrate(
    runs_dir: Path = DEFAULT_RUNS,
    out: Path = CALIBRATION_FILE,
    duration_s: float | None = None,
    profiles: Path = RESULTS_DIR / "model-profiles.json",
    command: str = "tsadapt fidelity calibrate",
    on_tick: Callable[[float, str], None] = lambda elapsed, what: None,
    quiet: Quiet = Quiet(),
    attempts: int = CALIBRATION_ATTEMPTS,
    max_others_cores: float = CALIBRATION_MAX_OTHERS,
) -> tuple[list[Calibration], CpuLoad]:
    """Measure what the handler-only profile misses, on a real run; write ``out``.

    The scenario ``calibrate`` (steady Poisson load on each model at the compared
    scenarios' mean rates, none of their structure) runs on a fresh, warmed server; the
    worker times per batch come from the server's log, and the simulator runs the same
    arrivals (see :func:`derive_calibration`). A run during which other processes used
    more than ``max_others_cores`` is repeated (at most ``attempts`` runs in all; the last
    one is kept and the file says it was not quiet).
    """
    from tsadapt.experiments.bench_schedule import read_records, resolve_scenario

    path = resolve_scenario(CALIBRATION_SCENARIO)
    scenario = load_scenario(path)
    seed = scenario.seed
    duration = scenario.duration_s if duration_s is None else float(duration_s)
    for attempt in range(1, max(1, attempts) + 1):
        real, cpu, (calm, waited) = run_real(
            path, scenario, seed, duration, runs_dir, command, on_tick, quiet
        )
        if real.status != "ok" or real.rundir is None:
            raise RuntimeError(f"calibration run {real.status}: {real.reason}")
        if cpu.others_cores <= max_others_cores:
            break
        on_tick(
            duration,
            f"attempt {attempt}: other processes used {cpu.others_cores:.2f} cores, run again",
        )
    rundir = Path(real.rundir)
    records = read_records(rundir / "requests.csv")
    latencies = {m: records.of(m).latency_ms[records.of(m).ok] for m in scenario.model_names}
    since = float(np.nanmin(records.sent_epoch)) if len(records) else 0.0
    with (rundir / "server" / "logs" / "ts_log.log").open(errors="replace") as fh:
        backend = backend_batches(fh, since)
    profile_doc = json.loads(profiles.read_text())
    host_cpu_ms = host_cpu_per_request_ms(cpu, len(records))
    cals = derive_calibration(
        scenario, latencies, backend, profile_doc, seed, duration, host_cpu_ms
    )
    doc = {
        "command": command,
        "generated": time.strftime("%Y-%m-%d %H:%M"),
        "scenario": _rel(path),
        "duration_s": duration,
        "seed": seed,
        "profiles": _rel(profiles),
        "cores": os.cpu_count(),
        "cpu": cpu.as_dict(),
        "quiet_at_start": calm,
        "quiet_during_run": cpu.others_cores <= max_others_cores,
        "attempts": attempt,
        "rundir": _rel(real.rundir),
        "method": "per model, on the calibration scenario: exec_cv = cv of the log-normal "
        "through the p50 and p90 of the worker time per batch (TorchServe's 'Backend "
        "response time') of the batches that ran while no other model's did; "
        "batch_overhead_ms = that log-normal's mean - the profile at b=1; "
        "overhead_quantiles_ms = quantiles (k/100) of an overhead that, drawn independently "
        "per request and added to the simulated latency (with the two above), reproduces "
        "the real latency quantiles (fixed-point fit from the quantile-by-quantile "
        "difference); host_cpu_ms = CPU seconds of the frontend, Locust and this command "
        "(our process tree without the TorchServe workers) over the load phase / requests "
        "sent, the same for every model",
        "models": {c.model: c.as_dict() for c in cals},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return cals, cpu
