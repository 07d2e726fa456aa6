"""What a fleet policy sees and proposes (frozen), and the policy contract."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

EMPTY = -1


@dataclass(frozen=True)
class Slot:
    """One GPU slot (seed 000): the model it holds (:data:`EMPTY` for none), its batch size
    and its parallel flag."""

    model: int = EMPTY
    batch: int = 1
    parallel: bool = False

    @property
    def empty(self) -> bool:
        return self.model == EMPTY


def turns(row: Sequence[Slot]) -> int:
    """How many turns a GPU's occupied slots take: one per sequential slot, one for all the
    parallel slots together (they run at once)."""
    busy = [s for s in row if not s.empty]
    return sum(1 for s in busy if not s.parallel) + (1 if any(s.parallel for s in busy) else 0)


@dataclass(frozen=True)
class SlotAction:
    """Set slot ``slot`` of GPU ``gpu`` to ``model`` (or :data:`EMPTY`) with ``batch`` and
    ``parallel``: an incremental change of one slot."""

    gpu: int
    slot: int
    model: int
    batch: int
    parallel: bool = False

    def slot_value(self) -> Slot:
        return Slot(self.model, self.batch if self.model != EMPTY else 1, self.parallel)


@dataclass(frozen=True)
class ModelView:
    """One model over the last observation window."""

    index: int
    slo_ms: float
    rate_rps: float
    queue: int
    attainment: float  # good / finished in the window (1.0 when nothing finished)
    slots: int


@dataclass(frozen=True)
class FleetObservation:
    """The fleet at one tick: per-model load and SLO state, and every slot (GPU x slot)."""

    time_s: float
    models: tuple[ModelView, ...]
    slots: tuple[tuple[Slot, ...], ...]
    #: per GPU, GiB still held by replaced workers that serve until their successors are
    #: ready (make before break); empty when nothing drains
    draining_gib: tuple[float, ...] = ()

    @property
    def gpus_in_use(self) -> int:
        return sum(1 for g in self.slots if any(not s.empty for s in g))


@dataclass(frozen=True)
class Override:
    """A guard vetoed or changed one slot action, and why."""

    gpu: int
    slot: int
    guard: str
    reason: str


class FleetPolicy(Protocol):
    name: str

    def decide(self, observation: FleetObservation) -> tuple[SlotAction, ...]: ...
