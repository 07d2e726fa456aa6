"""Simulator semantics on hand-computed cases, queueing theory and determinism."""

from __future__ import annotations

import numpy as np
import pytest

from tsadapt.policy.sim.simulator import Simulator
from tsadapt.policy.sim.specs import DeviceSpec, LatencyModel, ModelSpec
from tsadapt.policy.sim.workloads import Poisson
from tsadapt.policy.types import ModelSettings

PER_REQ_10MS = LatencyModel(alpha_ms=10.0, beta_ms=0.0)


def make(
    arrivals,
    *,
    batch=1,
    delay_ms=100.0,
    workers=1,
    latency=PER_REQ_10MS,
    queue_size=100,
    devices=(),
    load_delay_s=1.0,
    exec_cv=0.0,
    seed=0,
):
    spec = ModelSpec(
        "m",
        latency,
        queue_size=queue_size,
        load_delay_s=load_delay_s,
        exec_cv=exec_cv,
        initial=ModelSettings(batch, delay_ms, workers),
    )
    return Simulator([spec], {"m": np.asarray(arrivals, dtype=float)}, devices, seed=seed)


def lat(sim, t=100.0):
    return sim.run_until(t)["m"].latencies_ms


def test_full_batch_leaves_before_the_delay():
    # 4th request at 0.03 fills the batch; 4 x 10 ms -> done at 0.07
    sim = make([0.0, 0.01, 0.02, 0.03], batch=4, delay_ms=1000)
    np.testing.assert_allclose(lat(sim), [70, 60, 50, 40])


def test_partial_batch_leaves_at_first_plus_delay():
    sim = make([0.5, 0.52], batch=4, delay_ms=50)
    s = sim.run_until(10.0)["m"]
    # dispatched at 0.55, 2 x 10 ms -> 0.57
    np.testing.assert_allclose(s.latencies_ms, [70, 50])
    assert s.batches == 1 and s.batch_fill_rate == pytest.approx(0.5)


def test_delay_counts_from_when_the_worker_takes_the_first_job():
    # batch 1 = {0, 0.001} runs 0.001..0.101 (2 x 50 ms); job 0.01 waits in the queue,
    # is taken at 0.101, the delay runs to 0.201, 50 ms exec -> 0.251.
    sim = make([0.0, 0.001, 0.01], batch=2, delay_ms=100, latency=LatencyModel(50, 0))
    np.testing.assert_allclose(lat(sim), [101, 100, 241])


def test_queued_jobs_at_least_batch_size_leave_at_once():
    # worker busy until 0.05 with job 0 (exec 50 ms); 3 more queue; batch 2 -> two full
    # batches back to back with no delay wait.
    sim = make([0.0, 0.01, 0.02, 0.03], batch=2, delay_ms=1000, latency=LatencyModel(0, 50))
    s = sim.run_until(10)["m"]
    # job 0 taken at 0 waits for a 2nd; 0.01 fills it -> runs 0.01..0.06; meanwhile
    # {0.02, 0.03} queue up and leave together at 0.06 -> done 0.11
    assert s.batches == 2
    assert sorted(np.round(s.latencies_ms, 6)) == pytest.approx(sorted([60, 50, 90, 80]))


def test_fifo_order_and_latency_is_wait_plus_exec():
    sim = make([0.0, 0.001, 0.002], batch=1)
    np.testing.assert_allclose(lat(sim), [10, 19, 28])


def test_zero_delay_takes_only_what_is_queued():
    sim = make([0.0, 0.0, 0.005], batch=8, delay_ms=0)
    s = sim.run_until(10)["m"]
    # {0, 0} leave at 0 (20 ms); 0.005 queued, taken at 0.02, leaves alone -> 0.03
    np.testing.assert_allclose(s.latencies_ms, [20, 20, 25])
    assert s.batches == 2


def test_zero_delay_caps_batches_at_two_like_torchserve():
    # 6 queued jobs, batch size 8, delay 0: TorchServe forms 2 + 2 + 2 (measured on 0.12).
    sim = make([0.0] * 6, batch=8, delay_ms=0)
    s = sim.run_until(10)["m"]
    assert s.batches == 3
    np.testing.assert_allclose(sorted(s.latencies_ms), [20, 20, 40, 40, 60, 60])
    # any positive delay takes the whole queue at once
    s = make([0.0] * 6, batch=8, delay_ms=1).run_until(10)["m"]
    assert s.batches == 1


def test_capacity_overflow_is_rejected():
    # one worker busy 0..1 with job 0; queue of 2 holds 0.1, 0.2; 0.3 and 0.4 get 503
    sim = make([0.0, 0.1, 0.2, 0.3, 0.4], latency=LatencyModel(0, 1000), queue_size=2)
    s = sim.run_until(0.5)["m"]
    assert (s.arrivals, s.rejected, s.queue_depth) == (5, 2, 2)
    assert s.oldest_wait_s == pytest.approx(0.4)
    s = sim.run_until(10)["m"]
    assert s.completed + 0 == 3 and s.rejected == 0


def test_no_worker_rejects_everything():
    sim = make([0.1, 0.2], workers=0)
    s = sim.run_until(1)["m"]
    assert (s.arrivals, s.rejected, s.completed) == (2, 2, 0)


@pytest.mark.parametrize(
    ("capacity", "expected"),
    [(3.0, [100, 100, 100]), (1.0, [100, 200, 300]), (2.0, [100, 100, 150])],
)
def test_parallel_workers_and_device_contention(capacity, expected):
    sim = make(
        [0.0, 0.0, 0.0],
        workers=3,
        latency=LatencyModel(0, 100),
        devices=[DeviceSpec("cpu", capacity)],
    )
    np.testing.assert_allclose(sorted(lat(sim)), expected)


def test_contention_is_shared_across_models_on_a_device():
    a = ModelSpec("a", LatencyModel(0, 100), initial=ModelSettings(1, 0, 1))
    b = ModelSpec("b", LatencyModel(0, 100), initial=ModelSettings(1, 0, 1))
    sim = Simulator([a, b], {"a": np.array([0.0]), "b": np.array([0.05])}, [DeviceSpec("cpu", 1)])
    s = sim.run_until(10)
    assert s["a"].latencies_ms[0] == pytest.approx(100)
    assert s["b"].latencies_ms[0] == pytest.approx(200)  # 2 active threads on 1 core


def test_scale_up_after_load_delay():
    sim = make([0.5, 1.5, 1.6], workers=0, load_delay_s=1.0)
    s = sim.run_until(1.0)["m"]
    assert s.rejected == 1
    sim.set_config("m", workers=1)
    s = sim.run_until(1.9)["m"]
    assert s.completed == 0 and s.queue_depth == 2 and s.ready_workers == 0
    s = sim.run_until(10)["m"]
    # worker ready at 2.0: 1.5 -> done 2.01, 1.6 -> 2.02
    np.testing.assert_allclose(s.latencies_ms, [510, 420])


def test_scale_down_kills_newest_and_requeues_its_batch_at_the_head():
    sim = make([0.0, 0.0, 0.2], workers=2, latency=LatencyModel(0, 1000), queue_size=10)
    sim.run_until(0.5)
    sim.set_config("m", workers=1)
    s = sim.run_until(10)["m"]
    # worker 0 done at 1.0 with job 0; killed job (arrived 0.0) goes before 0.2 -> 2.0,
    # then 0.2 -> 3.0
    np.testing.assert_allclose(s.latencies_ms, [1000, 2000, 2800])
    assert s.failed == 0 and s.busy_worker_s == pytest.approx(2.5)  # in (0.5, 10]


def test_requeue_into_full_queue_fails():
    # 0.0 and 0.01 run on two workers; 0.1 fills the queue of 1; the killed job is lost
    sim = make([0.0, 0.01, 0.1], workers=2, latency=LatencyModel(0, 1000), queue_size=1)
    sim.run_until(0.5)
    sim.set_config("m", workers=1)
    s = sim.run_until(10)["m"]
    assert s.failed == 1 and s.completed == 2


def test_killing_the_aggregating_worker_requeues_its_jobs():
    sim = make([0.0, 0.1], batch=4, delay_ms=1000, workers=1, queue_size=10)
    sim.run_until(0.5)
    sim.set_config("m", workers=0)
    s = sim.run_until(5)["m"]
    assert s.queue_depth == 2 and s.completed == 0 and s.failed == 0
    sim.set_config("m", workers=1)  # ready at 6.0, takes both at once, waits up to 1 s
    s = sim.run_until(20)["m"]
    np.testing.assert_allclose(sorted(s.latencies_ms), [6920, 7020])


def test_batch_size_change_applies_to_the_forming_batch():
    arr = [0.0, 0.1, 0.2, 0.3, 0.4]
    sim = make(arr, batch=8, delay_ms=1000, latency=LatencyModel(0, 10))
    sim.run_until(0.15)  # holder has {0, 0.1}
    sim.set_config("m", batch_size=3)
    s = sim.run_until(0.25)["m"]
    assert s.batches == 1 and s.batch_size_sum == 3  # left at 0.2 with 3 jobs


def test_batch_size_drop_below_held_takes_one_more_job():
    # TorchServe re-checks the loop only after a poll returns: holding 3 when batch
    # size drops to 2, the worker still takes the next job before it sends.
    arr = [0.0, 0.1, 0.2, 0.3, 0.4]
    sim = make(arr, batch=8, delay_ms=1000, latency=LatencyModel(0, 10))
    sim.run_until(0.25)
    sim.set_config("m", batch_size=2)
    s = sim.run_until(0.35)["m"]
    assert s.batches == 1 and s.batch_size_sum == 4


def test_delay_change_waits_for_next_lock_acquisition():
    sim = make([0.0], batch=8, delay_ms=1000, latency=LatencyModel(0, 10))
    sim.run_until(0.1)
    sim.set_config("m", max_batch_delay_ms=10)
    s = sim.run_until(0.9)["m"]
    assert s.batches == 0
    s = sim.run_until(2)["m"]
    np.testing.assert_allclose(s.latencies_ms, [1010])
    assert sim.config("m").max_batch_delay_ms == 10


def _poisson_run(seed, rate=150.0, duration=200.0, **kw):
    arr = Poisson(rate).arrivals(duration, np.random.default_rng(seed))
    return make(arr, seed=seed, **kw)


def test_deterministic_with_seed():
    kw = dict(batch=4, delay_ms=5, workers=2, latency=LatencyModel(2, 5), exec_cv=0.3)
    a = _poisson_run(1, **kw).run_until(300)["m"].latencies_ms
    b = _poisson_run(1, **kw).run_until(300)["m"].latencies_ms
    c = _poisson_run(2, **kw).run_until(300)["m"].latencies_ms
    np.testing.assert_array_equal(a, b)
    assert len(a) != len(c) or not np.array_equal(a, c)


def test_interval_stats_add_up():
    sim = _poisson_run(3, batch=4, delay_ms=5, workers=2, latency=LatencyModel(2, 5))
    parts = [sim.run_until(t)["m"] for t in np.arange(1.0, 201.0, 1.0)]
    parts.append(sim.run_until(float("inf"))["m"])
    total_arr = sum(p.arrivals for p in parts)
    assert total_arr == len(sim._models["m"].arr)
    assert sum(p.completed for p in parts) == total_arr
    assert sum(len(p.latencies_ms) for p in parts) == total_arr
    assert sum(p.worker_s for p in parts[:-1]) == pytest.approx(2 * 200.0)
    assert all(0 < p.batch_fill_rate <= 1.0 for p in parts[:-1] if p.batches)


def test_littles_law():
    rate, duration, dt = 300.0, 400.0, 0.0137
    sim = _poisson_run(
        4,
        rate=rate,
        duration=duration,
        batch=8,
        delay_ms=20,
        workers=2,
        latency=LatencyModel(3, 10),
    )
    in_system, arrived, done, lats = [], 0, 0, []
    for t in np.arange(dt, duration, dt):
        s = sim.run_until(t)["m"]
        arrived += s.arrivals - s.rejected
        done += s.completed
        lats.append(s.latencies_ms)
        in_system.append(arrived - done)
    lat_s = np.concatenate(lats) / 1000.0
    throughput = done / duration
    assert np.mean(in_system) == pytest.approx(throughput * lat_s.mean(), rel=0.03)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_mean_wait_matches_theory(rho):
    service_s = 0.01
    mu = 1.0 / service_s
    arr = Poisson(rho * mu).arrivals(4000.0, np.random.default_rng(11))
    sim = make(arr, batch=1, latency=LatencyModel(0, service_s * 1000), queue_size=10**6)
    s = sim.run_until(float("inf"))["m"]
    assert s.completed == len(arr)
    wait_s = s.latencies_ms.mean() / 1000.0 - service_s
    assert wait_s == pytest.approx(rho / (2 * mu * (1 - rho)), rel=0.05)


def test_latency_table_interpolates(tmp_path):
    p = tmp_path / "prof.csv"
    p.write_text("threads,batch,latency_ms\n1,1,10\n1,4,16\n1,8,40\n2,1,6\n")
    m = LatencyModel.from_csv(p, threads=1)
    assert m.batch_ms(2) == pytest.approx(12) and m.batch_ms(12) == pytest.approx(64)
    assert LatencyModel.from_csv(p, threads=2).batch_ms(1) == pytest.approx(6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(max_batch_delay_ms=-1), "max_batch_delay_ms must be an integer >= 0"),
        (dict(max_batch_delay_ms=2.5), "max_batch_delay_ms must be a whole number"),
        (dict(batch_size=2000), "batch_size must be <= 1024"),
        (dict(workers=-1), "workers must be an integer >= 0"),
    ],
)
def test_set_config_validates(kwargs, message):
    sim = make([0.0])
    with pytest.raises(ValueError, match=message):
        sim.set_config("m", **kwargs)


def test_unknown_model_and_time_travel():
    sim = make([0.0])
    with pytest.raises(ValueError, match="unknown model"):
        sim.set_config("nope", workers=1)
    sim.run_until(2)
    with pytest.raises(ValueError, match="before now"):
        sim.run_until(1)
