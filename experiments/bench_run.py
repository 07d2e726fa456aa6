"""One ``tsadapt lab bench`` run's parts that the bench and its peers share: the configuration
(:class:`BenchConfig`), the headless Locust command and its bounded run, and the run's
outcome (:class:`RunResult`, :func:`summarize_run`). Below ``bench``, ``bench_report``,
``bench_seeds`` and the peers, so that none of them imports another in a circle."""

from __future__ import annotations

import math
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsadapt.experiments.bench_controllers import end_process, log_tail
from tsadapt.experiments.bench_schedule import (
    LATENESS_LIMIT_MS,
    LOADTESTS_DIR,
    MAX_REQUESTS,
    REQUEST_TIMEOUT_S,
    RateCheck,
    Records,
    Schedule,
    rate_checks,
)
from tsadapt.experiments.bench_timeline import (
    Sample,
    reconfigurations,
    timeline,
    worker_seconds,
)
from tsadapt.policy.sim.metrics import ModelResult, pool, summarize
from tsadapt.policy.sim.scenario import Scenario

DEFAULT_CONTROLLER_CONFIG = Path("configs/controller.yaml")
DEFAULT_OUT = Path("docs/results")
DEFAULT_RUNS = Path("runs/bench")
#: Extra seconds Locust may run after the scenario (start-up lag, in-flight drain).
LOCUST_GRACE_S = 10.0
#: Seconds after Locust's own bound before the bench kills it.
KILL_GRACE_S = REQUEST_TIMEOUT_S + 30.0
#: Tries at starting a server (see ``start_server``).
SERVER_START_ATTEMPTS = 5
#: Niceness change of the Locust process (negative: scheduled ahead of the servers under
#: test, so that on a busy box the load generator keeps its schedule for every system
#: alike; needs root, else Locust runs at the bench's own priority).
LOCUST_NICE = -5


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
    capacity_s: float = 10.0  # with peers: closed-loop capacity per model and system (0: skip)
    speed_probe_s: float = 0.0  # static's closed-loop capacity per model before and after (0: skip)
    peers_report: Path | None = None  # with peers: where peers.md goes (default: out_dir)


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

    @property
    def lateness_p99_ms(self) -> float:
        """The load generator's send lateness p99 over all models (NaN if unknown)."""
        return next((rc.lateness_p99_ms for rc in self.rates if rc.model == "all"), math.nan)

    @property
    def valid(self) -> bool:
        """An ok run whose load generator kept up (lateness p99 within the limit)."""
        return self.status == "ok" and not self.lateness_p99_ms > LATENESS_LIMIT_MS

    @property
    def label(self) -> str:
        """The table's name of the run: ``(invalid)`` appended when it is not valid."""
        return self.controller if self.valid or self.status != "ok" else (
            f"{self.controller} (invalid)")  # fmt: skip


def fmt(x: float | None, spec: str = ".1f") -> str:
    """``x`` formatted by ``spec`` for a table cell; '–' for None or NaN."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def start_server(start: Callable, config):  # noqa: ANN001, ANN202 - tsadapt.serve.server types
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


def favour_load_generator() -> None:
    """``preexec_fn`` of Locust: raise its CPU priority by ``-LOCUST_NICE`` if allowed."""
    import os

    try:
        os.nice(LOCUST_NICE)
    except OSError:
        pass


def locustfile_for(cfg: BenchConfig, scenario: Scenario) -> Path:
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
        "-f", str(locustfile_for(cfg, scenario)),
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


def drive_locust(
    cmd: list[str], rundir: Path, duration_s: float,
    on_tick: Callable[[float, str], None], gone: Callable[[], str | None] = lambda: None,
) -> str:  # fmt: skip
    """Run the Locust command ``cmd`` (log and command line in ``rundir``), bounded; the
    reason the run failed, or '' (``gone`` says why the system under test went away)."""
    (rundir / "locust.cmd").write_text(shlex.join(cmd) + "\n")
    bound = duration_s + LOCUST_GRACE_S + KILL_GRACE_S
    with (rundir / "locust.log").open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=favour_load_generator
        )
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
