"""Host CPU outside the workers (``host_cpu_ms``) as load that competes with them."""

from __future__ import annotations

import numpy as np
import pytest

from tsadapt.policy.sim.batching import host_load
from tsadapt.policy.sim.simulator import Simulator
from tsadapt.policy.sim.specs import DeviceSpec, LatencyModel, ModelSpec
from tsadapt.policy.types import ModelSettings

TEN_MS = LatencyModel(alpha_ms=0.0, beta_ms=10.0)
#: ten requests in second 0 (every 0.1 s), one in second 2
ARRIVALS = np.array([0.1 * k for k in range(10)] + [2.5])


def test_host_load_is_cpu_per_second_bin() -> None:
    load = host_load([ARRIVALS, np.array([0.5])], [100.0, 200.0])
    # second 0: 10 x 100 ms + 1 x 200 ms = 1.2 CPU-s; second 1: none; second 2: 0.1
    assert load == pytest.approx([1.2, 0.0, 0.1])
    assert host_load([np.empty(0)], [50.0]) == []


def _latencies(host_cpu_ms: float, cores: float, cpu_scale: float = 1.0) -> np.ndarray:
    spec = ModelSpec(
        "m", TEN_MS, device="cpu", initial=ModelSettings(1, 1.0, 1), host_cpu_ms=host_cpu_ms
    )
    device = DeviceSpec("cpu", cores, cpu_scale=cpu_scale)
    sim = Simulator([spec], {"m": ARRIVALS}, [device], seed=0)
    return sim.run_until(100.0)["m"].latencies_ms


@pytest.mark.parametrize(
    ("host_cpu_ms", "cores", "first_second_ms", "last_ms"),
    [
        (0.0, 1.0, 10.0, 10.0),  # no host load: the profile's time
        (100.0, 1.0, 20.0, 11.0),  # 1 core busy outside + 1 worker thread on 1 core: x2
        (100.0, 2.0, 10.0, 10.0),  # 2 cores: 1 + 1 threads fit, no slow-down
        (200.0, 2.0, 15.0, 10.0),  # 2 cores busy outside + 1 thread on 2 cores: x1.5
    ],
)
def test_host_load_slows_batches_when_it_oversubscribes_the_cores(
    host_cpu_ms: float, cores: float, first_second_ms: float, last_ms: float
) -> None:
    lat = _latencies(host_cpu_ms, cores)
    # batch size 1: each request runs on arrival, in its arrival's second
    np.testing.assert_allclose(lat[:10], first_second_ms)
    np.testing.assert_allclose(lat[10], last_ms)


def test_host_cpu_ms_must_be_finite_and_not_negative() -> None:
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="host_cpu_ms"):
            ModelSpec("m", TEN_MS, host_cpu_ms=bad)


@pytest.mark.parametrize(
    ("host_cpu_ms", "cpu_scale", "first_second_ms", "last_ms"),
    [
        (0.0, 1.5, 15.0, 15.0),  # a machine 1.5x slower: every batch takes 1.5x the profile
        (0.0, 0.5, 5.0, 5.0),  # ... or 2x faster
        (100.0, 1.5, 37.5, 17.25),  # the host's work too: 1.5 cores busy + 1 thread, x2.5
    ],
)
def test_cpu_scale_scales_every_cpu_cost_of_the_device(
    host_cpu_ms: float, cpu_scale: float, first_second_ms: float, last_ms: float
) -> None:
    lat = _latencies(host_cpu_ms, 1.0, cpu_scale)
    np.testing.assert_allclose(lat[:10], first_second_ms)
    np.testing.assert_allclose(lat[10], last_ms)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_cpu_scale_must_be_finite_and_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="cpu_scale"):
        DeviceSpec("cpu", 1.0, cpu_scale=bad)
