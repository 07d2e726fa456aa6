"""Two-level autoscaling of a simulated fleet: sidecars inside pods, an HPA across them.

Every tick (1 s): each ready cohort of pods (:mod:`.pods`) runs one tick of the real
simulator and its sidecar acts; every ``scrape_s`` Prometheus samples the pods' series;
every ``keda_polling_s`` KEDA reads its query (setups 3-4; setup 4's query adds the
demand's linear trend and spare pods, :func:`step_aware_value`); every HPA sync period the HPA
(:mod:`.hpa`) reconciles the replica count on the metric it last saw. New pods serve after
``pod_startup_s``; deleted pods leave the Service at once, newest first (the ReplicaSet's
order: not ready before ready, then the most recently created), and drain their queues.

Load balancer: the Service spreads requests uniformly at random over the *ready* pods
(kube-proxy's iptables mode picks an endpoint with equal probability), so each ready pod
receives an independent Poisson share ``rate(t) / ready pods`` of the fleet's arrivals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tsadapt.experiments.scaleout.config import ScaleOutConfig, Setup
from tsadapt.experiments.scaleout.hpa import HPA
from tsadapt.experiments.scaleout.pods import Cohort, Totals
from tsadapt.policy.sim.scenario import Scenario
from tsadapt.policy.types import ModelSettings


@dataclass
class FleetResult:
    scenario: str
    setup: str
    scale: int
    seed: int
    duration_s: float
    pod_seconds: float
    totals: Totals
    scaling_events: int
    max_pods: int
    reconfigurations: int
    series: dict[str, list[float]] = field(repr=False)
    #: the metric value the HPA saw at each sync (ms for queue latency, pods for demand)
    seen: list[float] = field(default_factory=list, repr=False)

    @property
    def mean_seen(self) -> float:
        return float(np.mean(self.seen)) if self.seen else math.nan

    @property
    def slo_attainment(self) -> float:
        return self.totals.good / self.totals.arrivals if self.totals.arrivals else math.nan

    @property
    def goodput_rps(self) -> float:
        return self.totals.good / self.duration_s

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "scenario": self.scenario,
            "setup": self.setup,
            "scale": self.scale,
            "seed": self.seed,
            "pod_seconds": round(self.pod_seconds, 1),
            "slo_attainment": self.slo_attainment,
            "goodput_rps": self.goodput_rps,
            "arrivals": self.totals.arrivals,
            "errors": self.totals.errors,
            "scaling_events": self.scaling_events,
            "max_pods": self.max_pods,
            "sidecar_reconfigurations": self.reconfigurations,
            "mean_metric": self.mean_seen,
        }


def fleet_rates(scenario: Scenario, scale: int, t: float) -> dict[str, float]:
    """The fleet's arrival rate per model at ``t``: ``scale`` pods' worth."""
    out = {}
    for m in scenario.models:
        w = scenario.workload_for(m.name)
        out[m.name] = 0.0 if w is None else scale * float(w.rate_at(t))
    return out


def predict_linear(samples: list[tuple[float, float]], at: float) -> float:
    """PromQL ``predict_linear``: the least-squares line through ``samples`` (t, value),
    evaluated at ``at``; the last value when there are fewer than two samples."""
    if len(samples) < 2:
        return samples[-1][1] if samples else math.nan
    t = np.array([x for x, _ in samples])
    v = np.array([y for _, y in samples])
    slope, intercept = np.polyfit(t - t[-1], v, 1)
    return float(intercept + slope * (at - t[-1]))


def step_aware_value(
    samples: list[tuple[float, float]], now: float, predict_s: float, spare: float
) -> float:
    """Setup 4's query on the scraped sums of demand ratios ``samples`` (the trend window):
    ``s + clamp_min(predict_linear(s[window], predict_s) - s, 0) + spare``."""
    current = samples[-1][1]
    return current + max(predict_linear(samples, now + predict_s) - current, 0.0) + spare


def static_configs(scenario: Scenario, workers: dict[str, int]) -> dict[str, ModelSettings]:
    """Setup 1's pods: each demo model's registration batch size and delay, and the
    operator's fixed worker split."""
    from tsadapt.handlers.catalog import DEMO_MODELS

    out = {}
    for m in scenario.models:
        demo = DEMO_MODELS[m.name]
        out[m.name] = ModelSettings(
            demo.batch_size, demo.max_batch_delay_ms, int(workers.get(m.name, 1))
        )
    return out


class Fleet:
    """The pods of one run and the Prometheus/KEDA/HPA loop around them."""

    def __init__(
        self, scenario: Scenario, setup: Setup, scale: int, seed: int, cfg: ScaleOutConfig
    ) -> None:
        self.sc, self.setup, self.scale, self.seed, self.cfg = scenario, setup, scale, seed, cfg
        self.hpa = HPA(cfg.hpa_spec(setup, scale))
        self.cohorts: list[Cohort] = []
        self.totals = Totals()
        self.static = None if setup.sidecar else static_configs(scenario, dict(cfg.static_workers))
        self._made = 0
        self.reconfigurations = 0  # of cohorts already deleted
        self.add_pods(cfg.initial_replicas(scale), -cfg.pod_startup_s)  # ready at t = 0
        # the fleet has been running at this size: the HPA recommended it last (a fresh HPA
        # with no history would scale down at its first sync, whatever the window)
        self.hpa.recommendations.append((0.0, self.replicas))
        self.scraped: float | None = None  # the HPA's metric value as last seen
        self.history: list[tuple[float, float]] = []  # setup 4: scraped sums, trend window
        self.polled: float | None = None

    @property
    def replicas(self) -> int:
        return sum(c.pods for c in self.cohorts)

    def ready_pods(self, t: float) -> int:
        return sum(c.pods for c in self.cohorts if c.ready(t))

    def add_pods(self, n: int, t: float) -> None:
        self._made += 1
        self.cohorts.append(
            Cohort(
                self.sc,
                n,
                created_s=t,
                ready_s=t + self.cfg.pod_startup_s,
                seed=int(np.random.SeedSequence([self.seed, self._made]).generate_state(1)[0]),
                sidecar=self.cfg.sidecar_policy if self.setup.sidecar else None,
                static=self.static,
                window_s=self.cfg.rate_window_s,
                tick_s=self.cfg.tick_s,
            )
        )

    def remove_pods(self, n: int) -> None:
        """Delete ``n`` pods, newest cohort first; each drains its queue."""
        while n > 0:
            last = self.cohorts[-1]
            take = min(n, last.pods)
            gone = last.split(take)
            if gone is last:
                self.cohorts.pop()
                self.reconfigurations += gone.reconfigurations
            gone.drain(self.totals)
            n -= take

    def metric(self, t: float) -> float | None:
        """What a Prometheus query over the ready pods returns now."""
        ready = [c for c in self.cohorts if c.ready(t) and c.samples]
        if not ready:
            return None
        if self.setup.metric == "demand":
            # sum(tsadapt_controller_capacity_demand_ratio)
            total = float(sum(c.pods * c.demand_ratio() for c in ready))
            if not self.setup.step_aware:
                return total
            step = self.cfg.step_aware
            self.history = [(u, v) for u, v in self.history if u > t - step.trend_window_s]
            self.history.append((t, total))
            spare = step.spare_pods_per_scale * self.scale * step.demand_target
            return step_aware_value(self.history, t, step.predict_s, spare)
        # sum(rate(ts_queue_latency_microseconds[1m])) / sum(rate(ts_inference_requests_total
        # [1m])), in ms: the fleet's mean queue latency
        waited = sum(c.pods * c.queue_wait()[0] for c in ready)
        arrivals = sum(c.pods * c.queue_wait()[1] for c in ready)
        return 1000.0 * waited / arrivals if arrivals else 0.0

    def run(self, on_tick: Callable[[float], None] | None = None) -> FleetResult:
        cfg, tick = self.cfg, self.cfg.tick_s
        duration = self.sc.duration_s
        n_ticks = int(math.ceil(duration / tick - 1e-9))
        pod_s, events, max_pods = 0.0, 0, self.replicas
        seen_log: list[float] = []
        series: dict[str, list[float]] = {k: [] for k in ("t", "pods", "ready", "rate", "good")}
        every = {k: max(1, round(v / tick)) for k, v in (
            ("scrape", cfg.intervals(self.setup)[0]), ("poll", cfg.intervals(self.setup)[1]),
            ("sync", self.hpa.spec.sync_period_s))}  # fmt: skip
        for k in range(n_ticks + 1):
            t = k * tick
            good_before = self.totals.good
            if k:
                for c in self.cohorts:
                    if c.ready(t - tick):
                        c.step(t, self.totals)
                pod_s += self.replicas * tick
            if k % every["scrape"] == 0:
                self.scraped = self.metric(t)
            if self.setup.metric == "demand":
                if k % every["poll"] == 0:
                    self.polled = self.scraped
                seen = self.polled
            else:
                seen = self.scraped
            if k and k % every["sync"] == 0 and t < duration:
                current = self.replicas
                desired = self.hpa.sync(t, current, self.ready_pods(t), seen)
                if seen is not None:
                    seen_log.append(seen)
                if desired > current:
                    self.add_pods(desired - current, t)
                elif desired < current:
                    self.remove_pods(current - desired)
                events += desired != current
                max_pods = max(max_pods, desired)
            if t >= duration:
                break
            ready = self.ready_pods(t)
            rates = fleet_rates(self.sc, self.scale, t + 0.5 * tick)
            if ready:
                share = {n: r / ready for n, r in rates.items()}
                for c in self.cohorts:
                    if c.ready(t):
                        c.feed(t, share)
            else:  # no endpoint: the Service refuses every request
                self.totals.arrivals += sum(rates.values()) * tick
                self.totals.errors += sum(rates.values()) * tick
            series["t"].append(t)
            series["pods"].append(self.replicas)
            series["ready"].append(ready)
            series["rate"].append(sum(rates.values()))
            series["good"].append(self.totals.good - good_before)
            if on_tick is not None:
                on_tick(t)
        for c in list(self.cohorts):
            c.drain(self.totals)
        return FleetResult(
            self.sc.name,
            self.setup.name,
            self.scale,
            self.seed,
            duration,
            pod_s,
            self.totals,
            events,
            max_pods,
            self.reconfigurations + sum(c.reconfigurations for c in self.cohorts),
            series,
            seen_log,
        )


def run_fleet(
    scenario: Scenario,
    setup: Setup,
    scale: int,
    seed: int,
    cfg: ScaleOutConfig,
    on_tick: Callable[[float], None] | None = None,
) -> FleetResult:
    return Fleet(scenario, setup, scale, seed, cfg).run(on_tick)
