"""The fleet simulator against results worked out by hand or in closed form (queueing theory),
not against another run of the same discrete-event core.

* One worker at batch 1 with a deterministic service time S and Poisson arrivals is an
  M/D/1 queue: mean wait W_q = rho S / (2 (1 - rho)) (Pollaczek-Khinchine with zero service
  variance), and an arrival finds the server idle with probability 1 - rho (PASTA), so that
  share of requests is answered in exactly S.
* A model on two GPUs gets its Poisson arrivals split at random in proportion to capacity
  (independent thinning), so each GPU is an M/D/1 queue at half the rate.
* Two saturated sequential slots on one GPU take turns: each finishes one batch of b every
  2 S, b / (2 S) requests/s each; parallel slots run at once, each batch taking f(2) S, so each
  serves b / (f(2) S) requests/s (f from :mod:`tsadapt.fleet.interference`).
"""

from __future__ import annotations

import numpy as np
import pytest

from tsadapt.fleet.catalog import Catalogue, FleetModel
from tsadapt.fleet.constants import TICK_S
from tsadapt.fleet.interference import slowdown_table
from tsadapt.fleet.sim import FleetSim
from tsadapt.fleet.types import SlotAction
from tsadapt.policy.sim.specs import LatencyModel
from tsadapt.policy.sim.workloads import Poisson


def _catalogue(rates: list[float], service_ms: float, gpus: int, horizon_s: float) -> Catalogue:
    """Models with a constant batch time (``service_ms`` whatever the batch), Poisson load and
    a 100 ms SLO (so a batch waits at most 50 ms - ``service_ms`` to fill)."""
    lat = LatencyModel(alpha_ms=0.0, beta_ms=service_ms)
    models = tuple(
        FleetModel(f"q{i}", "closed-form", lat, 100.0, 1.0, 64, r, Poisson(r))
        for i, r in enumerate(rates)
    )
    return Catalogue(models, gpus, "poisson", horizon_s, 0)


def _run(cat: Catalogue, layout: list[SlotAction], seed: int):
    """Run ``layout`` (ready at t = 0) tick by tick over the horizon, as every policy runs,
    then drain. Returns the simulator, every answered request's latency (ms) per model and
    the requests per model completed within the horizon."""
    sim = FleetSim(cat, seed=seed)
    sim.apply(layout, ready=True)
    lat: list[list[np.ndarray]] = [[] for _ in cat.models]
    in_horizon = np.zeros(len(cat.models), dtype=np.int64)
    for k in range(1, int(round(cat.horizon_s / TICK_S)) + 1):
        sim.advance(k * TICK_S)
        for name, s in sim.last_stats.items():
            m = cat.names.index(name.split("@")[0])
            lat[m].append(s.latencies_ms)
            in_horizon[m] += s.completed
    for name, s in sim.sim.run_until(np.inf).items():
        lat[cat.names.index(name.split("@")[0])].append(s.latencies_ms)
    return sim, [np.concatenate(x) for x in lat], in_horizon


def md1_wait_ms(rate: float, service_ms: float) -> float:
    """Mean queueing wait of an M/D/1 queue (Pollaczek-Khinchine, zero service variance)."""
    rho = rate * service_ms / 1000.0
    return rho * service_ms / (2.0 * (1.0 - rho))


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.8])
def test_one_worker_at_batch_one_is_an_md1_queue(rho: float) -> None:
    service = 4.0
    rate = rho * 1000.0 / service
    cat = _catalogue([rate], service, gpus=1, horizon_s=600.0)
    sim, lat, _ = _run(cat, [SlotAction(0, 0, 0, 1)], seed=11)
    got = lat[0]
    assert got.size == sim.totals.requests[0] > 0.95 * rate * cat.horizon_s
    assert sim.totals.rejected.sum() == 0
    # every request is served in S plus its wait; none faster
    assert got.min() == pytest.approx(service, abs=1e-6)
    wait = float(got.mean()) - service
    assert wait == pytest.approx(md1_wait_ms(rate, service), rel=0.06)
    idle = float(np.mean(got <= service + 1e-6))
    assert idle == pytest.approx(1.0 - rho, abs=0.01)


def test_a_model_on_two_gpus_is_two_md1_queues_at_half_the_rate() -> None:
    service, rate = 5.0, 280.0  # rho = 1.4 on one GPU; 0.7 on each of two
    cat = _catalogue([rate], service, gpus=2, horizon_s=600.0)
    sim, lat, _ = _run(cat, [SlotAction(0, 0, 0, 1), SlotAction(1, 0, 0, 1)], seed=5)
    assert lat[0].size == sim.totals.requests[0]
    wait = float(lat[0].mean()) - service
    assert wait == pytest.approx(md1_wait_ms(rate / 2, service), rel=0.06)
    assert float(np.mean(lat[0] <= service + 1e-6)) == pytest.approx(0.3, abs=0.01)


@pytest.mark.parametrize("parallel", [False, True])
def test_two_saturated_slots_share_one_gpu_as_worked_out(parallel: bool) -> None:
    """Both models offered 3x what one GPU serves them alone, so their queues never empty."""
    service, batch, horizon = 10.0, 8, 60.0
    alone = 1000.0 * batch / service
    cat = _catalogue([3 * alone, 3 * alone], service, gpus=1, horizon_s=horizon)
    layout = [SlotAction(0, 0, 0, batch, parallel), SlotAction(0, 1, 1, batch, parallel)]
    sim, lat, served = _run(cat, layout, seed=2)
    per_batch_ms = (slowdown_table()[1] if parallel else 2.0) * service
    want = 1000.0 * batch / per_batch_ms  # requests/s per model
    for m in (0, 1):
        assert served[m] == pytest.approx(want * horizon, rel=0.01)
    # the two models get equal turns
    assert served[0] == pytest.approx(served[1], abs=batch)
    # a request that found the queue full (1000 jobs) waits ~1000 / want s for its turn
    assert float(np.median(lat[0])) == pytest.approx(1000.0 * 1000 / want, rel=0.05)
