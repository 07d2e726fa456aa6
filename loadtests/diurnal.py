"""A compressed day with a double wave (morning and evening peaks), open loop.

    locust -f loadtests/diurnal.py --headless

The day is two of the simulator's ``diurnal`` workloads superposed: a half-day cosine
(two equal peaks at 1/4 and 3/4 of the day) on top of a whole-day cosine that lifts the
midday trough. Options and environment variables: see ``loadtests/openloop.py``.
"""

from openloop import OpenLoopDispatcher, OpenLoopShape

__all__ = ["DiurnalShape", "OpenLoopDispatcher"]

#: Length of the compressed day (s).
DAY_S = 60.0


class DiurnalShape(OpenLoopShape):
    """Night 10 req/s, peaks 60 req/s at 1/4 and 3/4 of the day, midday dip 30 req/s."""

    duration_s = DAY_S
    workload = [
        {"kind": "diurnal", "min_rate": 10.0, "max_rate": 50.0, "period_s": DAY_S / 2},
        {"kind": "diurnal", "min_rate": 0.0, "max_rate": 20.0, "period_s": DAY_S},
    ]
    weights = {"tabular": 0.7, "text": 0.2, "image": 0.1}
    seed = 2
    max_requests = 10_000
