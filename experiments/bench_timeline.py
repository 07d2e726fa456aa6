"""The bench's timeline of batch size, delay, workers and queue: the poller that samples the
server during a run, and the accounting over its samples (worker-seconds, reconfigurations)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: Poll period of the batch size / workers timeline (s).
POLL_S = 1.0


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
