"""Simulator speed benchmark: simulated requests per second of wall time, one core.

``python -m tsadapt.experiments.sim_speed [--requests N] [--batch-sizes 1 8 16 32]``

One model, 4 workers on a device with enough cores (no contention), Poisson load at
85 % of the configured capacity so batches fill and the queue stays bounded. The rate
counts the event simulation only; arrival generation is timed and shown apart.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tsadapt.policy.sim.simulator import Simulator
from tsadapt.policy.sim.specs import DeviceSpec, LatencyModel, ModelSpec
from tsadapt.policy.sim.workloads import Poisson
from tsadapt.policy.types import ModelSettings

#: Bench setup: latency(b) = ALPHA_MS * b + BETA_MS, WORKERS workers at LOAD of capacity.
ALPHA_MS, BETA_MS, WORKERS, LOAD = 0.5, 2.0, 4, 0.85
DEFAULT_BATCH_SIZES = (1, 8, 16, 32)
DEFAULT_REQUESTS = 1_000_000


@dataclass(frozen=True)
class BenchRow:
    batch_size: int
    requests: int
    sim_s: float
    gen_s: float
    mean_batch: float

    @property
    def req_per_s(self) -> float:
        return self.requests / self.sim_s


def bench(batch_size: int, requests: int = DEFAULT_REQUESTS, seed: int = 0) -> BenchRow:
    """Simulate about ``requests`` requests at ``batch_size``; time it."""
    capacity_rps = WORKERS * batch_size / (ALPHA_MS * batch_size + BETA_MS) * 1000.0
    rate = LOAD * capacity_rps
    duration = requests / rate
    t0 = time.perf_counter()
    arr = Poisson(rate).arrivals(duration, np.random.default_rng(seed))
    gen_s = time.perf_counter() - t0
    spec = ModelSpec(
        "bench",
        LatencyModel(ALPHA_MS, BETA_MS),
        queue_size=100_000,
        initial=ModelSettings(batch_size, 50.0, WORKERS),
    )
    t0 = time.perf_counter()
    sim = Simulator([spec], {"bench": arr}, [DeviceSpec("cpu", WORKERS)], seed=seed)
    s = sim.run_until(duration)["bench"]
    sim_s = time.perf_counter() - t0
    return BenchRow(batch_size, len(arr), sim_s, gen_s, s.mean_batch_size)


def run(
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, requests: int = DEFAULT_REQUESTS
) -> list[BenchRow]:
    """Run and print the benchmark table; return its rows."""
    print(f"sim benchmark: {WORKERS} workers, latency {ALPHA_MS}*b+{BETA_MS} ms, load {LOAD:.0%}")
    print(
        f"{'batch':>5} {'requests':>10} {'sim_s':>7} {'gen_s':>6} {'mean_b':>6} {'sim req/s':>12}"
    )
    rows = []
    for b in batch_sizes:
        r = bench(b, requests)
        rows.append(r)
        print(
            f"{b:>5} {r.requests:>10,} {r.sim_s:>7.2f} {r.gen_s:>6.2f} "
            f"{r.mean_batch:>6.1f} {r.req_per_s:>12,.0f}"
        )
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="requests per run")
    p.add_argument(
        "--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES), metavar="B"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tsadapt.experiments.sim_speed", description=__doc__)
    add_arguments(p)
    a = p.parse_args(argv)
    run(a.batch_sizes, a.requests)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
