"""The learned policy's action designs: ``direct``, ``supervisor`` and ``residual``.

``direct`` (DNN-Adapt's incremental form, :mod:`policy.agent_view`): the network moves the
batch size, the delay and the workers itself.

``supervisor``: every tick the network chooses, per model, which fast rule drives it and a
worker headroom: ``MultiDiscrete([3, 3])`` = (mode in ``hold`` / ``aimd`` / ``queue``,
worker bias -1/0/+1). ``hold`` keeps the batch and the delay; ``aimd`` and ``queue`` take
that rule's proposal (:mod:`policy.rules`, with the controller config's parameters). The
bias is added to the workers the mode asks for (the current ones when it asks for none).
Both rules decide on every tick, chosen or not, so the ``queue`` rule's rate average and
downscale counter stay current (:class:`RuleSetPoints`: its memory is the policy's state).
``residual``: a fast rule plus a learned offset. ``MultiDiscrete([2, 5, 3, 3])`` = (rule in
``aimd`` / ``queue``, batch offset -2..+2, delay offset -1/0/+1 x ``delay_step_ms``, worker
offset -1/0/+1) on that rule's proposal (the current settings where it proposes none). Its
no-op, (``aimd``, 0, 0, 0), follows aimd exactly, so unlike the other designs' no-op it is
decoded, not skipped (:attr:`ActionSpec.skip_noop`).

The guards are the same for every design.

A policy file records its design (``action_design``) with the design's action layout; the
runtime decodes the network's output with the design the file names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tsadapt.policy.agent_view import (
    ACTION_LAYOUT,
    ACTION_NVEC,
    NOOP_ACTION,
    STEP_DIRS,
    decode_action,
    within_limits,
)
from tsadapt.policy.controller_config import ControllerConfig, ModelLimits
from tsadapt.policy.rules import AimdPolicy, QueuePolicy
from tsadapt.policy.types import Action, ModelObservation, Observation, PolicyState

DIRECT, SUPERVISOR, RESIDUAL = "direct", "supervisor", "residual"
ACTION_DESIGNS = (DIRECT, SUPERVISOR, RESIDUAL)
MODES = ("hold", "aimd", "queue")
WORKER_BIAS = (-1, 0, 1)
SUPERVISOR_NVEC = (len(MODES), len(WORKER_BIAS))
SUPERVISOR_NOOP = (MODES.index("hold"), WORKER_BIAS.index(0))
SUPERVISOR_LAYOUT = {"mode": list(MODES), "worker_bias": list(WORKER_BIAS)}
RESIDUAL_RULES = ("aimd", "queue")
BATCH_OFFSETS = (-2, -1, 0, 1, 2)
RESIDUAL_NVEC = (len(RESIDUAL_RULES), len(BATCH_OFFSETS), len(STEP_DIRS), len(STEP_DIRS))
RESIDUAL_NOOP = (RESIDUAL_RULES.index("aimd"), BATCH_OFFSETS.index(0), 1, 1)
RESIDUAL_LAYOUT = {
    "rule": list(RESIDUAL_RULES),
    "batch_offset": list(BATCH_OFFSETS),
    "delay_offset_dir": list(STEP_DIRS),
    "worker_offset": list(STEP_DIRS),
}

#: Rule proposals per model: mode name -> that rule's action for the model (None: none).
Proposals = Mapping[str, Mapping[str, Action | None]]


@dataclass(frozen=True)
class ActionSpec:
    """One design's action space: sub-space sizes, the no-op, the layout a file records;
    ``skip_noop``: the no-op leaves the model alone (else it is decoded like any action);
    ``uses_rules``: decoding needs the rules' proposals."""

    design: str
    nvec: tuple[int, ...]
    noop: tuple[int, ...]
    layout: dict[str, list[int] | list[str]]
    skip_noop: bool = True
    uses_rules: bool = False


def action_spec(design: str) -> ActionSpec:
    """The :class:`ActionSpec` of ``design``; ``ValueError`` names the known ones."""
    if design == DIRECT:
        return ActionSpec(DIRECT, tuple(ACTION_NVEC), tuple(NOOP_ACTION), dict(ACTION_LAYOUT))
    if design == SUPERVISOR:
        return ActionSpec(
            SUPERVISOR, SUPERVISOR_NVEC, SUPERVISOR_NOOP, dict(SUPERVISOR_LAYOUT), uses_rules=True
        )
    if design == RESIDUAL:
        return ActionSpec(
            RESIDUAL,
            RESIDUAL_NVEC,
            RESIDUAL_NOOP,
            dict(RESIDUAL_LAYOUT),
            skip_noop=False,
            uses_rules=True,
        )
    raise ValueError(
        f"action_design: unknown design {design!r}; known: {', '.join(ACTION_DESIGNS)}"
    )


@dataclass(frozen=True)
class RuleSetPoints:
    """The fast rules a supervisor chooses from, with the controller config's parameters."""

    aimd: AimdPolicy
    queue: QueuePolicy

    @classmethod
    def for_config(cls, config: ControllerConfig) -> RuleSetPoints:
        return cls(AimdPolicy(config.models, config.aimd), QueuePolicy(config.models, config.queue))

    def propose(
        self, observation: Observation, state: PolicyState
    ) -> tuple[dict[str, dict[str, Action | None]], PolicyState]:
        """Every rule's proposal for every model, and the state for the next tick (the
        ``queue`` rule's memory; ``aimd`` keeps none)."""
        q_actions, q_state = self.queue.decide(observation, state)
        a_actions, _ = self.aimd.decide(observation, state)
        out: dict[str, dict[str, Action | None]] = {
            lim.name: {"hold": None, "aimd": None, "queue": None} for lim in self.queue.limits
        }
        for mode, actions in (("aimd", a_actions), ("queue", q_actions)):
            for a in actions:
                out[a.model][mode] = a
        return out, q_state


def proposed(chosen: Action | None, m: ModelObservation, field: str) -> int:
    """The value of ``field`` (``batch_size``, ``max_batch_delay_ms``, ``workers``) the chosen
    rule proposes, else the model's current one."""
    value = None if chosen is None else getattr(chosen, field)
    return int(getattr(m.settings, field) if value is None else value)


def supervise(
    action: Sequence[int], m: ModelObservation, limits: ModelLimits, proposals: Mapping[str, Any]
) -> Action:
    """The absolute :class:`Action` a supervisor action asks for (workers within limits)."""
    mode_i, bias_i = (int(x) for x in action)
    chosen = proposals.get(MODES[mode_i])
    base = proposed(chosen, m, "workers")
    workers = min(max(base + WORKER_BIAS[bias_i], limits.min_workers), limits.max_workers)
    return Action(
        m.name,
        batch_size=proposed(chosen, m, "batch_size"),
        max_batch_delay_ms=proposed(chosen, m, "max_batch_delay_ms"),
        workers=workers,
    )


def residual(
    action: Sequence[int],
    m: ModelObservation,
    limits: ModelLimits,
    proposals: Mapping[str, Any],
    delay_step_ms: int,
) -> Action:
    """The absolute :class:`Action` a residual action asks for (within the limits)."""
    rule_i, b_i, d_i, w_i = (int(x) for x in action)
    chosen = proposals.get(RESIDUAL_RULES[rule_i])
    return within_limits(
        m.name,
        limits,
        proposed(chosen, m, "batch_size") + BATCH_OFFSETS[b_i],
        proposed(chosen, m, "max_batch_delay_ms") + STEP_DIRS[d_i] * delay_step_ms,
        proposed(chosen, m, "workers") + STEP_DIRS[w_i],
    )


def decode(
    spec: ActionSpec,
    action: Sequence[int],
    m: ModelObservation,
    limits: ModelLimits,
    proposals: Mapping[str, Any],
    delay_step_ms: int,
) -> Action | None:
    """The :class:`Action` one model's network output asks for under ``spec``'s design;
    None for a no-op the design skips (``proposals``: that model's, from
    :meth:`RuleSetPoints.propose`, where ``spec.uses_rules``)."""
    if spec.skip_noop and tuple(int(v) for v in action) == spec.noop:
        return None
    if spec.design == SUPERVISOR:
        return supervise(action, m, limits, proposals)
    if spec.design == RESIDUAL:
        return residual(action, m, limits, proposals, delay_step_ms)
    return decode_action(action, m, limits, delay_step_ms)
