"""The profiler's pure parts (no server): Prometheus parsing and the Eq. 1 fit."""

from __future__ import annotations

import pytest

from tsadapt.serve.profiler import Point, fit, prometheus_sum

PAGE = """# HELP AdaptBatches Torchserve prometheus counter metric with unit: Count
# TYPE AdaptBatches counter
AdaptBatches{ModelName="image",Level="Model",Hostname="h",} 12.0
AdaptBatches{ModelName="text",Level="Model",Hostname="h",} 3.0
AdaptHandlerMilliseconds{ModelName="image",Level="Model",Hostname="h",} 240.5
ts_inference_requests_total{model_name="image",model_version="default",} 40.0
"""


def test_prometheus_sum_selects_metric_and_model() -> None:
    assert prometheus_sum(PAGE, "AdaptBatches", "image") == 12.0
    assert prometheus_sum(PAGE, "AdaptBatches", "text") == 3.0
    assert prometheus_sum(PAGE, "AdaptHandlerMilliseconds", "image") == pytest.approx(240.5)
    assert prometheus_sum(PAGE, "AdaptBatches", "tabular") == 0.0
    assert prometheus_sum(PAGE, "ts_inference_requests_total", "image") == 40.0


def test_fit_per_worker_count_on_medians() -> None:
    pts = [
        Point(1, b, r, 2.0 * b + 5.0 + (0.5 if r == 0 else 0.0), 0.0, [b] * b)
        for b in (1, 2, 4, 8)
        for r in range(3)
    ]
    pts += [Point(2, b, 0, 3.0 * b + 6.0, 0.0, [b]) for b in (1, 8)]
    f = fit(pts)
    assert f["1"]["alpha_ms"] == pytest.approx(2.0)
    assert f["1"]["beta_ms"] == pytest.approx(5.0)
    assert f["2"]["alpha_ms"] == pytest.approx(3.0)
