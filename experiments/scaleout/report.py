"""``docs/results/scale-out.md`` and its plots, from the results of the fleet runs."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tsadapt.experiments.scaleout.config import ScaleOutConfig, Setup
from tsadapt.experiments.scaleout.fleet import FleetResult
from tsadapt.markdown import table

WINDOW_S = 60


def _windows(r: FleetResult, slo_series: Sequence[float] | None = None) -> list[dict]:
    """Per-``WINDOW_S`` load, pods and goodput of one run."""
    s = r.series
    out = []
    for i in range(0, len(s["t"]), WINDOW_S):
        sl = slice(i, i + WINDOW_S)
        n = len(s["t"][sl])
        offered = float(np.sum(s["rate"][sl]))
        good = float(np.sum(s["good"][sl]))
        out.append(
            {
                "t": s["t"][i],
                "pods": float(np.mean(s["pods"][sl])),
                "ready": float(np.mean(s["ready"][sl])),
                "offered_rps": offered / n,
                "good_rps": good / n,
                "missed": max(0.0, offered - good),
            }
        )
    return out


def verdict(results: dict[str, FleetResult], setups: Sequence[Setup], cfg: ScaleOutConfig) -> str:
    """Whether the last setup meets 99 % with fewer pod-seconds than setup 1; where not, why."""
    base, ours = results[setups[0].name], results[setups[-1].name]
    att, fewer = ours.slo_attainment, ours.pod_seconds < base.pod_seconds
    text = (
        f"{setups[-1].name}: {100 * att:.2f} % within SLO at {ours.pod_seconds:,.0f} pod-s; "
        f"{setups[0].name}: {100 * base.slo_attainment:.2f} % at {base.pod_seconds:,.0f} pod-s "
        f"({100 * (ours.pod_seconds / base.pod_seconds - 1):+.0f} % pod-s against "
        f"{setups[0].name})."
    )
    queue = [st for st in setups if st.metric == "queue_latency"]
    if queue:
        text += (
            " The queue-latency HPA saw a mean of "
            + ", ".join(f"{results[st.name].mean_seen:.1f} ms ({st.name})" for st in queue)
            + f" against its {cfg.queue_latency_target_ms:g} ms target."
        )
    if att >= 0.99 and fewer:
        return "**Met**: " + text
    windows = _windows(ours)
    missed = sum(w["missed"] for w in windows)  # offered load not answered within SLO
    waiting = [w for w in windows if w["ready"] < w["pods"] - 1e-9]
    share = sum(w["missed"] for w in waiting) / missed if missed else 0.0
    worst = sorted(windows, key=lambda w: -w["missed"])[:3]
    where = "; ".join(
        f"{w['t']:.0f}-{w['t'] + WINDOW_S:.0f} s: {w['good_rps']:,.0f} of "
        f"{w['offered_rps']:,.0f} req/s good with {w['ready']:.1f} pods ready "
        f"({w['pods']:.1f} asked for)"
        for w in worst
    )
    scrape_s, polling_s = cfg.intervals(setups[-1])
    why = (
        f" {100 * share:.0f} % of its misses fall in minutes when pods it had asked for were "
        f"not serving yet: a new pod serves {cfg.pod_startup_s:.0f} s after it is created, "
        f"and the signal reaches the HPA up to {scrape_s:.0f} s (scrape) + "
        f"{polling_s:.0f} s (KEDA poll) + "
        f"{cfg.hpa_spec(setups[-1], 1).sync_period_s:.0f} s (sync) late, so a step above the "
        f"pods' headroom is missed until then. Worst minutes: {where}."
    )
    return "**Not met**: " + text + why


def plot(results: dict[str, FleetResult], setups: Sequence[Setup], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    any_r = next(iter(results.values()))
    for setup in setups:
        r = results[setup.name]
        w = _windows(r)
        t = [x["t"] for x in w]
        ax1.plot(r.series["t"], r.series["pods"], label=setup.label, lw=1.2)
        ax2.plot(t, [x["good_rps"] / x["offered_rps"] for x in w], label=setup.name, lw=1.2)
    twin = ax1.twinx()
    twin.plot(any_r.series["t"], any_r.series["rate"], color="grey", ls=":", lw=1)
    twin.set_ylabel("offered load (req/s, dotted)")
    ax1.set_ylabel("pods")
    ax1.legend(fontsize=8, loc="upper left")
    ax2.set_ylabel(f"share within SLO per {WINDOW_S} s")
    ax2.set_ylim(0, 1.02)
    ax2.axhline(0.99, color="k", lw=0.6, ls="--")
    ax2.set_xlabel("time (s)")
    fig.suptitle(f"{any_r.scenario}, scale {any_r.scale}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _seen(r: FleetResult, s: Setup) -> str:
    unit = " ms queue latency" if s.metric == "queue_latency" else " (sum of demand ratios)"
    return _fmt(r.mean_seen, 1) + unit


def _fmt(x: float, nd: int = 0) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:,.{nd}f}"


def write_report(
    results: list[FleetResult],
    cfg: ScaleOutConfig,
    out_dir: Path,
    command: str,
    wall_s: float,
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    setups = cfg.setups
    st = cfg.step_aware
    by: dict[tuple[str, int, int], dict[str, FleetResult]] = {}
    for r in results:
        by.setdefault((r.scenario, r.scale, r.seed), {})[r.setup] = r
    lines = [
        "# Scale-out: two-level autoscaling in simulation",
        "",
        f"Written by `{command}` ({wall_s:.0f} s wall). Every figure here comes from the "
        "simulator (`policy/sim/simulator.py`, one real per-request simulation per cohort of pods "
        "plus the real sidecar control step), not from a Kubernetes cluster: none can run on "
        "the machines this project is built on.",
        "",
        "Setups (pods are identical: 8 cores, worker budget 8, the three models of "
        "`experiments/scaleout/scenarios/`):",
        "",
    ]
    for i, s in enumerate(setups, 1):
        lines.append(f"{i}. `{s.name}`: {s.label}.")
    lines += [
        "",
        f"Model: HPA (`experiments/scaleout/hpa.py`, the controller's algorithm: 10 % tolerance, "
        f"scale-up max(+4 pods, +100 %) per 15 s, scale-down stabilization "
        f"{cfg.scale_down_window_s:.0f} s, sync every 15 s); Prometheus scrapes every "
        f"{cfg.scrape_s:.0f} s; setups 1-2 target the fleet's mean queue latency "
        f"(`rate(ts_queue_latency_microseconds[1m]) / rate(ts_inference_requests_total[1m])`, "
        f"Little's law on the simulated queue) at {cfg.queue_latency_target_ms:g} ms (Value); "
        f"setup 3 is KEDA (polling {cfg.keda_polling_s:.0f} s, cached) on "
        f"`sum(tsadapt_controller_capacity_demand_ratio)` with threshold {cfg.demand_target:g} "
        f"(AverageValue). A pod serves {cfg.pod_startup_s:.0f} s after it is created. The "
        "Service sends each request to a uniformly random ready pod (kube-proxy iptables "
        "mode), so each ready pod gets a Poisson share rate/ready of the load. Deleted pods "
        "leave the Service at once, newest first, and drain their queues. Setup 1 runs each "
        "model with its registration batch size and delay and a fixed worker split "
        f"({', '.join(f'{k} {v}' for k, v in cfg.static_workers.items())}); setups 2-4 run "
        f"the `{cfg.sidecar_policy}` policy behind the guards in every pod, from the "
        "registration defaults.",
        "",
        f"Setup 4 (step-aware): KEDA on `s + clamp_min(predict_linear(s[{st.trend_window_s:.0f}s:"
        f"{st.scrape_s:.0f}s], {st.predict_s:.0f}) - s, 0)"
        + (
            f" + {st.spare_pods_per_scale:g} x scale x {st.demand_target:g}"
            if st.spare_pods_per_scale
            else ""
        )
        + f"` with `s = sum(tsadapt_controller_capacity_demand_ratio)` (the demand's linear "
        f"trend {st.predict_s:.0f} s ahead, added while it rises), "
        f"threshold {st.demand_target:g}, Prometheus scraping the sidecars every "
        f"{st.scrape_s:.0f} s (the ServiceMonitor's interval) and KEDA polling every "
        f"{st.keda_polling_s:.0f} s; the HPA's sync stays 15 s. The sidecars first absorb a "
        "step inside their pods (workers up to the budget, larger batches), and the lower "
        "threshold keeps room for that in every pod; the trend asks for the pods the step "
        "needs at the first syncs after it. Its price is in the pod-seconds column. Every "
        "setup may "
        f"reach {cfg.max_replicas_per_scale:g} x scale pods.",
        "",
        "Pod-level aggregate: pods created by one scaling event form a *cohort* that gets the "
        "same load share and runs the same controller, so one simulated pod (its own random "
        "draws) stands for all of them and its requests are counted once per pod. Cost grows "
        "with cohorts, not pods; pods of a cohort do not differ in their random draws. "
        "Pod-seconds count every pod from creation (start-up included) to deletion; a "
        "deleted pod's draining time is not counted. SLO attainment = requests answered "
        "within their model's SLO / all requests (rejected ones included); goodput = "
        "requests within SLO per second.",
        "",
    ]
    rows, dump = [], []
    for (scenario, scale, seed), res in sorted(by.items()):
        lines += [f"## {scenario}, scale {scale} (seed {seed})", ""]
        rows = []
        for s in setups:
            r = res[s.name]
            rows.append(
                [
                    s.name,
                    _fmt(r.pod_seconds),
                    f"{100 * r.slo_attainment:.2f} %",
                    _fmt(r.goodput_rps, 1),
                    str(r.scaling_events),
                    str(r.max_pods),
                    _fmt(r.totals.errors),
                    _fmt(r.reconfigurations),
                    _seen(r, s),
                ]
            )
            dump.append(r.as_dict())
        lines += table(
            [
                "setup",
                "pod-seconds",
                "SLO attainment",
                "goodput (req/s)",
                "scaling events",
                "max pods",
                "rejected requests",
                "sidecar changes (all pods)",
                "HPA's metric, mean",
            ],
            rows,
        )
        png = f"scale-out-{scenario}-{scale}.png"
        plot(res, setups, out_dir / png)
        lines += ["", verdict(res, setups, cfg), "", f"![{scenario}, scale {scale}]({png})", ""]
    path = out_dir / "scale-out.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    (out_dir / "scale-out.json").write_text(json.dumps(dump, indent=1) + "\n")
    return path
