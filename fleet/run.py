"""One fleet run: a policy behind the guards on the fleet simulator, and what it scored."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tsadapt.fleet.catalog import Catalogue
from tsadapt.fleet.constants import TICK_S
from tsadapt.fleet.guards import GuardState, guard
from tsadapt.fleet.sim import FleetSim
from tsadapt.fleet.types import FleetPolicy


@dataclass(frozen=True)
class FleetResult:
    """A run's figures (attainment counts every request sent, rejected ones included)."""

    policy: str
    gpus: int
    models: int
    mix: str
    seed: int
    horizon_s: float
    mean_gpus: float
    requests: int
    good: int
    reconfigurations: int
    #: slot actions the policy proposed after t = 0 (before the guards)
    proposed: int
    overrides: int
    decision_ms_mean: float
    decision_ms_max: float
    wall_s: float
    series: tuple[tuple[float, int], ...] = field(repr=False, default=())
    #: the decisions' CPU time (ms per tick, this process): what one core spends deciding,
    #: whatever else the machine runs (the wall-clock figures above grow with its load)
    decision_cpu_ms_mean: float = 0.0
    decision_cpu_ms_max: float = 0.0

    @property
    def attainment(self) -> float:
        return self.good / self.requests if self.requests else 1.0

    @property
    def goodput_rps(self) -> float:
        return self.good / self.horizon_s

    @property
    def reconf_per_hour(self) -> float:
        return self.reconfigurations * 3600.0 / self.horizon_s

    @property
    def sim_rps(self) -> float:
        """Simulated requests per second of wall time."""
        return self.requests / self.wall_s if self.wall_s > 0 else math.nan

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "series"}
        for k in ("attainment", "goodput_rps", "reconf_per_hour", "sim_rps"):
            d[k] = getattr(self, k)
        return d


def mean_of(runs: Sequence[FleetResult], key: str) -> float:
    """The mean of one figure (a field or property of :class:`FleetResult`) over runs."""
    return float(np.mean([getattr(r, key) for r in runs]))


def run_fleet(
    cat: Catalogue,
    policy: FleetPolicy,
    seed: int = 0,
    on_tick: Callable[[float], None] | None = None,
) -> FleetResult:
    """Run ``policy`` over ``cat``'s horizon. At t = 0 it places from the workloads' current
    rates (workers ready); then every tick it sees the measured window and acts."""
    t_wall = time.perf_counter()
    sim = FleetSim(cat, seed)
    state = GuardState()
    obs = sim.observe(rates=[float(m.workload.rate_at(0.0)) for m in cat.models])
    acts, over = guard(policy.decide(obs), obs, cat, state, 0.0)
    sim.apply(acts, ready=True)
    n_over, reconf, times, cpu, n_prop = len(over), 0, [], [], 0
    n_ticks = int(math.ceil(cat.horizon_s / TICK_S - 1e-9))
    for k in range(1, n_ticks + 1):
        t = min(k * TICK_S, cat.horizon_s)
        sim.advance(t)
        hook = getattr(policy, "on_stats", None)
        if hook is not None:
            hook(sim.last_stats, t)
        if on_tick is not None:
            on_tick(t)
        if t >= cat.horizon_s:
            break
        obs = sim.observe()
        t0, c0 = time.perf_counter(), time.process_time()
        proposed = policy.decide(obs)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        n_prop += len(proposed)
        acts, over = guard(proposed, obs, cat, state, t)
        n_over += len(over)
        reconf += sim.apply(acts)
    sim.drain()
    tot = sim.totals
    gpus = np.array([g for _, g in sim.gpu_series], dtype=np.float64)
    return FleetResult(
        policy=policy.name,
        gpus=cat.gpus,
        models=len(cat.models),
        mix=cat.mix,
        seed=seed,
        horizon_s=cat.horizon_s,
        mean_gpus=float(gpus.mean()) if gpus.size else 0.0,
        requests=int(tot.requests.sum()),
        good=int(tot.good.sum()),
        reconfigurations=reconf,
        proposed=n_prop,
        overrides=n_over,
        decision_ms_mean=1000.0 * float(np.mean(times)) if times else 0.0,
        decision_ms_max=1000.0 * float(np.max(times)) if times else 0.0,
        wall_s=time.perf_counter() - t_wall,
        series=tuple(sim.gpu_series),
        decision_cpu_ms_mean=1000.0 * float(np.mean(cpu)) if cpu else 0.0,
        decision_cpu_ms_max=1000.0 * float(np.max(cpu)) if cpu else 0.0,
    )
