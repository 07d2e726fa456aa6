"""Closed-loop control of the simulator: the sidecar's loop, with the simulator as the server.

Every ``tick_s`` the simulator runs one interval; the per-model :class:`IntervalStats` of
the last ``window_s`` become the very dataclasses the real sidecar builds
(:class:`~tsadapt.policy.types.Observation`); then the one control step
(:func:`tsadapt.policy.loop.control_step`) decides, guards exactly as in ``tsadapt control``
and applies the surviving actions with ``Simulator.set_config`` (effective at once, like the
plugin's live setters), through :class:`SimBackend`.

A *reconfiguration* is one applied :class:`Action` (one model changed at one tick,
whatever number of its settings changed).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tsadapt.policy.controller_config import (
    DEFAULT_COOLDOWN_S,
    ConfigError,
    ControllerConfig,
    ModelLimits,
    load,
)
from tsadapt.policy.loop import ApplyResult, LoopState, control_step
from tsadapt.policy.sim.metrics import ModelResult, pool, summarize
from tsadapt.policy.sim.scenario import ModelEntry, Scenario, load_scenario
from tsadapt.policy.sim.simulator import Simulator
from tsadapt.policy.sim.specs import IntervalStats, LatencyModel
from tsadapt.policy.types import (
    Action,
    HostObservation,
    ModelObservation,
    ModelSettings,
    Observation,
    Policy,
)

__all__ = [
    "ControlResult",
    "apply_latencies",
    "scenario_config",
    "SimBackend",
    "SimControlConfig",
    "WindowObserver",
    "controller_config_for",
    "initial_configs",
    "outside_latency_ms",
    "registration_configs",
    "run_controlled",
    "run_named",
]

#: Largest max batch delay (ms) a simulated controller may set, unless the SLO is tighter.
SIM_MAX_DELAY_MS = 50
#: Share of the SLO one batch's execution may take when it bounds max_batch (Nexus's rule),
#: of the SLO left after the latency outside the worker (:func:`outside_latency_ms`).
SLO_BATCH_SHARE = 0.5
#: Quantile of a model's latency outside the worker that :func:`slo_feasible_batch` sets
#: aside from the SLO (a request's outside time is drawn per request; the bound must hold
#: for nearly all of them, not the median one).
OUTSIDE_QUANTILE = 0.99
#: Starting point of every adaptive run: TorchServe's batch size default, a short delay.
INITIAL_BATCH, INITIAL_DELAY_MS = 1, 10


@dataclass(frozen=True)
class SimControlConfig:
    """How the simulated sidecar runs (mirrors ``configs/controller.yaml``'s timing)."""

    tick_s: float = 1.0
    window_s: float = 5.0
    cooldown_s: float = DEFAULT_COOLDOWN_S
    max_delay_ms: int = SIM_MAX_DELAY_MS

    def __post_init__(self) -> None:
        if not (self.tick_s > 0 and self.window_s >= self.tick_s and self.cooldown_s >= 0):
            raise ValueError("need tick_s > 0, window_s >= tick_s, cooldown_s >= 0")


def slo_feasible_batch(
    latency: LatencyModel, slo_ms: float, max_batch: int, outside_ms: float = 0.0
) -> int:
    """The largest batch size <= ``max_batch`` whose profiled execution takes at most
    :data:`SLO_BATCH_SHARE` of what the SLO leaves after ``outside_ms`` (at least 1).

    Nexus's rule: when batches run back to back a request can wait for one whole batch to
    finish and then run in the next, so a batch taking more than half the SLO misses it
    under exactly the load that fills it. A request also spends time outside the worker
    (client and HTTP stack, frontend, the hop to the worker: ``outside_ms``, measured by
    ``tsadapt lab fidelity calibrate``), which the worker's two batches must leave room for:
    wait + execution <= SLO - outside. This is the one cap rule: the simulated sidecar
    (:func:`controller_config_for`) and the real one (:func:`feasible`) both use it.
    """
    if not (math.isfinite(outside_ms) and outside_ms >= 0):
        raise ValueError(f"outside_ms must be >= 0 and finite, got {outside_ms!r}")
    sizes = np.arange(1, max(1, max_batch) + 1)
    room = SLO_BATCH_SHARE * (slo_ms - outside_ms)
    ok = sizes[np.asarray(latency.batch_ms(sizes)) <= room]
    return int(ok[-1]) if ok.size else 1


def outside_latency_ms(model: ModelEntry) -> float:
    """The :data:`OUTSIDE_QUANTILE` of ``model``'s latency outside the worker, as the
    simulator draws it: the constant ``overhead_ms``, or that quantile of
    ``overhead_quantiles_ms`` (``q[k]`` at probability ``k / n``, linear between); 0 when
    the scenario gives none."""
    q = model.overhead_quantiles_ms
    if q is None:
        return float(model.overhead_ms)
    probs = np.linspace(0.0, 1.0, len(q))
    return float(np.interp(OUTSIDE_QUANTILE, probs, np.asarray(q, dtype=np.float64)))


def controller_config_for(
    scenario: Scenario, sim: SimControlConfig | None = None, policy: str = "aimd"
) -> ControllerConfig:
    """The guard limits a sidecar would be given for ``scenario``'s models and budget.

    ``max_batch`` is the scenario's, lowered to :func:`slo_feasible_batch` of the model's
    profile and its latency outside the worker (:func:`outside_latency_ms`): the bound an
    operator derives from ``tsadapt profile`` and ``tsadapt lab fidelity calibrate``.
    """
    sim = sim or SimControlConfig()
    limits = tuple(
        ModelLimits(
            name=m.name,
            slo_ms=m.slo_ms,
            min_workers=max(1, m.min_workers),
            max_workers=max(1, m.max_workers),
            min_batch=1,
            max_batch=slo_feasible_batch(m.latency, m.slo_ms, m.max_batch, outside_latency_ms(m)),
            max_delay_ms=int(min(sim.max_delay_ms, math.ceil(m.slo_ms) - 1)),
        )
        for m in scenario.models
    )
    return ControllerConfig(
        models=limits,
        worker_budget=scenario.budget.workers,
        policy=policy,
        tick_s=sim.tick_s,
        window_s=sim.window_s,
        cooldown_s=sim.cooldown_s,
    )


def registration_configs(scenario: Scenario) -> dict[str, ModelSettings] | None:
    """The demo models' registration defaults (``handlers/catalog.py``: batch size, delay,
    ``min_workers``), where a real server starts before any controller acts; None when a
    model of the scenario is not a demo model."""
    from tsadapt.handlers.catalog import DEMO_MODELS

    if any(m.name not in DEMO_MODELS for m in scenario.models):
        return None
    return {
        m.name: ModelSettings(
            DEMO_MODELS[m.name].batch_size,
            DEMO_MODELS[m.name].max_batch_delay_ms,
            max(1, DEMO_MODELS[m.name].min_workers),
        )
        for m in scenario.models
    }


def initial_configs(scenario: Scenario, config: ControllerConfig) -> dict[str, ModelSettings]:
    """Where every adaptive run starts: batch 1, a short delay, the minimum workers."""
    return {
        lim.name: ModelSettings(
            INITIAL_BATCH, min(INITIAL_DELAY_MS, lim.max_delay_ms), lim.min_workers
        )
        for lim in config.models
    }


@dataclass
class WindowObserver:
    """Keeps the last ``window_s`` of interval stats per model; builds Observations."""

    slo_ms: Mapping[str, float]
    threads: Mapping[str, int]
    capacity: float
    window_s: float
    tick_s: float
    _hist: dict[str, deque] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = max(1, int(round(self.window_s / self.tick_s)))
        self._hist = {name: deque(maxlen=n) for name in self.slo_ms}

    def add(self, stats: Mapping[str, IntervalStats]) -> None:
        for name, h in self._hist.items():
            h.append(stats[name])

    def model(self, name: str) -> ModelObservation:
        h = list(self._hist[name])
        last = h[-1]
        span = sum(s.duration_s for s in h) or self.tick_s
        slo = self.slo_ms[name]
        lat = np.concatenate([s.latencies_ms for s in h]) if h else np.empty(0)
        finished = sum(s.completed + s.rejected + s.failed for s in h)
        errors = sum(s.rejected + s.failed for s in h)
        batches = sum(s.batches for s in h)
        good = int(np.count_nonzero(lat <= slo))
        p50, p99 = (
            (float(x) for x in np.percentile(lat, (50.0, 99.0)))
            if lat.size
            else (math.nan, math.nan)
        )
        return ModelObservation(
            name=name,
            slo_ms=slo,
            settings=last.config,
            arrival_rate_rps=sum(s.arrivals for s in h) / span,
            completion_rate_rps=sum(s.completed for s in h) / span,
            queue_depth=int(last.queue_depth),
            oldest_queued_age_ms=float(last.oldest_wait_s * 1000.0),
            requests_in_window=int(finished),
            slo_attainment=good / finished if finished else math.nan,
            p50_ms=p50,
            p99_ms=p99,
            mean_latency_ms=float(lat.mean()) if lat.size else math.nan,
            batch_fill_rate=sum(s.fill_sum for s in h) / batches if batches else math.nan,
            mean_batch_size=sum(s.batch_size_sum for s in h) / batches if batches else math.nan,
            error_rate=errors / finished if finished else math.nan,
        )

    def observation(self, time_s: float) -> Observation:
        models = tuple(self.model(n) for n in self._hist)
        busy = 0.0
        span = self.tick_s
        for n, h in self._hist.items():
            last = h[-1]
            busy += last.busy_worker_s * self.threads[n]
            span = last.duration_s or self.tick_s
        cpu = (
            100.0 * min(1.0, busy / (self.capacity * span)) if math.isfinite(self.capacity) else 0.0
        )
        return Observation(time_s, self.window_s, models, HostObservation(cpu, math.nan))


def observer_for(scenario: Scenario, sim: SimControlConfig) -> WindowObserver:
    """A :class:`WindowObserver` for ``scenario`` (host capacity = sum of device capacities)."""
    return WindowObserver(
        slo_ms={m.name: m.slo_ms for m in scenario.models},
        threads={m.name: m.threads for m in scenario.models},
        capacity=float(sum(d.capacity for d in scenario.devices)),
        window_s=sim.window_s,
        tick_s=sim.tick_s,
    )


def apply_actions(sim: Simulator, actions: Sequence[Action]) -> None:
    """Apply guarded actions to the simulator (``None`` settings left as they are)."""
    for a in actions:
        sim.set_config(
            a.model,
            batch_size=a.batch_size,
            max_batch_delay_ms=a.max_batch_delay_ms,
            workers=a.workers,
        )


class SimBackend:
    """The simulator as the loop's backend; :meth:`advance` runs it up to a tick."""

    def __init__(self, sim: Simulator, observer: WindowObserver) -> None:
        self.sim = sim
        self.observer = observer
        self.time_s = 0.0

    def advance(self, t: float) -> dict[str, IntervalStats]:
        """Run the simulator to ``t`` and add the interval to the observation window."""
        stats = self.sim.run_until(t)
        self.observer.add(stats)
        self.time_s = t
        return stats

    def observe(self) -> Observation:
        return self.observer.observation(self.time_s)

    def apply(
        self, actions: tuple[Action, ...], current: Mapping[str, ModelSettings]
    ) -> tuple[ApplyResult, ...]:
        apply_actions(self.sim, actions)
        return tuple(ApplyResult(a.model, a.changes(current[a.model])) for a in actions)


@dataclass(frozen=True)
class ControlResult:
    """One closed-loop run: pooled and per-model metrics, reconfigurations, overrides."""

    scenario: str
    policy: str
    seed: int
    duration_s: float
    overall: ModelResult
    per_model: Mapping[str, ModelResult]
    reconfigurations: int
    per_model_reconfigurations: Mapping[str, int]
    overrides: int

    def as_dict(self) -> dict:
        """The ``tsadapt lab simulate --json`` object."""

        def one(r: ModelResult, reconf: int) -> dict:
            return {
                "slo_attainment": r.slo_attainment,
                "goodput_rps": r.goodput_rps,
                "p50_ms": _finite(r.p50_ms),
                "p99_ms": _finite(r.p99_ms),
                "worker_seconds": r.worker_seconds,
                "reconfigurations": reconf,
                "requests": r.requests,
                "rejected": r.rejected,
                "failed": r.failed,
                "mean_batch_size": _finite(r.mean_batch_size),
            }

        out = {
            "scenario": self.scenario,
            "policy": self.policy,
            "seed": self.seed,
            "duration_s": self.duration_s,
            "guard_overrides": self.overrides,
        }
        out.update(one(self.overall, self.reconfigurations))
        out["models"] = {
            n: one(r, self.per_model_reconfigurations[n]) for n, r in self.per_model.items()
        }
        return out


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def run_controlled(
    scenario: Scenario,
    policy: Policy,
    config: ControllerConfig,
    seed: int | None = None,
    sim_config: SimControlConfig | None = None,
    initial: Mapping[str, ModelSettings] | None = None,
    on_tick: Callable[[float], None] | None = None,
) -> ControlResult:
    """Run ``scenario`` with ``policy`` behind the guards; every request is accounted for.

    Arrivals stop at ``duration_s``; the simulator then runs on (no more decisions) until
    every admitted request is answered, as in :func:`static_run.run_static`.
    """
    sim_config = sim_config or SimControlConfig()
    seed = scenario.seed if seed is None else seed
    init = dict(initial or initial_configs(scenario, config))
    scenario.check_config(init)
    backend = SimBackend(scenario.simulator(init, seed), observer_for(scenario, sim_config))
    names = scenario.model_names
    lats: dict[str, list[np.ndarray]] = {n: [] for n in names}
    tot = {
        n: dict(arrivals=0, rejected=0, failed=0, worker_s=0.0, busy=0.0, bsum=0, batches=0)
        for n in names
    }
    reconf = dict.fromkeys(names, 0)
    overrides = 0
    state = LoopState()

    def account(stats: Mapping[str, IntervalStats], main: bool) -> None:
        for n in names:
            s, t = stats[n], tot[n]
            lats[n].append(s.latencies_ms)
            t["arrivals"] += s.arrivals
            t["rejected"] += s.rejected
            t["failed"] += s.failed
            t["busy"] += s.busy_worker_s
            t["bsum"] += s.batch_size_sum
            t["batches"] += s.batches
            if main:
                t["worker_s"] += s.worker_s

    t = 0.0
    n_ticks = int(math.ceil(scenario.duration_s / sim_config.tick_s - 1e-9))
    for k in range(1, n_ticks + 1):
        t = min(k * sim_config.tick_s, scenario.duration_s)
        account(backend.advance(t), True)
        if t >= scenario.duration_s:
            break
        step = control_step(backend, policy, config, state)
        state = step.state
        overrides += len(step.guarded.overrides)
        for a in step.applied:
            reconf[a.model] += 1
        if on_tick is not None:
            on_tick(t)
    account(backend.sim.run_until(math.inf), False)
    per: dict[str, ModelResult] = {}
    all_lats = []
    for m in scenario.models:
        tt = tot[m.name]
        lat = np.concatenate(lats[m.name]) if lats[m.name] else np.empty(0)
        all_lats.append(lat)
        per[m.name] = summarize(
            m.name,
            lat,
            m.slo_ms,
            tt["arrivals"],
            scenario.duration_s,
            rejected=tt["rejected"],
            failed=tt["failed"],
            worker_seconds=tt["worker_s"],
            busy_worker_seconds=tt["busy"],
            mean_batch_size=tt["bsum"] / tt["batches"] if tt["batches"] else math.nan,
        )
    overall = pool(per.values(), all_lats, scenario.duration_s)
    return ControlResult(
        scenario.name,
        getattr(policy, "name", type(policy).__name__),
        seed,
        scenario.duration_s,
        overall,
        per,
        sum(reconf.values()),
        reconf,
        overrides,
    )


def run_named(
    scenario: Scenario,
    policy: str,
    seed: int,
    policy_file: Path | None = None,
    sim_config: SimControlConfig | None = None,
    initial: Mapping[str, ModelSettings] | None = None,
) -> ControlResult:
    """:func:`run_controlled` with the policy named ``policy`` (the one factory) and the guard
    limits a sidecar would get for ``scenario``: what ``tsadapt lab simulate``/``evaluate`` and
    seed selection run."""
    from tsadapt.policy.factory import make_policy

    config = controller_config_for(scenario, sim_config)
    pol = make_policy(policy, config, policy_file)
    return run_controlled(scenario, pol, config, seed, sim_config, initial)


# --------------------------------------------------------------------------- real-server limits


def feasible(limits: ModelLimits, latency: LatencyModel, outside_ms: float = 0.0) -> ModelLimits:
    """``limits`` with ``max_batch`` lowered to the SLO-feasible batch of ``latency`` with
    ``outside_ms`` of latency outside the worker (:func:`slo_feasible_batch`)."""
    cap = slo_feasible_batch(latency, limits.slo_ms, limits.max_batch, outside_ms)
    return replace(limits, max_batch=max(cap, limits.min_batch))


def apply_latencies(
    config: ControllerConfig, latencies: list[tuple[str, LatencyModel, float, str]]
) -> ControllerConfig:
    """``config`` with each ``(model, latency, outside_ms, source)``'s ``max_batch`` lowered by
    the profile rule (a model only ``default:`` covers gets its own entry)."""
    models = {m.name: m for m in config.models}
    for name, latency, outside_ms, source in latencies:
        base = models.get(name)
        if base is None and config.default is not None:
            base = replace(config.default, name=name)
        if base is None:
            raise ConfigError(source, f"model {name!r} is not in the config (and no default:)")
        models[name] = feasible(base, latency, outside_ms)
    return replace(config, models=tuple(models.values()))


def scenario_config(path: Path, scenario_file: Path, **overrides: object) -> ControllerConfig:
    """The controller config ``path`` for the models of a scenario file: their SLOs as the
    scenario states them (never also in ``path``), and each ``max_batch`` lowered by the
    profile rule with the scenario's latency profile and latency outside the worker, as the
    simulated sidecar gets them."""
    scenario = load_scenario(scenario_file)
    config = load(
        path,
        slos={m.name: m.slo_ms for m in scenario.models},
        slo_source=f"scenario {scenario_file}",
        **overrides,
    )
    named = set(config.model_names)
    return apply_latencies(
        config,
        [
            (m.name, m.latency, outside_latency_ms(m), f"scenario {scenario_file}")
            for m in scenario.models
            if m.name in named
        ],
    )
