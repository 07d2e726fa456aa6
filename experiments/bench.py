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

This module holds one run and the entry; the configuration, the Locust command and a run's
outcome are in ``bench_run``, the controllers in ``bench_controllers``, the poller and
timeline accounting in ``bench_timeline``, the table and markdown report in ``bench_report``,
the arrivals and records in ``bench_schedule``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
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
from tsadapt.experiments.bench_report import TABLE_HEADER, table_rows, write_markdown
from tsadapt.experiments.bench_run import (  # noqa: F401 - BenchConfig and the run's parts, here too
    DEFAULT_CONTROLLER_CONFIG,
    DEFAULT_OUT,
    DEFAULT_RUNS,
    BenchConfig,
    RunResult,
    drive_locust,
    fmt,
    locust_command,
    run_t0,
    start_server,
    summarize_run,
)
from tsadapt.experiments.bench_schedule import (
    Schedule,
    read_records,
    resolve_scenario,
    scenario_schedule,
)
from tsadapt.experiments.bench_seeds import bench_seeds, summary_json
from tsadapt.experiments.bench_timeline import (
    Poller,
    server_reader,
)
from tsadapt.policy.sim.scenario import Scenario, load_scenario

# --------------------------------------------------------------------------- constants

#: Seconds of quiet between the warm-up and the load.
WARMUP_SETTLE_S = 1.0
# --------------------------------------------------------------------------- one run


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
    server = start_server(start, server_cfg)
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
            _save_metrics(server_cfg.metrics_url, rundir / "server-metrics.txt")
            stop(server_cfg.workdir)
    records = read_records(records_path)
    return summarize_run(
        controller, schedule, records, poller.samples if poller else [], rundir,
        decisions if decisions.is_file() else None,
    )  # fmt: skip


def _save_metrics(url: str, path: Path) -> None:
    """TorchServe's Prometheus metrics at the end of a run (for the peers report's time
    breakdown); a failure only loses them."""
    from tsadapt.experiments.peers.peer_bench import save_text

    save_text(url, path)


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
    from tsadapt.experiments.peers.peer_bench import variant_names

    peers = tuple(variant_names(expand_peers(cfg.peers)))
    console = Console(stderr=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    started_text = time.strftime("%Y-%m-%d %H:%M")
    load_before = os.getloadavg()[0]
    t_start = time.monotonic()
    first = schedules[seeds[0]]
    console.print(
        f"bench [bold]{scenario.name}[/]: {first.duration_s:.0f} s per run, seeds "
        f"{', '.join(map(str, seeds))} ({', '.join(str(len(x)) for x in schedules.values())} "
        f"requests), controllers {', '.join(controllers)}"
        + (f", peers {', '.join(peers)}" if peers else "")
    )
    runs: dict[int, list[RunResult]] = {}
    caps = []
    if peers and cfg.capacity_s > 0:
        from tsadapt.experiments.bench_capacity import capacity_systems, measure

        for system in capacity_systems(peers):
            console.print(f"capacity: {system} (closed loop, {cfg.capacity_s:.0f} s per model)")
            rundir = cfg.runs_dir / scenario.name / f"{stamp}-capacity-{system}"
            caps += measure(cfg, system, scenario_path, scenario, rundir, cfg.capacity_s)
    speed: dict[str, list] = {}

    def probe(when: str) -> None:
        from tsadapt.experiments.bench_capacity import measure

        if cfg.speed_probe_s > 0:
            console.print(f"box speed {when}: closed loop, {cfg.speed_probe_s:g} s per model")
            rundir = cfg.runs_dir / scenario.name / f"{stamp}-speed-{when}"
            speed[when] = measure(cfg, "static", scenario_path, scenario, rundir, cfg.speed_probe_s)

    probe("before")
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
    probe("after")
    preamble: list[str] = []
    summary_extra = {}
    if speed:
        from tsadapt.experiments.bench_capacity import speed_json, speed_lines

        before, after = speed.get("before", []), speed.get("after", [])
        preamble = speed_lines(before, after, cfg.speed_probe_s)
        summary_extra["box_speed"] = speed_json(before, after, cfg.speed_probe_s)
    md = write_markdown(
        cfg.out_dir / f"bench-{scenario.name}.md", cfg, scenario, schedules, runs,
        started_text, time.monotonic() - t_start, preamble,
    )  # fmt: skip
    summary = summary_json(scenario.name, runs, cfg.command, first.duration_s) | summary_extra
    md.with_suffix(".json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    _print_tables(scenario.name, schedules, runs, md)
    if peers:
        from tsadapt.experiments.peers.peers_report import write_report

        load_avg = (load_before, os.getloadavg()[0])
        peers_md = write_report(cfg, scenario, first.duration_s, started_text, runs, caps, load_avg)
        console.print(f"wrote {peers_md} and {peers_md.with_suffix('.json').name}")
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
    cfg: BenchConfig, scenario_path: Path, scenario: Scenario, schedule: Schedule, run: str,
    rundir: Path, on_tick: Callable[[float, str], None],
) -> RunResult:  # fmt: skip
    """One run of a peer system's variant (``--peers``), the same arrivals and Locust."""
    from tsadapt.experiments.peers.peer_bench import run_peer_variant

    return run_peer_variant(cfg, scenario_path, scenario, schedule, run, rundir, on_tick)


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
