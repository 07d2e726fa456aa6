"""``docs/results/peers.md`` and ``peers.json``: our controllers against the peers, like for
like, written by ``tsadapt lab bench ... --peers rayserve,bentoml``.

Two comparisons over the same arrivals: fixed against fixed (TorchServe ``static``, Ray's
fixed replicas, BentoML without batching) and adaptive against adaptive (our controllers,
Ray's autoscaler, BentoML's adaptive batching); each system's closed-loop capacity; the rule
that leaves out runs whose load generator fell behind; the exact settings of each peer
(generated from their settings objects); where a request's time goes.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tsadapt.experiments.bench_capacity import USERS, WARMUP_S, Capacity
from tsadapt.experiments.bench_run import RunResult, fmt
from tsadapt.experiments.bench_schedule import LATENESS_LIMIT_MS
from tsadapt.experiments.bench_seeds import finite_json, invalid_runs, per_controller, stats
from tsadapt.experiments.peers.load_levels import LoadLevels
from tsadapt.experiments.peers.settings import SettingRow
from tsadapt.markdown import table

if TYPE_CHECKING:
    from tsadapt.experiments.bench_run import BenchConfig
    from tsadapt.policy.sim.scenario import Scenario

FIXED = ("static", "rayserve-fixed", "bentoml-nobatch")
OURS_ADAPTIVE = ("aimd", "queue", "ppo")
PEERS_ADAPTIVE = ("rayserve-auto", "bentoml-adaptive")
SeedRuns = Mapping[int, Sequence[RunResult]]

SYSTEM_HEADER = [
    "system", "seeds valid", "SLO attainment %", "goodput req/s", "p50 ms", "p99 ms",
    "worker-s", "failed", "invalid runs (lateness p99 ms)",
]  # fmt: skip
PAIR_HEADER = [
    "system", "against", "seeds", "goodput diff per seed (req/s)", "mean goodput diff",
    "SLO attainment diff per seed (pp)", "mean attainment diff (pp)",
]  # fmt: skip


def system_rows(runs: SeedRuns, systems: Sequence[str]) -> list[list[str]]:
    st, bad, per = stats(runs), invalid_runs(runs), per_controller(runs)
    rows = []
    for c in systems:
        if c not in st:
            continue
        s = st[c]
        rows.append([
            c, f"{len(per[c])}/{len(runs)}", s["slo_attainment_pct"].text(".1f"),
            s["goodput_rps"].text(".2f"), s["p50_ms"].text(".1f"), s["p99_ms"].text(".1f"),
            s["worker_seconds"].text(".0f"), s["failed"].text(".0f"),
            ", ".join(f"s{k}: {v:.0f}" for k, v in bad.get(c, {}).items()) or "–",
        ])  # fmt: skip
    return rows


def pair(runs: SeedRuns, a: str, b: str) -> dict[str, Any] | None:
    """``a`` minus ``b`` on the seeds where both ran validly (None when there is none)."""
    per = per_controller(runs)
    seeds = sorted(set(per.get(a, {})) & set(per.get(b, {})))
    if not seeds:
        return None
    g = {s: per[a][s]["goodput_rps"] - per[b][s]["goodput_rps"] for s in seeds}
    t = {s: per[a][s]["slo_attainment_pct"] - per[b][s]["slo_attainment_pct"] for s in seeds}
    return {"system": a, "against": b, "goodput_diff": g, "attainment_diff_pp": t,
            "mean_goodput_diff": float(np.mean(list(g.values()))),
            "mean_attainment_diff_pp": float(np.mean(list(t.values())))}  # fmt: skip


def best_of(runs: SeedRuns, systems: Sequence[str]) -> str | None:
    """The system of ``systems`` with the highest mean goodput over its valid seeds."""
    st = stats(runs)
    have = [c for c in systems if c in st and st[c]["goodput_rps"].n > 0]
    return max(have, key=lambda c: st[c]["goodput_rps"].mean) if have else None


def pairs(runs: SeedRuns, systems: Sequence[str], references: Sequence[str]) -> list[dict]:
    """Each of ``systems`` against the best of ``references`` (and that one against the best
    of ``systems``)."""
    out = []
    ref, best = best_of(runs, references), best_of(runs, systems)
    for c in systems:
        p = pair(runs, c, ref) if ref else None
        if p:
            out.append(p)
    if ref and best:
        p = pair(runs, ref, best)
        if p:
            out.append(p)
    return out


def pair_rows(ps: Sequence[dict]) -> list[list[str]]:
    return [[
        p["system"], p["against"], str(len(p["goodput_diff"])),
        ", ".join(f"s{s}: {d:+.2f}" for s, d in p["goodput_diff"].items()),
        f"{p['mean_goodput_diff']:+.2f}",
        ", ".join(f"s{s}: {d:+.1f}" for s, d in p["attainment_diff_pp"].items()),
        f"{p['mean_attainment_diff_pp']:+.1f}",
    ] for p in ps]  # fmt: skip


def capacity_rows(caps: Sequence[Capacity]) -> list[list[str]]:
    rows = []
    for c in caps:
        if c.status != "ok":
            rows.append([c.system, c.model, f"{c.status}: {c.reason[:120]}", "–", "–", "–", "–"])
            continue
        rows.append([c.system, c.model, fmt(c.rps, ".1f"), fmt(c.p50_ms, ".1f"),
                     fmt(c.p99_ms, ".1f"), str(c.failed), fmt(c.window_s, ".1f")])  # fmt: skip
    return rows


CAPACITY_HEADER = ["system", "model", "answered 2xx req/s", "p50 ms", "p99 ms", "failed",
                   "window s"]  # fmt: skip
SETTINGS_HEADER = ["run", "setting", "value", "library default", "why"]


def box_load(load_avg: tuple[float, float] | None) -> str:
    """The box's load as the report states it: measured, never assumed."""
    if load_avg is None:
        return "the box's load was not recorded"
    before, after = load_avg
    return (
        f"1-minute load average {before:.1f} when the bench started and {after:.1f} when it "
        "ended; the bench's own servers and Locust count in the second"
    )


def write_peers_report(
    md: Path, command: str, scenario: str, duration_s: float, started: str,
    runs: SeedRuns, caps: Sequence[Capacity], settings: Sequence[SettingRow],
    environments: Mapping[str, str], breakdown: Sequence[str] = (), bench_md: str = "",
    load_avg: tuple[float, float] | None = None, levels: LoadLevels | None = None,
) -> Path:  # fmt: skip
    """Write ``md`` (``peers.md``) and its ``.json``; return ``md``. ``load_avg``: the box's
    1-minute load average when the bench started and when it ended; ``levels``: the figures
    on light and heavy load."""
    seeds = sorted(runs)
    present = [r.controller for r in runs[seeds[0]]]
    fixed = [c for c in FIXED if c in present]
    ours = [c for c in OURS_ADAPTIVE if c in present]
    peers = [c for c in PEERS_ADAPTIVE if c in present]
    fixed_pairs = [p for c in fixed[1:] if (p := pair(runs, c, "static"))]
    adaptive_pairs = pairs(runs, peers, ours)
    not_ok = [(s, r) for s in seeds for r in runs[s] if r.status != "ok"]
    lines = [
        "# Our controllers against Ray Serve and BentoML, like for like",
        "",
        f"Generated by `{command or 'tsadapt lab bench'}` on {started}. Machine: "
        f"{platform.machine()}, {os.cpu_count()} CPU cores ({box_load(load_avg)}), Python "
        f"{platform.python_version()}. Scenario `{scenario}`, {duration_s:.0f} s "
        f"per run, seeds {', '.join(map(str, seeds))}: every system gets the same arrivals "
        "per seed, on a fresh server, from the same load generator. Other scenarios were not "
        "run for this report.",
        "",
        "## The load generator, and the invalid-run rule",
        "",
        "One Locust process per run for every system (one dispatcher user firing each "
        "request at its scheduled time in its own greenlet), not pinned to a core, started "
        "at a higher CPU priority than the servers (niceness 5 lower, where the bench may "
        "raise it), on the same two cores as the server under test. **A run whose send "
        f"lateness p99 (actual minus scheduled send time, all models) exceeds "
        f"{LATENESS_LIMIT_MS:.0f} ms measured the load generator, not the server: it is "
        "marked invalid and left out of every mean and paired difference below**, for our "
        "controllers and the peers alike. Failed = requests not answered 2xx (rejections, "
        "timeouts, unanswered), counted as SLO violations.",
        "",
        "## Capacity of each system",
        "",
        f"Closed loop, one model at a time on a fresh server per system: {USERS} Locust users "
        "each sending the next request as soon as the last is answered, the open-loop runs' "
        f"payloads; the first {WARMUP_S:.0f} s not counted. Systems of fixed size only "
        "(static = TorchServe at the registration defaults, one worker per model).",
        "",
        *table(CAPACITY_HEADER, capacity_rows(caps)),
        "",
        "## Fixed against fixed",
        "",
        "TorchServe `static` (registration defaults), Ray Serve with fixed replicas "
        "(`rayserve-fixed`), BentoML with batching off (`bentoml-nobatch`). Mean ± sd over "
        "the valid seeds.",
        "",
        *table(SYSTEM_HEADER, system_rows(runs, fixed)),
        "",
        "Paired, seed by seed, against `static` (seeds where both runs are valid):",
        "",
        *table(PAIR_HEADER, pair_rows(fixed_pairs)),
        "",
        "## Adaptive against adaptive",
        "",
        "Our controllers (`aimd`, `queue`, `ppo` on TorchServe) against Ray Serve's "
        "autoscaler (`rayserve-auto`) and BentoML's adaptive batching (`bentoml-adaptive`).",
        "",
        *table(SYSTEM_HEADER, system_rows(runs, [*ours, *peers])),
        "",
        "Paired, seed by seed: each peer against our best controller (highest mean goodput), "
        "and that controller against the best peer:",
        "",
        *table(PAIR_HEADER, pair_rows(adaptive_pairs)),
        "",
        *(levels.section([*fixed, *ours, *peers]) if levels is not None else []),
    ]
    if not_ok:
        lines += ["Runs that did not complete:", ""]
        lines += [f"- seed {s}, `{r.controller}`: {r.status}: {r.reason[:300]}" for s, r in not_ok]
        lines += [""]
    lines += [
        "## Settings of each peer",
        "",
        "Every setting the bench gives each peer explicitly, with the library's default "
        "(most differ from it), generated from the peers' settings objects "
        "(`experiments/peers/rayserve_app.py`, `bentoml_app.py`). Environments: "
        + "; ".join(f"{k}: {v}" for k, v in environments.items())
        + ".",
        "",
        *table(
            SETTINGS_HEADER,
            [[r.run, f"`{r.setting}`", r.value, r.default, r.reason] for r in settings],
        ),
        "",
        *breakdown,
        f"The per-seed tables, offered load and timelines of every run: `{bench_md}`.",
        "",
    ]
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join(lines) + "\n")
    st = stats(runs)
    data = {
        "command": command, "scenario": scenario, "duration_s": duration_s, "seeds": seeds,
        "lateness_limit_ms": LATENESS_LIMIT_MS,
        "systems": {c: {f: {"mean": s.mean, "sd": s.sd, "n": s.n} for f, s in v.items()}
                    for c, v in st.items()},
        "per_seed": {c: {str(k): v for k, v in d.items()} for c, d in per_controller(runs).items()},
        "invalid": {c: {str(k): v for k, v in d.items()} for c, d in invalid_runs(runs).items()},
        "fixed_pairs": _str_keys(fixed_pairs), "adaptive_pairs": _str_keys(adaptive_pairs),
        "capacity": [asdict(c) for c in caps],
        "settings": [asdict(r) for r in settings],
        "environments": dict(environments),
        "load_levels": levels.as_json() if levels is not None else None,
        "not_ok": [{"seed": s, "run": r.controller, "status": r.status, "reason": r.reason}
                   for s, r in not_ok],
    }  # fmt: skip
    md.with_suffix(".json").write_text(json.dumps(finite_json(data), indent=2) + "\n")
    return md


def _str_keys(ps: Sequence[dict]) -> list[dict]:
    return [{k: ({str(s): d for s, d in v.items()} if isinstance(v, dict) else v)
             for k, v in p.items()} for p in ps]  # fmt: skip


def write_report(cfg: BenchConfig, scenario: Scenario, duration_s: float, started: str,
                 runs: dict[int, list[RunResult]], caps: list,
                 load_avg: tuple[float, float] | None = None) -> Path:  # fmt: skip
    """``peers.md`` / ``peers.json`` in the bench's report folder."""
    from tsadapt.experiments.bench_schedule import scenario_schedule
    from tsadapt.experiments.peers.breakdown import breakdown_section
    from tsadapt.experiments.peers.envs import peer_python
    from tsadapt.experiments.peers.peer_bench import RUN_NAMES, settings_rows, variant_of

    first = runs[min(runs)]
    peer_runs = [r.controller for r in first if r.controller in RUN_NAMES]
    settings = [row for run in peer_runs for row in settings_rows(run, scenario)]
    envs = {}
    for peer in dict.fromkeys(variant_of(r)[0] for r in peer_runs):
        python, where = peer_python(peer)
        envs[peer] = where if python is not None else f"not installed ({where})"
    schedules = {s: scenario_schedule(scenario, s, duration_s, cfg.max_requests) for s in runs}
    return write_peers_report(
        cfg.peers_report or cfg.out_dir / "peers.md", cfg.command, scenario.name, duration_s,
        started, runs, caps, settings, envs, breakdown_section(runs),
        str(cfg.out_dir / f"bench-{scenario.name}.md"), load_avg, LoadLevels.of(runs, schedules),
    )  # fmt: skip
