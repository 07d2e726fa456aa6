"""What every guard shares: the proposals it edits and the :class:`Override` it records."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tsadapt.policy.types import Action, ModelSettings

Proposals = dict[str, Action]


@dataclass(frozen=True)
class Override:
    """A guard changed (or vetoed) what the policy proposed for one setting."""

    model: str
    guard: str
    setting: str
    proposed: int | None
    applied: int | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def set_override(
    proposals: Proposals,
    overrides: list[Override],
    model: str,
    setting: str,
    value: int | None,
    guard_name: str,
    reason: str,
) -> None:
    """Replace one setting of ``model``'s proposal, logging an override if it differs."""
    old = proposals.get(model, Action(model))
    proposed = getattr(old, setting)
    if proposed == value:
        return
    proposals[model] = replace(old, **{setting: value})
    overrides.append(Override(model, guard_name, setting, proposed, value, reason))


def target_value(action: Action | None, current: ModelSettings, setting: str) -> int:
    value = getattr(action, setting) if action is not None else None
    return getattr(current, setting) if value is None else value
