"""The soak's load: a per-second rate trace (``loadtests/traces/demo.csv``, tiled over the run)
plus periodic bursts, split over the models by weight (Poisson thinning), sent open loop.

Every request is sent at its scheduled time by a bounded pool of sender threads (a late
sender never skips one); its latency is measured from the scheduled time, so a sender that
fell behind counts against the server, never for it. The schedule is capped in count.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.experiments.bench_schedule import (
    LOADTESTS_DIR,
    MAX_REQUESTS,
    REQUEST_TIMEOUT_S,
    Schedule,
    dispatch,
    mix_schedule,
)
from tsadapt.experiments.loadgen import JSON_HEADERS
from tsadapt.policy.sim.workload_files import Trace
from tsadapt.policy.sim.workloads import Bursty, Mix

#: The rate trace the soak tiles (per-second rates, 60 s, mean ~40 req/s, peak ~100).
TRACE = LOADTESTS_DIR / "traces" / "demo.csv"
#: Sender threads (requests in flight at most); the rest wait in the pool's queue.
SENDER_THREADS = 96
#: HTTP status of a request the server shed (queue full): deliberate, counted apart.
SHED_STATUS = 503


@dataclass(frozen=True)
class LoadShape:
    """The soak's arrival process: the trace scaled, plus bursts, split by weight."""

    weights: Mapping[str, float]
    trace_scale: float = 0.5
    burst_rate: float = 40.0  # extra req/s (all models) during a burst
    burst_s: float = 10.0
    burst_period_s: float = 240.0
    seed: int = 7


def tiled_trace(path: Path, duration_s: float, scale: float, out: Path) -> Path:
    """``path`` (``second,rate``) repeated to cover ``duration_s``, rates times ``scale``."""
    rows = [line.split(",") for line in Path(path).read_text().splitlines()[1:] if line.strip()]
    rates = [float(r[1]) * scale for r in rows]
    n = int(np.ceil(duration_s)) + 1
    lines = ["second,rate", *(f"{i},{rates[i % len(rates)]:.4f}" for i in range(n))]
    out.write_text("\n".join(lines) + "\n")
    return out


def build_schedule(
    shape: LoadShape, duration_s: float, workdir: Path, slo_ms: Mapping[str, float]
) -> Schedule:
    """The soak's schedule: every request's send time and model."""
    trace = Trace(str(tiled_trace(TRACE, duration_s, shape.trace_scale, workdir / "trace.csv")))
    bursts = Bursty(0.0, shape.burst_rate, shape.burst_s, shape.burst_period_s)
    return mix_schedule(
        Mix((trace, bursts)), shape.weights, duration_s, shape.seed, MAX_REQUESTS, slo_ms
    )


class Sent:
    """Per-request outcomes, filled by the sender threads (one slot per scheduled request)."""

    def __init__(self, n: int) -> None:
        self.latency_ms = np.full(n, np.nan)  # from the scheduled send time
        self.service_ms = np.full(n, np.nan)  # from the actual send (the server's share)
        self.status = np.zeros(n, dtype=np.int64)  # 0: no answer (or not sent yet)
        self.done = np.zeros(n, dtype=bool)


def send(
    client: Any,  # noqa: ANN401 - TorchServeClient
    schedule: Schedule,
    bodies: Mapping[str, Sequence[Any]],
    should_stop: Callable[[], bool] = lambda: False,
    t0: float | None = None,
    threads: int = SENDER_THREADS,
) -> Sent:
    """Send ``schedule`` open loop (``t0``: perf_counter of time 0); wait for the answers."""
    encoded = {m: [json.dumps(b).encode() for b in bs] for m, bs in bodies.items()}
    sent = Sent(len(schedule))
    start = time.perf_counter() if t0 is None else t0
    lock = threading.Lock()

    def one(i: int, at: float) -> None:
        model = schedule.model_of(i)
        body = encoded[model][i % len(encoded[model])]
        went = time.perf_counter()
        try:
            code = client.request(
                "inference", "POST", f"predictions/{model}", data=body, headers=JSON_HEADERS,
                timeout_s=REQUEST_TIMEOUT_S,
            ).status_code  # fmt: skip
        except OSError:
            code = 0
        with lock:
            now = time.perf_counter()
            sent.latency_ms[i] = (now - start - at) * 1000.0
            sent.service_ms[i] = (now - went) * 1000.0
            sent.status[i] = code
            sent.done[i] = True

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="soak-send") as pool:
        dispatch(
            schedule.times,
            lambda i, at: pool.submit(one, i, at),
            time.perf_counter,
            time.sleep,
            should_stop,
            start,
        )
    return sent
