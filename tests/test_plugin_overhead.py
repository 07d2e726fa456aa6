"""The plugin-overhead benchmark runs end to end on two real servers (tiny load)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsadapt.experiments.plugin_overhead import VARIANTS, OverheadConfig, report, run

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_overhead_benchmark_alternates_both_servers(model_store: Path) -> None:
    config = OverheadConfig(rate_rps=20.0, round_s=2.0, rounds=2)
    results = run(config, model_store=model_store)
    for variant in VARIANTS:
        assert len(results[variant]) == config.rounds
        assert all(r.failed == 0 and r.sent > 10 for r in results[variant])
        # the two servers got the same arrival schedule in each round
    assert [r.sent for r in results["stock"]] == [r.sent for r in results["plugin"]]
    text = report(config, results, "test")
    assert "plugin / stock: p50" in text and text.count("| ") > 10
