"""The fleet simulator: slotted GPUs in the core, G = 1 against the single-host simulator,
make before break."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tsadapt.fleet.catalog import Catalogue, FleetModel
from tsadapt.fleet.constants import FLEET_QUEUE_SIZE, TICK_S
from tsadapt.fleet.interference import slowdown_table
from tsadapt.fleet.sim import FleetSim, delay_ms, pair_name
from tsadapt.fleet.types import SlotAction
from tsadapt.policy.sim.simulator import Simulator
from tsadapt.policy.sim.specs import DeviceSpec, LatencyModel, ModelSpec
from tsadapt.policy.sim.workloads import Poisson
from tsadapt.policy.types import ModelSettings

PROFILES = Path(__file__).resolve().parents[1] / "docs/results/gpu-profiles.json"
GPU = DeviceSpec("gpu0", 1.0, slowdown_table())


def _demo_catalogue(rates: dict[str, float], horizon: float = 30.0) -> Catalogue:
    """The demo models with their measured H200 profiles (tsadapt lab gpu-check), Poisson load."""
    models = []
    for p in json.loads(PROFILES.read_text()):
        if p["model"] not in rates:
            continue
        lat = LatencyModel(table=tuple(zip(p["batch_sizes"], p["median_ms"], strict=True)))
        models.append(
            FleetModel(
                p["model"], "measured", lat, 400.0, 0.75, 8, rates[p["model"]],
                Poisson(rates[p["model"]]),
            )
        )  # fmt: skip
    return Catalogue(tuple(models), 1, "poisson", horizon, 0)


@pytest.mark.parametrize("parallel", [False, True])
def test_one_gpu_matches_the_single_host_simulator(parallel: bool) -> None:
    """G = 1: routing every tick through the fleet layer changes nothing against the
    single-host simulator given all arrivals up front on the same one-GPU host."""
    cat = _demo_catalogue({"image": 40.0, "text": 150.0, "tabular": 300.0})
    layout = [SlotAction(0, 0, 0, 8, parallel), SlotAction(0, 1, 0, 8, parallel)]
    layout += [SlotAction(0, 2, 1, 4, parallel), SlotAction(0, 3, 2, 6, parallel)]
    fleet = FleetSim(cat, seed=3)
    fleet.apply(layout, ready=True)
    got: dict[str, list[np.ndarray]] = {m.name: [] for m in cat.models}
    for k in range(1, int(cat.horizon_s / TICK_S) + 1):
        fleet.advance(k * TICK_S)
        for name, s in fleet.last_stats.items():
            got[name.split("@")[0]].append(s.latencies_ms)
    for name, s in fleet.sim.run_until(np.inf).items():
        got[name.split("@")[0]].append(s.latencies_ms)

    workers = {"image": 2, "text": 1, "tabular": 1}
    batch = {"image": 8, "text": 4, "tabular": 6}
    specs = [
        ModelSpec(
            m.name, m.latency, "gpu0", queue_size=FLEET_QUEUE_SIZE, parallel=parallel,
            initial=ModelSettings(batch[m.name], delay_ms(m, batch[m.name]), workers[m.name]),
        )
        for m in cat.models
    ]  # fmt: skip
    arrivals = {m.name: a for m, a in zip(cat.models, fleet.arrivals, strict=True)}
    single = Simulator(specs, arrivals, [GPU], seed=0)
    want = single.run_until(np.inf)
    for m in cat.models:
        a = np.sort(np.concatenate(got[m.name]))
        assert a.size == len(fleet.arrivals[cat.names.index(m.name)])
        np.testing.assert_allclose(a, np.sort(want[m.name].latencies_ms), rtol=0, atol=1e-9)


def _two(lat_ms: float, parallel: bool) -> dict:
    lat = LatencyModel(alpha_ms=0.0, beta_ms=lat_ms)
    specs = [
        ModelSpec(n, lat, "gpu0", parallel=parallel, initial=ModelSettings(1, 0, 1))
        for n in ("a", "b")
    ]
    sim = Simulator(specs, {"a": np.array([0.0]), "b": np.array([0.0])}, [GPU])
    return sim.run_until(1.0)


def test_sequential_slots_take_turns() -> None:
    st = _two(100.0, parallel=False)
    assert sorted(float(st[n].latencies_ms[0]) for n in "ab") == pytest.approx([100.0, 200.0])


def test_parallel_slots_run_together_with_the_fitted_slowdown() -> None:
    st = _two(100.0, parallel=True)
    f2 = slowdown_table()[1]
    # the first starts alone (f = 1); the second joins with two parallel batches on the GPU
    assert sorted(float(st[n].latencies_ms[0]) for n in "ab") == pytest.approx([100.0, 100 * f2])


def test_device_interference_must_start_at_one() -> None:
    with pytest.raises(ValueError, match="interference"):
        DeviceSpec("gpu0", 1.0, (1.5, 2.0))


def test_a_moved_model_keeps_serving_until_its_new_worker_is_ready() -> None:
    cat = _demo_catalogue({"text": 200.0}, horizon=40.0)
    cat = dataclasses.replace(cat, gpus=2)
    sim = FleetSim(cat, seed=1)
    sim.apply([SlotAction(0, 0, 0, 4)], ready=True)
    for k in range(1, 11):
        sim.advance(float(k))
    sim.apply([SlotAction(1, 0, 0, 4), SlotAction(0, 0, -1, 1)])
    assert sim.sim.config(pair_name("text", 0)).workers == 1  # still serving
    for k in range(11, 41):
        sim.advance(float(k))
    assert sim.sim.config(pair_name("text", 0)).workers == 0
    sim.drain()
    t = sim.totals
    assert t.rejected.sum() == 0
    assert t.good.sum() / t.requests.sum() > 0.99
