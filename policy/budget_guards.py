"""Global caps on workers, granted to the neediest models first: the worker count, the
workers' memory and the GPU memory NVML reports free (step 5 of :func:`policy.guards.guard`)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from tsadapt.policy.controller_config import ControllerConfig
from tsadapt.policy.guard_base import Override, Proposals, set_override, target_value
from tsadapt.policy.types import GpuObservation, Observation


def _by_need(names: list[str], observation: Observation, exempt: tuple[str, ...]) -> list[str]:
    """Emergencies first, then lowest SLO attainment (NaN last), then name."""

    def key(name: str) -> tuple[int, float, str]:
        att = observation.model(name).slo_attainment
        return (0 if name in exempt else 1, 2.0 if math.isnan(att) else att, name)

    return sorted(names, key=key)


def _cap_increases(
    proposals: Proposals,
    observation: Observation,
    exempt: tuple[str, ...],
    cost: Mapping[str, float],
    budget: float,
    guard_name: str,
    unit: str,
) -> tuple[Proposals, list[Override]]:
    """Grant worker increases while sum(workers x cost) stays within ``budget``."""
    out, overrides = dict(proposals), []
    settings = {m.name: m.settings for m in observation.models}
    used = 0.0
    for name, s in settings.items():
        target = target_value(out.get(name), s, "workers")
        used += min(target, s.workers) * cost.get(name, 0.0)  # decreases are always granted
    growing = [
        n for n, a in proposals.items() if a.workers is not None and a.workers > settings[n].workers
    ]
    for name in _by_need(growing, observation, exempt):
        current, wanted = settings[name].workers, proposals[name].workers
        unit_cost = cost.get(name, 0.0)
        granted = current
        while granted < wanted and used + (granted - current + 1) * unit_cost <= budget + 1e-9:
            granted += 1
        used += (granted - current) * unit_cost
        if granted != wanted:
            set_override(
                out,
                overrides,
                name,
                "workers",
                granted if granted != current else None,
                guard_name,
                f"{unit} budget {budget:g} reached",
            )
    return out, overrides


def worker_budget(
    proposals: Proposals,
    observation: Observation,
    config: ControllerConfig,
    exempt: tuple[str, ...] = (),
) -> tuple[Proposals, list[Override]]:
    """Total workers over all models stay within ``worker_budget``."""
    cost = {m.name: 1.0 for m in observation.models}
    return _cap_increases(
        proposals, observation, exempt, cost, config.worker_budget, "worker_budget", "worker"
    )


def memory_budget(
    proposals: Proposals,
    observation: Observation,
    config: ControllerConfig,
    exempt: tuple[str, ...] = (),
) -> tuple[Proposals, list[Override]]:
    """Total worker memory (``memory_mb_per_worker``) stays within ``memory_budget_mb``."""
    if config.memory_budget_mb is None:
        return dict(proposals), []
    cost = {lim.name: lim.memory_mb_per_worker for lim in config.models}
    budget = config.memory_budget_mb
    return _cap_increases(
        proposals, observation, exempt, cost, budget, "memory_budget", "memory (MB)"
    )


def gpu_headroom_mb(gpus: tuple[GpuObservation, ...], reserve_mb: float) -> float | None:
    """MiB a new worker may take: the fullest GPU's free memory minus ``reserve_mb`` (never
    below 0); None when no GPU was read. TorchServe spreads a model's workers over the GPUs
    round-robin, so a new worker may land on the fullest one."""
    if not gpus:
        return None
    return max(0.0, min(g.memory_free_mb for g in gpus) - reserve_mb)


def gpu_memory_budget(
    proposals: Proposals,
    observation: Observation,
    config: ControllerConfig,
    exempt: tuple[str, ...] = (),
) -> tuple[Proposals, list[Override]]:
    """Workers are added only while they fit in the free GPU memory NVML reports (beyond
    ``gpu_memory_reserve_mb``), at ``gpu_memory_mb_per_worker`` each, emergencies included:
    a worker that cannot load its model helps no one. No GPU read: no cap."""
    if config.gpu_memory_reserve_mb is None:
        return dict(proposals), []
    headroom = gpu_headroom_mb(observation.host.gpus, config.gpu_memory_reserve_mb)
    if headroom is None:
        return dict(proposals), []
    cost = {lim.name: lim.gpu_memory_mb_per_worker for lim in config.models}
    in_use = sum(m.settings.workers * cost.get(m.name, 0.0) for m in observation.models)
    return _cap_increases(
        proposals, observation, exempt, cost, in_use + headroom,
        "gpu_memory_budget", "GPU memory (MiB)",
    )  # fmt: skip
