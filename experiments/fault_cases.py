"""The faults of the reliability report, in the order it lists them. Each is injected into a
real TorchServe under open-loop load with the controller (the PPO policy) running and returns
its :class:`FaultResult` row with the checks it must pass; ``tests/test_faults_server.py`` runs
them one by one, ``tsadapt lab reliability`` all of them (:mod:`.reliability`)."""

from __future__ import annotations

from collections.abc import Callable

from tsadapt.experiments.fault_harness import FaultEnv, FaultResult, start_server
from tsadapt.experiments.faults_cut import (
    bad_inputs,
    decision_log_full,
    management_unreachable,
    plugin_missing,
    unregister_in_flight,
)
from tsadapt.experiments.faults_kill import (
    frontend_restart,
    overload_burst,
    sidecar_restart,
    worker_kill,
)

__all__ = ["FAULTS", "FaultEnv", "FaultResult", "start_server"]

#: Every fault, in the order the report lists them (name -> case).
FAULTS: dict[str, Callable[[FaultEnv], FaultResult]] = {
    "worker-kill": worker_kill,
    "frontend-restart": frontend_restart,
    "sidecar-restart": sidecar_restart,
    "management-unreachable": management_unreachable,
    "plugin-missing": plugin_missing,
    "unregister-in-flight": unregister_in_flight,
    "bad-inputs": bad_inputs,
    "decision-log-full": decision_log_full,
    "overload-burst": overload_burst,
}
