"""What every part of the fidelity check shares: the acceptance targets, defaults and
paths, the settings of a whole check (:class:`FidelityConfig`), and how numbers and paths
are written into its JSON and markdown."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsadapt.constants import REPO_DIR
from tsadapt.experiments.hostcpu import QUIET_CORES, Quiet

REPO = REPO_DIR
RESULTS_DIR = REPO / "docs" / "results"
#: Acceptance targets (issue #5, "Fidelity").
P99_TOLERANCE = 0.20
ATTAINMENT_POINTS = 3.0
#: Scenarios agreeing needed for the acceptance item.
SCENARIOS_NEEDED = 3
DEFAULT_SCENARIOS = ("bursty", "diurnal", "step", "surge")
#: The scenario ``tsadapt lab fidelity calibrate`` runs (not one of the compared).
CALIBRATION_SCENARIO = "calibrate"
CALIBRATION_FILE = RESULTS_DIR / "fidelity-calibration.json"
DEFAULT_RUNS = Path("runs/fidelity")
#: Warm-up rounds before the load (see :func:`tsadapt.experiments.bench.warm_up`).
WARMUP_ROUNDS = 2
#: Simulated runs per real one (same arrivals, other draws of the rest), pooled.
SIM_REPLICATIONS = 20
#: A calibration run during which other processes used more than this many cores (on
#: average) is repeated, up to CALIBRATION_ATTEMPTS runs: its tails would be theirs.
CALIBRATION_MAX_OTHERS = 0.1
CALIBRATION_ATTEMPTS = 3


@dataclass(frozen=True)
class FidelityConfig:
    scenarios: tuple[str, ...] = DEFAULT_SCENARIOS
    duration_s: float | None = None  # default: each scenario's
    seed: int | None = None  # default: each scenario's
    out_dir: Path = RESULTS_DIR
    runs_dir: Path = DEFAULT_RUNS
    command: str = "tsadapt lab fidelity"
    extra_notes: tuple[str, ...] = field(default_factory=tuple)
    quiet: Quiet = field(default_factory=Quiet)
    attempts: int = 2  # real runs per scenario at most (see run_scenario)
    max_others_cores: float = QUIET_CORES
    repeat: bool = False  # a second real run per scenario, compared with the first


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 6)


def _clean(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _num(v) if isinstance(v, float) else v for k, v in d.items()}


def _rel(p: Path | str) -> str:
    p = Path(p)
    try:
        return str(p.resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def _fmt(x: float, spec: str = ".1f", suffix: str = "") -> str:
    return "–" if x is None or not math.isfinite(x) else f"{format(x, spec)}{suffix}"
