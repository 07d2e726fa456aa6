"""The host's CPU around a real run: how many cores the whole box, our own process tree
(TorchServe, its workers, Locust, this process) and everything else keep busy
(:class:`CpuMonitor`, :class:`CpuLoad`), and waiting for a quiet box before a run
(:func:`wait_for_quiet`, :class:`Quiet`). Foreign load on a small box lands directly in the
real tail latencies, so every experiment against the real server can watch for it."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: What the command line of a TorchServe worker process contains.
WORKER_PROCESS = "model_service_worker"
#: CPU sampling period of :class:`CpuMonitor` (s).
CPU_PERIOD_S = 0.5
#: Before each real run, wait (at most QUIET_TIMEOUT_S) until other processes use at most
#: QUIET_CORES cores (see :func:`wait_for_quiet`).
QUIET_CORES = 0.25
QUIET_TIMEOUT_S = 180.0


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


@dataclass(frozen=True)
class Quiet:
    """How long to wait for a quiet box before a real run (``timeout_s = 0``: do not)."""

    max_others_cores: float = QUIET_CORES
    timeout_s: float = QUIET_TIMEOUT_S
