"""Timeline PNG of one benchmark run: offered load, latency against the SLO, batch/workers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tsadapt.experiments.bench_schedule import Records, Schedule, windows  # noqa: E402

#: Window of the plotted series (s).
PLOT_WINDOW_S = 2.0


def plot_run(
    path: Path,
    title: str,
    schedule: Schedule,
    records: Records,
    timeline: Mapping[str, Sequence[tuple[float, int, int]]],
) -> Path:
    """Write the PNG; ``timeline[model]`` holds ``(t_s, batch_size, workers)`` samples."""
    fig, axes = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
    colors = dict(
        zip(schedule.models, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False)
    )
    fine = np.linspace(0, schedule.duration_s, 600)
    ax = axes[0]
    for m in schedule.models:
        w = windows(schedule, records, m, PLOT_WINDOW_S)
        c = colors[m]
        ax.plot(fine, schedule.intended_rates(fine, m), color=c, lw=1, label=f"{m} intended")
        ax.step(
            w.starts_s,
            w.achieved_rps,
            where="post",
            color=c,
            ls="--",
            lw=1.2,
            label=f"{m} achieved",
        )
    ax.set_ylabel("req/s")
    ax.set_title("offered load: intended (line) vs achieved sends (dashed)")
    ax.legend(fontsize=7, ncol=3)

    ax = axes[1]
    for m in schedule.models:
        w = windows(schedule, records, m, PLOT_WINDOW_S)
        c = colors[m]
        ax.plot(w.starts_s, w.p50_ms, color=c, lw=1, label=f"{m} p50")
        ax.plot(w.starts_s, w.p99_ms, color=c, lw=1.2, ls="--", label=f"{m} p99")
        slo = schedule.slo_ms.get(m)
        if slo is not None and np.isfinite(slo):
            ax.axhline(slo, color=c, ls=":", lw=1.5, label=f"{m} SLO {slo:.0f} ms")
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"client latency per {PLOT_WINDOW_S:.0f} s window vs SLO")
    ax.legend(fontsize=7, ncol=3)

    ax = axes[2]
    ax2 = ax.twinx()
    for m in schedule.models:
        pts = timeline.get(m, ())
        if not pts:
            continue
        t, b, wk = (np.asarray(x, dtype=float) for x in zip(*pts, strict=True))
        ax.step(t, b, where="post", color=colors[m], lw=1.2, label=f"{m} batch size")
        ax2.step(t, wk, where="post", color=colors[m], lw=1, ls="--", label=f"{m} workers")
    ax.set_ylabel("batch size (solid)")
    ax2.set_ylabel("workers (dashed)")
    ax.set_xlabel("time (s)")
    ax.set_title("batch size and workers (polled from the server)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, ncol=3)
    ax.set_xlim(0, schedule.duration_s)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
