"""Evaluation in simulation: every policy over scenarios x seeds, table + plots.

Policies (all adaptive ones start from the same configuration, see
:func:`sim_control.initial_configs`, and run behind :mod:`policy.guards`):

* ``best-static`` - the best *fixed* configuration, found by coordinate search
  (:func:`best_static`) scored on tuning seeds that are not among the evaluation seeds, then
  run as plain TorchServe (no controller); best = highest mean goodput, and among those
  within ``GOODPUT_TIE_RPS`` of it, the fewest worker-seconds;
* ``static`` (no changes), ``aimd``, ``queue`` (:mod:`policy.rules`), ``ppo`` (a policy file).

``PPO beats X`` in the verdict means: mean goodput higher than X's **and** mean
worker-seconds no higher than X's, over the same seeds.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.policy.defaults import TUNING_SEEDS
from tsadapt.policy.sim.control import SimControlConfig, run_named
from tsadapt.policy.sim.scenario import ModelEntry, Scenario
from tsadapt.policy.sim.static_run import run_static
from tsadapt.policy.types import ModelSettings

POLICIES = ("best-static", "static", "aimd", "queue", "ppo")
#: Best-static held to PPO's worker-seconds (:func:`budget_matched_static`); ``tsadapt
#: evaluate`` adds it whenever it runs both best-static and ppo.
BUDGET_STATIC = "budget-static"
#: Rows of the report's tables, in this order.
REPORT_POLICIES = ("best-static", BUDGET_STATIC, "static", "aimd", "queue", "ppo")
#: The rule policies (``policy/rules.py``) PPO is held against on held-out scenarios.
RULES = ("static", "aimd", "queue")
METRICS = (
    "goodput_rps",
    "slo_attainment",
    "p50_ms",
    "p99_ms",
    "worker_seconds",
    "reconfigurations",
)
#: Goodput differences up to this (rps; half the tables' resolution) are ties, not wins.
GOODPUT_TIE_RPS = 0.05
STATIC_BATCHES = (1, 2, 4, 6, 8, 10, 12, 16, 24, 32, 48, 64)
STATIC_DELAYS_MS = (0, 2, 5, 10, 20, 30)
#: Coordinate-search passes over the models at most (a pass that changes nothing ends it).
STATIC_PASSES = 2
#: Worker allocations the search tries as its start when there are at most this many.
MAX_START_ALLOCATIONS = 64


def static_result(
    scenario: Scenario, configs: Mapping[str, ModelSettings], seed: int, policy: str = "best-static"
) -> dict[str, Any]:
    r = run_static(scenario, configs, seed)

    def one(x: Any) -> dict[str, Any]:
        return {
            "slo_attainment": x.slo_attainment,
            "goodput_rps": x.goodput_rps,
            "p50_ms": x.p50_ms,
            "p99_ms": x.p99_ms,
            "worker_seconds": x.worker_seconds,
            "reconfigurations": 0,
            "requests": x.requests,
            "rejected": x.rejected,
            "failed": x.failed,
            "mean_batch_size": x.mean_batch_size,
        }

    out = {
        "scenario": scenario.name,
        "policy": policy,
        "seed": seed,
        "duration_s": scenario.duration_s,
        "guard_overrides": 0,
        "static_configs": {n: vars(c) for n, c in configs.items()},
    }
    out.update(one(r.overall))
    out["models"] = {n: one(x) for n, x in r.per_model.items()}
    return out


def static_candidates(model: ModelEntry) -> list[ModelSettings]:
    """Every fixed (batch, delay, workers) the search tries for one scenario model."""
    batches = sorted({b for b in STATIC_BATCHES if b <= model.max_batch} | {model.max_batch})
    workers = range(max(1, model.min_workers), model.max_workers + 1)
    return [ModelSettings(b, d, w) for b in batches for d in STATIC_DELAYS_MS for w in workers]


def worker_allocations(scenario: Scenario, budget: int | None = None) -> list[dict[str, int]]:
    """Every workers-per-model choice within the limits and the budget (default: the
    scenario's; none if too many)."""
    budget = scenario.budget.workers if budget is None else budget
    ranges = [range(max(1, m.min_workers), m.max_workers + 1) for m in scenario.models]
    if math.prod(len(r) for r in ranges) > MAX_START_ALLOCATIONS:
        return []
    return [
        dict(zip(scenario.model_names, ws, strict=True))
        for ws in itertools.product(*ranges)
        if sum(ws) <= budget
    ]


def static_search_size(scenario: Scenario, seeds: Sequence[int] = TUNING_SEEDS) -> int:
    """Simulator runs :func:`best_static` stands for (the total its ``on_step`` reports)."""
    per_pass = sum(len(static_candidates(m)) for m in scenario.models)
    return (len(worker_allocations(scenario)) + 2 * STATIC_PASSES * per_pass) * len(seeds)


def improves(goodput: float, worker_s: float, best_goodput: float, best_worker_s: float) -> bool:
    """Best-static's rule: more goodput by more than a tie, or tied and fewer worker-seconds."""
    if goodput > best_goodput + GOODPUT_TIE_RPS:
        return True
    return goodput >= best_goodput - GOODPUT_TIE_RPS and worker_s < best_worker_s


#: Mean (goodput, worker-seconds) of a fixed configuration over the tuning seeds, by config.
StaticCache = dict[tuple[tuple[str, ModelSettings], ...], tuple[float, float]]


def best_static(
    scenario: Scenario,
    seeds: Sequence[int] = TUNING_SEEDS,
    on_step: Callable[[int], None] | None = None,
    worker_cap: int | None = None,
    cache: StaticCache | None = None,
) -> dict[str, ModelSettings]:
    """Coordinate search over (batch, delay, workers), one model at a time, within the budget
    (the scenario's, or ``worker_cap`` workers in all when that is lower).

    A configuration scores its mean goodput and mean worker-seconds over ``seeds`` and
    replaces the best so far when it :func:`improves` on it; a search makes at most
    :data:`STATIC_PASSES` passes over the models, ending after a pass that changes nothing.
    Two searches run, and the better result is kept: one from the fewest workers, one from
    the best worker allocation (:func:`worker_allocations`, each at batch 8 and 10 ms delay),
    because one model at a time cannot move a worker between two models once the budget is
    full, and a start with more workers may not find its way back to fewer.
    ``on_step(n)`` reports ``n`` more of the :func:`static_search_size` runs done
    (over-budget and cached candidates, and the passes or search an early end skips, count).
    ``cache`` (scores by configuration, for these ``seeds``) may be shared between searches.
    """
    cache = {} if cache is None else cache
    budget = (
        scenario.budget.workers if worker_cap is None else min(worker_cap, scenario.budget.workers)
    )
    if sum(max(1, m.min_workers) for m in scenario.models) > budget:
        raise ValueError(f"worker_cap: {worker_cap} workers are fewer than the models' minimum")
    candidates = {m.name: static_candidates(m) for m in scenario.models}
    per_pass = sum(len(c) for c in candidates.values()) * len(seeds)

    def score(cfgs: Mapping[str, ModelSettings]) -> tuple[float, float]:
        key = tuple(sorted(cfgs.items()))
        if key not in cache:
            runs = [run_static(scenario, cfgs, s).overall for s in seeds]
            cache[key] = (
                float(np.mean([r.goodput_rps for r in runs])),
                float(np.mean([r.worker_seconds for r in runs])),
            )
        return cache[key]

    def report(n: int) -> None:
        if on_step is not None and n > 0:
            on_step(n)

    def start(workers: Mapping[str, int]) -> dict[str, ModelSettings]:
        return {
            m.name: ModelSettings(min(8, m.max_batch), 10, workers[m.name]) for m in scenario.models
        }

    def search(cur: dict[str, ModelSettings]) -> dict[str, ModelSettings]:
        best_g, best_w = score(cur)
        for done in range(1, STATIC_PASSES + 1):
            changed = False
            for name, model_candidates in candidates.items():
                for c in model_candidates:
                    trial = {**cur, name: c}
                    if sum(x.workers for x in trial.values()) <= budget:
                        g, ws = score(trial)
                        if improves(g, ws, best_g, best_w):
                            cur, best_g, best_w, changed = trial, g, ws, True
                    report(len(seeds))
            if not changed:
                report((STATIC_PASSES - done) * per_pass)
                break
        return cur

    fewest = start({m.name: max(1, m.min_workers) for m in scenario.models})
    allocated = fewest
    for workers in worker_allocations(scenario, budget):
        trial = start(workers)
        if improves(*score(trial), *score(allocated)):
            allocated = trial
        report(len(seeds))
    best = search(fewest)
    if allocated == fewest:
        report(STATIC_PASSES * per_pass)
        return best
    other = search(allocated)
    return other if improves(*score(other), *score(best)) else best


def budget_workers(scenario: Scenario, worker_seconds: float) -> int:
    """Most workers a fixed configuration may run in all so that its worker-seconds (workers
    x ``duration_s``) are at most ``worker_seconds``."""
    return int(math.floor(worker_seconds / scenario.duration_s + 1e-9))


def budget_matched_static(
    scenario: Scenario,
    worker_seconds: float,
    best: Mapping[str, ModelSettings] | None = None,
    seeds: Sequence[int] = TUNING_SEEDS,
    cache: StaticCache | None = None,
) -> dict[str, ModelSettings] | None:
    """Best-static held to ``worker_seconds`` (PPO's, on this scenario): the same coordinate
    search within :func:`budget_workers` workers, or the unconstrained ``best`` when it fits
    that budget and scores better; None when not even the models' minimum workers fit."""
    cap = budget_workers(scenario, worker_seconds)
    if sum(max(1, m.min_workers) for m in scenario.models) > cap:
        return None
    cache = {} if cache is None else cache
    found = best_static(scenario, seeds, worker_cap=cap, cache=cache)
    if best is not None and sum(c.workers for c in best.values()) <= cap:
        mean = {}
        for name, cfgs in (("found", found), ("best", best)):
            runs = [run_static(scenario, cfgs, s).overall for s in seeds]
            mean[name] = (
                float(np.mean([r.goodput_rps for r in runs])),
                float(np.mean([r.worker_seconds for r in runs])),
            )
        if improves(*mean["best"], *mean["found"]):
            return dict(best)
    return found


def run_policy(
    scenario: Scenario,
    policy: str,
    seed: int,
    policy_file: Path | None = None,
    sim_config: SimControlConfig | None = None,
    static_configs: Mapping[str, ModelSettings] | None = None,
    initial: Mapping[str, ModelSettings] | None = None,
) -> dict[str, Any]:
    """One run as the ``tsadapt lab simulate --json`` object (adaptive runs start at ``initial``,
    default :func:`sim_control.initial_configs`)."""
    if policy == "best-static":
        cfgs = dict(static_configs) if static_configs is not None else best_static(scenario)
        return static_result(scenario, cfgs, seed)
    return run_named(scenario, policy, seed, policy_file, sim_config, initial).as_dict()


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float
    n: int


def summarise(rows: Sequence[Mapping[str, Any]], metric: str) -> Summary:
    x = np.array([np.nan if r[metric] is None else float(r[metric]) for r in rows])
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Summary(math.nan, math.nan, 0)
    return Summary(float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0, int(x.size))


def _rows_of(rows: Sequence[Mapping[str, Any]], scenario: str, policy: str) -> list:
    return [r for r in rows if r["scenario"] == scenario and r["policy"] == policy]


def _goodput_and_workers(rows: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """Mean goodput and mean worker-seconds over ``rows``."""
    return summarise(rows, "goodput_rps").mean, summarise(rows, "worker_seconds").mean


def verdict(rows: Sequence[Mapping[str, Any]], scenario: str, other: str) -> str:
    """Does PPO beat ``other`` on ``scenario`` (goodput up by more than a tie, worker-seconds
    not up)?"""
    ppo, oth = _rows_of(rows, scenario, "ppo"), _rows_of(rows, scenario, other)
    if not ppo or not oth:
        return "n/a"
    (g, w), (go, wo) = _goodput_and_workers(ppo), _goodput_and_workers(oth)
    wins = sum(
        1
        for a in ppo
        for b in oth
        if a["seed"] == b["seed"] and a["goodput_rps"] > b["goodput_rps"] + GOODPUT_TIE_RPS
    )
    if g > go + GOODPUT_TIE_RPS and w <= wo:
        return (
            f"**yes** (goodput {g - go:+.1f} rps, worker-s {w - wo:+.0f}; {wins}/{len(ppo)} seeds)"
        )
    why = []
    if abs(g - go) <= GOODPUT_TIE_RPS:
        why.append(f"goodput tied, {g - go:+.2f} rps")
    elif g < go:
        why.append(f"goodput {g - go:+.1f} rps")
    if w > wo:
        why.append(f"worker-s {w - wo:+.0f}")
    return f"**no** ({', '.join(why)}; higher goodput on {wins}/{len(ppo)} seeds)"


def headroom(rows: Sequence[Mapping[str, Any]]) -> str:
    """How much goodput a policy could add over these runs: offered load minus their goodput."""
    offered = float(np.mean([r["requests"] / r["duration_s"] for r in rows]))
    goodput = summarise(rows, "goodput_rps").mean
    return (
        f"It answers {goodput:.1f} of the {offered:.1f} req/s offered within their SLOs, "
        f"so no policy can beat it by more than {offered - goodput:.1f} rps."
    )


def _fmt(s: Summary, metric: str) -> str:
    if s.n == 0:
        return "-"
    if metric == "slo_attainment":
        return f"{100 * s.mean:.2f} ± {100 * s.std:.2f} %"
    if metric in ("worker_seconds", "reconfigurations"):
        return f"{s.mean:.0f} ± {s.std:.0f}"
    return f"{s.mean:.1f} ± {s.std:.1f}"


START_BATCH1 = "batch 1, 10 ms delay, `min_workers` workers"


def describe_start(configs: Mapping[str, ModelSettings] | None) -> str:
    """Where the adaptive runs start, in words, for the report."""
    if configs is None:
        return START_BATCH1
    each = ", ".join(
        f"{name} b={c.batch_size} d={c.max_batch_delay_ms:g} ms w={c.workers}"
        for name, c in configs.items()
    )
    return f"the models' registration defaults, as on the real server ({each})"


def describe_configs(cfg: Mapping[str, Mapping[str, Any]]) -> str:
    """A fixed configuration per model, as the report writes it."""
    return ", ".join(
        f"{n}: b={c['batch_size']} d={c['max_batch_delay_ms']:.0f} w={c['workers']}"
        for n, c in cfg.items()
    )


def at_least(rows: Sequence[Mapping[str, Any]], scenario: str, other: str) -> str:
    """Is PPO's mean goodput at least ``other``'s (a tie counts) on ``scenario``?"""
    ppo, oth = _rows_of(rows, scenario, "ppo"), _rows_of(rows, scenario, other)
    if not ppo or not oth:
        return "n/a"
    (g, w), (go, wo) = _goodput_and_workers(ppo), _goodput_and_workers(oth)
    ok = "**yes**" if g >= go - GOODPUT_TIE_RPS else "**no**"
    return f"{ok} (goodput {g:.1f} vs {go:.1f} rps, worker-s {w:.0f} vs {wo:.0f})"


def write_markdown(
    rows: Sequence[Mapping[str, Any]],
    out: Path,
    header: Mapping[str, Any],
    plots: Sequence[str],
    start: str = START_BATCH1,
    sections: Sequence[str] = (),
) -> Path:
    """``docs/results/simulation.md``: mean ± sample std per metric, verdicts, ``sections``
    (more lines, e.g. the held-out section), plots; its top line names the command."""
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    policies = [p for p in REPORT_POLICIES if any(r["policy"] == p for r in rows)]
    seeds = sorted({r["seed"] for r in rows})
    command = header.get("command", "`tsadapt lab evaluate`")
    lines = [
        f"# Simulation results: {command}",
        "",
        "Written by that command (do not edit by hand).",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += [f"- seeds: {seeds} (mean ± sample standard deviation over seeds)", ""]
    lines += [
        "Policies: `best-static` = the best fixed configuration (coordinate search over "
        f"batch {list(STATIC_BATCHES)}, delay {list(STATIC_DELAYS_MS)} ms and workers, "
        f"scored by mean goodput over seeds {list(TUNING_SEEDS)}, none an evaluation seed; "
        f"highest goodput, then, within {GOODPUT_TIE_RPS} rps of it, fewest "
        "worker-seconds), run as plain TorchServe without a controller. Every other "
        f"policy starts from {start} and runs behind "
        "the same guards as `tsadapt control` (`static` = the controller changes nothing "
        "itself, so only the guards' emergency rule acts). `budget-static` = the same "
        "search held to PPO's worker-seconds on that scenario (mean over the evaluation "
        "seeds): at most that many worker-seconds / duration workers in all; the "
        "unconstrained best-static when it fits. Goodput = requests answered "
        "within their model's SLO per second; worker-seconds = sum over models of "
        "workers x time.",
        "",
    ]
    heads = [
        "policy",
        "goodput (rps)",
        "SLO attainment",
        "p50 (ms)",
        "p99 (ms)",
        "worker-s",
        "reconfigurations",
    ]
    for sc in scenarios:
        lines += [f"## {sc}", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        for p in policies:
            sel = [r for r in rows if r["scenario"] == sc and r["policy"] == p]
            cells = [_fmt(summarise(sel, m), m) for m in METRICS]
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
        statics = [r for r in rows if r["scenario"] == sc and r["policy"] == "best-static"]
        if statics:
            desc = describe_configs(statics[0]["static_configs"])
            tuned = f"tuned on seeds {list(TUNING_SEEDS)}"
            lines += ["", f"best-static configuration ({tuned}): {desc}. {headroom(statics)}"]
        matched = [r for r in rows if r["scenario"] == sc and r["policy"] == BUDGET_STATIC]
        if matched:
            desc = describe_configs(matched[0]["static_configs"])
            lines += [
                "",
                f"budget-static configuration (at most {matched[0]['budget_workers']} workers, "
                f"PPO's {matched[0]['budget_worker_seconds']:.0f} worker-s): {desc}. PPO's "
                f"goodput at least budget-static's: {at_least(rows, sc, BUDGET_STATIC)}",
            ]
        if "ppo" in policies:
            lines += [
                "",
                "PPO (behind the guards) beats ... (higher mean goodput, by more than "
                f"{GOODPUT_TIE_RPS} rps, at equal or lower mean worker-seconds; when every "
                "policy answers every request within its SLO, goodput is the offered load "
                "and nothing can beat anything):",
                "",
            ]
            for other in policies:
                if other != "ppo":
                    lines.append(f"- {other}: {verdict(rows, sc, other)}")
        lines.append("")
    lines += list(sections)
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return out


def plot(rows: Sequence[Mapping[str, Any]], out_dir: Path) -> list[str]:
    """Bar charts (mean with std error bars) of goodput and worker-seconds per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    policies = [p for p in REPORT_POLICIES if any(r["policy"] == p for r in rows)]
    paths = []
    for metric, label in (
        ("goodput_rps", "goodput (req/s within SLO)"),
        ("worker_seconds", "worker-seconds"),
        ("p99_ms", "p99 latency (ms)"),
    ):
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(policies)
        for i, p in enumerate(policies):
            ss = [
                summarise([r for r in rows if r["scenario"] == s and r["policy"] == p], metric)
                for s in scenarios
            ]
            xs = np.arange(len(scenarios)) + i * width
            ax.bar(xs, [s.mean for s in ss], width, yerr=[s.std for s in ss], label=p, capsize=3)
        ax.set_xticks(np.arange(len(scenarios)) + 0.4 - width / 2, scenarios)
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
        ax.set_title(f"{label}: mean ± std over seeds (simulation)")
        fig.tight_layout()
        path = out_dir / f"simulation_{metric}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(str(path))
    return paths


def dump_rows(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    path.write_text(json.dumps(list(rows), indent=1, default=lambda x: None))
