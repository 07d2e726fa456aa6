"""The GPU memory guard: NVML's free memory decides whether a worker may be added."""

from __future__ import annotations

from dataclasses import replace

import pytest
from controller_helpers import config, limits, model_obs, observation

from tsadapt.policy.budget_guards import gpu_headroom_mb, gpu_memory_budget
from tsadapt.policy.controller_config import ConfigError
from tsadapt.policy.guards import GuardState, guard
from tsadapt.policy.types import Action, GpuObservation
from tsadapt.sidecar.observer import GpuProbe

GIB = 1024.0


def gpu(index: int, used_mb: float, total_mb: float = 8 * GIB) -> GpuObservation:
    return GpuObservation(index, utilisation_pct=50.0, memory_used_mb=used_mb,
                          memory_total_mb=total_mb)  # fmt: skip


def on_gpus(obs, *gpus: GpuObservation):  # noqa: ANN001, ANN201 - test helper
    return replace(obs, host=replace(obs.host, gpus=gpus))


@pytest.mark.parametrize(
    ("gpus", "reserve", "expected"),
    [
        ((), 500.0, None),  # no GPU read: no cap
        ((gpu(0, 6 * GIB),), 512.0, 2 * GIB - 512),
        ((gpu(0, 1 * GIB), gpu(1, 7 * GIB)), 0.0, 1 * GIB),  # the fullest GPU decides
        ((gpu(0, 7.9 * GIB),), 512.0, 0.0),  # never below zero
    ],
)
def test_gpu_headroom(gpus: tuple, reserve: float, expected: float | None) -> None:
    got = gpu_headroom_mb(gpus, reserve)
    assert got == (None if expected is None else pytest.approx(expected))


CFG = config(
    limits("image", max_workers=4, gpu_memory_mb_per_worker=1000),
    limits("text", max_workers=4, gpu_memory_mb_per_worker=600),
    gpu_memory_reserve_mb=500,
)


@pytest.mark.parametrize(
    ("used_mb", "granted"),
    [(8 * GIB - 3600, 4), (8 * GIB - 2600, 3), (8 * GIB - 1400, None), (1000.0, 4)],
)
def test_gpu_memory_budget_grants_what_fits(used_mb: float, granted: int | None) -> None:
    obs = on_gpus(observation(model_obs("image", workers=1), model_obs("text", workers=1)),
                  gpu(0, used_mb))  # fmt: skip
    out, overrides = gpu_memory_budget({"image": Action("image", workers=4)}, obs, CFG)
    assert out["image"].workers == granted
    assert bool(overrides) == (granted != 4)
    assert all(o.guard == "gpu_memory_budget" for o in overrides)


def test_gpu_memory_budget_is_off_without_a_gpu_or_a_reserve() -> None:
    proposals = {"image": Action("image", workers=4)}
    plain = observation(model_obs("image", workers=1), model_obs("text", workers=1))
    assert gpu_memory_budget(proposals, plain, CFG) == (proposals, [])
    full = on_gpus(plain, gpu(0, 8 * GIB))
    no_reserve = replace(CFG, gpu_memory_reserve_mb=None)
    assert gpu_memory_budget(proposals, full, no_reserve) == (proposals, [])


def test_guard_holds_even_an_emergency_to_the_gpu_memory() -> None:
    collapsed = model_obs("image", workers=1, attainment=0.1, requests=100)
    obs = on_gpus(observation(collapsed, model_obs("text", workers=1)), gpu(0, 8 * GIB - 600))
    result = guard((), obs, CFG, GuardState())
    assert "image" in result.emergencies
    assert all(a.workers in (None, 1) for a in result.actions if a.model == "image")
    assert any(o.guard == "gpu_memory_budget" for o in result.overrides)


def test_config_rejects_a_negative_reserve() -> None:
    with pytest.raises(ConfigError, match="gpu_memory_reserve_mb"):
        replace(CFG, gpu_memory_reserve_mb=-1.0)
    with pytest.raises(ConfigError, match="gpu_memory_mb_per_worker"):
        config(limits("image", gpu_memory_mb_per_worker=-5))


def test_probe_without_a_gpu_reads_nothing() -> None:
    """This machine has pynvml but no NVIDIA driver: the real absence path."""
    probe = GpuProbe()
    assert probe.read() == ()
    assert probe.process_memory_mb() == {}
