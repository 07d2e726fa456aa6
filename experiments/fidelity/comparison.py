"""Real against simulated, row by row: one model's figures on each side (:class:`Side`),
each model's comparison with the acceptance targets (:class:`Row`), and whether a whole
scenario agrees (:func:`scenario_agrees`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tsadapt.experiments.fidelity.common import (
    ATTAINMENT_POINTS,
    P99_TOLERANCE,
    clean_floats,
    json_num,
)
from tsadapt.policy.sim.metrics import ModelResult


@dataclass(frozen=True)
class Side:
    """One side's figures for one model (or ``overall``)."""

    requests: int
    completed: int
    rejected: int
    failed: int
    p50_ms: float
    p99_ms: float
    slo_attainment: float  # 0..1

    @classmethod
    def of(cls, r: ModelResult) -> Side:
        return cls(
            int(r.requests),
            int(r.completed),
            int(r.rejected),
            int(r.failed),
            float(r.p50_ms),
            float(r.p99_ms),
            float(r.slo_attainment),
        )


def p99_relative_error(real_ms: float, sim_ms: float) -> float:
    """``(sim - real) / real``; NaN when either is missing or the real one is not > 0."""
    if not (math.isfinite(real_ms) and math.isfinite(sim_ms)) or real_ms <= 0:
        return math.nan
    return (sim_ms - real_ms) / real_ms


def attainment_points(real: float, sim: float) -> float:
    """Simulated minus real SLO attainment, in percentage points."""
    return 100.0 * (sim - real)


@dataclass(frozen=True)
class Row:
    """Real against simulated for one model of one scenario."""

    scenario: str
    model: str
    slo_ms: float | None
    real: Side
    sim: Side
    p99_tolerance: float = P99_TOLERANCE
    attainment_tolerance: float = ATTAINMENT_POINTS

    @property
    def p99_error(self) -> float:
        return p99_relative_error(self.real.p99_ms, self.sim.p99_ms)

    @property
    def attainment_diff(self) -> float:
        return attainment_points(self.real.slo_attainment, self.sim.slo_attainment)

    @property
    def p99_ok(self) -> bool:
        e = self.p99_error
        return math.isfinite(e) and abs(e) <= self.p99_tolerance + 1e-12

    @property
    def attainment_ok(self) -> bool:
        return abs(self.attainment_diff) <= self.attainment_tolerance + 1e-9

    @property
    def ok(self) -> bool:
        return self.p99_ok and self.attainment_ok

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "model": self.model,
            "slo_ms": self.slo_ms,
            "real": clean_floats(asdict(self.real)),
            "sim": clean_floats(asdict(self.sim)),
            "p99_rel_error": json_num(self.p99_error),
            "attainment_diff_points": json_num(self.attainment_diff),
            "p99_pass": self.p99_ok,
            "attainment_pass": self.attainment_ok,
            "pass": self.ok,
        }


def compare(
    scenario: str,
    real: Mapping[str, ModelResult],
    sim: Mapping[str, ModelResult],
    real_overall: ModelResult | None = None,
    sim_overall: ModelResult | None = None,
    p99_tolerance: float = P99_TOLERANCE,
    attainment_tolerance: float = ATTAINMENT_POINTS,
) -> list[Row]:
    """One :class:`Row` per model present on both sides (real's order), then ``overall``."""
    missing = sorted(set(real) ^ set(sim))
    if missing:
        raise ValueError(f"{scenario}: models on one side only: {missing}")
    rows = [
        Row(scenario, name, r.slo_ms, Side.of(r), Side.of(sim[name]), p99_tolerance,
            attainment_tolerance)
        for name, r in real.items()
    ]  # fmt: skip
    if real_overall is not None and sim_overall is not None:
        rows.append(
            Row(scenario, "overall", None, Side.of(real_overall), Side.of(sim_overall),
                p99_tolerance, attainment_tolerance)
        )  # fmt: skip
    return rows


def scenario_agrees(rows: Sequence[Row]) -> bool:
    """A scenario agrees when it has rows and every one (each model, pooled) passes."""
    return bool(rows) and all(r.ok for r in rows)
