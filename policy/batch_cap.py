"""The profile rule on a controller config: each model's ``max_batch`` lowered to the largest
batch whose profiled latency fits its SLO (:func:`tsadapt.profile.slo_feasible_batch`).

``tsadapt control --profile`` and ``control init`` apply it on the real server, the simulated
sidecar on a scenario's models; it lives in the policy room so that the running controller
never loads the simulator for it."""

from __future__ import annotations

from dataclasses import replace

from tsadapt.policy.controller_config import ConfigError, ControllerConfig, ModelLimits
from tsadapt.profile import LatencyModel, slo_feasible_batch

__all__ = ["apply_latencies", "feasible"]


def feasible(limits: ModelLimits, latency: LatencyModel, outside_ms: float = 0.0) -> ModelLimits:
    """``limits`` with ``max_batch`` lowered to the SLO-feasible batch of ``latency`` with
    ``outside_ms`` of latency outside the worker (:func:`slo_feasible_batch`)."""
    cap = slo_feasible_batch(latency, limits.slo_ms, limits.max_batch, outside_ms)
    return replace(limits, max_batch=max(cap, limits.min_batch))


def apply_latencies(
    config: ControllerConfig, latencies: list[tuple[str, LatencyModel, float, str]]
) -> ControllerConfig:
    """``config`` with each ``(model, latency, outside_ms, source)``'s ``max_batch`` lowered by
    the profile rule (a model only ``default:`` covers gets its own entry)."""
    models = {m.name: m for m in config.models}
    for name, latency, outside_ms, source in latencies:
        base = models.get(name)
        if base is None and config.default is not None:
            base = replace(config.default, name=name)
        if base is None:
            raise ConfigError(source, f"model {name!r} is not in the config (and no default:)")
        models[name] = feasible(base, latency, outside_ms)
    return replace(config, models=tuple(models.values()))
