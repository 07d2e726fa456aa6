"""Light load against heavy load, within the same runs: the peers report's "by load level"
section.

Each request is classed by the scenario's intended total rate (all models) at its scheduled
send time: *light* where that rate is at most its mean over the run, *heavy* above it. On
``co-surge`` and ``surge`` light is the time between surges. The arrivals are the same for
every system on a seed, so each level holds the same requests for every system; its figures
come from :func:`tsadapt.policy.sim.metrics.summarize` and ``pool``, as the main tables'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tsadapt.experiments.bench_run import RunResult
from tsadapt.experiments.bench_schedule import Records, Schedule, read_records
from tsadapt.experiments.bench_seeds import Stat
from tsadapt.markdown import table
from tsadapt.policy.sim.metrics import ModelResult, pool, summarize

LEVELS = ("light", "heavy")
HEADER = ["system", "seeds valid", "requests per run", "SLO attainment %", "p50 ms", "p99 ms",
          "failed per run"]  # fmt: skip


def light_mask(schedule: Schedule, t: np.ndarray, mean_rps: float | None = None) -> np.ndarray:
    """True where the intended total rate at ``t`` is at most its mean over the run
    (``mean_rps``: that mean, when the caller has it)."""
    mean = schedule.intended_mean_rate() if mean_rps is None else mean_rps
    return schedule.intended_rates(np.asarray(t, dtype=np.float64)) <= mean + 1e-9


def level_result(schedule: Schedule, records: Records, level: str) -> ModelResult:
    """The pooled figures of one run over the requests scheduled in ``level``; requests
    scheduled there but never sent count as violations, as in the main tables."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    light, mean = level == "light", schedule.intended_mean_rate()
    per, lats = [], []
    for m in schedule.models:
        r = records.of(m)
        mine = light_mask(schedule, r.scheduled_s, mean) == light
        scheduled = int((light_mask(schedule, schedule.times_of(m), mean) == light).sum())
        lat = r.latency_ms[r.ok & mine]
        lats.append(lat)
        per.append(summarize(
            m, lat, schedule.slo_ms.get(m, math.inf), max(int(mine.sum()), scheduled),
            schedule.duration_s, rejected=int((mine & (r.status == 503)).sum()),
            failed=int((mine & ~r.ok & (r.status != 503)).sum()),
        ))  # fmt: skip
    return pool(per, lats, schedule.duration_s)


FIGURES = ("requests", "slo_attainment_pct", "p50_ms", "p99_ms", "failed")


def figures(r: ModelResult) -> dict[str, float]:
    """The figures of one run on one level (failed = not answered 2xx, unsent included)."""
    return {"requests": float(r.requests), "slo_attainment_pct": 100.0 * r.slo_attainment,
            "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
            "failed": float(r.requests - r.completed)}  # fmt: skip


@dataclass(frozen=True)
class LoadLevels:
    """Per level, per system, per figure: mean ± sd over the system's valid runs."""

    mean_rate_rps: float  # the light/heavy threshold (first seed's schedule)
    runs_per_seed: int
    stats: Mapping[str, Mapping[str, Mapping[str, Stat]]]

    @classmethod
    def of(cls, runs: Mapping[int, Sequence[RunResult]],
           schedules: Mapping[int, Schedule]) -> LoadLevels:  # fmt: skip
        found: dict[str, dict[str, list[dict[str, float]]]] = {lv: {} for lv in LEVELS}
        for seed, results in runs.items():
            for res in results:
                csv = res.rundir / "requests.csv" if res.rundir is not None else None
                if not (res.valid and csv is not None and csv.is_file()):
                    continue
                records = read_records(csv)
                for lv in LEVELS:
                    found[lv].setdefault(res.controller, []).append(
                        figures(level_result(schedules[seed], records, lv))
                    )
        stats = {lv: {c: {f: Stat.of([x[f] for x in xs]) for f in FIGURES}
                      for c, xs in by.items()} for lv, by in found.items()}  # fmt: skip
        return cls(schedules[min(schedules)].intended_mean_rate(), len(runs), stats)

    def rows(self, level: str, systems: Sequence[str]) -> list[list[str]]:
        out = []
        for c in systems:
            s = self.stats[level].get(c)
            if s is None:
                continue
            out.append([
                c, f"{s['requests'].n}/{self.runs_per_seed}", s["requests"].text(".0f"),
                s["slo_attainment_pct"].text(".1f"), s["p50_ms"].text(".1f"),
                s["p99_ms"].text(".1f"), s["failed"].text(".0f"),
            ])  # fmt: skip
        return out

    def section(self, systems: Sequence[str]) -> list[str]:
        """The report's "light and heavy load" section."""
        lines = [
            "## Light load and heavy load, within the same runs",
            "",
            "Each request is classed by the scenario's intended total rate at its scheduled "
            f"send time: light where it is at most its mean over the run "
            f"({self.mean_rate_rps:.1f} req/s, all models), heavy above it; the same requests "
            "for every system on a seed (`experiments/peers/load_levels.py`). Mean ± sd over "
            "the valid runs; failed = not answered 2xx.",
            "",
        ]
        for lv in LEVELS:
            lines += [f"**{lv.capitalize()} load**", "",
                      *table(HEADER, self.rows(lv, systems)), ""]  # fmt: skip
        return lines

    def as_json(self) -> dict:
        return {"mean_rate_rps": self.mean_rate_rps,
                **{lv: {c: {f: {"mean": s.mean, "sd": s.sd, "n": s.n} for f, s in v.items()}
                        for c, v in by.items()} for lv, by in self.stats.items()}}  # fmt: skip
