"""``tsadapt lab fidelity``: the simulator against the real TorchServe on the same workload.

For each scenario (a real-server scenario file, ``loadtests/scenarios``), with the same
seed and duration on both sides:

* **real**: a fresh TorchServe with the demo models at their registration defaults
  (``handlers/catalog.py``: the ``static`` controller, nothing changes during the run),
  warmed up, then Locust replays the scenario's exact arrivals -- all through
  :func:`tsadapt.experiments.bench.run_one`, the machinery of ``tsadapt lab bench``;
* **sim**: :func:`policy.sim.static_run.run_static` with the same fixed configuration, the
  scenario's calibrated profiles (``profile``, ``threads``, ``exec_cv``, ``overhead_ms``,
  ``devices``) and the same arrivals (both sides draw them from the same seed streams).

Per model (and pooled) the report puts real against simulated p99 and SLO attainment and
checks them against the acceptance targets: p99 within :data:`P99_TOLERANCE` (relative to
the real one) and attainment within :data:`ATTAINMENT_POINTS` percentage points. A
scenario agrees when every row does. Nothing is tuned to the runs being reported: the
calibration comes from ``tsadapt lab demo-models profile`` (handler-only batch latency) and
``tsadapt lab fidelity calibrate`` (a separate run with steady load, see :func:`calibrate`).

During each real run the box's CPU is sampled: the report says how many cores our own
processes (TorchServe, its workers, Locust, this process) used and how many others did,
since foreign load on a small box shows up directly in the real tail latencies.

The check is a package, one job per module: :mod:`.common` (targets, defaults,
:class:`FidelityConfig`), :mod:`.comparison` (real against simulated, row by row),
:mod:`.runs` (both sides of one scenario), :mod:`.calibration` (``tsadapt lab fidelity
calibrate``), :mod:`.report` (``fidelity.md`` and ``fidelity.json``) and :mod:`.entry`
(:func:`run_fidelity`); the CPU sampling is :mod:`tsadapt.experiments.hostcpu`.
"""

from __future__ import annotations

from tsadapt.experiments.fidelity.calibration import (
    OVERHEAD_QUANTILES,
    Batches,
    Calibration,
    backend_batches,
    calibrate,
    derive_calibration,
    fit_overhead_quantiles,
    host_cpu_per_request_ms,
    lognormal_cv,
    overhead_quantiles,
    quantile_of,
    solo_mask,
)
from tsadapt.experiments.fidelity.common import (
    ATTAINMENT_POINTS,
    CALIBRATION_FILE,
    CALIBRATION_MAX_OTHERS,
    DEFAULT_RUNS,
    DEFAULT_SCENARIOS,
    P99_TOLERANCE,
    RESULTS_DIR,
    SCENARIOS_NEEDED,
    SIM_REPLICATIONS,
    FidelityConfig,
)
from tsadapt.experiments.fidelity.comparison import (
    Row,
    Side,
    attainment_points,
    compare,
    p99_relative_error,
    scenario_agrees,
)
from tsadapt.experiments.fidelity.entry import run_fidelity
from tsadapt.experiments.fidelity.report import TABLE_HEADER, table_rows, write_report
from tsadapt.experiments.fidelity.runs import ScenarioRun, simulate, static_configs, with_duration
from tsadapt.experiments.hostcpu import QUIET_CORES, QUIET_TIMEOUT_S, CpuLoad, Quiet

__all__ = [
    "ATTAINMENT_POINTS",
    "CALIBRATION_FILE",
    "CALIBRATION_MAX_OTHERS",
    "DEFAULT_RUNS",
    "DEFAULT_SCENARIOS",
    "OVERHEAD_QUANTILES",
    "P99_TOLERANCE",
    "QUIET_CORES",
    "QUIET_TIMEOUT_S",
    "RESULTS_DIR",
    "SCENARIOS_NEEDED",
    "SIM_REPLICATIONS",
    "TABLE_HEADER",
    "Batches",
    "Calibration",
    "CpuLoad",
    "FidelityConfig",
    "Quiet",
    "Row",
    "ScenarioRun",
    "Side",
    "attainment_points",
    "backend_batches",
    "calibrate",
    "compare",
    "derive_calibration",
    "fit_overhead_quantiles",
    "host_cpu_per_request_ms",
    "lognormal_cv",
    "overhead_quantiles",
    "p99_relative_error",
    "quantile_of",
    "run_fidelity",
    "scenario_agrees",
    "simulate",
    "solo_mask",
    "static_configs",
    "table_rows",
    "with_duration",
    "write_report",
]
