"""Simulator.extend_arrivals: arrivals given tick by tick give the run of arrivals known
from the start (same latencies, counters and queue), whatever the knobs do meanwhile."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tsadapt.policy.sim.simulator import Simulator
from tsadapt.policy.sim.specs import DeviceSpec, LatencyModel, ModelSpec
from tsadapt.policy.types import ModelSettings


def _specs(host_cpu_ms: float) -> list[ModelSpec]:
    return [
        ModelSpec(
            "a",
            LatencyModel(alpha_ms=2.0, beta_ms=5.0),
            device="cpu",
            exec_cv=0.2,
            initial=ModelSettings(8, 10, 1),
            load_delay_s=0.5,
            host_cpu_ms=host_cpu_ms,
        ),
        ModelSpec(
            "b",
            LatencyModel(alpha_ms=0.5, beta_ms=1.0),
            device="cpu",
            initial=ModelSettings(1, 0, 1),
        ),  # fmt: skip
    ]


def _arrivals(seed: int, duration: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, rate in (("a", 180.0), ("b", 3.0)):  # b: long gaps with no arrival at all
        t = np.cumsum(rng.exponential(1.0 / rate, size=int(rate * duration * 2)))
        out[name] = t[t < duration]
    return out


def _knobs(sim: Simulator, k: int) -> None:
    if k % 7 == 3:
        sim.set_config("a", batch_size=1 + (k % 16), max_batch_delay_ms=float(k % 20))
    if k % 11 == 5:
        sim.set_config("a", workers=1 + (k % 3))
    if k % 13 == 6:
        sim.set_config("b", batch_size=4, max_batch_delay_ms=5.0, workers=1 + k % 2)


@pytest.mark.parametrize("host_cpu_ms", [0.0, 1.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_tick_by_tick_equals_all_at_once(seed: int, host_cpu_ms: float) -> None:
    duration, tick = 60.0, 1.0
    arr = _arrivals(seed, duration)
    devices = [DeviceSpec("cpu", 2.0)]
    whole = Simulator(_specs(host_cpu_ms), arr, devices, seed=seed)
    lazy = Simulator(_specs(host_cpu_ms), {}, devices, seed=seed)
    for name, a in arr.items():  # the first tick's arrivals, then one tick ahead each time
        lazy.extend_arrivals(name, a[a <= tick])
    for k in range(1, int(duration / tick) + 1):
        t = k * tick
        for name, a in arr.items():
            lazy.extend_arrivals(name, a[(a > t) & (a <= t + tick)])
        sw, sl = whole.run_until(t), lazy.run_until(t)
        for name in arr:
            x, y = sw[name], sl[name]
            np.testing.assert_allclose(np.sort(x.latencies_ms), np.sort(y.latencies_ms))
            assert (x.arrivals, x.completed, x.rejected, x.batches, x.queue_depth) == (
                y.arrivals,
                y.completed,
                y.rejected,
                y.batches,
                y.queue_depth,
            ), (name, t)
            assert math.isclose(x.busy_worker_s, y.busy_worker_s, abs_tol=1e-9)
        _knobs(whole, k)
        _knobs(lazy, k)
    fw, fl = whole.run_until(math.inf), lazy.run_until(math.inf)
    assert {n: s.completed for n, s in fw.items()} == {n: s.completed for n, s in fl.items()}


def test_extend_arrivals_refuses_the_past() -> None:
    sim = Simulator(_specs(0.0), {"a": np.array([0.5, 1.0])}, seed=0)
    sim.run_until(2.0)
    with pytest.raises(ValueError, match="after the last arrival and now"):
        sim.extend_arrivals("a", np.array([1.5]))
    with pytest.raises(ValueError, match="after the last arrival and now"):
        sim.extend_arrivals("a", np.array([3.0, 2.5]))
    sim.extend_arrivals("a", np.array([2.5, 3.0]))
    assert sim.run_until(4.0)["a"].arrivals == 2
