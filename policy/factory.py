"""The one policy factory: a policy by name, for the sidecar, the bench, evaluation and training."""

from __future__ import annotations

from pathlib import Path

from tsadapt.policy.controller_config import POLICY_NAMES, ControllerConfig
from tsadapt.policy.rules import AimdPolicy, QueuePolicy, StaticPolicy
from tsadapt.policy.types import Policy


def make_policy(name: str, config: ControllerConfig, policy_file: Path | None = None) -> Policy:
    """The named policy, parameterised from ``config``.

    ``ppo`` loads ``policy_file`` (default: the shipped ``policy/trained/ppo.zip``); the other
    names ignore it. An unknown name is a ``ValueError`` that lists the known ones.
    """
    if name == "static":
        return StaticPolicy()
    if name == "aimd":
        return AimdPolicy(config.models, config.aimd)
    if name == "queue":
        return QueuePolicy(config.models, config.queue, config.tick_s)
    if name == "ppo":
        from tsadapt.policy.ppo_policy import SHIPPED_POLICY, make_ppo_policy

        return make_ppo_policy(Path(policy_file) if policy_file else SHIPPED_POLICY, config)
    raise ValueError(f"policy: unknown {name!r}; known: {', '.join(POLICY_NAMES)}")
