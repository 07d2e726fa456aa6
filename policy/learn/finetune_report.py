"""The held-out comparison after ``tsadapt train --scenario``: the fine-tuned policy, the
policy it started from, the rules (aimd, queue) and best-static, on the time slices the
fine-tune never saw, in the simulator, same seeds for all -> a small Markdown + JSON report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.policy.sim.best_static import best_static, static_result
from tsadapt.policy.sim.control import run_named
from tsadapt.policy.sim.scenario import Scenario

#: Row labels: the fine-tuned policy, the one it started from.
TUNED, BASE = "ppo (fine-tuned)", "ppo (base)"
POLICIES = (TUNED, BASE, "aimd", "queue", "best-static")
METRICS = ("goodput_rps", "slo_attainment", "worker_seconds", "reconfigurations")


def heldout_rows(
    heldout: Sequence[Scenario],
    tuned: Path,
    base: Path,
    seeds: Sequence[int],
    policies: Sequence[str] = POLICIES,
    on_run: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One ``simulate --json`` row per held-out slice x seed x policy (``policy`` relabelled)."""
    rows = []
    for sc in heldout:
        statics = best_static(sc) if "best-static" in policies else None
        for seed in seeds:
            for label in policies:
                if on_run is not None:
                    on_run(f"{sc.name} / {label} / seed {seed}")
                if label in (TUNED, BASE):
                    row = run_named(sc, "ppo", seed, tuned if label == TUNED else base).as_dict()
                elif label == "best-static":
                    assert statics is not None
                    row = static_result(sc, statics, seed)
                else:
                    row = run_named(sc, label, seed).as_dict()
                rows.append({**row, "policy": label})
    return rows


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per policy: the mean of each metric over the held-out slices and seeds."""
    out: dict[str, dict[str, float]] = {}
    for label in dict.fromkeys(r["policy"] for r in rows):
        mine = [r for r in rows if r["policy"] == label]
        out[label] = {m: _mean(mine, m) for m in METRICS} | {"runs": len(mine)}
    return out


def _mean(rows: Sequence[dict[str, Any]], metric: str) -> float:
    x = np.array([np.nan if r[metric] is None else float(r[metric]) for r in rows])
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def no_worse(s: dict[str, dict[str, float]], tolerance_rps: float = 0.0) -> bool:
    """Whether the fine-tuned policy's mean held-out goodput is at least its base's."""
    return s[TUNED]["goodput_rps"] >= s[BASE]["goodput_rps"] - tolerance_rps


def write_report(
    out_md: Path, header: dict[str, str], rows: Sequence[dict[str, Any]]
) -> tuple[Path, Path]:
    """``out_md`` (Markdown) and the same name ``.json`` (rows + summary)."""
    s = summary(rows)
    lines = ["# Fine-tuned policy on held-out slices of your traffic", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += [
        "",
        "Means over the held-out slices and seeds (simulator, the same arrivals and seeds "
        "for every policy; best-static is tuned on each held-out slice itself, an oracle).",
        "",
        "| policy | goodput (req/s) | SLO attainment | worker-s | reconfigurations |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, m in s.items():
        lines.append(
            f"| {label} | {m['goodput_rps']:.2f} | {100 * m['slo_attainment']:.2f} % | "
            f"{m['worker_seconds']:.0f} | {m['reconfigurations']:.1f} |"
        )
    if TUNED in s and BASE in s:
        d = s[TUNED]["goodput_rps"] - s[BASE]["goodput_rps"]
        lines += [
            "",
            f"Fine-tuned minus base: {d:+.2f} req/s held-out goodput "
            f"({'no worse' if no_worse(s) else 'worse'}).",
        ]
    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(lines) + "\n")
    out_json = out_md.with_suffix(".json")
    out_json.write_text(
        json.dumps({"header": header, "summary": s, "rows": rows}, indent=1, default=str)
    )
    return out_md, out_json
