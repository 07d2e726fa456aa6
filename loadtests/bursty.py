"""Bursty traffic: MMPP spikes (the simulator's ``bursty`` workload), open loop.

    locust -f loadtests/bursty.py --headless            # against `tsadapt lab serve start`
    locust -f loadtests/bursty.py --headless --scenario bursty   # a scenario file instead

Options and environment variables: see ``loadtests/openloop.py``.
"""

from openloop import OpenLoopDispatcher, OpenLoopShape

__all__ = ["BurstyShape", "OpenLoopDispatcher"]


class BurstyShape(OpenLoopShape):
    """``base_rate`` req/s, jumping to ``spike_rate`` for ``spike_s`` once per ``period_s``."""

    duration_s = 60.0
    #: Spikes of 5 s at 4x the base rate, every 20 s, the first at 10 s.
    workload = {
        "kind": "bursty",
        "base_rate": 20.0,
        "spike_rate": 80.0,
        "spike_s": 5.0,
        "period_s": 20.0,
        "offset_s": 10.0,
    }
    weights = {"tabular": 0.7, "text": 0.2, "image": 0.1}
    seed = 1
    max_requests = 10_000
