"""One ``tsadapt lab bench`` run of the Ray Serve peer: the demo models on Ray Serve
(``rayserve_app``, in its own process), the bench's Locust command with the same arrivals,
the same records and the same table (replica-seconds in the worker-seconds column, replica
count changes as reconfigurations)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from tsadapt import constants as C
from tsadapt.experiments.bench_controllers import log_tail
from tsadapt.experiments.bench_report import PEER_NOTES, RunResult
from tsadapt.experiments.bench_schedule import Schedule, read_records
from tsadapt.experiments.bench_timeline import Poller, Sample
from tsadapt.experiments.peers.rayserve_app import (
    RAY_ENV,
    TUNED_ONGOING_PER_BATCH,
    peer_settings,
)
from tsadapt.policy.sim.scenario import Scenario

if TYPE_CHECKING:
    from tsadapt.experiments.bench import BenchConfig

#: Seconds Ray and the three applications get to come up (Ray's start on 2 busy cores,
#: each replica loading its model and warming up).
START_TIMEOUT_S = 240.0
#: Seconds Serve and Ray get to shut down after SIGTERM before the process group is killed.
STOP_TIMEOUT_S = 60.0
MODULE = "tsadapt.experiments.peers.rayserve_app"

PEER_NOTES["rayserve"] = (
    "`rayserve` = the same three models on Ray Serve (`tsadapt lab bench --peers rayserve`; "
    "`pip install .[peers]`): one application per model, each replica running our handler "
    "code on the same JSON bodies; `@serve.batch` at our registration defaults (batch size, "
    "max batch delay), `autoscaling_config` with replicas bounded by the scenario's "
    "min/max workers, every other setting Ray Serve's documented default except ONE tuned "
    f"setting: `max_ongoing_requests` = {TUNED_ONGOING_PER_BATCH} x the batch size (default "
    "5), because a replica is sent at most that many requests at a time, so at the default a "
    "batch of 8 or 16 could never fill (Ray's batching guide says to raise it above the "
    "batch size); twice lets the next batch gather while one runs, as TorchServe's queue "
    "does. Its worker-s column is replica-seconds and its reconfigs are replica-count "
    "changes. Ray's own processes (GCS, raylet, proxy, controller) share the same cores."
)


@dataclass(frozen=True)
class PeerEndpoint:
    """What ``locust_command`` needs of a server: its URL and a work dir (no TorchServe
    record there, so Locust sends no token)."""

    inference_url: str
    workdir: Path


def unavailable() -> str | None:
    """Why the peer cannot run here, or None."""
    if importlib.util.find_spec("ray") is None:
        return "Ray Serve is not installed: pip install .[peers]"
    return None


def status_reader(path: Path, scenario: Scenario) -> Callable[[], list[Sample]]:
    """A poll function: one :class:`Sample` per model from the app's status file."""
    settings = {s.model: s for s in peer_settings(scenario)}

    def read() -> list[Sample]:
        data = json.loads(path.read_text())
        t = float(data["t_epoch"])
        out = []
        for model, n in data["replicas"].items():
            s = settings[model]
            delay = round(1000 * s.batch_wait_timeout_s)
            out.append(Sample(t, model, s.max_batch_size, delay, int(n), int(n), 0))
        return out

    return read


def start_app(scenario_path: Path, rundir: Path, port: int) -> tuple[subprocess.Popen, Path]:
    """Start the Ray Serve process; return it once every application is up."""
    status = rundir / "rayserve-status.json"
    status.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", MODULE, "--scenario", str(scenario_path), "--port", str(port),
           "--status", str(status)]  # fmt: skip
    env = {**os.environ, **RAY_ENV}
    with (rundir / "rayserve.log").open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not status.is_file():
        if proc.poll() is not None:
            raise RuntimeError(
                f"Ray Serve exited with code {proc.returncode} at start: "
                f"{log_tail(rundir / 'rayserve.log')}"
            )
        if time.monotonic() > deadline:
            stop_app(proc, status)
            raise RuntimeError(f"Ray Serve not up after {START_TIMEOUT_S:.0f} s")
        time.sleep(0.5)
    return proc, status


def ray_processes(status: Path) -> list[psutil.Process]:
    """Ray's processes that the app recorded once up and that still run (the same process:
    pid and start time both match)."""
    try:
        recorded = json.loads(status.read_text()).get("pids", [])
    except (OSError, ValueError):
        return []
    alive = []
    for pid, created in recorded:
        try:
            proc = psutil.Process(int(pid))
            if abs(proc.create_time() - float(created)) < 0.01 and proc.is_running():
                alive.append(proc)
        except psutil.Error:
            pass
    return alive


def stop_app(proc: subprocess.Popen, status: Path | None = None) -> None:
    """SIGTERM (Serve and Ray shut down cleanly), then kill what is left: the process
    group, and any of Ray's recorded processes still running (actors have their own)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # Ray's helpers, if any outlived the shutdown
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(5)
    for left in ray_processes(status) if status is not None else []:
        try:
            left.kill()
        except psutil.Error:
            pass


def run_rayserve(
    cfg: BenchConfig, scenario_path: Path, scenario: Scenario, schedule: Schedule,
    rundir: Path, on_tick: Callable[[float, str], None],
) -> RunResult:  # fmt: skip
    """Run the peer once; never leaves a process behind."""
    from tsadapt.experiments.bench import drive_locust, locust_command, summarize_run
    from tsadapt.serve.server import free_port

    why = unavailable()
    if why:
        return RunResult("rayserve", "skipped", why)
    rundir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    on_tick(0.0, "starting Ray Serve")
    try:
        proc, status = start_app(scenario_path, rundir, port)
    except RuntimeError as exc:
        return RunResult("rayserve", "failed", str(exc), rundir=rundir)
    poller = None
    try:
        poller = Poller(status_reader(status, scenario))
        poller.start()
        endpoint = PeerEndpoint(f"http://{C.LOOPBACK}:{port}", rundir)
        cmd = locust_command(
            cfg, scenario_path, scenario, endpoint, rundir / "requests.csv",
            schedule.duration_s, schedule.seed,
        )  # fmt: skip

        def gone() -> str | None:
            if proc.poll() is None:
                return None
            return f"Ray Serve exited ({proc.returncode}): {log_tail(rundir / 'rayserve.log')}"

        failed = drive_locust(cmd, rundir, schedule.duration_s, on_tick, gone)
        if failed:
            return RunResult("rayserve", "failed", failed, rundir=rundir)
    finally:
        if poller is not None:
            poller.stop()
        on_tick(schedule.duration_s, "stopping Ray Serve")
        stop_app(proc, status)
    records = read_records(rundir / "requests.csv")
    return summarize_run("rayserve", schedule, records, poller.samples, rundir)
