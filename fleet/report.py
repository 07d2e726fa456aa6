"""``docs/results/fleet.md``, its JSON and its plots, from the sweep's results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tsadapt.fleet.catalog import PUBLISHED_TABLES, SIZE_RANGE, SLO_SLACK
from tsadapt.fleet.constants import (
    GPU_MEMORY_GIB,
    MEAN_LOAD_SHARE,
    NEXUS_EPOCH_S,
    NEXUS_HEADROOM,
    SLOTS_PER_GPU,
    SWITCH_COOLDOWN_S,
    TICK_S,
    WORKER_START_S,
)
from tsadapt.fleet.evaluate import PointResult
from tsadapt.fleet.interference import (
    COLOCATION_FILE,
    FIT_A,
    FIT_B,
    slowdown_table,
    throughputs,
)
from tsadapt.markdown import table

ORDER = ("static", "hold", "sidecar", "nexus", "ppo")


def _measured() -> str:
    """The co-location throughputs the fit comes from, read from the committed raw file."""
    if not COLOCATION_FILE.exists():
        return f"raw file {COLOCATION_FILE} not found here"
    thr = throughputs(json.loads(COLOCATION_FILE.read_text())["parts"]["colocation"]["cases"])
    parts = [f"{k} worker{'s' if k > 1 else ''} {v:.1f} req/s" for k, v in sorted(thr.items())]
    gains = [f"{v / thr[1]:.2f}x" for k, v in sorted(thr.items()) if k > 1]
    return f"{', '.join(parts)}: {' and '.join(gains)} one worker's"


def _label(p: PointResult) -> str:
    return f"{p.cat.mix}, {p.cat.gpus} GPUs x {len(p.cat.models)} models"


def _slug(p: PointResult) -> str:
    return f"fleet-{p.cat.mix}-g{p.cat.gpus}-m{len(p.cat.models)}"


def plot(p: PointResult, out_dir: Path) -> Path:
    """GPUs in use over time, one line per policy, and the hindsight bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    for name in ORDER:
        r = p.runs.get(name)
        if r is not None:
            ax.step([t for t, _ in r.series], [g for _, g in r.series], where="post", label=name)
    t = [TICK_S * k for k in range(len(p.bound))]
    ax.step(t, p.bound, where="post", label="lower bound", color="black", linestyle=":")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("GPUs in use")
    ax.set_title(_label(p))
    ax.set_ylim(0, p.cat.gpus * 1.05)
    ax.legend(loc="lower right", fontsize=8, ncol=5)
    fig.tight_layout()
    path = out_dir / f"{_slug(p)}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def verdict(p: PointResult) -> str:
    """Whether PPO behind guards reaches >= 99 % where Nexus does, on fewer GPUs."""
    nexus, ppo = p.runs.get("nexus"), p.runs.get("ppo")
    if ppo is None:
        return f"**Not met**: PPO was not run ({p.missing.get('ppo', 'not requested')})."
    if nexus is None:
        return "Nexus was not run."
    text = (
        f"PPO {100 * ppo.attainment:.2f} % on {ppo.mean_gpus:.2f} GPUs; Nexus "
        f"{100 * nexus.attainment:.2f} % on {nexus.mean_gpus:.2f} GPUs."
    )
    if ppo.reconfigurations == 0:
        steps = (p.ppo_meta or {}).get("timesteps", "?")
        text += (
            f" PPO changed no slot in the whole run: after {steps} training steps it proposed "
            f"{ppo.proposed} actions in {int(p.cat.horizon_s / TICK_S) - 1} ticks, the guards "
            f"overrode them {ppo.overrides} times (a clamp and a veto count twice) and none "
            "changed a slot, so it holds the start "
            "placement (Nexus's plan for the t = 0 rates) and never consolidates."
        )
    if nexus.attainment < 0.99:
        return f"Nexus misses 99 % here, so the criterion does not apply. {text}"
    if ppo.attainment >= 0.99 and ppo.mean_gpus < nexus.mean_gpus:
        return f"**Met**. {text}"
    return f"**Not met**. {text}"


def write_report(
    points: Sequence[PointResult], out_dir: Path, command: str, wall_s: float, notes: str = ""
) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    f = slowdown_table()
    lines = [
        "# Fleet scale: GPU slots, the parallel flag and consolidation, against Nexus",
        "",
        f"Written by `{command}` ({wall_s:.0f} s wall). Every figure comes from the fleet "
        "simulator (`fleet/sim.py` on the discrete-event core of `policy/sim/`), one seed "
        "per sweep point (seed 0).",
        "",
        "## What is simulated",
        "",
        f"- G GPUs with S = {SLOTS_PER_GPU} slots each, {GPU_MEMORY_GIB:g} GiB per GPU. A slot "
        "holds one worker of one model with a batch size and a parallel flag. Sequential "
        "slots take turns on the GPU (FIFO, non-preemptive); parallel slots run together, "
        f"each batch slowed by f(k) = 1 + {FIT_A:.4f}(k-1) + {FIT_B:.4f}(k-1)^2 for k "
        f"parallel batches (f = {', '.join(f'{x:.2f}' for x in f)} for k = 1..{len(f)}), "
        f"fitted to the H200 co-location runs of `tsadapt gpu-check` ({_measured()}). "
        "Those demo models are "
        "handler/CPU-bound on an H200 (GPU utilisation ~3 %), so the curve measures "
        "co-location on a GPU host rather than kernel interference of GPU-bound models.",
        "- Models: a synthetic heterogeneous catalogue built from *published* GPU batch-latency "
        "tables (TensorRT 4 ResNet-50 on a V100, FP32/FP16/INT8: "
        f"{', '.join(PUBLISHED_TABLES)}; public benchmark gist 1duo/efd3be1d...), each scaled "
        f"by a size factor log-uniform in {SIZE_RANGE}, SLO = 2 x latency(8|16|32) x "
        f"U{SLO_SLACK}, batch limit from the SLO rule (latency <= SLO/2), Zipf(1) popularity, "
        f"mean load {MEAN_LOAD_SHARE:g} of the fleet's GPUs at the SLO batch. Diurnal: a "
        "raised cosine between 0.4x and 1.6x the mean over the horizon; bursty: 0.7x with "
        "15 s spikes to 2.5x every 120 s; every model's peak at its own phase.",
        f"- A new worker serves after {WORKER_START_S:g} s; a removed worker's jobs go back "
        "to its queue; a replaced worker keeps serving until its successor could be ready "
        "(make before break). Requests are split over a model's GPUs in proportion to their "
        f"capacity. Every policy acts once per {TICK_S:g} s tick behind the same guards "
        f"(bounds, GPU memory, switch cooldown {SWITCH_COOLDOWN_S:g} s, never leave a model "
        "with traffic without a slot). All adaptive policies start from one packed "
        "placement (Nexus's plan for the t = 0 rates).",
        f"- Nexus: squishy bin packing (`fleet/nexus.py`) re-planned every {NEXUS_EPOCH_S:g} s "
        f"from the epoch's mean rates times {NEXUS_HEADROOM:g} (our one change: at 1.0 its "
        "duty cycles leave no room for random arrivals). Static: one model per GPU, "
        "peak-provisioned, most popular first while GPUs last. Hold: the start placement, "
        "never changed (what a policy of no-ops would score). Sidecar: our per-host "
        "`queue` rule behind its guards on every GPU, over the fixed start placement. PPO: "
        "DNN-Adapt's slot action (slot incl. no-op, model incl. empty, batch delta -4..5, "
        "parallel flag), one action per tick, Eq. 2 reward with R_GPU = GPUs in use and "
        "R_SSR = slot switches (`fleet/env.py`, `fleet/agent.py`). Lower bound, per tick, "
        "the largest of: the offered load at each model's best SLO-feasible throughput "
        "times the best parallel gain; one slot per model with traffic; the workers' "
        "memory (hindsight: no queueing, start-up or fragmentation).",
        "",
    ]
    if notes:
        lines += [notes, ""]
    data = []
    for p in points:
        lines += [f"## {_label(p)} ({p.cat.horizon_s:g} s)", ""]
        rows = []
        for name in ORDER:
            r = p.runs.get(name)
            if r is None:
                rows.append([name, "not run: " + p.missing.get(name, "-"), "", "", "", "", "", ""])
                continue
            rows.append(
                [
                    name,
                    f"{r.mean_gpus:.2f}",
                    f"{r.goodput_rps:,.1f}",
                    f"{100 * r.attainment:.2f} %",
                    f"{r.reconf_per_hour:,.0f}",
                    f"{r.decision_ms_mean:.2f} / {r.decision_ms_max:.1f}",
                    f"{r.sim_rps:,.0f}",
                    str(r.overrides),
                ]
            )
            data.append(r.as_dict())
        rows.append(["lower bound", f"{p.bound.mean():.2f}", "", "", "", "", "", ""])
        lines += table(
            [
                "policy",
                "GPUs in use (time-avg)",
                "goodput (req/s)",
                "SLO attainment",
                "reconfigurations/h",
                "decision ms/tick (mean / max)",
                "simulated req/s",
                "guard overrides",
            ],
            rows,
        )
        lines.append("")
        if p.ppo_meta:
            lines += [
                f"PPO policy: `{p.ppo_meta.get('command', '')}`, "
                f"{p.ppo_meta.get('timesteps')} steps in {p.ppo_meta.get('train_seconds')} s "
                f"on both mixes of this shape (episodes of {p.ppo_meta.get('episode_ticks')} "
                "ticks, fresh arrival seeds; evaluated on seed 0).",
                "",
            ]
        if p.ppo_forward_ms is not None:
            lines += [
                f"PPO decision time for this shape (untrained network, timing only): "
                f"{p.ppo_forward_ms:.2f} ms per tick.",
                "",
            ]
        lines += [f"Verdict: {verdict(p)}", "", f"![GPUs in use]({plot(p, out_dir).name})", ""]
    (out_dir / "fleet.json").write_text(json.dumps(data, indent=1) + "\n")
    path = out_dir / "fleet.md"
    path.write_text("\n".join(lines))
    return path
