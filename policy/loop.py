"""One control step, written once: observe -> decide -> guard -> apply -> record.

Every controller runs this step: the sidecar against the real server
(:class:`tsadapt.sidecar.runner.Sidecar`, whose backend is the observer and the actuator),
the simulated sidecar (:func:`tsadapt.policy.sim.control.run_controlled`) and the Gym
environment (:class:`tsadapt.policy.learn.gym_env.AdaptEnv`), both over
:class:`tsadapt.policy.sim.control.SimBackend`. Only a backend talks to a server; the
policy is a pure ``decide(observation, state)`` and the guards are pure functions.

``static`` is the no-control baseline in every backend: it changes nothing, and the
emergency guard does not act for it either (:func:`uses_emergencies`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tsadapt.policy.controller_config import ControllerConfig
from tsadapt.policy.guards import GuardResult, GuardState, guard
from tsadapt.policy.types import (
    Action,
    ModelSettings,
    Observation,
    Policy,
    PolicyState,
    settings_of,
)

#: The name of the no-control baseline (registration settings, nothing changed, ever).
STATIC = "static"


@dataclass(frozen=True)
class ApplyResult:
    """What happened to one model's guarded action."""

    model: str
    changes: dict[str, int]
    ok: bool = True
    attempts: int = 1
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Backend(Protocol):
    """Where observations come from and where guarded actions go."""

    def observe(self) -> Observation: ...

    def apply(
        self, actions: tuple[Action, ...], current: Mapping[str, ModelSettings]
    ) -> tuple[ApplyResult, ...]: ...


@dataclass(frozen=True)
class LoopState:
    """What the loop carries from one tick to the next: the policy's and the guards'."""

    policy: PolicyState = field(default_factory=PolicyState)
    guard: GuardState = field(default_factory=GuardState)


@dataclass(frozen=True)
class Step:
    """One tick: what was seen, proposed, let through (and why not more), and applied."""

    observation: Observation
    proposed: tuple[Action, ...]
    guarded: GuardResult
    applied: tuple[ApplyResult, ...]
    state: LoopState

    @property
    def settings(self) -> dict[str, ModelSettings]:
        """Each model's settings after the changes that succeeded."""
        return settings_after(settings_of(self.observation), self.applied)


def uses_emergencies(policy: Policy) -> bool:
    """Whether the emergency guard acts for ``policy`` (never for the ``static`` baseline)."""
    return policy.name != STATIC


def settings_after(
    current: Mapping[str, ModelSettings], applied: tuple[ApplyResult, ...]
) -> dict[str, ModelSettings]:
    """``current`` with the successful changes of ``applied``."""
    out = dict(current)
    for r in applied:
        if r.ok:
            out[r.model] = ModelSettings(**{**out[r.model].as_dict(), **r.changes})
    return out


def control_step(
    backend: Backend,
    policy: Policy,
    config: ControllerConfig,
    state: LoopState,
    observation: Observation | None = None,
    record: Callable[[Step], None] | None = None,
) -> Step:
    """Observe (unless ``observation`` is given), decide, guard, apply and record once."""
    seen = backend.observe() if observation is None else observation
    proposed, policy_state = policy.decide(seen, state.policy)
    guarded = guard(proposed, seen, config, state.guard, emergencies=uses_emergencies(policy))
    applied = backend.apply(guarded.actions, settings_of(seen))
    step = Step(seen, proposed, guarded, applied, LoopState(policy_state, guarded.state))
    if record is not None:
        record(step)
    return step
