"""Hand-built observations and configs for the policy/guard unit tests (no server)."""

from __future__ import annotations

import math
from typing import Any

from tsadapt.policy.controller_config import ControllerConfig, ModelLimits
from tsadapt.policy.types import HostObservation, ModelObservation, ModelSettings, Observation


def limits(name: str = "tabular", **kw: Any) -> ModelLimits:
    base: dict[str, Any] = dict(
        slo_ms=100.0, min_workers=1, max_workers=3, min_batch=1, max_batch=32, max_delay_ms=40
    )
    return ModelLimits(name=name, **{**base, **kw})


def config(*models: ModelLimits, **kw: Any) -> ControllerConfig:
    base: dict[str, Any] = dict(worker_budget=6, cooldown_s=3.0, max_batch_step=8)
    return ControllerConfig(models=models or (limits(),), **{**base, **kw})


def model_obs(
    name: str = "tabular",
    *,
    slo_ms: float = 100.0,
    batch_size: int = 8,
    delay: int = 10,
    workers: int = 1,
    rate: float = 100.0,
    queue: int = 0,
    oldest: float = 0.0,
    requests: int = 500,
    attainment: float = 1.0,
    p50: float = 20.0,
    p99: float = 50.0,
    mean: float | None = None,
    fill: float = 0.5,
    errors: float = math.nan,
) -> ModelObservation:
    return ModelObservation(
        name=name,
        slo_ms=slo_ms,
        settings=ModelSettings(batch_size, delay, workers),
        arrival_rate_rps=rate,
        completion_rate_rps=rate,
        queue_depth=queue,
        oldest_queued_age_ms=oldest,
        requests_in_window=requests,
        slo_attainment=attainment,
        p50_ms=p50,
        p99_ms=p99,
        mean_latency_ms=p50 if mean is None else mean,
        batch_fill_rate=fill,
        mean_batch_size=fill * batch_size if not math.isnan(fill) else math.nan,
        error_rate=errors,
    )


def observation(*models: ModelObservation, time_s: float = 100.0) -> Observation:
    return Observation(
        time_s=time_s,
        window_s=5.0,
        models=models or (model_obs(),),
        host=HostObservation(cpu_utilisation_pct=50.0, memory_used_pct=40.0),
    )


IDLE = dict(rate=0.0, requests=0, attainment=math.nan, p50=math.nan, p99=math.nan, fill=math.nan)
