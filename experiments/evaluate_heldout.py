"""``tsadapt lab evaluate --random N``: every policy on N random held-out scenarios, the
budget-matched best-static, and how well seed selection ranks the candidates.

Held-out scenarios come from :func:`scenario_sets.check_heldout` (generator seeds no
training environment and no selection scenario uses), drawn from ``configs/train.yaml``'s
``randomise`` ranges, one run each with the scenario's own simulation seed. Adaptive
policies start at batch 1 (none of the models is a demo model), behind the guards;
best-static and budget-static are tuned on ``tuning_seeds``.

*PPO matches the best rule* on a scenario when its goodput is at least the best rule's
(a tie, :data:`evaluate.GOODPUT_TIE_RPS`, counts) at no more worker-seconds; the best rule is
the one of ``static``, ``aimd``, ``queue`` with the highest goodput (within a tie, the
fewest worker-seconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.experiments.evaluate import (
    BUDGET_STATIC,
    GOODPUT_TIE_RPS,
    RULES,
    StaticCache,
    best_static,
    budget_matched_static,
    budget_workers,
    improves,
    static_result,
)
from tsadapt.policy.learn.scenario_sets import draw
from tsadapt.policy.learn.train_config import TrainConfig
from tsadapt.policy.sim.control import run_named
from tsadapt.policy.sim.scenario import Scenario
from tsadapt.policy.types import ModelSettings

#: Best-static's tuning seeds on held-out scenarios: one (the search is ~3000-8000 runs).
HELDOUT_TUNING_SEEDS = (10_007,)


def budget_static_rows(
    scenario: Scenario,
    ppo_rows: Sequence[Mapping[str, Any]],
    best: Mapping[str, ModelSettings] | None,
    seeds: Sequence[int],
    tuning_seeds: Sequence[int],
    cache: StaticCache | None = None,
) -> list[dict[str, Any]]:
    """Budget-static's rows on ``seeds``: best-static held to the mean worker-seconds of
    ``ppo_rows`` (none when not even the models' minimum workers fit)."""
    worker_s = float(np.mean([r["worker_seconds"] for r in ppo_rows]))
    cfgs = budget_matched_static(scenario, worker_s, best, tuning_seeds, cache)
    if cfgs is None:
        return []
    extra = {
        "budget_workers": budget_workers(scenario, worker_s),
        "budget_worker_seconds": worker_s,
    }
    return [static_result(scenario, cfgs, s, BUDGET_STATIC) | extra for s in seeds]


@dataclass(frozen=True)
class HeldoutTask:
    """One held-out scenario's runs (picklable: a worker process draws the scenario)."""

    config: TrainConfig
    generator_seed: int
    index: int
    duration_s: float
    policy_file: Path
    candidates: tuple[tuple[int, Path], ...] = ()
    tuning_seeds: tuple[int, ...] = HELDOUT_TUNING_SEEDS
    with_static: bool = True


def run_heldout(task: HeldoutTask) -> dict[str, Any]:
    """Rows of every policy on one held-out scenario, and each candidate's PPO result."""
    (sc,) = draw(task.config, (task.generator_seed,), task.duration_s, "heldout")
    sc = _renamed(sc, task.index)
    seed = sc.seed
    rows = [run_named(sc, p, seed).as_dict() for p in RULES]
    ppo = run_named(sc, "ppo", seed, task.policy_file).as_dict()
    rows.append(ppo)
    if task.with_static:
        cache: StaticCache = {}
        best = best_static(sc, task.tuning_seeds, cache=cache)
        rows.append(static_result(sc, best, seed))
        rows += budget_static_rows(sc, [ppo], best, (seed,), task.tuning_seeds, cache)
    for r in rows:
        r["generator_seed"] = task.generator_seed
        r["shared"] = sc.name.endswith("-shared")
    candidates = {s: run_named(sc, "ppo", seed, f).as_dict() for s, f in task.candidates}
    return {
        "rows": rows,
        "candidates": {s: (r["goodput_rps"], r["worker_seconds"]) for s, r in candidates.items()},
    }


def _renamed(sc: Scenario, index: int) -> Scenario:
    suffix = "-shared" if sc.name.endswith("-shared") else ""
    return replace(sc, name=f"heldout-{index}{suffix}")


def run_all(
    tasks: Sequence[HeldoutTask],
    processes: int = 1,
    on_done: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """:func:`run_heldout` of every task, ``processes`` at a time, in task order."""
    if processes <= 1:
        out = []
        for t in tasks:
            out.append(run_heldout(t))
            if on_done is not None:
                on_done(1)
        return out
    import multiprocessing

    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        out = []
        for r in pool.map(run_heldout, tasks):
            out.append(r)
            if on_done is not None:
                on_done(1)
        return out


# ----------------------------------------------------------------------------- scoring


def best_rule(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The rule row with the highest goodput (within a tie, the fewest worker-seconds)."""
    rules = [r for r in rows if r["policy"] in RULES]
    if not rules:
        raise ValueError("no rule policy among the rows")
    best = rules[0]
    for r in rules[1:]:
        if improves(
            r["goodput_rps"], r["worker_seconds"], best["goodput_rps"], best["worker_seconds"]
        ):
            best = r
    return best


def matches(ppo: Mapping[str, Any], other: Mapping[str, Any], worker_s: bool = True) -> bool:
    """PPO's goodput at least ``other``'s (a tie counts) and, with ``worker_s``, at no more
    worker-seconds."""
    if ppo["goodput_rps"] < other["goodput_rps"] - GOODPUT_TIE_RPS:
        return False
    return not worker_s or ppo["worker_seconds"] <= other["worker_seconds"] + 1e-6


@dataclass(frozen=True)
class Comparison:
    """PPO against one baseline over held-out scenarios."""

    baseline: str
    n: int
    ppo_matches: int
    short_goodput: int  # scenarios where PPO's goodput is lower by more than a tie
    more_worker_s: int  # ... where its goodput is not lower but it uses more worker-seconds
    mean_goodput_diff: float  # PPO - baseline, rps, over the n scenarios

    @property
    def share(self) -> float:
        return self.ppo_matches / self.n if self.n else math.nan


def ppo_and_baseline(
    by_scenario: Mapping[str, Sequence[Mapping[str, Any]]], baseline: str
) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """(PPO's row, ``baseline``'s row; "best-rule" = :func:`best_rule`) of every scenario
    that has both."""
    for rows in by_scenario.values():
        ppo = next((r for r in rows if r["policy"] == "ppo"), None)
        other = (
            best_rule(rows)
            if baseline == "best-rule"
            else next((r for r in rows if r["policy"] == baseline), None)
        )
        if ppo is not None and other is not None:
            yield ppo, other


def compare(
    by_scenario: Mapping[str, Sequence[Mapping[str, Any]]], baseline: str, worker_s: bool = True
) -> Comparison:
    """PPO against ``baseline`` ("best-rule" = :func:`best_rule`) on every scenario that has
    both; ``worker_s=False`` compares goodput alone (budget-static is held to PPO's)."""
    n = ok = short = more = 0
    diffs = []
    for ppo, other in ppo_and_baseline(by_scenario, baseline):
        n += 1
        diffs.append(ppo["goodput_rps"] - other["goodput_rps"])
        if matches(ppo, other, worker_s):
            ok += 1
        elif ppo["goodput_rps"] < other["goodput_rps"] - GOODPUT_TIE_RPS:
            short += 1
        else:
            more += 1
    mean = float(np.mean(diffs)) if diffs else math.nan
    return Comparison(baseline, n, ok, short, more, mean)


def _ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank."""
    a = np.asarray(x, dtype=float)
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(1, len(a) + 1)
    for v in np.unique(a):
        tied = a == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (mean ranks for ties); nan below 2 items or no spread."""
    if len(x) != len(y):
        raise ValueError("spearman: x and y differ in length")
    if len(x) < 2:
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b; nan below 2 items or when one side is all ties."""
    if len(x) != len(y):
        raise ValueError("kendall: x and y differ in length")
    conc = disc = tx = ty = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif dx == dy:
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + tx) * (conc + disc + ty))
    return (conc - disc) / denom if denom else math.nan


# ----------------------------------------------------------------------------- report

#: Share of held-out scenarios on which PPO should match the best rule (issue #25's target).
TARGET_SHARE = 0.9
#: Bootstrap resamples and the generator seed of :func:`bootstrap_ci` (the report is
#: reproducible).
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def paired_diffs(
    by_scenario: Mapping[str, Sequence[Mapping[str, Any]]], baseline: str
) -> list[float]:
    """PPO's goodput minus ``baseline``'s ("best-rule": :func:`best_rule`) per scenario."""
    return [p["goodput_rps"] - o["goodput_rps"] for p, o in ppo_and_baseline(by_scenario, baseline)]


def bootstrap_ci(
    values: Sequence[float],
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (nan, nan when
    empty)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def _ci_line(label: str, diffs: Sequence[float]) -> str:
    lo, hi = bootstrap_ci(diffs)
    mean = float(np.mean(diffs)) if diffs else math.nan
    return f"| {label} | {len(diffs)} | {mean:+.2f} | [{lo:+.2f}, {hi:+.2f}] |"


def _line(label: str, c: Comparison) -> str:
    share = f"{100 * c.share:.0f} %" if c.n else "-"
    return (
        f"| {label} | {c.n} | {c.ppo_matches} ({share}) | {c.short_goodput} | "
        f"{c.more_worker_s} | {c.mean_goodput_diff:+.2f} |"
    )


def ranking_lines(selection: Mapping[str, Any] | None, heldout: Mapping[int, float]) -> list[str]:
    """How the candidates rank on selection vs. on the held-out scenarios."""
    if not selection or not heldout:
        return [
            "Candidate ranking: not measured (the policy file has no selection, or its "
            "candidates' files are missing).",
            "",
        ]
    cands = [c for c in selection["candidates"] if c["seed"] in heldout]
    named = [c["score_goodput_rps"] for c in cands]
    rand = [c.get("random_goodput_rps", 0.0) for c in cands]
    held = [heldout[c["seed"]] for c in cands]
    k = selection.get("random_scenarios", 0)
    lines = [
        "### Does selection rank the candidates as the held-out set does?",
        "",
        f"The {len(cands)} trained candidates, each scored by summed goodput (req/s) on the "
        f"selection's scenario files x seeds {selection['validation_seeds']} (what chose "
        f"seed {selection['chosen_seed']}), on {k} random selection scenarios (seeds of "
        "their own), and on these held-out scenarios:",
        "",
        "| candidate seed | selection: scenario files | selection: random | held-out |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {c['seed']} | {a:.1f} | {b:.1f} | {h:.1f} |"
        for c, a, b, h in zip(cands, named, rand, held, strict=True)
    ]
    lines += [
        "",
        f"- scenario files vs held-out: Spearman {spearman(named, held):+.2f}, "
        f"Kendall {kendall(named, held):+.2f}",
    ]
    if k:
        lines.append(
            f"- random selection scenarios vs held-out: Spearman {spearman(rand, held):+.2f}, "
            f"Kendall {kendall(rand, held):+.2f}"
        )
    lines += [
        f"- with {len(cands)} candidates there are {len(cands) * (len(cands) - 1) // 2} pairs: "
        "one swapped pair moves Kendall's tau by "
        f"{4 / max(1, len(cands) * (len(cands) - 1)):.2f}; read these as a check, not a "
        "significance test.",
        "",
    ]
    return lines


def heldout_markdown(
    results: Sequence[Mapping[str, Any]],
    seeds: Sequence[int],
    duration_s: float,
    episode_s: float,
    tuning_seeds: Sequence[int],
    selection: Mapping[str, Any] | None = None,
) -> list[str]:
    """The report's held-out section (lines)."""
    by: dict[str, list[Mapping[str, Any]]] = {}
    for res in results:
        for r in res["rows"]:
            by.setdefault(r["scenario"], []).append(r)
    shared = {k: v for k, v in by.items() if k.endswith("-shared")}
    general = {k: v for k, v in by.items() if not k.endswith("-shared")}
    horizon = (
        f"{duration_s:g} s each (training episodes are {episode_s:g} s; shortened so that "
        "best-static's search over every scenario fits the run)"
        if duration_s < episode_s
        else f"{duration_s:g} s each (as training episodes)"
    )
    best = compare(by, "best-rule")
    lines = [
        f"## Random held-out scenarios ({len(by)})",
        "",
        f"Drawn by `scenario_gen` from `configs/train.yaml`'s `randomise` ranges, generator "
        f"seeds {seeds[0]}..{seeds[-1]} (none a training environment's, a selection "
        f"scenario's, or a validation seed: `policy/learn/scenario_sets.py` checks it), "
        f"{horizon}; {len(shared)} of them from the shared-budget family. One run each at the "
        "scenario's own simulation seed; adaptive policies start at batch 1, behind the "
        f"guards; best-static and budget-static tuned on seed {list(tuning_seeds)} only. "
        "*Matches* = PPO's goodput at least the baseline's (within "
        f"{GOODPUT_TIE_RPS} rps) at no more worker-seconds; the best rule = whichever of "
        f"{', '.join(RULES)} has the most goodput on that scenario (within a tie, the "
        "fewest worker-seconds). Budget-static is compared on goodput alone: it is held to "
        "PPO's worker-seconds.",
        "",
        "| PPO vs | scenarios | PPO matches | PPO goodput lower | PPO more worker-s | "
        "mean goodput PPO - it (rps) |",
        "|---|---|---|---|---|---|",
        _line("best rule", best),
        _line("best rule, shared-budget family", compare(shared, "best-rule")),
        _line("best rule, general family", compare(general, "best-rule")),
    ]
    for p in RULES:
        lines.append(_line(p, compare(by, p)))
    lines.append(_line("best-static", compare(by, "best-static")))
    lines.append(_line("budget-static (goodput only)", compare(by, BUDGET_STATIC, False)))
    lines.append(
        _line("budget-static, shared-budget family", compare(shared, BUDGET_STATIC, False))
    )
    met = "met" if best.share >= TARGET_SHARE else "**not met**"
    lines += [
        "",
        f"Target (PPO matches the best rule on >= {100 * TARGET_SHARE:.0f} % of held-out "
        f"scenarios): {met}, {100 * best.share:.0f} %.",
        "",
    ]
    lines += [
        "Mean paired goodput difference per scenario, with a 95 % percentile bootstrap "
        f"confidence interval ({BOOTSTRAP_RESAMPLES} resamples of the scenarios, generator "
        f"seed {BOOTSTRAP_SEED}):",
        "",
        "| difference | scenarios | mean (rps) | 95 % CI (rps) |",
        "|---|---|---|---|",
        _ci_line("PPO - best rule", paired_diffs(by, "best-rule")),
        _ci_line("PPO - best-static", paired_diffs(by, "best-static")),
        "",
    ]
    lines += _shortfalls(by)
    lines += _means(by)
    return lines


def _shortfalls(by: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    rows = []
    for name, rs in by.items():
        ppo = next(r for r in rs if r["policy"] == "ppo")
        b = best_rule(rs)
        if matches(ppo, b):
            continue
        why = (
            "goodput lower"
            if ppo["goodput_rps"] < b["goodput_rps"] - GOODPUT_TIE_RPS
            else "more worker-s"
        )
        rows.append(
            f"| {name} | {b['policy']} | {b['goodput_rps']:.1f} @ {b['worker_seconds']:.0f} | "
            f"{ppo['goodput_rps']:.1f} @ {ppo['worker_seconds']:.0f} | {why} |"
        )
    if not rows:
        return []
    return [
        "Where PPO does not match the best rule (goodput rps @ worker-s):",
        "",
        "| scenario | best rule | its result | PPO | why |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def _means(by: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    from tsadapt.experiments.evaluate import REPORT_POLICIES

    lines = [
        "Mean over the held-out scenarios (each scenario's goodput, worker-seconds):",
        "",
        "| policy | scenarios | goodput (rps) | SLO attainment | worker-s |",
        "|---|---|---|---|---|",
    ]
    for p in REPORT_POLICIES:
        rs = [r for rows in by.values() for r in rows if r["policy"] == p]
        if rs:
            g = np.mean([r["goodput_rps"] for r in rs])
            a = np.mean([r["slo_attainment"] for r in rs])
            w = np.mean([r["worker_seconds"] for r in rs])
            lines.append(f"| {p} | {len(rs)} | {g:.1f} | {100 * a:.2f} % | {w:.0f} |")
    return [*lines, ""]
