"""Online Packrat: estimate the effective batch size from the live queue and re-plan.

The decision is pure (:func:`online_decide`): queue-depth samples feed the estimator
(``estimator.py``: Packrat's EWMA, power-of-two rounding and mode of recent estimates, with
``confirm`` consecutive decisions as hysteresis); a new batch estimate is turned into the
uniform plan for the profile and the cores, clamped to the largest batch the profile can
serve, and a switch is requested only when that configuration differs from the current one
and at least ``min_dwell_s`` passed since the last switch (a scale-up takes seconds; no
flapping while it lands).

:class:`OnlineReconfigurer` is the mechanism: it samples ``queue_depth`` from the tsadapt
plugin every ``sample_period_s`` and applies decisions with :func:`apply_config`.
Packrat samples every 5 ms in-process; over HTTP the default here is 20 ms.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from tsadapt.client import TorchServeClient
from tsadapt.packrat_cpu.apply import ServingConfig, SwitchReport, apply_config, uniform_config
from tsadapt.packrat_cpu.estimator import EstimatorConfig, EstimatorState, decide, observe
from tsadapt.packrat_cpu.planner import PlanError
from tsadapt.packrat_cpu.profile_table import ProfileTable
from tsadapt.plugin.adapt_client import AdaptClient

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_PERIOD_S = 0.02
DEFAULT_MIN_DWELL_S = 3.0


@dataclass(frozen=True)
class OnlineConfig:
    """Knobs of the online loop; the estimator's defaults are Packrat's plus ``confirm=2``."""

    cores: int
    estimator: EstimatorConfig = field(default_factory=lambda: EstimatorConfig(confirm=2))
    sample_period_s: float = DEFAULT_SAMPLE_PERIOD_S
    min_dwell_s: float = DEFAULT_MIN_DWELL_S
    max_batch_delay_ms: int | None = None

    def __post_init__(self) -> None:
        if self.cores < 1:
            raise ValueError(f"cores must be >= 1, got {self.cores}")
        if self.sample_period_s <= 0:
            raise ValueError(f"sample_period_s must be > 0, got {self.sample_period_s}")
        if self.min_dwell_s < 0:
            raise ValueError(f"min_dwell_s must be >= 0, got {self.min_dwell_s}")


@dataclass(frozen=True)
class OnlineState:
    estimator: EstimatorState = EstimatorState()
    current: ServingConfig | None = None
    last_switch_s: float | None = None


@lru_cache(maxsize=256)
def config_for(profile: ProfileTable, cores: int, batch: int) -> ServingConfig:
    """The uniform plan for ``batch`` (halved until the profile can serve it)."""
    wanted = batch
    while batch >= 1:
        try:
            return uniform_config(profile, cores, batch)[0]
        except PlanError:
            batch //= 2
    raise PlanError(f"no batch <= {wanted} can be planned from this profile", "batch")


def online_decide(
    state: OnlineState,
    now: float,
    queue_depth: float,
    profile: ProfileTable,
    config: OnlineConfig,
) -> tuple[OnlineState, ServingConfig | None]:
    """Fold one sample; return the configuration to switch to, if a switch is due."""
    estimator = observe(state.estimator, queue_depth, config.estimator)
    estimator, batch = decide(estimator, now, config.estimator)
    state = replace(state, estimator=estimator)
    if batch is None:
        return state, None
    target = config_for(profile, config.cores, batch)
    if target == state.current:
        return state, None
    if state.last_switch_s is not None and now - state.last_switch_s < config.min_dwell_s:
        # Not yet: forget the decision so the estimator proposes it again next interval.
        return replace(state, estimator=replace(estimator, current=None)), None
    return replace(state, current=target, last_switch_s=now), target


class OnlineReconfigurer:
    """Samples the live queue depth and applies :func:`online_decide`'s switches."""

    def __init__(
        self,
        client: TorchServeClient,
        adapt: AdaptClient,
        placement_dir: Path,
        model: str,
        profile: ProfileTable,
        config: OnlineConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.adapt = client, adapt
        self.placement_dir, self.model = placement_dir, model
        self.profile, self.config = profile, config
        self.clock = clock
        self.state = OnlineState()
        self.switches: list[SwitchReport] = []
        self.samples = 0

    def run(self, stop: threading.Event, duration_s: float | None = None) -> list[SwitchReport]:
        """Loop until ``stop`` is set (or ``duration_s`` passed); return the switches made."""
        end = None if duration_s is None else self.clock() + duration_s
        while not stop.is_set() and (end is None or self.clock() < end):
            started = self.clock()
            depth = self.adapt.model(self.model).queue_depth
            self.samples += 1
            self.state, target = online_decide(
                self.state, started, depth, self.profile, self.config
            )
            if target is not None:
                report = apply_config(
                    self.client,
                    self.adapt,
                    self.placement_dir,
                    self.model,
                    target,
                    max_batch_delay_ms=self.config.max_batch_delay_ms,
                )
                self.switches.append(report)
                # The dwell counts from the end of the switch (a scale-up takes seconds).
                self.state = replace(self.state, last_switch_s=self.clock())
                logger.info("switched %s to %s in %.2f s", self.model, target, report.total_s)
            stop.wait(max(0.0, self.config.sample_period_s - (self.clock() - started)))
        return self.switches
