"""One model's view for the shared learned policy: its features plus global context.

The same code builds the vector in the Gym environment (from simulated windows) and in the
sidecar (from the plugin's telemetry), because both produce
:class:`~tsadapt.policy.types.Observation` objects:

``agent_features(obs, name, config) = features.normalise(model, limits) ++ context``

and one network maps it to *that model's* incremental action. A deployed policy applies
the network to every configured model independently, so it runs with any number and mix
of models. :data:`OBS_LAYOUT` names every entry; a policy file records it, and a file whose
layout differs from the running code's is refused.

Action (DNN-Adapt's incremental form, per model): ``MultiDiscrete([10, 3, 3])`` =
(batch delta in -4..5, delay step -1/0/+1 x ``delay_step_ms``, worker delta -1/0/+1);
``NOOP_ACTION`` = (delta 0, 0, 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tsadapt.policy.controller_config import ControllerConfig, ModelLimits
from tsadapt.policy.features import (
    FEATURE_NAMES,
    LATENCY_CLIP,
    QUEUE_SCALE,
    RATE_SCALE_RPS,
    normalise,
)
from tsadapt.policy.types import Action, ModelObservation, Observation

#: Global-context entries appended to each model's features.
CONTEXT_NAMES = (
    "budget_used",  # workers of all models / worker budget
    "budget_free",  # workers this model could still add / its max_workers
    "host_cpu",  # host CPU utilisation / 100 (0 when unknown)
    "max_delay_over_slo",  # how much of the SLO the delay limit may take
    "rate_share",  # this model's arrival rate / all models' arrival rate
    "others_shortfall",  # requests the other models miss (late or lost) / all arrivals
)
OBS_LAYOUT = tuple(FEATURE_NAMES) + CONTEXT_NAMES
#: Constants of the normalisation; a policy file trained with others is refused.
FEATURE_CONSTANTS = {
    "RATE_SCALE_RPS": RATE_SCALE_RPS,
    "LATENCY_CLIP": LATENCY_CLIP,
    "QUEUE_SCALE": QUEUE_SCALE,
}
BATCH_DELTAS = tuple(range(-4, 6))
STEP_DIRS = (-1, 0, 1)
ACTION_NVEC = (len(BATCH_DELTAS), len(STEP_DIRS), len(STEP_DIRS))
NOOP_ACTION = (BATCH_DELTAS.index(0), 1, 1)
ACTION_LAYOUT = {
    "batch_delta": list(BATCH_DELTAS),
    "delay_step_dir": list(STEP_DIRS),
    "worker_delta": list(STEP_DIRS),
}


def _finite_or(x: float, default: float) -> float:
    return x if math.isfinite(x) else default


def context(
    observation: Observation, m: ModelObservation, limits: ModelLimits, worker_budget: int
) -> np.ndarray:
    """The global context of model ``m`` (see :data:`CONTEXT_NAMES`), each in [0, 1]."""
    used = observation.total_workers
    free = max(0, min(worker_budget - used, limits.max_workers - m.settings.workers))
    cpu = observation.host.cpu_utilisation_pct
    rates = {o.name: _finite_or(o.arrival_rate_rps, 0.0) for o in observation.models}
    total = sum(rates.values())
    missed = sum(
        rates[o.name] * (1.0 - _finite_or(o.slo_attainment, 1.0))
        for o in observation.models
        if o.name != m.name
    )
    values = (
        used / worker_budget,
        free / limits.max_workers,
        0.0 if math.isnan(cpu) else cpu / 100.0,
        limits.max_delay_ms / m.slo_ms,
        rates[m.name] / total if total > 0 else 0.0,
        missed / total if total > 0 else 0.0,
    )
    return np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)


def agent_features(observation: Observation, name: str, config: ControllerConfig) -> np.ndarray:
    """``len(OBS_LAYOUT)`` float32 vector for model ``name``."""
    m, lim = observation.model(name), config.limits(name)
    return np.concatenate([normalise(m, lim), context(observation, m, lim, config.worker_budget)])


def all_agent_features(observation: Observation, config: ControllerConfig) -> np.ndarray:
    """``(models, len(OBS_LAYOUT))``: one row per configured model."""
    return np.stack([agent_features(observation, n, config) for n in config.model_names])


def within_limits(name: str, limits: ModelLimits, batch: int, delay: int, workers: int) -> Action:
    """The :class:`Action` setting ``name`` to these values, each held within ``limits``."""
    return Action(
        name,
        batch_size=min(max(batch, limits.min_batch), limits.max_batch),
        max_batch_delay_ms=min(max(delay, 0), limits.max_delay_ms),
        workers=min(max(workers, limits.min_workers), limits.max_workers),
    )


def decode_action(
    action: Sequence[int], m: ModelObservation, limits: ModelLimits, delay_step_ms: int
) -> Action:
    """The absolute :class:`Action` an incremental action asks for (within the limits)."""
    b_i, d_i, w_i = (int(x) for x in action)
    s = m.settings
    return within_limits(
        m.name,
        limits,
        s.batch_size + BATCH_DELTAS[b_i],
        s.max_batch_delay_ms + STEP_DIRS[d_i] * delay_step_ms,
        s.workers + STEP_DIRS[w_i],
    )
