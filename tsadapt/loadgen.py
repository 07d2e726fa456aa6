"""A small closed-loop request sender for the demo and the model profiles.

Locust scenarios (``loadtests/``) are the real load generator; this is the quick,
dependency-light way to send N real requests at a fixed concurrency and summarise them.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from tsadapt.client import TorchServeClient


@dataclass(frozen=True)
class LatencySummary:
    """Client-side latency of one batch of requests to one model."""

    model: str
    requests: int
    failed: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float

    @property
    def throughput_rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def summarise(
    model: str, latencies_ms: list[float], failed: int, duration_s: float
) -> LatencySummary:
    arr = np.asarray(latencies_ms, dtype=float) if latencies_ms else np.array([np.nan])
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return LatencySummary(
        model, len(latencies_ms) + failed, failed, duration_s, p50, p90, p99, float(arr.mean())
    )


def send_requests(
    client: TorchServeClient,
    model: str,
    payloads: list[Any],
    concurrency: int,
) -> tuple[LatencySummary, list[tuple[int, str]]]:
    """POST every payload with ``concurrency`` requests in flight; return the summary and
    the (status, body) of each response, in payload order."""

    def one(payload: Any) -> tuple[float, int, str]:
        t0 = time.perf_counter()
        resp = client.predict(model, payload)
        return (time.perf_counter() - t0) * 1000.0, resp.status_code, resp.text

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, payloads))
    duration = time.perf_counter() - started
    ok = [ms for ms, code, _ in results if code == 200]
    summary = summarise(model, ok, len(results) - len(ok), duration)
    return summary, [(code, body) for _, code, body in results]
