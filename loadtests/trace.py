"""Trace replay: per-second rates from a CSV (the simulator's ``trace`` workload), open loop.

    locust -f loadtests/trace.py --headless

The CSV has a header and either ``second,rate`` rows (piecewise-constant Poisson) or one
``timestamp`` column (replayed exactly). Relative paths are resolved against this folder.
Options and environment variables: see ``loadtests/openloop.py``.
"""

from openloop import OpenLoopDispatcher, OpenLoopShape

__all__ = ["OpenLoopDispatcher", "TraceShape"]


class TraceShape(OpenLoopShape):
    """Replays ``traces/demo.csv`` (60 s of per-second rates)."""

    duration_s = 60.0
    #: Path relative to ``loadtests/``.
    workload = {"kind": "trace", "path": "traces/demo.csv"}
    weights = {"tabular": 0.7, "text": 0.2, "image": 0.1}
    seed = 4
    max_requests = 10_000
