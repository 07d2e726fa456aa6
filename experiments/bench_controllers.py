"""The controllers of ``tsadapt lab bench``: which can run here, and the ``tsadapt control``
subprocess that runs one against the bench's server (start, end, its log's tail)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

CONTROLLERS = ("static", "aimd", "queue", "ppo")
# "best" = the first available in this order: on the real server queue led both bench runs
# (docs/results/bench-bursty.md, bench-diurnal.md of 2026-11-23 18:48/18:56, one seed each);
# ppo trailed static there (it learned near-zero delays in simulation, which this CPU box's
# per-batch overhead punishes), aimd was level with static on bursty and below it on diurnal.
ADAPTIVE_PREFERENCE = ("queue", "ppo", "aimd")
CONTROL_MODULE = "tsadapt.cli.control_commands"
#: Seconds a freshly started controller must stay up to count as started.
CONTROLLER_START_S = 3.0


class ControllerUnavailable(RuntimeError):
    """The controller cannot run here; the message says why (the run is skipped)."""


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


def expand_peers(names: Sequence[str]) -> tuple[str, ...]:
    """Validate ``--peers`` names (each once, in the given order)."""
    from tsadapt.experiments.peers import PEERS

    out: list[str] = []
    for n in names:
        if n not in PEERS:
            raise ValueError(f"peers: unknown peer {n!r}; known: {', '.join(PEERS)}")
        if n not in out:
            out.append(n)
    return tuple(out)


def start_controller(
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
                f"controller {name!r} exited with code {proc.returncode} at start: {log_tail(log)}"
            )
        time.sleep(0.2)
    return proc


def end_process(proc: subprocess.Popen | None, timeout_s: float = 10.0) -> None:
    """Terminate ``proc`` if it still runs (kill it after ``timeout_s``)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def log_tail(path: Path, n: int = 400) -> str:
    """The last ``n`` characters of the log at ``path`` on one line ('' if unreadable)."""
    try:
        return " ".join(path.read_text(errors="replace")[-n:].split())
    except OSError:
        return ""
