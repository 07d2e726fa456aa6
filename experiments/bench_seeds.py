"""``tsadapt lab bench --seeds N``: the same scenario on N arrival draws, every controller (and
peer) on each draw, and the figures across draws.

Seed ``k`` of a run is ``base + k`` (``base`` = ``--seed``, else the scenario's seed): one
arrival draw per seed, the same draw for every controller. Per controller this gives the
mean ± sample standard deviation of each overall figure over its seeds, and, seed by seed,
the paired difference of goodput and SLO attainment against the best *other* controller
(highest mean goodput among the others that ran on every seed) with its sign across seeds.
The report's summary also goes to ``bench-<scenario>.json``, from which the demo takes its
"best adaptive" controller (:func:`best_adaptive_from_report`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.experiments.bench_report import RunResult, fmt

#: Controllers that adapt (the demo's "best adaptive" is chosen among these).
ADAPTIVE = ("aimd", "queue", "ppo")
#: Figures summarised across seeds: (key, column title, from the overall result).
FIGURES = ("slo_attainment_pct", "goodput_rps", "p99_ms", "worker_seconds", "reconfigurations")
#: A goodput difference smaller than this (req/s) counts as a tie in the sign count.
TIE_RPS = 0.05
#: Version of the JSON summary's layout (``bench-<scenario>.json``).
SUMMARY_VERSION = 1

#: Runs of one bench: seed -> one result per controller (same order on every seed).
SeedRuns = Mapping[int, Sequence[RunResult]]


def bench_seeds(base: int, n: int) -> tuple[int, ...]:
    """The arrival seeds of an ``n``-seed bench starting at ``base``."""
    if n < 1:
        raise ValueError(f"seeds: must be >= 1, got {n}")
    return tuple(base + k for k in range(n))


def figures(res: RunResult) -> dict[str, float]:
    """The overall figures of one ok run."""
    assert res.overall is not None
    r = res.overall
    return {
        "slo_attainment_pct": 100.0 * r.slo_attainment,
        "goodput_rps": r.goodput_rps,
        "p99_ms": r.p99_ms,
        "worker_seconds": r.worker_seconds,
        "reconfigurations": float(sum(res.reconfigurations.values())),
    }


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over seeds (sd NaN with one value)."""

    mean: float
    sd: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        x = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
        if x.size == 0:
            return cls(math.nan, math.nan, 0)
        sd = float(x.std(ddof=1)) if x.size > 1 else math.nan
        return cls(float(x.mean()), sd, int(x.size))

    def text(self, spec: str) -> str:
        if self.n == 0:
            return "–"
        return fmt(self.mean, spec) + ("" if math.isnan(self.sd) else f" ± {self.sd:{spec}}")


@dataclass(frozen=True)
class Paired:
    """One controller against the best other one, seed by seed."""

    controller: str
    other: str
    goodput_diff: dict[int, float]  # seed -> this minus other (req/s)
    attainment_diff: dict[int, float]  # seed -> this minus other (percentage points)

    @property
    def wins(self) -> int:
        return sum(d > TIE_RPS for d in self.goodput_diff.values())

    @property
    def losses(self) -> int:
        return sum(d < -TIE_RPS for d in self.goodput_diff.values())

    @property
    def ties(self) -> int:
        return len(self.goodput_diff) - self.wins - self.losses

    @property
    def sign(self) -> str:
        """``+`` if better on every seed, ``-`` if worse on every seed, else ``mixed``."""
        n = len(self.goodput_diff)
        return "+" if n and self.wins == n else "-" if n and self.losses == n else "mixed"


def per_controller(runs: SeedRuns) -> dict[str, dict[int, dict[str, float]]]:
    """controller -> seed -> figures, for the ok runs (controllers in first-seen order)."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for seed, results in runs.items():
        for res in results:
            out.setdefault(res.controller, {})
            if res.status == "ok":
                out[res.controller][seed] = figures(res)
    return out


def stats(runs: SeedRuns) -> dict[str, dict[str, Stat]]:
    """controller -> figure -> mean ± sd over the seeds it ran on."""
    return {
        c: {f: Stat.of([v[f] for v in by_seed.values()]) for f in FIGURES}
        for c, by_seed in per_controller(runs).items()
    }


def complete(runs: SeedRuns) -> list[str]:
    """Controllers with an ok run on every seed."""
    seeds = set(runs)
    return [c for c, by_seed in per_controller(runs).items() if set(by_seed) == seeds]


def paired(runs: SeedRuns) -> list[Paired]:
    """Each complete controller against the complete other with the highest mean goodput."""
    per = per_controller(runs)
    full = complete(runs)
    mean_goodput = {c: float(np.mean([v["goodput_rps"] for v in per[c].values()])) for c in full}
    out = []
    for c in full:
        others = [o for o in full if o != c]
        if not others:
            continue
        other = max(others, key=lambda o: mean_goodput[o])
        out.append(
            Paired(
                c,
                other,
                {s: per[c][s]["goodput_rps"] - per[other][s]["goodput_rps"] for s in sorted(runs)},
                {
                    s: per[c][s]["slo_attainment_pct"] - per[other][s]["slo_attainment_pct"]
                    for s in sorted(runs)
                },
            )
        )
    return out


def ranking(runs: SeedRuns) -> list[str]:
    """Complete controllers, best first: mean goodput, then mean SLO attainment, then fewer
    mean worker-seconds."""
    st = stats(runs)
    return sorted(
        complete(runs),
        key=lambda c: (
            -st[c]["goodput_rps"].mean,
            -st[c]["slo_attainment_pct"].mean,
            st[c]["worker_seconds"].mean,
        ),
    )


def best_adaptive(runs: SeedRuns) -> str | None:
    """The best-ranked adaptive controller that ran on every seed, or None."""
    return next((c for c in ranking(runs) if c in ADAPTIVE), None)


SUMMARY_HEADER = [
    "controller", "seeds ok", "SLO attainment %", "goodput req/s", "p99 ms", "worker-s",
    "reconfigs",
]  # fmt: skip
PAIRED_HEADER = [
    "controller", "against", "goodput diff per seed (req/s)", "mean", "better / tied / worse",
    "sign", "SLO attainment diff per seed (pp)",
]  # fmt: skip


def summary_rows(runs: SeedRuns) -> list[list[str]]:
    per = per_controller(runs)
    n = len(runs)
    rows = []
    for c, st in stats(runs).items():
        rows.append([
            c, f"{len(per[c])}/{n}", st["slo_attainment_pct"].text(".1f"),
            st["goodput_rps"].text(".2f"), st["p99_ms"].text(".1f"),
            st["worker_seconds"].text(".0f"), st["reconfigurations"].text(".0f"),
        ])  # fmt: skip
    return rows


def paired_rows(runs: SeedRuns) -> list[list[str]]:
    rows = []
    for p in paired(runs):
        rows.append([
            p.controller, p.other,
            ", ".join(f"s{s}: {d:+.2f}" for s, d in p.goodput_diff.items()),
            f"{float(np.mean(list(p.goodput_diff.values()))):+.2f}",
            f"{p.wins} / {p.ties} / {p.losses}", p.sign,
            ", ".join(f"s{s}: {d:+.1f}" for s, d in p.attainment_diff.items()),
        ])  # fmt: skip
    return rows


def summary_json(scenario: str, runs: SeedRuns, command: str, duration_s: float) -> dict:
    """The machine-readable half of the report (``bench-<scenario>.json``)."""
    st = stats(runs)
    per = per_controller(runs)
    return _finite(
        {
            "version": SUMMARY_VERSION,
            "scenario": scenario,
            "command": command,
            "duration_s": duration_s,
            "seeds": sorted(runs),
            "ranking": ranking(runs),
            "best_adaptive": best_adaptive(runs),
            "controllers": {
                c: {
                    "seeds_ok": sorted(per[c]),
                    "per_seed": {str(s): v for s, v in sorted(per[c].items())},
                    **{f: {"mean": s.mean, "sd": s.sd} for f, s in st[c].items()},
                }
                for c in st
            },
            "paired": [
                {
                    "controller": p.controller,
                    "against": p.other,
                    "goodput_diff": {str(s): d for s, d in p.goodput_diff.items()},
                    "attainment_diff_pp": {str(s): d for s, d in p.attainment_diff.items()},
                    "sign": p.sign,
                }
                for p in paired(runs)
            ],
        }
    )


def _finite(x: Any) -> Any:  # noqa: ANN401 - JSON values
    """``x`` with every NaN or infinite float replaced by None (strict JSON)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


class ReportError(ValueError):
    """The multi-seed report is missing or does not say what the caller needs."""


def best_adaptive_from_report(path: Path, scenario: str | None = None, min_seeds: int = 2) -> str:
    """The ``best_adaptive`` controller of a committed multi-seed report, checked (its
    scenario must be ``scenario`` when given)."""
    if not path.is_file():
        raise ReportError(
            f"no multi-seed bench report at {path}: run `tsadapt lab bench --scenario "
            f"{scenario or '<name>'} --controllers static,aimd,queue,ppo --seeds 3` first"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not a readable JSON report ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != SUMMARY_VERSION:
        got = data.get("version") if isinstance(data, dict) else data
        raise ReportError(f"{path}: version: expected {SUMMARY_VERSION}, got {got!r}")
    if scenario is not None and data.get("scenario") != scenario:
        got = data.get("scenario")
        raise ReportError(f"{path}: scenario: expected {scenario!r}, got {got!r}")
    seeds = data.get("seeds")
    if not isinstance(seeds, list) or len(seeds) < min_seeds:
        raise ReportError(
            f"{path}: seeds: a multi-seed report needs >= {min_seeds} seeds, got {seeds!r}"
        )
    best = data.get("best_adaptive")
    if best not in ADAPTIVE:
        raise ReportError(
            f"{path}: best_adaptive: expected one of {', '.join(ADAPTIVE)}, got {best!r}"
        )
    return str(best)
