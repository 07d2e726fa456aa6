"""Both sides of one scenario: the real server under ``static`` (a fresh, warmed-up
TorchServe, Locust replaying the scenario's arrivals) and the simulator with the same
configuration and arrivals (pooled replications), compared row by row
(:func:`run_scenario`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tsadapt.experiments.fidelity.common import SIM_REPLICATIONS, WARMUP_ROUNDS, _rel
from tsadapt.experiments.fidelity.comparison import Row, compare, scenario_agrees
from tsadapt.experiments.hostcpu import CpuLoad, CpuMonitor, Quiet, wait_for_quiet
from tsadapt.policy.sim.scenario import Scenario, load_scenario
from tsadapt.policy.sim.static_run import SimResult, pool_replications, run_static
from tsadapt.policy.types import ModelSettings


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
    outside overhead, pooled (:func:`~policy.sim.static_run.pool_replications`).

    One draw is one sample of the simulator's tail (the p99 of a model's 1,000 requests is
    their 10th slowest); the pooled figure is what the model predicts for these arrivals."""
    if replications < 1:
        raise ValueError(f"replications must be >= 1, got {replications}")
    sc = with_duration(scenario, duration_s)
    configs = static_configs(sc)
    return pool_replications([run_static(sc, configs, seed, k) for k in range(replications)])


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
    """One ``static`` run on a fresh, warmed-up server (``tsadapt lab bench``'s ``run_one``),
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
