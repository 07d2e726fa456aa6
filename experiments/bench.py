"""``tsadapt lab bench``: controllers side by side on a real TorchServe, same scenario and seed.

For each controller in turn: a fresh server (free loopback ports, its own work dir under
``runs/bench/<scenario>/<stamp>-<controller>/``), the controller sidecar unless ``static``,
a background poller of batch size / delay / workers (``/adapt/models``, else describe), and
the Locust scenario headless as a subprocess replaying the scenario's exact arrivals. Then
the per-request records give the table (SLO attainment, goodput, p50/p99 per model, via
``policy/sim/metrics.py``), the poller gives worker-seconds and reconfigurations, and a PNG per
run shows offered load, latency against the SLO, and batch size and workers over time.
Everything is bounded: the scenario's (or ``--duration``) length, a request cap, Locust's
``--run-time`` and a kill deadline.

This module holds the configuration, one run and the entry; the controllers are in
``bench_controllers``, the poller and timeline accounting in ``bench_timeline``, the table and
markdown report in ``bench_report``, the arrivals and records in ``bench_schedule``.
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsadapt.experiments.bench_controllers import (
    ControllerUnavailable,
    controller_unavailable,
    end_process,
    expand_controllers,
    expand_peers,
    log_tail,
    start_controller,
)
from tsadapt.experiments.bench_report import (
    TABLE_HEADER,
    RunResult,
    fmt,
    table_rows,
    write_markdown,
)
from tsadapt.experiments.bench_schedule import (
    LOADTESTS_DIR,
    MAX_REQUESTS,
    REQUEST_TIMEOUT_S,
    Records,
    Schedule,
    rate_checks,
    read_records,
    resolve_scenario,
    scenario_schedule,
)
from tsadapt.experiments.bench_seeds import bench_seeds, summary_json
from tsadapt.experiments.bench_timeline import (
    Poller,
    Sample,
    reconfigurations,
    server_reader,
    timeline,
    worker_seconds,
)
from tsadapt.policy.sim.metrics import ModelResult, pool, summarize
from tsadapt.policy.sim.scenario import Scenario, load_scenario

# --------------------------------------------------------------------------- constants

DEFAULT_CONTROLLER_CONFIG = Path("configs/controller.yaml")
DEFAULT_OUT = Path("docs/results")
DEFAULT_RUNS = Path("runs/bench")
#: Extra seconds Locust may run after the scenario (start-up lag, in-flight drain).
LOCUST_GRACE_S = 10.0
#: Seconds after Locust's own bound before the bench kills it.
KILL_GRACE_S = REQUEST_TIMEOUT_S + 30.0
#: Tries at starting a server (see ``_start_server``).
SERVER_START_ATTEMPTS = 5
#: Seconds of quiet between the warm-up and the load.
WARMUP_SETTLE_S = 1.0


@dataclass(frozen=True)
class BenchConfig:
    """One ``tsadapt lab bench`` invocation."""

    scenario: str
    controllers: tuple[str, ...] = ("static",)
    duration_s: float | None = None  # default: the scenario's
    seed: int | None = None  # default: the scenario's
    max_requests: int = MAX_REQUESTS
    out_dir: Path = DEFAULT_OUT
    runs_dir: Path = DEFAULT_RUNS
    controller_config: Path = DEFAULT_CONTROLLER_CONFIG
    locustfile: Path | None = None  # default: loadtests/<scenario>.py, else bursty.py
    command: str = ""  # as typed, for the report
    warmup_rounds: int = 0  # rounds of warm-up bursts per model before the load (see warm_up)
    seeds: int = 1  # arrival draws: seed, seed + 1, ... (each run by every controller)
    peers: tuple[str, ...] = ()  # other serving systems on the same arrivals (see peers/)


# --------------------------------------------------------------------------- one run


def _locustfile(cfg: BenchConfig, scenario: Scenario) -> Path:
    if cfg.locustfile is not None:
        return cfg.locustfile
    own = LOADTESTS_DIR / f"{scenario.name}.py"
    return own if own.is_file() else LOADTESTS_DIR / "bursty.py"


def locust_command(
    cfg: BenchConfig, scenario_path: Path, scenario: Scenario, server, records: Path,  # noqa: ANN001
    duration_s: float, seed: int,
) -> list[str]:  # fmt: skip
    """The headless Locust command of one run (bounded by ``--run-time``)."""
    return [
        sys.executable, "-m", "locust",
        "-f", str(_locustfile(cfg, scenario)),
        "--headless", "--only-summary", "--loglevel", "WARNING",
        "--host", server.inference_url,
        "--run-time", f"{math.ceil(duration_s + LOCUST_GRACE_S)}s",
        "--scenario", str(scenario_path),
        "--server-workdir", str(server.workdir),
        "--records", str(records),
        "--duration", str(duration_s),
        "--seed", str(seed),
        "--max-requests", str(cfg.max_requests),
    ]  # fmt: skip


def run_one(
    cfg: BenchConfig,
    scenario_path: Path,
    scenario: Scenario,
    schedule: Schedule,
    controller: str,
    rundir: Path,
    on_tick: Callable[[float, str], None] = lambda elapsed, what: None,
) -> RunResult:
    """Run one controller on a fresh server; never leaves a process behind."""
    from tsadapt.serve.server import ServerConfig, start, stop

    reason = controller_unavailable(controller, cfg.controller_config, scenario_path)
    if reason:
        return RunResult(controller, "skipped", reason)
    rundir.mkdir(parents=True, exist_ok=True)
    records_path = rundir / "requests.csv"
    decisions = rundir / "decisions.jsonl"
    server_cfg = ServerConfig.with_free_ports(
        workdir=rundir / "server",
        model_store=cfg.runs_dir / "model-store",
        models=tuple(scenario.model_names),
    )
    on_tick(0.0, "starting TorchServe")
    server = _start_server(start, server_cfg)
    ctrl = poller = None
    try:
        if cfg.warmup_rounds > 0:
            on_tick(0.0, "warming up")
            warm_up(server, scenario.model_names, cfg.warmup_rounds)
        if controller != "static":
            on_tick(0.0, f"starting controller {controller}")
            ctrl = start_controller(
                controller, cfg.controller_config, scenario_path, server_cfg.workdir,
                rundir / "controller.log", decisions,
            )  # fmt: skip
        poller = Poller(server_reader(server))
        poller.start()
        cmd = locust_command(
            cfg, scenario_path, scenario, server, records_path, schedule.duration_s,
            schedule.seed,
        )  # fmt: skip

        def controller_gone() -> str | None:
            if ctrl is None or ctrl.poll() is None:
                return None
            return f"controller exited ({ctrl.returncode}): " + log_tail(rundir / "controller.log")

        failed = drive_locust(cmd, rundir, schedule.duration_s, on_tick, controller_gone)
        if failed:
            return RunResult(controller, "failed", failed, rundir=rundir)
    finally:
        try:
            if poller is not None:
                poller.stop()
            end_process(ctrl)
        finally:
            on_tick(schedule.duration_s, "stopping TorchServe")
            stop(server_cfg.workdir)
    records = read_records(records_path)
    return summarize_run(
        controller, schedule, records, poller.samples if poller else [], rundir,
        decisions if decisions.is_file() else None,
    )  # fmt: skip


def drive_locust(
    cmd: list[str], rundir: Path, duration_s: float,
    on_tick: Callable[[float, str], None], gone: Callable[[], str | None] = lambda: None,
) -> str:  # fmt: skip
    """Run the Locust command ``cmd`` (log and command line in ``rundir``), bounded; the
    reason the run failed, or '' (``gone`` says why the system under test went away)."""
    (rundir / "locust.cmd").write_text(shlex.join(cmd) + "\n")
    bound = duration_s + LOCUST_GRACE_S + KILL_GRACE_S
    with (rundir / "locust.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        started = time.monotonic()
        while proc.poll() is None:
            elapsed = time.monotonic() - started
            if elapsed > bound:
                end_process(proc)
                break
            why = gone()
            if why:
                end_process(proc)
                return why
            on_tick(elapsed, "load running" if elapsed < duration_s else "draining")
            time.sleep(0.5)
    if proc.returncode not in (0, 1) or not (rundir / "requests.csv").is_file():
        return f"locust exited with code {proc.returncode}: {log_tail(rundir / 'locust.log')}"
    return ""


def warm_up(server, models: Sequence[str], rounds: int, seed: int = 0) -> int:  # noqa: ANN001
    """Send each model ``rounds`` rounds of concurrent bursts (1, 2, 4, ... up to its
    registered batch size); return the requests answered 2xx.

    A fresh worker pays once for lazy initialisation (first forward pass at each input
    shape, allocator growth, the frontend's JIT): over a second on the first requests,
    which no simulator models. Warming up first keeps that out of the measured run.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tsadapt.handlers.catalog import DEMO_MODELS

    client = server.client(timeout_s=60)
    rng = np.random.default_rng(seed)
    ok = 0
    with ThreadPoolExecutor(max_workers=32) as pool:
        for _ in range(rounds):
            for name in models:
                model = DEMO_MODELS[name]
                k = 1
                while k <= max(1, model.batch_size):
                    bodies = [model.example(rng) for _ in range(k)]
                    answers = list(pool.map(lambda b, n=name: client.predict(n, b), bodies))
                    ok += sum(a.ok for a in answers)
                    k *= 2
    time.sleep(WARMUP_SETTLE_S)
    return ok


def _start_server(start: Callable, config):  # noqa: ANN001, ANN202 - tsadapt.serve.server types
    """``start(config)``, tried twice: a key file read while TorchServe is still writing it
    fails with a JSON error (``start`` stops the half-started server before raising)."""
    for attempt in range(SERVER_START_ATTEMPTS):
        try:
            return start(config)
        except ValueError:
            if attempt + 1 == SERVER_START_ATTEMPTS:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def run_t0(records: Records) -> float:
    """Epoch time of the dispatcher's start (``sent_epoch - sent_s``, median)."""
    if len(records) == 0:
        return time.time()
    return float(np.median(records.sent_epoch - records.sent_s))


def summarize_run(
    controller: str,
    schedule: Schedule,
    records: Records,
    samples: Sequence[Sample],
    rundir: Path,
    decision_log: Path | None = None,
) -> RunResult:
    """The table's figures for one run (requests never sent count as violations)."""
    from tsadapt.experiments.bench_plot import plot_run

    t0 = run_t0(records)
    per: dict[str, ModelResult] = {}
    lats = []
    reconf: dict[str, int] = {}
    lines: dict[str, list[tuple[float, int, int]]] = {}
    for m in schedule.models:
        r = records.of(m)
        tl = timeline(samples, t0, m)
        lines[m] = [(s.t_epoch - t0, s.batch_size, s.workers) for s in tl]
        reconf[m] = reconfigurations(tl)
        lat = r.latency_ms[r.ok]
        lats.append(lat)
        per[m] = summarize(
            m,
            lat,
            schedule.slo_ms.get(m, math.inf),
            max(len(r), int(schedule.times_of(m).size)),
            schedule.duration_s,
            rejected=int((r.status == 503).sum()),
            failed=int((~r.ok & (r.status != 503)).sum()),
            worker_seconds=worker_seconds(tl, t0, schedule.duration_s),
        )
    overall = pool(per.values(), lats, schedule.duration_s)
    png = plot_run(
        rundir / "timeline.png", f"{controller}: offered load, latency, batch size and workers",
        schedule, records, lines,
    )  # fmt: skip
    return RunResult(
        controller, "ok", "", per, overall, tuple(rate_checks(schedule, records)), reconf, png,
        rundir, decision_log,
    )  # fmt: skip


# --------------------------------------------------------------------------- entry


def run_bench(cfg: BenchConfig) -> tuple[list[RunResult], Path]:
    """Run every controller, then every peer, in turn on each seed (rich progress); write
    the report (and its JSON summary); return every run's result and the report's path."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    scenario_path = resolve_scenario(cfg.scenario)
    scenario = load_scenario(scenario_path)
    seeds = bench_seeds(scenario.seed if cfg.seed is None else cfg.seed, cfg.seeds)
    schedules = {s: scenario_schedule(scenario, s, cfg.duration_s, cfg.max_requests) for s in seeds}
    controllers = expand_controllers(cfg.controllers, cfg.controller_config, scenario_path)
    peers = expand_peers(cfg.peers)
    console = Console(stderr=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    started_text = time.strftime("%Y-%m-%d %H:%M")
    t_start = time.monotonic()
    first = schedules[seeds[0]]
    console.print(
        f"bench [bold]{scenario.name}[/]: {first.duration_s:.0f} s per run, seeds "
        f"{', '.join(map(str, seeds))} ({', '.join(str(len(x)) for x in schedules.values())} "
        f"requests), controllers {', '.join(controllers)}"
        + (f", peers {', '.join(peers)}" if peers else "")
    )
    runs: dict[int, list[RunResult]] = {}
    with Progress(
        TextColumn("{task.fields[ctl]:<14}"), BarColumn(), TextColumn("{task.completed:>4.0f}/"
        "{task.total:.0f} s"), TextColumn("{task.description}"), TimeElapsedColumn(),
        console=console,
    ) as progress:  # fmt: skip
        for seed in seeds:
            schedule = schedules[seed]
            for ctl in (*controllers, *peers):
                label = f"{ctl} s{seed}" if len(seeds) > 1 else ctl
                task = progress.add_task("waiting", total=schedule.duration_s, ctl=label)

                def tick(
                    elapsed: float, what: str, task: int = task, total: float = schedule.duration_s
                ) -> None:
                    progress.update(task, completed=min(elapsed, total), description=what)

                tag = f"s{seed}-{ctl}" if len(seeds) > 1 else ctl
                rundir = cfg.runs_dir / scenario.name / f"{stamp}-{tag}"
                try:
                    if ctl in peers:
                        res = run_peer(cfg, scenario_path, scenario, schedule, ctl, rundir, tick)
                    else:
                        res = run_one(cfg, scenario_path, scenario, schedule, ctl, rundir, tick)
                except ControllerUnavailable as exc:
                    res = RunResult(ctl, "skipped", str(exc), rundir=rundir)
                runs.setdefault(seed, []).append(res)
                progress.update(task, completed=schedule.duration_s, description=res.status)
    md = write_markdown(
        cfg.out_dir / f"bench-{scenario.name}.md", cfg, scenario, schedules, runs,
        started_text, time.monotonic() - t_start,
    )  # fmt: skip
    summary = summary_json(scenario.name, runs, cfg.command, first.duration_s)
    md.with_suffix(".json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    _print_tables(scenario.name, schedules, runs, md)
    results = [r for seed in seeds for r in runs[seed]]
    (cfg.runs_dir / scenario.name / f"{stamp}-summary.json").write_text(
        json.dumps(
            [
                {
                    "controller": r.controller,
                    "seed": seed,
                    "status": r.status,
                    "reason": r.reason,
                    "rundir": str(r.rundir),
                }
                for seed in seeds
                for r in runs[seed]
            ],
            indent=2,
        )  # fmt: skip
    )
    return results, md


def run_peer(
    cfg: BenchConfig, scenario_path: Path, scenario: Scenario, schedule: Schedule, peer: str,
    rundir: Path, on_tick: Callable[[float, str], None],
) -> RunResult:  # fmt: skip
    """One run of a peer system (``--peers``), the same arrivals and Locust machinery."""
    from tsadapt.experiments.peers.rayserve_bench import run_rayserve

    if peer != "rayserve":
        raise ValueError(f"peers: unknown peer {peer!r}")
    return run_rayserve(cfg, scenario_path, scenario, schedule, rundir, on_tick)


def _print_tables(
    name: str, schedules: dict[int, Schedule], runs: dict[int, list[RunResult]], md: Path
) -> None:
    from rich.console import Console
    from rich.table import Table

    from tsadapt.experiments.bench_seeds import SUMMARY_HEADER, summary_rows

    out = Console()
    if not out.is_terminal:
        out = Console(width=160)
    for seed, results in runs.items():
        table = Table(title=f"bench {name} ({schedules[seed].duration_s:.0f} s, seed {seed})")
        for h in TABLE_HEADER:
            table.add_column(h, justify="left" if h in ("controller", "model") else "right")
        for row in table_rows(results):
            table.add_row(*row)
        out.print(table)
        for res in results:
            for rc in res.rates:
                if rc.model == "all":
                    out.print(
                        f"{res.controller}: intended {rc.intended_rps:.1f} req/s, scheduled "
                        f"{rc.scheduled_rps:.1f}, achieved {rc.achieved_rps:.1f} "
                        f"({100 * rc.error_vs_scheduled:+.1f}%), lateness p99 "
                        f"{fmt(rc.lateness_p99_ms, '.1f')} ms"
                    )
    if len(runs) > 1:
        table = Table(title=f"bench {name}: mean ± sd over seeds {', '.join(map(str, runs))}")
        for h in SUMMARY_HEADER:
            table.add_column(h, justify="left" if h == "controller" else "right")
        for row in summary_rows(runs):
            table.add_row(*row)
        out.print(table)
    out.print(f"wrote {md} and {md.with_suffix('.json').name}")
