"""``docs/results/fleet.md``, its JSON and its plots, from the sweep's results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tsadapt.fleet.candidates import K
from tsadapt.fleet.catalog import PUBLISHED, PUBLISHED_TABLES, SIZE_RANGE, SLO_SLACK
from tsadapt.fleet.constants import (
    GPU_MEMORY_GIB,
    MEAN_LOAD_SHARE,
    NEXUS_EPOCH_S,
    NEXUS_HEADROOM,
    NEXUS_HEADROOMS,
    SLOTS_PER_GPU,
    SWITCH_COOLDOWN_S,
    TICK_S,
    WORKER_START_S,
)
from tsadapt.fleet.evaluate import NEXUS_99, TARGET, PointResult
from tsadapt.fleet.interference import (
    COLOCATION_FILE,
    FIT_A,
    FIT_B,
    slowdown_table,
    throughputs,
)
from tsadapt.fleet.run import FleetResult, mean_of
from tsadapt.markdown import table

ORDER = ("static", "hold", "sidecar", "nexus", NEXUS_99, "ppo")


def _measured() -> str:
    """The co-location throughputs the fit comes from, read from the committed raw file."""
    if not COLOCATION_FILE.exists():
        return f"raw file {COLOCATION_FILE} not found here"
    thr = throughputs(json.loads(COLOCATION_FILE.read_text())["parts"]["colocation"]["cases"])
    parts = [f"{k} worker{'s' if k > 1 else ''} {v:.1f} req/s" for k, v in sorted(thr.items())]
    gains = [f"{v / thr[1]:.2f}x" for k, v in sorted(thr.items()) if k > 1]
    return f"{', '.join(parts)}: {' and '.join(gains)} one worker's"


def _tables(points: Sequence[PointResult]) -> str:
    """Where the catalogues' latency tables come from, in words."""
    labels = {p.cat.tables for p in points}
    if labels <= {PUBLISHED}:
        return (
            "*published* GPU batch-latency tables (TensorRT 4 ResNet-50 on a V100, "
            f"FP32/FP16/INT8: {', '.join(PUBLISHED_TABLES)}; public benchmark gist "
            f"1duo/efd3be1d...), each scaled by a size factor log-uniform in {SIZE_RANGE}"
        )
    return (
        "the GPU profiles `tsadapt lab gpu-check` measured "
        f"({', '.join(sorted(labels - {PUBLISHED}))}: median ms per batch size), unscaled"
    )


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
        runs = p.runs.get(name)
        if runs:
            r = runs[0]
            ax.step(
                [t for t, _ in r.series],
                [g for _, g in r.series],
                where="post",
                label=_label_of(name, runs),
            )
    t = [TICK_S * k for k in range(len(p.bound))]
    ax.step(t, p.bound, where="post", label="lower bound", color="black", linestyle=":")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("GPUs in use")
    ax.set_title(f"{_label(p)} (seed 0)")
    ax.set_ylim(0, p.cat.gpus * 1.05)
    ax.legend(loc="lower right", fontsize=8, ncol=5)
    fig.tight_layout()
    path = out_dir / f"{_slug(p)}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pm(runs: Sequence[FleetResult], key: str, scale: float = 1.0, fmt: str = ".2f") -> str:
    v = np.array([getattr(r, key) for r in runs]) * scale
    if len(v) == 1:
        return f"{v[0]:{fmt}}"
    return f"{v.mean():{fmt}} ± {v.std(ddof=1):{fmt}}"


def _label_of(name: str, runs: Sequence[FleetResult]) -> str:
    return f"{runs[0].policy} (tuned)" if name == NEXUS_99 else name


def _figures(runs: Sequence[FleetResult]) -> str:
    return f"{mean_of(runs, 'mean_gpus'):.2f} / {100 * mean_of(runs, 'attainment'):.2f} %"


def _nexus_name(name: str, runs: Sequence[FleetResult]) -> str:
    return f"nexus x{NEXUS_HEADROOM:g}" if name == "nexus" else f"{runs[0].policy} (tuned)"


def _tuned(p: PointResult):
    return next((t for t in p.tuning if t.chosen), None)


def verdict(p: PointResult) -> tuple[str, str]:
    """(short, long): PPO behind the guards against Nexus at the headroom tuned on the tuning
    seeds (means over the evaluated seeds). Where a headroom reached 99 % on the tuning seeds:
    PPO must reach 99 % on fewer GPUs than Nexus at it. Where none did: PPO must answer more
    requests within their SLO (goodput) than every Nexus evaluated, on no more GPUs than the
    Nexus tuned for goodput."""
    if p.infeasible:
        return "infeasible", f"No policy ran: {p.infeasible}."
    ppo = p.runs.get("ppo")
    if not ppo:
        return "no PPO", f"PPO was not run ({p.missing.get('ppo', 'not requested')})."
    ref, tuned = p.runs.get(NEXUS_99), _tuned(p)
    if not ref or tuned is None:
        return "no Nexus", "Nexus was not run."
    nexus = [(n, r) for n, r in p.runs.items() if n in ("nexus", NEXUS_99)]
    text = f"PPO {_figures(ppo)} (GPUs / attainment); " + "; ".join(
        f"{_nexus_name(n, r)} {_figures(r)}, {mean_of(r, 'goodput_rps'):,.1f} req/s goodput"
        for n, r in nexus
    )
    name = ref[0].policy
    if tuned.reason == "99 %":
        ok = mean_of(ppo, "attainment") >= TARGET and mean_of(ppo, "mean_gpus") < mean_of(
            ref, "mean_gpus"
        )
        rule = f"{name} reached 99 % on the tuning seeds"
        if mean_of(ref, "attainment") < TARGET:
            rule += " (not on the evaluated ones)"
        tag = ""
    else:
        best = max(mean_of(r, "goodput_rps") for _, r in nexus)
        ok = mean_of(ppo, "goodput_rps") > best and mean_of(ppo, "mean_gpus") <= mean_of(
            ref, "mean_gpus"
        )
        rule = f"no headroom reached 99 % on the tuning seeds; {name} had the most goodput"
        tag = " (goodput)"
    if ok:
        return f"**met**{tag} vs {name}", f"**Met** against {name} ({rule}). {text}."
    return (
        f"**not met**{tag} vs {name}",
        f"**Not met** against {name} ({rule}). {text}. {_why(p, ref, name)}",
    )


def _why(p: PointResult, ref: Sequence[FleetResult], name: str) -> str:
    """What the runs say about a miss: how often PPO acted, and what it was trained on."""
    ppo = p.runs["ppo"]
    ticks = max(1, int(p.cat.horizon_s / TICK_S) - 1)
    out = (
        f"PPO proposed {mean_of(ppo, 'proposed') / ticks:.2f} slot actions per tick and "
        f"made {mean_of(ppo, 'reconf_per_hour'):,.0f} slot changes/h; {name} re-planned to "
        f"{mean_of(ref, 'reconf_per_hour'):,.0f}/h."
    )
    shapes = [tuple(s) for s in (p.ppo_meta or {}).get("shapes", [])]
    if shapes and (p.cat.gpus, len(p.cat.models)) not in shapes:
        out += f" This fleet's shape is not one PPO was trained on ({_shapes(shapes)})."
    return out


def _picks(points: Sequence[PointResult]) -> str:
    picks = sorted({p.ppo_picks for p in points if p.ppo_picks})
    if not picks:
        return "PPO did not run"
    return "at most " + " or ".join(str(k) for k in picks) + " per tick"


def _seeds(points: Sequence[PointResult]) -> str:
    seeds = sorted({s for p in points for s in p.tuning_seeds})
    return ", ".join(str(s) for s in seeds) or "none"


def _shapes(shapes) -> str:
    return ", ".join(f"{g}x{m}" for g, m in shapes)


def summary(points: Sequence[PointResult]) -> list[str]:
    """One row per sweep point: GPUs and attainment of static, Nexus (default headroom and at
    99 %) and PPO, the bound, the verdict."""
    rows = []
    for p in points:
        short, _ = verdict(p)
        row = [p.cat.mix, str(p.cat.gpus), str(len(p.cat.models))]
        for name in ("static", "nexus", NEXUS_99, "ppo"):
            runs = p.runs.get(name)
            if name == NEXUS_99 and runs:
                why = _tuned(p).reason
                row.append(f"{runs[0].policy.split()[-1]} ({why}): {_figures(runs)}")
            else:
                row.append(_figures(runs) if runs else "-")
        row += [f"{p.bound.mean():.2f}" if not p.infeasible else "-", short]
        rows.append(row)
    head = [
        "mix",
        "GPUs",
        "models",
        "static",
        f"Nexus x{NEXUS_HEADROOM:g}",
        "Nexus, tuned headroom",
        "PPO",
        "lower bound",
        "PPO vs the tuned Nexus",
    ]
    return table(head, rows)


def write_report(
    points: Sequence[PointResult], out_dir: Path, command: str, wall_s: float, notes: str = ""
) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    f = slowdown_table()
    meta = next((p.ppo_meta for p in points if p.ppo_meta), None)
    lines = [
        "# Fleet scale: GPU slots, the parallel flag and consolidation, against Nexus",
        "",
        f"Written by `{command}` ({wall_s:.0f} s wall). Every figure comes from the fleet "
        "simulator (`fleet/sim.py` on the discrete-event core of `policy/sim/`); each "
        "policy runs every sweep point on the same arrival seeds (mean ± sd over them).",
        "",
        "## What is simulated",
        "",
        f"- G GPUs with S = {SLOTS_PER_GPU} slots each, {GPU_MEMORY_GIB:g} GiB per GPU. A slot "
        "holds one worker of one model with a batch size and a parallel flag. Sequential "
        "slots take turns on the GPU (FIFO, non-preemptive); parallel slots run together, "
        f"each batch slowed by f(k) = 1 + {FIT_A:.4f}(k-1) + {FIT_B:.4f}(k-1)^2 for k "
        f"parallel batches (f = {', '.join(f'{x:.2f}' for x in f)} for k = 1..{len(f)}), "
        f"fitted to the H200 co-location runs of `tsadapt lab gpu-check` ({_measured()}). "
        "Those demo models are "
        "handler/CPU-bound on an H200 (GPU utilisation ~3 %), so the curve measures "
        "co-location on a GPU host rather than kernel interference of GPU-bound models.",
        f"- Models: a synthetic heterogeneous catalogue built from {_tables(points)}, "
        "SLO = 2 x latency(8|16|32) x "
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
        "from the epoch's mean rates times a headroom (our one change: at 1.0 its duty cycles "
        f"leave no room for random arrivals): x{NEXUS_HEADROOM:g}, and the headroom tuned "
        "per point on separate seeds (below). Static: one model per GPU, "
        "peak-provisioned, most popular first while GPUs last. Hold: the start placement, "
        "never changed (what a policy of no-ops would score). Sidecar: our per-host "
        "`queue` rule behind its guards on every GPU, over the fixed start placement. PPO: "
        "DNN-Adapt's slot action (a slot incl. no-op, a model incl. empty, a batch, the "
        f"parallel flag), masked to {K} candidates per tick (grow, remove, relocate, batch "
        "+-4, parallel on/off; `fleet/candidates.py`), which one network shared across "
        "candidates scores, so one policy serves every fleet size; per tick it picks "
        f"candidates one after another ({_picks(points)}: after each pick the candidates are "
        "listed again for the layout it leaves, none on a slot already changed that tick, "
        "until it picks the no-op), Eq. 2 reward with R_GPU = GPUs in use and R_SSR = slot "
        "switches (`fleet/env.py`, "
        "`fleet/agent.py`, `fleet/ppo.py`). Infeasible points (more models than slots, or "
        "a peak bound above the fleet) are listed, not run. Lower bound, per tick, "
        "the largest of: the offered load at each model's best SLO-feasible throughput "
        "times the best parallel gain; one slot per model with traffic; the workers' "
        "memory (hindsight: no queueing, start-up or fragmentation).",
        "",
    ]
    if notes:
        lines += [notes, ""]
    seeds = max((len(r) for p in points for r in p.runs.values()), default=0)
    lines += [
        "## The sweep at a glance",
        "",
        f"Time-averaged GPUs in use / SLO attainment, mean over {seeds} arrival seed(s) "
        f"(0..{seeds - 1}). Nexus's headroom is tuned per point on as many other arrival "
        f"seeds ({_seeds(points)}): it tries "
        f"{', '.join(f'x{h:g}' for h in NEXUS_HEADROOMS)} in order and keeps the first whose "
        "mean attainment on them reaches 99 % (99 %: the cheapest Nexus at 99 %), else the "
        "one with the most goodput on them (goodput). The tuned Nexus then runs on the "
        "evaluated seeds. Verdict: where a headroom reached 99 %, PPO must reach 99 % on "
        "fewer GPUs than the tuned Nexus; where none did, PPO must have more goodput than "
        f"every Nexus evaluated (x{NEXUS_HEADROOM:g} and the tuned one) on no more GPUs than "
        "the tuned one.",
        "",
        *summary(points),
        "",
    ]
    if meta:
        lines += [
            f"PPO policy (one for every sweep point): `{meta.get('command', '')}`, "
            f"{meta.get('timesteps')} steps in {meta.get('train_seconds')} s on fleets "
            f"{_shapes(meta.get('shapes', []))} (both mixes; episodes "
            f"of {meta.get('episode_ticks')} ticks, fresh arrival seeds; "
            f"{meta.get('picks_per_tick', 1)} pick(s) per tick in training, "
            f"{_picks(points)} here).",
            "",
        ]
    data, tuning = [], []
    for p in points:
        lines += [f"## {_label(p)} ({p.cat.horizon_s:g} s)", ""]
        if p.infeasible:
            lines += [f"Not run: {p.infeasible}.", ""]
            continue
        rows = []
        for name in ORDER:
            runs = p.runs.get(name)
            if not runs:
                if name != NEXUS_99:
                    rows.append([name, "not run: " + p.missing.get(name, "-")] + [""] * 7)
                continue
            rows.append(
                [
                    _label_of(name, runs),
                    _pm(runs, "mean_gpus"),
                    _pm(runs, "goodput_rps", fmt=",.1f"),
                    _pm(runs, "attainment", 100.0) + " %",
                    f"{mean_of(runs, 'reconf_per_hour'):,.0f}",
                    f"{mean_of(runs, 'decision_ms_mean'):.2f} / "
                    f"{max(r.decision_ms_max for r in runs):.1f}",
                    f"{mean_of(runs, 'decision_cpu_ms_mean'):.2f} / "
                    f"{max(r.decision_cpu_ms_max for r in runs):.1f}",
                    f"{mean_of(runs, 'sim_rps'):,.0f}",
                    f"{mean_of(runs, 'overrides'):,.0f}",
                ]
            )
            data += [r.as_dict() for r in runs]
        rows.append(["lower bound", f"{p.bound.mean():.2f}", "", "", "", "", "", "", ""])
        lines += table(
            [
                "policy",
                "GPUs in use (time-avg)",
                "goodput (req/s)",
                "SLO attainment",
                "reconfigurations/h",
                "decision ms/tick, wall (mean / max)",
                "decision CPU ms/tick (mean / max)",
                "simulated req/s",
                "guard overrides",
            ],
            rows,
        )
        if p.tuning:
            lines += ["", f"Nexus's headroom, tuned on seeds {_seeds([p])}:", ""]
            lines += table(
                ["headroom", "GPUs in use", "SLO attainment", "goodput (req/s)", "chosen"],
                [
                    [
                        f"x{t.headroom:g}",
                        f"{t.mean_gpus:.2f}",
                        f"{100 * t.attainment:.2f} %",
                        f"{t.goodput_rps:,.1f}",
                        f"**yes** ({t.reason})" if t.chosen else "",
                    ]
                    for t in p.tuning
                ],
            )
            tuning.append(
                {"mix": p.cat.mix, "gpus": p.cat.gpus, "models": len(p.cat.models),
                 "seeds": list(p.tuning_seeds), "tried": [t.as_dict() for t in p.tuning]}
            )  # fmt: skip
        lines += [
            "",
            f"Verdict: {verdict(p)[1]}",
            "",
            f"![GPUs in use]({plot(p, out_dir).name})",
            "",
        ]
    (out_dir / "fleet.json").write_text(json.dumps(data, indent=1) + "\n")
    (out_dir / "fleet-nexus-tuning.json").write_text(json.dumps(tuning, indent=1) + "\n")
    path = out_dir / "fleet.md"
    path.write_text("\n".join(lines))
    return path
