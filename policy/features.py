"""Per-model feature vectors for learned policies (the later Gym env and PPO reuse these).

:func:`normalise` maps a :class:`ModelObservation` (plus its limits) to a fixed-length float32
vector with every entry roughly in [0, 1] (rates and latencies are squashed, NaN becomes a
neutral value with a separate "missing" flag), so the same network works for every model.
"""

from __future__ import annotations

import math

import numpy as np

from tsadapt.policy.controller_config import ModelLimits
from tsadapt.policy.types import ModelObservation, Observation

#: Names of the entries of :func:`normalise`'s vector, in order.
FEATURE_NAMES = (
    "arrival_rate",
    "completion_rate",
    "queue_fill",
    "oldest_age_over_slo",
    "slo_attainment",
    "p50_over_slo",
    "p99_over_slo",
    "batch_fill_rate",
    "batch_size",
    "batch_delay",
    "workers",
    "no_traffic",
)
#: Rates are squashed with rate / (rate + RATE_SCALE_RPS): 0.5 at this many requests/s.
RATE_SCALE_RPS = 100.0
#: Latency ratios to the SLO are clipped at this many SLOs, then scaled to [0, 1].
LATENCY_CLIP = 4.0
#: Queue depth that reads as "full" (TorchServe's default job_queue_size).
QUEUE_SCALE = 100.0


def _squash(rate: float) -> float:
    return 0.0 if math.isnan(rate) or rate <= 0 else rate / (rate + RATE_SCALE_RPS)


def _ratio(value_ms: float, slo_ms: float) -> float:
    if math.isnan(value_ms):
        return 0.0
    return min(value_ms / slo_ms, LATENCY_CLIP) / LATENCY_CLIP


def normalise(m: ModelObservation, limits: ModelLimits) -> np.ndarray:
    """One model's observation as a ``len(FEATURE_NAMES)`` float32 vector in [0, 1]."""
    s = m.settings
    no_traffic = math.isnan(m.p99_ms)
    values = (
        _squash(m.arrival_rate_rps),
        _squash(m.completion_rate_rps),
        min(m.queue_depth / QUEUE_SCALE, 1.0),
        _ratio(m.oldest_queued_age_ms, m.slo_ms),
        1.0 if math.isnan(m.slo_attainment) else m.slo_attainment,
        _ratio(m.p50_ms, m.slo_ms),
        _ratio(m.p99_ms, m.slo_ms),
        0.0 if math.isnan(m.batch_fill_rate) else min(m.batch_fill_rate, 1.0),
        s.batch_size / limits.max_batch,
        s.max_batch_delay_ms / max(limits.max_delay_ms, 1),
        s.workers / limits.max_workers,
        1.0 if no_traffic else 0.0,
    )
    return np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)


def normalise_all(observation: Observation, limits: tuple[ModelLimits, ...]) -> np.ndarray:
    """``(len(limits), len(FEATURE_NAMES))`` matrix, one row per configured model."""
    return np.stack([normalise(observation.model(lim.name), lim) for lim in limits])
