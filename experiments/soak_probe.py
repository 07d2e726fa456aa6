"""What the soak samples every period: resident memory, open file descriptors and threads of
the TorchServe frontend (the JVM), of every backend worker (by model) and of the controller
sidecar, and the size of the decision log. psutil only; a process that is gone reads as None.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

#: The JVM's main class in the frontend's command line.
FRONTEND_CLASS = "org.pytorch.serve.ModelServer"


@dataclass(frozen=True)
class ProcStat:
    """One process at one instant."""

    pid: int
    rss_mb: float
    fds: int
    threads: int


def proc_stat(pid: int) -> ProcStat | None:
    """``pid``'s RSS, fds and threads; None when it is gone or unreadable."""
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            return ProcStat(pid, p.memory_info().rss / 2**20, p.num_fds(), p.num_threads())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def find_frontend(root_pid: int) -> int | None:
    """The pid of the Java frontend under ``root_pid`` (the ``torchserve`` wrapper)."""
    try:
        root = psutil.Process(root_pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                if FRONTEND_CLASS in " ".join(p.cmdline()):
                    return p.pid
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    except psutil.NoSuchProcess:
        return None
    return None


def worker_pids(client: Any, models: list[str]) -> dict[str, list[int]]:  # noqa: ANN401
    """Each model's worker pids, as the management API describes them."""
    out: dict[str, list[int]] = {}
    for name in models:
        workers = client.describe(name).get("workers", [])
        out[name] = [int(w["pid"]) for w in workers if str(w.get("pid", "")).isdigit()]
    return out


@dataclass(frozen=True)
class ProbeSample:
    """One sample of every watched process."""

    t_s: float  # seconds since the load started
    frontend: ProcStat | None
    sidecar: ProcStat | None
    workers: dict[str, list[ProcStat]]
    decision_log_bytes: int
    error: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeSample:
        def one(x: dict[str, Any] | None) -> ProcStat | None:
            return None if x is None else ProcStat(**x)

        return cls(
            d["t_s"],
            one(d["frontend"]),
            one(d["sidecar"]),
            {m: [ProcStat(**x) for x in ws if x] for m, ws in d["workers"].items()},
            d["decision_log_bytes"],
            d.get("error", ""),
        )

    def as_dict(self) -> dict[str, Any]:
        def one(s: ProcStat | None) -> dict[str, Any] | None:
            return None if s is None else s.__dict__.copy()

        return {
            "t_s": round(self.t_s, 3),
            "frontend": one(self.frontend),
            "sidecar": one(self.sidecar),
            "workers": {m: [one(s) for s in ws] for m, ws in self.workers.items()},
            "decision_log_bytes": self.decision_log_bytes,
            "error": self.error,
        }


class Prober(threading.Thread):
    """Samples the processes every ``period_s`` from ``t0`` (perf_counter) until stopped."""

    def __init__(
        self,
        frontend_pid: Callable[[], int | None],
        sidecar_pid: Callable[[], int | None],
        workers: Callable[[], dict[str, list[int]]],
        decision_log: Path,
        t0: float,
        period_s: float = 10.0,
    ) -> None:
        super().__init__(daemon=True, name="soak-probe")
        self.frontend_pid = frontend_pid
        self.sidecar_pid = sidecar_pid
        self.workers = workers
        self.decision_log = Path(decision_log)
        self.t0 = t0
        self.period_s = period_s
        self.samples: list[ProbeSample] = []
        self._halt = threading.Event()

    def sample(self) -> ProbeSample:
        error = ""
        try:
            pids = self.workers()
        except Exception as exc:  # noqa: BLE001 - a missed read is recorded, not fatal
            pids, error = {}, f"{type(exc).__name__}: {exc}"
        fe, sc = self.frontend_pid(), self.sidecar_pid()
        try:
            size = self.decision_log.stat().st_size
        except OSError:
            size = 0
        return ProbeSample(
            time.perf_counter() - self.t0,
            proc_stat(fe) if fe else None,
            proc_stat(sc) if sc else None,
            {m: [s for p in ps if (s := proc_stat(p)) is not None] for m, ps in pids.items()},
            size,
            error,
        )

    def run(self) -> None:
        next_at = time.perf_counter()
        while not self._halt.is_set():
            self.samples.append(self.sample())
            next_at += self.period_s
            self._halt.wait(max(0.0, next_at - time.perf_counter()))

    def stop(self) -> None:
        self._halt.set()
        self.join(30)
