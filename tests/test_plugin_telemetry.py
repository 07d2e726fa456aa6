"""The plugin's server-side latency agrees with Locust's client-side latency (issue 3).

A full run: >= 2,000 requests of the Locust step scenario on a real server.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tsadapt.experiments.telemetry_check import compare, run

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_plugin_latency_matches_locust(model_store: Path) -> None:
    agreement = run(duration_s=50.0, model_store=model_store)
    assert agreement.requests_client >= 2000
    assert agreement.requests_server == agreement.requests_client
    assert abs(agreement.p50_diff_ms) <= 5.0, agreement
    assert abs(agreement.p99_diff_ms) <= 5.0, agreement
    assert abs(agreement.attainment_diff_points) <= 2.0, agreement


def test_compare_counts_failures_as_misses() -> None:
    from tsadapt.plugin.adapt_client import LatencyHistogram, Telemetry

    bounds = [float(b) for b in range(1, 101)]
    counts = [0] * 101
    counts[9] = 3  # three 2xx answers in (9, 10] ms
    hist = LatencyHistogram.from_json({"bucket_upper_ms": bounds, "counts": counts, "sum_ms": 30})
    window = Telemetry(True, 0, 4, 3, 0, 1, 0, hist)
    latencies = np.array([10.0, 10.0, 10.0, np.nan])
    a = compare(latencies, np.array([True, True, True, False]), window)
    assert a.client_attainment == pytest.approx(0.75)
    assert a.server_attainment == pytest.approx(0.75)
    assert a.requests_server == 4
