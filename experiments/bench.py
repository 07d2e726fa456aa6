"""``tsadapt bench``: controllers side by side on a real TorchServe, same scenario and seed.

For each controller in turn: a fresh server (free loopback ports, its own work dir under
``runs/bench/<scenario>/<stamp>-<controller>/``), the controller sidecar unless ``static``,
a background poller of batch size / delay / workers (``/adapt/models``, else describe), and
the Locust scenario headless as a subprocess replaying the scenario's exact arrivals. Then
the per-request records give the table (SLO attainment, goodput, p50/p99 per model, via
``policy/sim/metrics.py``), the poller gives worker-seconds and reconfigurations, and a PNG per
run shows offered load, latency against the SLO, and batch size and workers over time.
Everything is bounded: the scenario's (or ``--duration``) length, a request cap, Locust's
``--run-time`` and a kill deadline.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsadapt.experiments.bench_schedule import (
    LOADTESTS_DIR,
    MAX_REQUESTS,
    REQUEST_TIMEOUT_S,
    RateCheck,
    Records,
    Schedule,
    rate_checks,
    read_records,
    resolve_scenario,
    scenario_schedule,
)
from tsadapt.markdown import table as markdown_table
from tsadapt.policy.sim.metrics import ModelResult, pool, summarize
from tsadapt.policy.sim.scenario import Scenario, load_scenario

# --------------------------------------------------------------------------- constants

CONTROLLERS = ("static", "aimd", "queue", "ppo")
# "best" = the first available in this order: on the real server queue led both bench runs
# (docs/results/bench-bursty.md, bench-diurnal.md of 2026-11-23 18:48/18:56, one seed each);
# ppo trailed static there (it learned near-zero delays in simulation, which this CPU box's
# per-batch overhead punishes), aimd was level with static on bursty and below it on diurnal.
ADAPTIVE_PREFERENCE = ("queue", "ppo", "aimd")
CONTROL_MODULE = "tsadapt.cli.control_commands"
DEFAULT_CONTROLLER_CONFIG = Path("configs/controller.yaml")
DEFAULT_OUT = Path("docs/results")
DEFAULT_RUNS = Path("runs/bench")
#: Poll period of the batch size / workers timeline (s).
POLL_S = 1.0
#: Extra seconds Locust may run after the scenario (start-up lag, in-flight drain).
LOCUST_GRACE_S = 10.0
#: Seconds after Locust's own bound before the bench kills it.
KILL_GRACE_S = REQUEST_TIMEOUT_S + 30.0
#: Seconds a freshly started controller must stay up to count as started.
CONTROLLER_START_S = 3.0
#: Tries at starting a server (see ``_start_server``).
SERVER_START_ATTEMPTS = 5
#: Seconds of quiet between the warm-up and the load.
WARMUP_SETTLE_S = 1.0


class ControllerUnavailable(RuntimeError):
    """The controller cannot run here; the message says why (the run is skipped)."""


@dataclass(frozen=True)
class BenchConfig:
    """One ``tsadapt bench`` invocation."""

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


@dataclass(frozen=True)
class Sample:
    """One poll of one model."""

    t_epoch: float
    model: str
    batch_size: int
    max_batch_delay_ms: int
    workers: int  # running workers
    target_workers: int  # min_workers (what the controller asked for)
    queue_depth: int


@dataclass(frozen=True)
class RunResult:
    """Outcome of one controller's run (``status`` is ``ok``, ``skipped`` or ``failed``)."""

    controller: str
    status: str
    reason: str = ""
    per_model: dict[str, ModelResult] = field(default_factory=dict)
    overall: ModelResult | None = None
    rates: tuple[RateCheck, ...] = ()
    reconfigurations: dict[str, int] = field(default_factory=dict)
    png: Path | None = None
    rundir: Path | None = None
    decision_log: Path | None = None


# --------------------------------------------------------------------------- controllers


def controller_unavailable(name: str, config: Path, scenario: Path) -> str | None:
    """Why ``name`` cannot run here on ``scenario`` (whose SLOs the controller takes), or None
    when it can."""
    if name == "static":
        return None
    if name not in CONTROLLERS:
        return f"unknown controller {name!r} (known: {', '.join(CONTROLLERS)})"
    if importlib.util.find_spec(CONTROL_MODULE) is None:
        return "controller not available: the sidecar ('tsadapt control') is not installed"
    if not config.is_file():
        return f"controller not available: no controller config {config}"
    try:
        from tsadapt.policy.factory import make_policy
        from tsadapt.policy.sim.control import scenario_config

        make_policy(name, scenario_config(config, scenario, policy=name))
    except (ImportError, ValueError, TypeError) as exc:
        return f"controller not available: {exc}"
    return None


def expand_controllers(names: Sequence[str], config: Path, scenario: Path) -> tuple[str, ...]:
    """Validate names; ``best`` becomes the best adaptive controller available (or stays)."""
    out: list[str] = []
    for n in names:
        if n == "best":
            n = next(
                (
                    c
                    for c in ADAPTIVE_PREFERENCE
                    if controller_unavailable(c, config, scenario) is None
                ),
                "best",
            )
        elif n not in CONTROLLERS:
            raise ValueError(f"unknown controller {n!r}; known: {', '.join(CONTROLLERS)}, best")
        if n not in out:
            out.append(n)
    return tuple(out)


def _start_controller(
    name: str, config: Path, scenario: Path, workdir: Path, log: Path, decisions: Path
) -> subprocess.Popen:
    """``tsadapt control`` on the bench's server; the SLOs and the profile rule's batch caps
    come from the scenario file, the one place that states them."""
    cmd = [
        sys.executable, "-m", "tsadapt.cli", "control",
        "--config", str(config), "--scenario", str(scenario), "--policy", name,
        "--workdir", str(workdir), "--decision-log", str(decisions), "--metrics-port", "0",
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + CONTROLLER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ControllerUnavailable(
                f"controller {name!r} exited with code {proc.returncode} at start: {_tail(log)}"
            )
        time.sleep(0.2)
    return proc


def _end(proc: subprocess.Popen | None, timeout_s: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _tail(path: Path, n: int = 400) -> str:
    try:
        return " ".join(path.read_text(errors="replace")[-n:].split())
    except OSError:
        return ""


# --------------------------------------------------------------------------- poller


class Poller(threading.Thread):
    """Samples every model's batch size, delay, workers and queue every ``period_s``."""

    def __init__(self, read: Callable[[], list[Sample]], period_s: float = POLL_S) -> None:
        super().__init__(daemon=True, name="bench-poller")
        self.read = read
        self.period_s = period_s
        self.samples: list[Sample] = []
        self.errors = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.samples.extend(self.read())
            except Exception:  # noqa: BLE001 - a missed poll is not fatal; counted
                self.errors += 1
            self._halt.wait(self.period_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def server_reader(server) -> Callable[[], list[Sample]]:  # noqa: ANN001 - RunningServer
    """A poll function for ``server``: the plugin's ``/adapt/models``, else describe."""
    from tsadapt.plugin.adapt_client import AdaptClient, AdaptError

    client = server.client(timeout_s=5)
    adapt = AdaptClient(client, timeout_s=5, retries=0)
    use_plugin = [server.plugins_path is not None]

    def read() -> list[Sample]:
        now = time.time()
        if use_plugin[0]:
            try:
                return [
                    Sample(now, s.name, s.batch_size, s.max_batch_delay_ms, s.running_workers,
                           s.min_workers, s.queue_depth)
                    for s in adapt.models()
                ]  # fmt: skip
            except AdaptError:
                use_plugin[0] = False
        out = []
        for name in server.models:
            d = client.describe(name)
            running = sum(w.get("status") == "READY" for w in d.get("workers", []))
            out.append(
                Sample(now, name, int(d.get("batchSize", 0)), int(d.get("maxBatchDelay", 0)),
                       running, int(d.get("minWorkers", 0)),
                       int(d.get("jobQueueStatus", {}).get("pendingRequests", 0)))
            )  # fmt: skip
        return out

    return read


def timeline(samples: Sequence[Sample], t0_epoch: float, model: str) -> list[Sample]:
    return sorted((s for s in samples if s.model == model), key=lambda s: s.t_epoch)


def worker_seconds(samples: Sequence[Sample], t0: float, duration_s: float) -> float:
    """Integral of running workers over ``[t0, t0 + duration_s]`` (step, sample-and-hold)."""
    if not samples:
        return math.nan
    t = np.asarray([s.t_epoch - t0 for s in samples])
    w = np.asarray([s.workers for s in samples], dtype=float)
    edges = np.clip(np.append(t, duration_s), 0.0, duration_s)
    dt = np.diff(edges)
    # before the first sample, hold the first value
    return float(np.sum(w * dt) + w[0] * max(0.0, min(t[0], duration_s)))


def reconfigurations(samples: Sequence[Sample]) -> int:
    """Changes of batch size, batch delay or worker target between consecutive polls."""
    keys = [(s.batch_size, s.max_batch_delay_ms, s.target_workers) for s in samples]
    return sum(a != b for a, b in zip(keys, keys[1:], strict=False))


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
            ctrl = _start_controller(
                controller, cfg.controller_config, scenario_path, server_cfg.workdir,
                rundir / "controller.log", decisions,
            )  # fmt: skip
        poller = Poller(server_reader(server))
        poller.start()
        cmd = locust_command(
            cfg, scenario_path, scenario, server, records_path, schedule.duration_s,
            schedule.seed,
        )  # fmt: skip
        (rundir / "locust.cmd").write_text(shlex.join(cmd) + "\n")
        bound = schedule.duration_s + LOCUST_GRACE_S + KILL_GRACE_S
        with (rundir / "locust.log").open("wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            started = time.monotonic()
            while proc.poll() is None:
                elapsed = time.monotonic() - started
                if elapsed > bound:
                    _end(proc)
                    break
                if ctrl is not None and ctrl.poll() is not None:
                    _end(proc)
                    why = f"controller exited ({ctrl.returncode}): "
                    why += _tail(rundir / "controller.log")
                    return RunResult(controller, "failed", why, rundir=rundir)
                on_tick(elapsed, "load running" if elapsed < schedule.duration_s else "draining")
                time.sleep(0.5)
        if proc.returncode not in (0, 1) or not records_path.is_file():
            return RunResult(
                controller, "failed",
                f"locust exited with code {proc.returncode}: {_tail(rundir / 'locust.log')}",
                rundir=rundir,
            )  # fmt: skip
    finally:
        try:
            if poller is not None:
                poller.stop()
            _end(ctrl)
        finally:
            on_tick(schedule.duration_s, "stopping TorchServe")
            stop(server_cfg.workdir)
    records = read_records(records_path)
    return summarize_run(
        controller, schedule, records, poller.samples if poller else [], rundir,
        decisions if decisions.is_file() else None,
    )  # fmt: skip


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


# --------------------------------------------------------------------------- report


def _f(x: float | None, spec: str = ".1f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table_rows(results: Sequence[RunResult]) -> list[list[str]]:
    """Rows of the main table (controller, model, SLO, ...), overall row per controller."""
    rows = []
    for res in results:
        if res.status != "ok":
            rows.append([res.controller, "–", "–", "–", f"{res.status}: {res.reason}",
                         "–", "–", "–", "–", "–", "–"])  # fmt: skip
            continue
        for name, r in [*res.per_model.items(), ("overall", res.overall)]:
            assert r is not None
            nre = sum(res.reconfigurations.values()) if name == "overall" else (
                res.reconfigurations.get(name, 0))  # fmt: skip
            rows.append([
                res.controller, name, _f(r.slo_ms, ".0f"), str(r.requests),
                f"{100 * r.slo_attainment:.1f}%", _f(r.goodput_rps, ".2f"), _f(r.p50_ms),
                _f(r.p99_ms), _f(r.worker_seconds, ".0f"), str(nre),
                str(r.requests - r.completed),
            ])  # fmt: skip
    return rows


TABLE_HEADER = [
    "controller", "model", "SLO ms", "requests", "SLO attainment", "goodput req/s",
    "p50 ms", "p99 ms", "worker-s", "reconfigs", "failed",
]  # fmt: skip


def write_markdown(
    path: Path, cfg: BenchConfig, scenario: Scenario, schedule: Schedule,
    results: Sequence[RunResult], started: str, elapsed_s: float,
) -> Path:  # fmt: skip
    """``docs/results/bench-<scenario>.md`` with the table, rates and a PNG per run."""
    lines = [
        f"# Benchmark: scenario `{scenario.name}` on a real TorchServe",
        "",
        f"Generated by `{cfg.command or 'tsadapt bench'}` on {started} "
        f"({elapsed_s:.0f} s wall). Machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"Python {platform.python_version()}; Locust shares the cores with TorchServe.",
        "",
        f"Scenario file `{_rel(Path(scenario.path or ''))}`: {schedule.duration_s:.0f} s, "
        f"seed {schedule.seed}, {len(schedule)} requests "
        f"({', '.join(f'{m} {schedule.intended_mean_rate(m):.1f} req/s' for m in schedule.models)}"
        "), the same arrivals for every controller and for the simulator. Each controller ran "
        "on a fresh server. SLO attainment counts every scheduled request (failed, rejected "
        "and unanswered ones are violations); goodput = requests answered within the SLO per "
        "second; worker-seconds = running workers integrated over the run (polled every "
        f"{POLL_S:.0f} s); reconfigurations = changes of batch size, delay or worker target "
        "between polls; failed = requests not answered 2xx. Every controller runs "
        f"`tsadapt control --config {_rel(cfg.controller_config)} --scenario "
        f"{_rel(Path(scenario.path or ''))}`: the SLOs are the scenario's, and each model's "
        "`max_batch` is the largest batch whose profiled execution takes at most half the SLO.",
        "",
        *markdown_table(TABLE_HEADER, table_rows(results)),
    ]
    lines += [
        "",
        "## Offered load: intended against achieved",
        "",
        "intended = mean of the workload's rate over the run; scheduled = the drawn arrivals "
        "(one sample of it); achieved = requests sent / run time; lateness = actual minus "
        "scheduled send time of each request (the dispatcher's).",
        "",
        "| controller | model | intended req/s | scheduled req/s | achieved req/s | "
        "achieved vs scheduled | lateness p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for rc in res.rates:
            lines.append(
                f"| {res.controller} | {rc.model} | {rc.intended_rps:.2f} | "
                f"{rc.scheduled_rps:.2f} | {rc.achieved_rps:.2f} | "
                f"{100 * rc.error_vs_scheduled:+.2f}% | {_f(rc.lateness_p50_ms, '.2f')} | "
                f"{_f(rc.lateness_p99_ms, '.2f')} | {_f(rc.lateness_max_ms, '.1f')} |"
            )
    lines += ["", "## Timelines", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    for res in results:
        if res.status != "ok" or res.png is None:
            lines.append(f"- `{res.controller}`: {res.status} – {res.reason}")
            continue
        dest = path.parent / f"bench-{scenario.name}-{res.controller}.png"
        dest.write_bytes(res.png.read_bytes())
        lines += [f"### {res.controller}", "", f"![{res.controller}]({dest.name})", ""]
        if res.decision_log is not None:
            lines += [f"Decision log: `{_rel(res.decision_log)}`", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


# --------------------------------------------------------------------------- entry


def run_bench(cfg: BenchConfig) -> tuple[list[RunResult], Path]:
    """Run every controller in turn (rich progress); write the report; return both."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    scenario_path = resolve_scenario(cfg.scenario)
    scenario = load_scenario(scenario_path)
    schedule = scenario_schedule(scenario, cfg.seed, cfg.duration_s, cfg.max_requests)
    controllers = expand_controllers(cfg.controllers, cfg.controller_config, scenario_path)
    console = Console(stderr=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    started_text = time.strftime("%Y-%m-%d %H:%M")
    t_start = time.monotonic()
    console.print(
        f"bench [bold]{scenario.name}[/]: {len(schedule)} requests over "
        f"{schedule.duration_s:.0f} s, seed {schedule.seed}, controllers {', '.join(controllers)}"
    )
    results: list[RunResult] = []
    with Progress(
        TextColumn("{task.fields[ctl]:<8}"), BarColumn(), TextColumn("{task.completed:>4.0f}/"
        "{task.total:.0f} s"), TextColumn("{task.description}"), TimeElapsedColumn(),
        console=console,
    ) as progress:  # fmt: skip
        for ctl in controllers:
            task = progress.add_task("waiting", total=schedule.duration_s, ctl=ctl)

            def tick(elapsed: float, what: str, task: int = task) -> None:
                progress.update(task, completed=min(elapsed, schedule.duration_s),
                                description=what)  # fmt: skip

            rundir = cfg.runs_dir / scenario.name / f"{stamp}-{ctl}"
            try:
                res = run_one(cfg, scenario_path, scenario, schedule, ctl, rundir, tick)
            except ControllerUnavailable as exc:
                res = RunResult(ctl, "skipped", str(exc), rundir=rundir)
            results.append(res)
            progress.update(task, completed=schedule.duration_s, description=res.status)
    md = write_markdown(
        cfg.out_dir / f"bench-{scenario.name}.md", cfg, scenario, schedule, results,
        started_text, time.monotonic() - t_start,
    )  # fmt: skip
    table = Table(title=f"bench {scenario.name} ({schedule.duration_s:.0f} s, seed "
                  f"{schedule.seed})")  # fmt: skip
    for h in TABLE_HEADER:
        table.add_column(h, justify="left" if h in ("controller", "model") else "right")
    for row in table_rows(results):
        table.add_row(*row)
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)
    out.print(table)
    for res in results:
        for rc in res.rates:
            if rc.model == "all":
                out.print(
                    f"{res.controller}: intended {rc.intended_rps:.1f} req/s, scheduled "
                    f"{rc.scheduled_rps:.1f}, achieved {rc.achieved_rps:.1f} "
                    f"({100 * rc.error_vs_scheduled:+.1f}%), lateness p99 "
                    f"{_f(rc.lateness_p99_ms, '.1f')} ms"
                )
    out.print(f"wrote {md}")
    (cfg.runs_dir / scenario.name / f"{stamp}-summary.json").write_text(
        json.dumps(
            [
                {
                    "controller": r.controller,
                    "status": r.status,
                    "reason": r.reason,
                    "rundir": str(r.rundir),
                }
                for r in results
            ],
            indent=2,
        )  # fmt: skip
    )
    return results, md
