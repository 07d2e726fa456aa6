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

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.policy.defaults import TUNING_SEEDS
from tsadapt.policy.sim.best_static import (  # noqa: F401 - re-exported: the lab's names
    GOODPUT_TIE_RPS,
    MAX_START_ALLOCATIONS,
    STATIC_BATCHES,
    STATIC_DELAYS_MS,
    STATIC_PASSES,
    StaticCache,
    best_static,
    improves,
    static_candidates,
    static_result,
    static_search_size,
    worker_allocations,
)
from tsadapt.policy.sim.control import SimControlConfig, run_named
from tsadapt.policy.sim.scenario import Scenario
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
        "the same guards as `tsadapt control` (`static` = no control: the controller "
        "changes nothing and the emergency guard does not act for it either, "
        "`policy/loop.py` `uses_emergencies`). `budget-static` = the same "
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
