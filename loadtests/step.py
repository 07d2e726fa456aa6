"""Step changes in load (the simulator's ``step`` workload), open loop.

    locust -f loadtests/step.py --headless

Options and environment variables: see ``loadtests/openloop.py``.
"""

from openloop import OpenLoopDispatcher, OpenLoopShape

__all__ = ["OpenLoopDispatcher", "StepShape"]


class StepShape(OpenLoopShape):
    """``rates[i]`` req/s during step ``i`` of ``step_s`` seconds; the last rate holds."""

    duration_s = 60.0
    workload = {"kind": "step", "rates": [20.0, 60.0, 30.0, 80.0, 40.0], "step_s": 12.0}
    weights = {"tabular": 0.7, "text": 0.2, "image": 0.1}
    seed = 3
    max_requests = 10_000
