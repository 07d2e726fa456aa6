"""A small closed-loop request sender for the demo and the model profiles.

Locust scenarios (``loadtests/``) are the real load generator; this is the quick,
dependency-light way to send N real requests at a fixed concurrency and summarise them.
"""

from __future__ import annotations

import json
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


JSON_HEADERS = {"Content-Type": "application/json"}


def timed_post(client: TorchServeClient, model: str, body: bytes) -> tuple[float, float, int]:
    """POST one encoded JSON body; (perf_counter at send, at answer, status; 0 = no answer)."""
    t0 = time.perf_counter()
    try:
        code = client.request(
            "inference", "POST", f"predictions/{model}", data=body, headers=JSON_HEADERS
        ).status_code
    except OSError:
        code = 0
    return t0, time.perf_counter(), code


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


@dataclass(frozen=True)
class OpenLoopResult:
    """What an open-loop run sent and got back."""

    intended_rate_rps: float
    duration_s: float
    sent: int
    latencies_ms: tuple[float, ...]  # successful requests only
    failed: int
    max_lateness_ms: float  # worst delay between a request's scheduled and actual send
    #: Every request: (send time in s after the start, latency ms, HTTP status; 0 = no answer).
    records: tuple[tuple[float, float, int], ...] = ()

    @property
    def achieved_rate_rps(self) -> float:
        return self.sent / self.duration_s


def open_loop(
    client: TorchServeClient,
    model: str,
    payload: Any,
    rate_rps: float,
    duration_s: float,
    rng: np.random.Generator,
    max_in_flight: int = 64,
) -> OpenLoopResult:
    """Poisson arrivals at ``rate_rps`` for ``duration_s``: each request is sent at its
    scheduled time whatever the earlier ones are doing (up to ``max_in_flight`` threads)."""
    gaps = rng.exponential(1.0 / rate_rps, size=int(rate_rps * duration_s * 2) + 10)
    schedule = np.cumsum(gaps)
    schedule = schedule[schedule < duration_s]
    body = json.dumps(payload).encode()

    def one() -> tuple[float, float, int]:
        sent, answered, code = timed_post(client, model, body)
        return sent - start, (answered - sent) * 1000.0, code

    lateness = 0.0
    with ThreadPoolExecutor(max_workers=max_in_flight) as pool:
        start = time.perf_counter()
        futures = []
        for at in schedule:
            wait = start + at - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            lateness = max(lateness, time.perf_counter() - start - at)
            futures.append(pool.submit(one))
        results = [f.result() for f in futures]
    ok = tuple(ms for _, ms, code in results if code == 200)
    return OpenLoopResult(
        rate_rps,
        duration_s,
        len(results),
        ok,
        len(results) - len(ok),
        lateness * 1000.0,
        tuple(results),
    )
