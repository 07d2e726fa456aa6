"""Rule-based safety around every policy, learned or not (DNN-Adapt's hybrid decision system).

Each guard is a small pure function ``(proposals, ...) -> (proposals, overrides)`` over a
``{model: Action}`` map; :func:`guard` composes them in a fixed order:

1. :func:`emergency`     - SLO attainment collapsed or the oldest request outlived the SLO:
                           cut the delay and add a worker now (exempt from step/cooldown);
                           the policy's batch raise passes the cooldown too.
                           With hysteresis: the model stays in the emergency state until
                           the condition has been clear ``emergency_exit_ticks`` ticks in a
                           row and attainment is back to ``emergency_exit_attainment``; until
                           then the policy may not raise the delay or remove workers (no
                           cut-restore-cut flip-flop around the threshold).
2. :func:`enforce_bounds` - per-model min/max workers, batch and delay from the config; a
                           delay of at least 1 ms when the batch size is above 2
                           (TorchServe caps batches at 2 when the delay is 0).
3. :func:`limit_step`     - at most ``max_*_step`` change per setting per tick.
4. :func:`cooldown`       - no change to a model within ``cooldown_s`` of its last change.
   :func:`flip_flop`      - a setting that went a -> b -> a may not go back to b within
                           ``flip_hold_s`` at the same load (``policy/flip_guard.py``);
                           a batch or worker raise passes while the model sheds.
5. :func:`worker_budget` / :func:`memory_budget` / :func:`gpu_memory_budget` - global caps;
                           increases are granted to the neediest models first (emergencies,
                           then lowest SLO attainment); the GPU cap reads NVML's free memory.
6. :func:`drop_noops`     - only real changes reach the actuator.

Every change a guard makes to a proposal is an :class:`Override` with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from tsadapt.policy.budget_guards import gpu_memory_budget, memory_budget, worker_budget
from tsadapt.policy.controller_config import ControllerConfig
from tsadapt.policy.defaults import ZERO_DELAY_BATCH_CAP
from tsadapt.policy.flip_guard import Histories, flip_vetoes, record_changes
from tsadapt.policy.guard_base import Override, Proposals, set_override, target_value
from tsadapt.policy.types import (
    SETTING_FIELDS,
    Action,
    ModelObservation,
    ModelSettings,
    Observation,
    frozen_map,
)

#: The smallest delay that lets a batch fill from the queue (measured: 13.9 of 16 at 1 ms).
MIN_BATCHING_DELAY_MS = 1
#: What an emergency may change at once, whatever the cooldown.
EMERGENCY_SETTINGS = ("max_batch_delay_ms", "workers")
#: What the policy may raise during an emergency, whatever the cooldown: a backlog is drained
#: by bigger batches, and the emergency's own delay cut or added worker (a change, which
#: starts the cooldown) would otherwise hold every batch raise back by ``cooldown_s``.
EMERGENCY_RAISES = ("batch_size",)
#: Raises that add capacity: :func:`flip_flop` lets them through while a model sheds requests.
CAPACITY_RAISES = ("batch_size", "workers")


@dataclass(frozen=True)
class GuardState:
    """When each model was last changed (controller clock, seconds); for each model in the
    emergency state, for how many consecutive ticks its condition has been clear; and each
    setting's last values (for :func:`flip_flop`)."""

    last_change_s: Mapping[str, float] = field(default_factory=frozen_map)
    emergency_clear_ticks: Mapping[str, int] = field(default_factory=frozen_map)
    settings_history: Histories = field(default_factory=frozen_map)


@dataclass(frozen=True)
class GuardResult:
    actions: tuple[Action, ...]
    overrides: tuple[Override, ...]
    state: GuardState
    emergencies: tuple[str, ...]


def emergency_reason(m: ModelObservation, config: ControllerConfig) -> str | None:
    """Why ``m`` is in an emergency, or None."""
    if m.oldest_queued_age_ms > m.slo_ms:
        return f"oldest queued request {m.oldest_queued_age_ms:.0f} ms > SLO {m.slo_ms:.0f} ms"
    if (
        m.requests_in_window >= config.emergency_min_requests
        and not math.isnan(m.slo_attainment)
        and m.slo_attainment < config.emergency_attainment
    ):
        return f"SLO attainment {m.slo_attainment:.2f} < {config.emergency_attainment:.2f}"
    return None


def recovered(m: ModelObservation, config: ControllerConfig) -> bool:
    """Whether ``m``'s attainment is back to ``emergency_exit_attainment`` (or too few
    requests in the window to say otherwise)."""
    return (
        m.requests_in_window < config.emergency_min_requests
        or math.isnan(m.slo_attainment)
        or m.slo_attainment >= config.emergency_exit_attainment
    )


def emergency_hold(
    observation: Observation, config: ControllerConfig, state: GuardState
) -> dict[str, int]:
    """Models that stay in the emergency state after this tick -> consecutive clear ticks
    (0 for a model whose condition holds now). A model leaves once its condition has been
    clear for ``emergency_exit_ticks`` ticks in a row and it has :func:`recovered`."""
    held = {}
    for lim in config.models:
        m = observation.model(lim.name)
        if emergency_reason(m, config) is not None:
            held[lim.name] = 0
        elif lim.name in state.emergency_clear_ticks:
            clear = state.emergency_clear_ticks[lim.name] + 1
            if clear < config.emergency_exit_ticks or not recovered(m, config):
                held[lim.name] = clear
    return held


def emergency(
    proposals: Proposals,
    observation: Observation,
    config: ControllerConfig,
    state: GuardState | None = None,
) -> tuple[Proposals, list[Override], tuple[str, ...]]:
    """Cut the delay to ``emergency_delay_ms`` and add a worker for every model in trouble;
    for a model still held in the emergency state (``state``, :func:`emergency_hold`) keep
    the delay cut and the workers. Returns the models in trouble now."""
    out, overrides, hit = dict(proposals), [], []
    held = emergency_hold(observation, config, state or GuardState())
    for lim in config.models:
        m = observation.model(lim.name)
        action, s = out.get(lim.name), m.settings
        reason = emergency_reason(m, config)
        if reason is None:
            if lim.name not in held:
                continue
            why = (
                f"emergency hold: clear {held[lim.name]} of {config.emergency_exit_ticks} ticks, "
                f"attainment back to {config.emergency_exit_attainment:.2f} needed"
            )
            wanted = target_value(action, s, "max_batch_delay_ms")
            delay = min(wanted, config.emergency_delay_ms)
            if delay < wanted:
                set_override(
                    out, overrides, lim.name, "max_batch_delay_ms", delay, "emergency_hold", why
                )
            if target_value(action, s, "workers") < s.workers:
                set_override(out, overrides, lim.name, "workers", s.workers, "emergency_hold", why)
            continue
        hit.append(lim.name)
        delay = min(target_value(action, s, "max_batch_delay_ms"), config.emergency_delay_ms)
        if delay != s.max_batch_delay_ms:
            set_override(out, overrides, lim.name, "max_batch_delay_ms", delay, "emergency", reason)
        workers = max(target_value(action, s, "workers"), min(s.workers + 1, lim.max_workers))
        if workers != s.workers:
            set_override(out, overrides, lim.name, "workers", workers, "emergency", reason)
    return out, overrides, tuple(hit)


def enforce_bounds(
    proposals: Proposals, observation: Observation, config: ControllerConfig
) -> tuple[Proposals, list[Override]]:
    """Clamp every proposed setting into the model's configured bounds."""
    out, overrides = dict(proposals), []
    for name, action in proposals.items():
        lim = config.limits(name)
        bounds = {
            "workers": (lim.min_workers, lim.max_workers),
            "batch_size": (lim.min_batch, lim.max_batch),
            "max_batch_delay_ms": (0, lim.max_delay_ms),
        }
        for setting, (low, high) in bounds.items():
            value = getattr(action, setting)
            if value is not None and not low <= value <= high:
                clamped = max(low, min(high, value))
                set_override(
                    out,
                    overrides,
                    name,
                    setting,
                    clamped,
                    "bounds",
                    f"{setting} {value} outside [{low}, {high}]",
                )
        # TorchServe 0.12 breaks out of batch formation after the 2nd job when the delay is
        # 0, whatever the batch size: a zero delay would silently cap batches at 2.
        current = observation.model(name).settings
        batch = target_value(out.get(name), current, "batch_size")
        delay = target_value(out.get(name), current, "max_batch_delay_ms")
        if batch > ZERO_DELAY_BATCH_CAP and delay < MIN_BATCHING_DELAY_MS:
            set_override(
                out,
                overrides,
                name,
                "max_batch_delay_ms",
                MIN_BATCHING_DELAY_MS,
                "bounds",
                f"delay 0 caps TorchServe batches at {ZERO_DELAY_BATCH_CAP} (batch size {batch})",
            )
    return out, overrides


def limit_step(
    proposals: Proposals,
    observation: Observation,
    config: ControllerConfig,
    exempt: tuple[str, ...] = (),
) -> tuple[Proposals, list[Override]]:
    """At most ``max_batch_step`` / ``max_delay_step_ms`` / ``max_worker_step`` per tick;
    an emergency may cut the delay at once."""
    steps = {
        "batch_size": config.max_batch_step,
        "max_batch_delay_ms": config.max_delay_step_ms,
        "workers": config.max_worker_step,
    }
    out, overrides = dict(proposals), []
    for name, action in proposals.items():
        current = observation.model(name).settings
        for setting, step in steps.items():
            value, now = getattr(action, setting), getattr(current, setting)
            if value is None or abs(value - now) <= step:
                continue
            if name in exempt and setting == "max_batch_delay_ms" and value < now:
                continue
            limited = now + step if value > now else now - step
            set_override(
                out,
                overrides,
                name,
                setting,
                limited,
                "max_step",
                f"{setting} {now} -> {value} exceeds the step of {step} per tick",
            )
    return out, overrides


def emergency_passes(
    name: str, setting: str, value: int, current: ModelSettings, exempt: tuple[str, ...]
) -> bool:
    """Whether setting ``setting`` of model ``name`` to ``value`` is a change an emergency lets
    through whatever the cooldown: its own settings, or a raise of :data:`EMERGENCY_RAISES`."""
    if name not in exempt:
        return False
    if setting in EMERGENCY_SETTINGS:
        return True
    return setting in EMERGENCY_RAISES and value > getattr(current, setting)


def cooldown(
    proposals: Proposals,
    observation: Observation,
    config: ControllerConfig,
    state: GuardState,
    exempt: tuple[str, ...] = (),
) -> tuple[Proposals, list[Override]]:
    """Veto changes to a model changed less than ``cooldown_s`` ago; in an emergency the
    emergency's own settings (delay, workers) pass, and so does the policy's batch raise
    (:data:`EMERGENCY_RAISES`); a batch cut waits."""
    out, overrides = dict(proposals), []
    for name, action in proposals.items():
        last = state.last_change_s.get(name)
        if last is None:
            continue
        age = observation.time_s - last
        if age >= config.cooldown_s:
            continue
        current = observation.model(name).settings
        for setting, value in action.changes(current).items():
            if emergency_passes(name, setting, value, current, exempt):
                continue
            set_override(
                out,
                overrides,
                name,
                setting,
                None,
                "cooldown",
                f"last change {age:.1f} s ago < cooldown {config.cooldown_s:.1f} s "
                f"(wanted {setting}={value})",
            )
    return out, overrides


def flip_flop(
    proposals: Proposals,
    observation: Observation,
    config: ControllerConfig,
    state: GuardState,
    exempt: tuple[str, ...] = (),
) -> tuple[Proposals, list[Override]]:
    """Veto a setting's going back a second time to the value it left (a -> b -> a -> b)
    within ``flip_hold_s`` at the same load; in an emergency what passes the cooldown passes
    here too, and so does a raise of :data:`CAPACITY_RAISES` while the model sheds."""
    out, overrides = dict(proposals), []
    vetoes = flip_vetoes(proposals, observation, config.flip_hold_s, state.settings_history)
    for name, setting, reason in vetoes:
        m = observation.model(name)
        value = getattr(proposals[name], setting)
        if emergency_passes(name, setting, value, m.settings, exempt):
            continue
        if m.shedding and setting in CAPACITY_RAISES and value > getattr(m.settings, setting):
            continue  # holding a setting that sheds is worse than a flip
        set_override(out, overrides, name, setting, None, "flip_flop", reason)
    return out, overrides


def drop_noops(proposals: Proposals, observation: Observation) -> Proposals:
    """Keep only settings that really change; drop empty actions."""
    out = {}
    for name, action in proposals.items():
        changes = action.changes(observation.model(name).settings)
        if changes:
            out[name] = Action(name, **changes)
    return out


def guard(
    actions: tuple[Action, ...],
    observation: Observation,
    config: ControllerConfig,
    state: GuardState,
    emergencies: bool = True,
) -> GuardResult:
    """Run every guard over a policy's actions; return what may be applied and why not more.

    ``emergencies=False`` skips :func:`emergency` (for the ``static`` no-control baseline).
    """
    proposals: Proposals = {}
    overrides: list[Override] = []
    for action in actions:
        if action.model not in config.model_names:
            for setting in SETTING_FIELDS:
                if getattr(action, setting) is not None:
                    overrides.append(
                        Override(
                            action.model,
                            "unknown_model",
                            setting,
                            getattr(action, setting),
                            None,
                            "model not in the controller config",
                        )
                    )
            continue
        merged = proposals.get(action.model, Action(action.model))
        updates = {f: getattr(action, f) for f in SETTING_FIELDS if getattr(action, f) is not None}
        proposals[action.model] = replace(merged, **updates)
    exempt: tuple[str, ...] = ()
    held: dict[str, int] = {}
    if emergencies:
        proposals, found, exempt = emergency(proposals, observation, config, state)
        overrides += found
        held = emergency_hold(observation, config, state)
    proposals, found = enforce_bounds(proposals, observation, config)
    overrides += found
    proposals, found = limit_step(proposals, observation, config, exempt)
    overrides += found
    proposals, found = cooldown(proposals, observation, config, state, exempt)
    overrides += found
    proposals, found = flip_flop(proposals, observation, config, state, exempt)
    overrides += found
    for budget in (worker_budget, memory_budget, gpu_memory_budget):
        proposals, found = budget(proposals, observation, config, exempt)
        overrides += found
    final = drop_noops(proposals, observation)
    last = dict(state.last_change_s)
    for name in final:
        last[name] = observation.time_s
    return GuardResult(
        actions=tuple(final[n] for n in sorted(final)),
        overrides=tuple(overrides),
        state=GuardState(
            frozen_map(last),
            frozen_map(held),
            record_changes(state.settings_history, final, observation),
        ),
        emergencies=exempt,
    )
