"""SLO metrics shared by the simulator and the real-server benchmark.

Conventions: latencies in milliseconds; ``requests`` counts every request sent,
including those rejected (503), failed or never answered, and each of those counts as
an SLO violation. So ``slo_attainment = (# completed with latency <= slo_ms) / requests``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["ModelResult", "goodput_rps", "percentile", "slo_attainment", "summarize", "pool"]


def percentile(latencies_ms: np.ndarray, q: float) -> float:
    """The ``q``-th percentile (0..100, linear interpolation); NaN if empty."""
    x = np.asarray(latencies_ms, dtype=np.float64)
    if x.size == 0:
        return math.nan
    return float(np.percentile(x, q))


def within_slo(latencies_ms: np.ndarray, slo_ms: float) -> int:
    """Number of completed requests with latency ``<= slo_ms``."""
    return int(np.count_nonzero(np.asarray(latencies_ms) <= slo_ms))


def slo_attainment(latencies_ms: np.ndarray, slo_ms: float, requests: int | None = None) -> float:
    """Fraction (0..1) of ``requests`` completed within ``slo_ms``.

    ``requests`` defaults to ``len(latencies_ms)``; pass the number sent so that
    rejected and unanswered requests count as violations. 1.0 when nothing was sent.
    """
    n = len(latencies_ms) if requests is None else int(requests)
    if n < len(latencies_ms):
        raise ValueError(f"requests ({n}) < completed latencies ({len(latencies_ms)})")
    return within_slo(latencies_ms, slo_ms) / n if n else 1.0


def goodput_rps(latencies_ms: np.ndarray, slo_ms: float, duration_s: float) -> float:
    """Requests completed within ``slo_ms`` per second of ``duration_s``."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    return within_slo(latencies_ms, slo_ms) / duration_s


@dataclass(frozen=True)
class ModelResult:
    """Outcome of one model (or of all models pooled, ``name == "overall"``)."""

    name: str
    slo_ms: float | None
    requests: int
    completed: int
    rejected: int
    failed: int
    good: int
    slo_attainment: float
    goodput_rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    worker_seconds: float
    busy_worker_seconds: float
    mean_batch_size: float

    @property
    def unfinished(self) -> int:
        """Requests neither completed, rejected nor failed (still queued at the end)."""
        return self.requests - self.completed - self.rejected - self.failed

    def as_dict(self) -> dict[str, float | int | str | None]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["unfinished"] = self.unfinished
        return d


def summarize(
    name: str,
    latencies_ms: np.ndarray,
    slo_ms: float,
    requests: int,
    duration_s: float,
    *,
    rejected: int = 0,
    failed: int = 0,
    worker_seconds: float = 0.0,
    busy_worker_seconds: float = 0.0,
    mean_batch_size: float = math.nan,
) -> ModelResult:
    """One model's :class:`ModelResult` from its completed latencies and counters."""
    lat = np.asarray(latencies_ms, dtype=np.float64)
    good = within_slo(lat, slo_ms)
    return ModelResult(
        name=name,
        slo_ms=slo_ms,
        requests=int(requests),
        completed=int(lat.size),
        rejected=int(rejected),
        failed=int(failed),
        good=good,
        slo_attainment=slo_attainment(lat, slo_ms, requests),
        goodput_rps=good / duration_s if duration_s > 0 else math.nan,
        p50_ms=percentile(lat, 50.0),
        p99_ms=percentile(lat, 99.0),
        mean_ms=float(lat.mean()) if lat.size else math.nan,
        worker_seconds=float(worker_seconds),
        busy_worker_seconds=float(busy_worker_seconds),
        mean_batch_size=float(mean_batch_size),
    )


def pool(
    results: Iterable[ModelResult], latencies_ms: Iterable[np.ndarray], duration_s: float
) -> ModelResult:
    """Pool per-model results (each against its own SLO) into an ``overall`` result."""
    rs = list(results)
    lat = np.concatenate([np.asarray(x, dtype=np.float64) for x in latencies_ms] or [[]])
    requests = sum(r.requests for r in rs)
    good = sum(r.good for r in rs)
    completed = sum(r.completed for r in rs)
    batches = sum(r.completed / r.mean_batch_size for r in rs if r.mean_batch_size > 0)
    return ModelResult(
        name="overall",
        slo_ms=None,
        requests=requests,
        completed=completed,
        rejected=sum(r.rejected for r in rs),
        failed=sum(r.failed for r in rs),
        good=good,
        slo_attainment=good / requests if requests else 1.0,
        goodput_rps=good / duration_s if duration_s > 0 else math.nan,
        p50_ms=percentile(lat, 50.0),
        p99_ms=percentile(lat, 99.0),
        mean_ms=float(lat.mean()) if lat.size else math.nan,
        worker_seconds=sum(r.worker_seconds for r in rs),
        busy_worker_seconds=sum(r.busy_worker_seconds for r in rs),
        mean_batch_size=completed / batches if batches else math.nan,
    )
