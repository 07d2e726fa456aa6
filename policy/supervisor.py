"""The learned policy's two action designs: ``direct`` and ``supervisor``.

``direct`` (DNN-Adapt's incremental form, :mod:`policy.agent_view`): the network moves the
batch size, the delay and the workers itself.

``supervisor``: every tick the network chooses, per model, which fast rule drives it and a
worker headroom: ``MultiDiscrete([3, 3])`` = (mode in ``hold`` / ``aimd`` / ``queue``,
worker bias -1/0/+1). ``hold`` keeps the batch and the delay; ``aimd`` and ``queue`` take
that rule's proposal (:mod:`policy.rules`, with the controller config's parameters). The
bias is added to the workers the mode asks for (the current ones when it asks for none).
Both rules decide on every tick, chosen or not, so the ``queue`` rule's rate average and
downscale counter stay current (:class:`RuleSetPoints`: its memory is the policy's state).
The guards are the same for both designs.

A policy file records its design (``action_design``) with the design's action layout; the
runtime decodes the network's output with the design the file names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tsadapt.policy.agent_view import ACTION_LAYOUT, ACTION_NVEC, NOOP_ACTION
from tsadapt.policy.controller_config import ControllerConfig, ModelLimits
from tsadapt.policy.rules import AimdPolicy, QueuePolicy
from tsadapt.policy.types import Action, ModelObservation, Observation, PolicyState

DIRECT, SUPERVISOR = "direct", "supervisor"
ACTION_DESIGNS = (DIRECT, SUPERVISOR)
MODES = ("hold", "aimd", "queue")
WORKER_BIAS = (-1, 0, 1)
SUPERVISOR_NVEC = (len(MODES), len(WORKER_BIAS))
SUPERVISOR_NOOP = (MODES.index("hold"), WORKER_BIAS.index(0))
SUPERVISOR_LAYOUT = {"mode": list(MODES), "worker_bias": list(WORKER_BIAS)}

#: Rule proposals per model: mode name -> that rule's action for the model (None: none).
Proposals = Mapping[str, Mapping[str, Action | None]]


@dataclass(frozen=True)
class ActionSpec:
    """One design's action space: sub-space sizes, the no-op, the layout a file records."""

    design: str
    nvec: tuple[int, ...]
    noop: tuple[int, ...]
    layout: dict[str, list[int] | list[str]]


def action_spec(design: str) -> ActionSpec:
    """The :class:`ActionSpec` of ``design``; ``ValueError`` names the known ones."""
    if design == DIRECT:
        return ActionSpec(DIRECT, tuple(ACTION_NVEC), tuple(NOOP_ACTION), dict(ACTION_LAYOUT))
    if design == SUPERVISOR:
        return ActionSpec(SUPERVISOR, SUPERVISOR_NVEC, SUPERVISOR_NOOP, dict(SUPERVISOR_LAYOUT))
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


def supervise(
    action: Sequence[int], m: ModelObservation, limits: ModelLimits, proposals: Mapping[str, Any]
) -> Action:
    """The absolute :class:`Action` a supervisor action asks for (workers within limits)."""
    mode_i, bias_i = (int(x) for x in action)
    chosen = proposals.get(MODES[mode_i])
    s = m.settings
    batch = s.batch_size if chosen is None or chosen.batch_size is None else chosen.batch_size
    delay = s.max_batch_delay_ms
    if chosen is not None and chosen.max_batch_delay_ms is not None:
        delay = chosen.max_batch_delay_ms
    base = s.workers if chosen is None or chosen.workers is None else chosen.workers
    workers = min(max(base + WORKER_BIAS[bias_i], limits.min_workers), limits.max_workers)
    return Action(m.name, batch_size=batch, max_batch_delay_ms=delay, workers=workers)
