"""``tsadapt lab evaluate``'s held-out scoring, rank agreement and budget-matched best-static."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tsadapt.experiments.evaluate import (
    BUDGET_STATIC,
    GOODPUT_TIE_RPS,
    best_static,
    budget_matched_static,
    budget_workers,
)
from tsadapt.experiments.evaluate_heldout import (
    TARGET_SHARE,
    best_rule,
    bootstrap_ci,
    budget_static_rows,
    compare,
    heldout_markdown,
    kendall,
    matches,
    paired_diffs,
    ranking_lines,
    spearman,
)
from tsadapt.policy.sim.scenario import load_scenario


def _row(policy: str, g: float, w: float, scenario: str = "s") -> dict:
    return {"scenario": scenario, "policy": policy, "goodput_rps": g, "worker_seconds": w,
            "slo_attainment": 1.0}  # fmt: skip


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([("static", 10, 100), ("aimd", 12, 200), ("queue", 11, 50)], "aimd"),
        # a goodput tie goes to the fewer worker-seconds
        ([("static", 10, 100), ("aimd", 10 + GOODPUT_TIE_RPS / 2, 200), ("queue", 9, 1)], "static"),
    ],
)
def test_best_rule(rules: list, expected: str) -> None:
    rows = [_row(p, g, w) for p, g, w in rules] + [_row("ppo", 99, 1)]
    assert best_rule(rows)["policy"] == expected


@pytest.mark.parametrize(
    ("ppo", "other", "worker_s", "expected"),
    [
        ((10.0, 100), (10.0, 100), True, True),  # equal is enough
        ((10.0 - GOODPUT_TIE_RPS / 2, 100), (10.0, 100), True, True),  # a tie counts
        ((9.0, 50), (10.0, 100), True, False),  # less goodput
        ((11.0, 101), (10.0, 100), True, False),  # more worker-seconds
        ((11.0, 101), (10.0, 100), False, True),  # goodput alone
    ],
)
def test_matches(ppo: tuple, other: tuple, worker_s: bool, expected: bool) -> None:
    assert matches(_row("ppo", *ppo), _row("x", *other), worker_s) is expected


def _scenarios() -> dict[str, list[dict]]:
    return {
        "a": [_row("static", 10, 100, "a"), _row("queue", 12, 120, "a"), _row("ppo", 12, 110, "a")],
        "b": [_row("static", 10, 100, "b"), _row("queue", 8, 90, "b"), _row("ppo", 9, 90, "b")],
        "c-shared": [_row("static", 5, 50, "c-shared"), _row("queue", 6, 50, "c-shared"),
                     _row("ppo", 6, 60, "c-shared")],
    }  # fmt: skip


def test_compare_counts_matches_and_why_not() -> None:
    c = compare(_scenarios(), "best-rule")
    assert (c.n, c.ppo_matches, c.short_goodput, c.more_worker_s) == (3, 1, 1, 1)
    assert c.mean_goodput_diff == pytest.approx((0 - 1 + 0) / 3)
    assert c.share == pytest.approx(1 / 3)
    assert compare(_scenarios(), "queue").ppo_matches == 2  # b: 9 >= 8 at 90 <= 90
    assert compare(_scenarios(), "best-static").n == 0 and math.isnan(
        compare(_scenarios(), "best-static").share
    )


def test_heldout_section_states_the_target_and_the_shortfalls() -> None:
    results = [{"rows": rows, "candidates": {}} for rows in _scenarios().values()]
    md = "\n".join(heldout_markdown(results, [7, 8, 9], 60.0, 120.0, (10007,)))
    assert "## Random held-out scenarios (3)" in md
    assert "60 s each (training episodes are 120 s" in md
    assert "| best rule | 3 | 1 (33 %) | 1 | 1 | -0.33 |" in md
    assert f">= {100 * TARGET_SHARE:.0f} % of held-out scenarios): **not met**, 33 %" in md
    assert "| b | static | 10.0 @ 100 | 9.0 @ 90 | goodput lower |" in md
    assert "| c-shared | queue | 6.0 @ 50 | 6.0 @ 60 | more worker-s |" in md
    assert "| PPO - best rule | 3 | -0.33 | [-1.00, +0.00] |" in md


def test_paired_diffs_and_bootstrap_ci() -> None:
    assert paired_diffs(_scenarios(), "best-rule") == [0, -1, 0]
    assert paired_diffs(_scenarios(), "best-static") == []
    lo, hi = bootstrap_ci([2.0] * 5)
    assert lo == hi == 2.0
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 1.0, 400)
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean() < hi and hi - lo == pytest.approx(2 * 1.96 / 20, rel=0.15)
    assert bootstrap_ci(x) == (lo, hi)  # seeded: the report is reproducible
    assert all(math.isnan(v) for v in bootstrap_ci([]))


@pytest.mark.parametrize(
    ("x", "y", "rho", "tau"),
    [
        ([1, 2, 3, 4], [10, 20, 30, 40], 1.0, 1.0),
        ([1, 2, 3, 4], [40, 30, 20, 10], -1.0, -1.0),
        ([1, 2, 3, 4], [10, 20, 40, 30], 0.8, 4 / 6),  # one swapped pair
        ([1, 1, 1], [1, 2, 3], math.nan, math.nan),  # no spread on one side
    ],
)
def test_rank_correlations(x: list, y: list, rho: float, tau: float) -> None:
    for got, want in ((spearman(x, y), rho), (kendall(x, y), tau)):
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)


def test_ranking_lines_compare_selection_with_held_out() -> None:
    selection = {
        "chosen_seed": 1,
        "validation_seeds": [10007],
        "random_scenarios": 5,
        "candidates": [
            {"seed": 0, "score_goodput_rps": 10.0, "random_goodput_rps": 3.0},
            {"seed": 1, "score_goodput_rps": 12.0, "random_goodput_rps": 1.0},
            {"seed": 2, "score_goodput_rps": 11.0, "random_goodput_rps": 2.0},
        ],
    }
    md = "\n".join(ranking_lines(selection, {0: 100.0, 1: 300.0, 2: 200.0}))
    assert "scenario files vs held-out: Spearman +1.00, Kendall +1.00" in md
    assert "random selection scenarios vs held-out: Spearman -1.00, Kendall -1.00" in md
    assert "not measured" in "\n".join(ranking_lines(None, {}))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("budget") / "small.yaml"
    p.write_text(
        "duration_s: 5\nseed: 5\ndevices: [{name: cpu, cores: 4}]\n"
        "models:\n"
        "  - {name: a, slo_ms: 60, profile: {alpha_ms: 4, beta_ms: 8}, min_workers: 1,"
        " max_workers: 2, max_batch: 16}\n"
        "  - {name: b, slo_ms: 60, profile: {alpha_ms: 4, beta_ms: 8}, min_workers: 1,"
        " max_workers: 2, max_batch: 16}\n"
        "workload:\n  - {model: a, kind: poisson, rate: 400}\n"
        "  - {model: b, kind: poisson, rate: 400}\n"
        "budget: {workers: 4}\n"
    )
    return p


def test_budget_matched_static_holds_to_the_worker_seconds(small: Path) -> None:
    sc = load_scenario(small)
    seeds = (10007,)
    cache: dict = {}
    best = best_static(sc, seeds, cache=cache)
    assert sum(c.workers for c in best.values()) == 4  # overloaded: every worker helps
    assert budget_workers(sc, 15.0) == 3 and budget_workers(sc, 14.9) == 2
    held = budget_matched_static(sc, 15.0, best, seeds, cache)
    assert held is not None and sum(c.workers for c in held.values()) == 3
    assert budget_matched_static(sc, 20.0, best, seeds, cache) == best  # it fits
    assert budget_matched_static(sc, 9.0, best, seeds, cache) is None  # below the minimum
    rows = budget_static_rows(sc, [_row("ppo", 1, 12), _row("ppo", 1, 18)], best, [0, 1], seeds)
    assert [r["policy"] for r in rows] == [BUDGET_STATIC] * 2
    assert all(r["worker_seconds"] <= 15.0 and r["budget_workers"] == 3 for r in rows)


@pytest.mark.slow
def test_parallel_best_static_searches_match_one_process(small: Path) -> None:
    from tsadapt.experiments.evaluate_parallel import tune_best_statics

    sc = load_scenario(small)
    done: list[str] = []
    one = tune_best_statics([sc], 1, lambda s: done.append(s.name))
    two = tune_best_statics([sc, sc], 2, lambda s: done.append(s.name))
    cache: dict = {}
    expected = best_static(sc, cache=cache)
    assert [t[0] for t in one + two] == [expected] * 3
    assert two[0][1] == cache  # the cache comes back for budget-static
    assert done == [sc.name] * 3
