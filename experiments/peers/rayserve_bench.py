"""The Ray Serve peer's process for ``tsadapt lab bench``: start ``rayserve_app`` (with the
peer's own Python), read its status file (replicas per model), stop it and every Ray
process it recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from tsadapt.experiments.bench_controllers import log_tail
from tsadapt.experiments.bench_timeline import Sample
from tsadapt.experiments.peers.rayserve_app import (
    RAY_ENV,
    peer_settings,
)
from tsadapt.policy.sim.scenario import Scenario

#: Seconds Ray and the three applications get to come up (Ray's start on 2 busy cores,
#: each replica loading its model and warming up).
START_TIMEOUT_S = 240.0
#: Seconds Serve and Ray get to shut down after SIGTERM before the process group is killed.
STOP_TIMEOUT_S = 60.0
MODULE = "tsadapt.experiments.peers.rayserve_app"


def status_reader(path: Path, scenario: Scenario, mode: str = "auto"
                  ) -> Callable[[], list[Sample]]:  # fmt: skip
    """A poll function: one :class:`Sample` per model from the app's status file."""
    settings = {s.model: s for s in peer_settings(scenario, mode)}

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


def start_app(
    scenario_path: Path,
    rundir: Path,
    port: int,
    mode: str = "auto",
    python: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, Path]:
    """Start the Ray Serve process; return it once every application is up."""
    status = rundir / "rayserve-status.json"
    status.unlink(missing_ok=True)
    cmd = [str(python or sys.executable), "-m", MODULE, "--scenario", str(scenario_path),
           "--port", str(port), "--status", str(status), "--mode", mode]  # fmt: skip
    env = {**os.environ, **RAY_ENV, **(extra_env or {})}
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
