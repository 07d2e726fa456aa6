"""A cohort of identical pods: one real simulator run and one sidecar stand for ``pods`` pods.

Pods created by the same scaling event start together, get the same share of the load
(the load balancer splits it evenly over ready pods) and run the same controller, so they
differ only in their random draws. A cohort simulates one of them with the real
per-request simulator (:class:`~tsadapt.policy.sim.simulator.Simulator`, arrivals fed tick by
tick with ``extend_arrivals`` at the pod's current share) and the real control step
(observer, policy, :func:`~tsadapt.policy.guards.guard`, ``apply_actions``), and counts
its requests ``pods`` times. Cost grows with the number of cohorts, not of pods.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from tsadapt.policy.controller_config import ControllerConfig
from tsadapt.policy.factory import make_policy
from tsadapt.policy.guards import GuardState, guard
from tsadapt.policy.sim.control import (
    SimControlConfig,
    apply_actions,
    controller_config_for,
    observer_for,
    registration_configs,
)
from tsadapt.policy.sim.scenario import Scenario
from tsadapt.policy.sim.simulator import Simulator
from tsadapt.policy.sim.specs import IntervalStats
from tsadapt.policy.types import ModelSettings, Policy, PolicyState
from tsadapt.sidecar.exporter import capacity_demand


@dataclass
class Totals:
    """Requests of one or more pods: arrivals, answered within the SLO, and the rest."""

    arrivals: float = 0.0
    good: float = 0.0
    answered: float = 0.0
    errors: float = 0.0

    def add(self, stats: dict[str, IntervalStats], slo_ms: dict[str, float], k: float) -> None:
        for name, s in stats.items():
            self.arrivals += k * s.arrivals
            self.answered += k * s.completed
            self.errors += k * (s.rejected + s.failed)
            self.good += k * int(np.count_nonzero(s.latencies_ms <= slo_ms[name]))


def make_sidecar_policy(name: str, config: ControllerConfig) -> Policy:
    """Every pod's sidecar policy (``ppo``: the shipped policy, on numpy alone)."""

    return make_policy(name, config)


@dataclass
class Cohort:
    """``pods`` pods created at ``created_s``, ready (serving) from ``ready_s``."""

    scenario: Scenario
    pods: int
    created_s: float
    ready_s: float
    seed: int
    sidecar: str | None  # the in-pod policy, or None for static batching
    static: dict[str, ModelSettings] | None = None
    window_s: float = 60.0
    tick_s: float = 1.0
    sim: Simulator = field(init=False)
    samples: deque = field(init=False)

    def __post_init__(self) -> None:
        sc = self.scenario
        ctl = SimControlConfig(tick_s=self.tick_s)
        self.config: ControllerConfig = controller_config_for(sc, ctl, self.sidecar or "static")
        init = self.static if self.sidecar is None else registration_configs(sc)
        if init is None:
            raise ValueError("pod scenario: give static workers, or use the demo models")
        specs = [m.spec(init[m.name]) for m in sc.models]
        self.sim = Simulator(specs, {}, sc.devices, seed=self.seed)
        self.rng = np.random.default_rng(np.random.SeedSequence([self.seed, 7]))
        self.observer = observer_for(sc, ctl)
        self.slo = {m.name: m.slo_ms for m in sc.models}
        self.policy = (
            None if self.sidecar is None else make_sidecar_policy(self.sidecar, self.config)
        )
        self.pstate, self.gstate = PolicyState(), GuardState()
        # per tick: (demand ratio, queued requests summed over models, arrivals)
        self.samples = deque(maxlen=max(1, int(round(self.window_s / self.tick_s))))
        self.reconfigurations = 0

    def local(self, t: float) -> float:
        return t - self.ready_s

    def ready(self, t: float) -> bool:
        return t >= self.ready_s - 1e-9

    def feed(self, t: float, per_pod_rates: dict[str, float]) -> None:
        """Arrivals of one pod in ``(t, t + tick]`` at ``per_pod_rates`` (req/s)."""
        tau = self.local(t)
        for name, rate in per_pod_rates.items():
            n = int(self.rng.poisson(max(rate, 0.0) * self.tick_s))
            if n:
                times = tau + np.sort(self.rng.random(n)) * self.tick_s
                self.sim.extend_arrivals(name, times)

    def step(self, t: float, totals: Totals) -> None:
        """Run to ``t``, count the tick's requests, and let the sidecar act once."""
        tau = self.local(t)
        stats = self.sim.run_until(tau)
        totals.add(stats, self.slo, self.pods)
        self.observer.add(stats)
        observation = self.observer.observation(tau)
        proposed, emergencies = (), ()
        if self.policy is not None:
            proposed, self.pstate = self.policy.decide(observation, self.pstate)
            res = guard(proposed, observation, self.config, self.gstate)
            self.gstate = res.state
            emergencies = res.emergencies
            apply_actions(self.sim, res.actions)
            self.reconfigurations += len(res.actions) * self.pods  # every pod of the cohort
        demand = capacity_demand(observation, self.config, proposed, emergencies)
        queued = sum(s.queue_depth for s in stats.values())
        arrivals = sum(s.arrivals for s in stats.values())
        self.samples.append((demand.ratio, queued, arrivals))

    # --- what Prometheus scrapes from each pod of the cohort --------------------------
    def demand_ratio(self) -> float:
        """The gauge ``tsadapt_controller_capacity_demand_ratio`` of one pod, now."""
        return float(self.samples[-1][0]) if self.samples else math.nan

    def queue_wait(self) -> tuple[float, float]:
        """(queued-request-seconds, arrivals) over the window: their ratio is the mean
        queue latency (Little's law), what ``rate(ts_queue_latency_microseconds[1m]) /
        rate(ts_inference_requests_total[1m])`` reads."""
        waited = sum(s[1] for s in self.samples) * self.tick_s
        return waited, float(sum(s[2] for s in self.samples))

    def split(self, leaving: int) -> Cohort:
        """Take ``leaving`` pods out of this cohort (deleted: they drain, see
        :meth:`drain`); return them as a cohort of their own."""
        if not 0 < leaving <= self.pods:
            raise ValueError(f"cannot remove {leaving} of {self.pods} pods")
        if leaving == self.pods:
            return self
        gone = copy.copy(self)  # shares all but the simulator: it only drains
        gone.sim = copy.deepcopy(self.sim)
        gone.pods = leaving
        self.pods -= leaving
        return gone

    def drain(self, totals: Totals) -> None:
        """Serve what is queued with no new arrivals (graceful termination: the pod has
        left the Service's endpoints). The draining time is not counted in pod-seconds."""
        totals.add(self.sim.run_until(math.inf), self.slo, self.pods)
