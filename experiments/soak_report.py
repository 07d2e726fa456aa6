"""The soak's figures and report: per-model outcomes (answered, shed, failed, SLO attainment per
5 minutes), each process's memory/fd/thread trend over the judged window, and the verdicts.

The judged window is the last 5/6 of the run (the last 50 minutes of an hour): the first
sixth is warm-up (JIT, allocator growth, the policy settling). Growth compares the median of
the window's first three samples with the median of its last three, so a single spike does
not decide it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.experiments.bench_schedule import Schedule
from tsadapt.experiments.soak_load import SHED_STATUS, Sent
from tsadapt.experiments.soak_probe import ProbeSample, ProcStat
from tsadapt.markdown import table

#: Largest RSS growth over the judged window (percent) that passes.
MAX_RSS_GROWTH_PCT = 5.0
#: fds or threads "flat": the last three samples' median at most this far above the first's
#: (absolute count, or this fraction of the first, whichever is larger).
FLAT_ABS, FLAT_FRAC = 4, 0.05
#: Windows of the SLO attainment table (s).
ATTAINMENT_WINDOW_S = 300.0
#: Samples at each end of the judged window whose median is compared.
ENDS = 3


def judged_from(duration_s: float) -> float:
    """Start (s) of the judged window: the last 5/6 of the run."""
    return duration_s / 6.0


def _growth(values: Sequence[float]) -> tuple[float, float, float]:
    """(first, last, growth %) of a series by the median of ENDS samples at each end."""
    first = float(np.median(values[:ENDS]))
    last = float(np.median(values[-ENDS:]))
    pct = (last - first) / first * 100.0 if first > 0 else math.nan
    return first, last, pct


def _flat(first: float, last: float) -> bool:
    return last - first <= max(FLAT_ABS, FLAT_FRAC * first)


def _mean_stat(stats: Sequence[ProcStat]) -> ProcStat | None:
    if not stats:
        return None
    n = len(stats)
    return ProcStat(0, sum(s.rss_mb for s in stats) / n, round(sum(s.fds for s in stats) / n),
                    round(sum(s.threads for s in stats) / n))  # fmt: skip


def process_trends(samples: Sequence[ProbeSample], t_from: float) -> list[dict[str, Any]]:
    """One row per watched process alive through the whole judged window."""
    window = [s for s in samples if s.t_s >= t_from]
    if len(window) < 2 * ENDS:
        return []
    series: dict[str, list[Any]] = {"frontend (JVM)": [], "sidecar": []}
    for s in window:
        series["frontend (JVM)"].append(s.frontend)
        series["sidecar"].append(s.sidecar)
    pids: dict[tuple[str, int], list[Any]] = {}
    read = [s for s in window if not s.error]  # a failed read of the workers is no data
    for s in read:
        for model, stats in s.workers.items():
            for st in stats:
                pids.setdefault((model, st.pid), []).append(st)
    models = sorted({m for s in read for m in s.workers})
    for model in models:
        whole = {p: st for (m, p), st in pids.items() if m == model and len(st) == len(read)}
        for pid, stats in sorted(whole.items()):
            series[f"worker {model} (pid {pid})"] = stats
        if not whole:  # every worker replaced in the window: judge the mean per worker
            series[f"workers {model} (mean per worker, replaced in the window)"] = [
                _mean_stat(s.workers.get(model, [])) for s in read
            ]
    rows = []
    for name, stats in series.items():
        if any(st is None for st in stats):
            rows.append({"process": name, "complete": False})
            continue
        rss = _growth([st.rss_mb for st in stats])
        half = _growth([st.rss_mb for st in stats[len(stats) // 2 :]])
        fds = _growth([st.fds for st in stats])
        thr = _growth([st.threads for st in stats])
        rows.append(
            {
                "process": name,
                "complete": True,
                "rss_mb_first": rss[0], "rss_mb_last": rss[1], "rss_growth_pct": rss[2],
                "rss_ok": rss[2] < MAX_RSS_GROWTH_PCT, "rss_growth_2nd_half_pct": half[2],
                "fds_first": fds[0], "fds_last": fds[1], "fds_max": max(st.fds for st in stats),
                "fds_flat": _flat(fds[0], fds[1]),
                "threads_first": thr[0], "threads_last": thr[1],
                "threads_max": max(st.threads for st in stats),
                "threads_flat": _flat(thr[0], thr[1]),
            }
        )  # fmt: skip
    return rows


def outcomes(schedule: Schedule, sent: Sent, t_from: float = 0.0, t_to: float = math.inf):
    """Per model: requests sent, answered, shed (503), failed otherwise, SLO attainment
    (answered within the SLO over all sent) and p50/p99 of the answered, by scheduled time."""
    out = {}
    in_range = (schedule.times >= t_from) & (schedule.times < t_to)
    for k, model in enumerate(schedule.models):
        sel = in_range & (schedule.model_idx == k)
        status, lat = sent.status[sel], sent.latency_ms[sel]
        ok = status == 200
        slo = float(schedule.slo_ms.get(model, math.inf))
        n = int(sel.sum())
        good = lat[ok]
        out[model] = {
            "sent": n,
            "answered": int(ok.sum()),
            "shed": int((status == SHED_STATUS).sum()),
            "failed": int((~ok & (status != SHED_STATUS)).sum()),
            "failed_by_status": {
                ("no answer" if int(c) == 0 else str(int(c))): int((status == c).sum())
                for c in np.unique(status[~ok & (status != SHED_STATUS)])
            },
            "within_slo": int((good <= slo).sum()),
            "attainment": float((good <= slo).sum() / n) if n else math.nan,
            "p50_ms": float(np.percentile(good, 50)) if good.size else math.nan,
            "p99_ms": float(np.percentile(good, 99)) if good.size else math.nan,
            "slo_ms": slo,
        }
    return out


def attainment_windows(schedule: Schedule, sent: Sent, duration_s: float) -> list[dict[str, Any]]:
    """Per 5-minute window (the last one may be shorter): each model's outcomes."""
    rows = []
    start = 0.0
    while start < duration_s:
        end = min(duration_s, start + ATTAINMENT_WINDOW_S)
        rows.append({"from_s": start, "to_s": end, "models": outcomes(schedule, sent, start, end)})
        start = end
    return rows


def controller_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the controller did, from its decision log."""
    ticks = [r for r in records if "tick" in r]
    applied = [a for r in ticks for a in r.get("applied", ())]
    return {
        "ticks": len(ticks),
        "events": {e: sum(r.get("event") == e for r in records) for e in (
            "start", "adopted", "models", "tick", "reapply", "unreachable", "stop")},
        "changes_applied": sum(bool(a.get("ok")) for a in applied),
        "changes_failed": sum(not a.get("ok") for a in applied),
        "overrides": sum(len(r.get("overrides", ())) for r in ticks),
    }  # fmt: skip


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return table(header, [[str(c) for c in r] for r in rows])


def _fmt(x: Any, spec: str = ".1f") -> str:  # noqa: ANN401 - any number
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return format(x, spec)


def verdicts(report: dict[str, Any]) -> dict[str, bool]:
    """The issue's criteria, each True (met) or False, from the report's figures."""
    rows = [r for r in report["processes"] if r["complete"]]
    totals = report["totals"]
    return {
        "rss_growth_under_5pct": bool(rows) and all(r["rss_ok"] for r in rows),
        "fds_flat": bool(rows) and all(r["fds_flat"] for r in rows),
        "threads_flat": bool(rows) and all(r["threads_flat"] for r in rows),
        "no_failed_requests": all(m["failed"] == 0 for m in totals.values()),
        "every_process_watched": len(rows) == len(report["processes"]) and len(rows) >= 3,
    }


def write_markdown(report: dict[str, Any], path: Path, png: Path | None) -> None:
    """``soak.md``: the command, the conditions, the verdicts and the tables."""
    dur = report["duration_s"]
    lines = [
        "# Soak: a real TorchServe under load with the PPO controller",
        "",
        f"Written by `{report['command']}` on {report['date']}.",
        "",
        f"Run length: {dur:.0f} s ({dur / 60:.1f} min){report['length_note']}. "
        f"Judged window: the last 5/6 ({report['judged_from_s']:.0f} s to {dur:.0f} s). "
        f"Sampled every {report['sample_s']:.0f} s ({len(report['samples'])} samples).",
        "",
        f"Models: {', '.join(report['models'])} (`{report['foreign_model']}` is a plain "
        "`BaseHandler` MLP, not ours). Load: the rate trace `loadtests/traces/demo.csv` tiled "
        f"and scaled x{report['load']['trace_scale']}, plus {report['load']['burst_rate']:.0f} "
        f"req/s bursts of {report['load']['burst_s']:.0f} s every "
        f"{report['load']['burst_period_s']:.0f} s, split by weight "
        f"{report['load']['weights']}; open loop, {report['requests']} requests. "
        f"Controller: `tsadapt control --policy ppo` (decision log {report['decision_log']}). "
        f"TorchServe's keys expire after {report.get('token_expiration_min') or 60} minutes.",
        "",
        f"Machine: {report['host']} (other processes' load lands in the latency and SLO figures).",
        "",
        "## Verdicts",
        "",
    ]
    names = {
        "rss_growth_under_5pct": "RSS growth of every process under 5 % over the judged window",
        "fds_flat": "open file descriptors flat",
        "threads_flat": "threads flat",
        "no_failed_requests": "no request failed except deliberate shedding (503, counted apart)",
        "every_process_watched": "every process (JVM, workers, sidecar) alive and sampled "
        "through the judged window",
    }
    lines += _table(
        ["criterion", "met"],
        [[names[k], "yes" if v else "**no**"] for k, v in report["verdicts"].items()],
    )
    lines += ["", "## Processes over the judged window", ""]
    lines += _table(
        ["process", "RSS MiB first", "last", "growth %", "growth % (2nd half)", "fds first",
         "last", "max", "threads first", "last", "max"],
        [[r["process"], _fmt(r.get("rss_mb_first")), _fmt(r.get("rss_mb_last")),
          _fmt(r.get("rss_growth_pct"), ".2f"), _fmt(r.get("rss_growth_2nd_half_pct"), ".2f"),
          _fmt(r.get("fds_first"), ".0f"),
          _fmt(r.get("fds_last"), ".0f"), _fmt(r.get("fds_max"), ".0f"),
          _fmt(r.get("threads_first"), ".0f"), _fmt(r.get("threads_last"), ".0f"),
          _fmt(r.get("threads_max"), ".0f")] for r in report["processes"]],
    )  # fmt: skip
    lines += [
        "",
        f"Decision log: {report['decision_log_bytes']} bytes after "
        f"{report['controller']['ticks']} ticks. Controller: "
        f"{report['controller']['changes_applied']} changes applied, "
        f"{report['controller']['changes_failed']} failed, "
        f"{report['controller']['overrides']} guard overrides, events "
        f"{report['controller']['events']}.",
        "",
        "## Requests per model (whole run)",
        "",
    ]
    lines += _table(
        ["model", "SLO ms", "sent", "answered", "shed (503)", "failed", "failed by status",
         "SLO attainment", "p50 ms", "p99 ms"],
        [[m, _fmt(t["slo_ms"], ".0f"), t["sent"], t["answered"], t["shed"], t["failed"],
          ", ".join(f"{k}: {v}" for k, v in t.get("failed_by_status", {}).items()) or "-",
          _fmt(100 * t["attainment"], ".2f") + " %", _fmt(t["p50_ms"]), _fmt(t["p99_ms"])]
         for m, t in report["totals"].items()],
    )  # fmt: skip
    lines += ["", "## SLO attainment per model per 5 minutes", ""]
    models = list(report["totals"])
    lines += _table(
        ["window (min)", *models],
        [[f"{w['from_s'] / 60:.0f}-{w['to_s'] / 60:.0f}",
          *(_fmt(100 * w["models"][m]["attainment"], ".1f") for m in models)]
         for w in report["windows"]],
    )  # fmt: skip
    if png is not None:
        lines += ["", f"![soak]({png.name})"]
    path.write_text("\n".join(lines) + "\n")


def plot(report: dict[str, Any], path: Path) -> Path:
    """Four panels: RSS, fds, threads of every process and attainment per 5 minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report["samples"]
    t = np.asarray([s["t_s"] for s in samples]) / 60.0
    fig, axes = plt.subplots(2, 2, figsize=(12, 7), sharex=True)

    def series(key: str, field: str) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for name in ("frontend", "sidecar"):
            out[name] = [s[name][field] if s[name] else math.nan for s in samples]
        for model in report["models"]:
            out[f"{model} workers"] = [
                sum(w[field] for w in s["workers"].get(model, [])) or math.nan for s in samples
            ]
        return out

    for ax, field, label in (
        (axes[0, 0], "rss_mb", "RSS (MiB)"),
        (axes[0, 1], "fds", "open fds"),
        (axes[1, 0], "threads", "threads"),
    ):
        for name, ys in series(label, field).items():
            ax.plot(t, ys, label=name)
        ax.set_ylabel(label)
        ax.axvline(report["judged_from_s"] / 60.0, color="grey", ls=":")
    axes[0, 0].legend(fontsize=7)
    ax = axes[1, 1]
    for model in report["models"]:
        mid = [(w["from_s"] + w["to_s"]) / 120.0 for w in report["windows"]]
        ax.plot(mid, [100 * w["models"][model]["attainment"] for w in report["windows"]],
                marker="o", label=model)  # fmt: skip
    ax.set_ylabel("SLO attainment per 5 min (%)")
    ax.legend(fontsize=7)
    for a in axes[1]:
        a.set_xlabel("minutes")
    fig.suptitle("soak: memory, fds and threads per process; SLO attainment per model")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
