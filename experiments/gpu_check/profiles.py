"""Part 1: batch-latency profiles of the demo models on the GPU and on the CPU.

The timing loop is ``tsadapt lab demo-models profile``'s
(:func:`tsadapt.experiments.model_profiles.profile_model`)
with the device as a parameter: the handler runs on ``cuda:0`` when CUDA is there, else on
the CPU (the rehearsal). The GPU profiles are written as ``model-profiles.json`` is, so the
part 2 scenario reads them like any profile.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tsadapt.constants import REPO_DIR
from tsadapt.experiments.model_profiles import ModelProfile, profile_model
from tsadapt.handlers.catalog import DEMO_MODELS

GPU_PROFILES = "gpu-profiles.json"
#: Workers per model the part 2 scenario allows (they share the one GPU).
MAX_WORKERS = 2


def gpu_id() -> int | None:
    """The GPU the profiles run on: 0 when CUDA sees one, else None (the CPU)."""
    return 0 if torch.cuda.is_available() else None


def run_profiles(
    out: Path, gpu_sizes: list[int], cpu_sizes: list[int], repeats: int, warmup: int
) -> dict[str, Any]:
    """Profile every demo model on the GPU (``gpu_sizes``) and the CPU (``cpu_sizes``)."""
    import logging

    logging.getLogger("ts.metrics").setLevel(logging.WARNING)
    started = time.monotonic()
    device = "cuda:0" if gpu_id() is not None else "cpu (no CUDA)"
    gpu: list[ModelProfile] = []
    cpu: list[ModelProfile] = []
    for name, model in DEMO_MODELS.items():
        gpu.append(
            profile_model(
                model, max(gpu_sizes), repeats, warmup, batch_sizes=gpu_sizes, gpu_id=gpu_id()
            )
        )
        cpu.append(profile_model(model, max(cpu_sizes), repeats, warmup, batch_sizes=cpu_sizes))
        print(f"profiles: {name} done ({time.monotonic() - started:.0f} s)", flush=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    (out / GPU_PROFILES).write_text(json.dumps([asdict(p) for p in gpu], indent=1))
    plot_profiles(gpu, cpu, device, out / "gpu-profiles.png")
    rows = [{**asdict(p), "device": device} for p in gpu]
    rows += [{**asdict(p), "device": "cpu"} for p in cpu]
    return {
        "status": "ok",
        "repeats": repeats,
        "gpu_batch_sizes": gpu_sizes,
        "cpu_batch_sizes": cpu_sizes,
        "cpu_threads": cpu[0].threads if cpu else None,
        "profiles": rows,
        "elapsed_s": time.monotonic() - started,
    }


def plot_profiles(
    gpu: list[ModelProfile], cpu: list[ModelProfile], device: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(gpu), figsize=(4.2 * len(gpu), 3.6), squeeze=False)
    for ax, g, c in zip(axes[0], gpu, cpu, strict=True):
        for p, label, style in ((g, device, "o-"), (c, "cpu", "s--")):
            b = np.array(p.batch_sizes)
            ax.plot(
                b,
                p.median_ms,
                style,
                ms=3,
                label=f"{label}: {p.fit.alpha_ms:.3f}*b + {p.fit.beta_ms:.2f}",
            )
        ax.set_title(g.model)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size b")
        ax.set_ylabel("handler ms per batch (median)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency_at(profile: dict[str, Any], b: int) -> float:
    """Interpolated median latency (ms) of ``profile`` (a gpu-profiles.json entry) at ``b``."""
    return float(np.interp(b, profile["batch_sizes"], profile["median_ms"]))


def scenario_from_profiles(
    profiles_path: Path,
    duration_s: float,
    controller_config: Path = REPO_DIR / "configs" / "controller.yaml",
    seed: int = 21,
    max_rate: float = 400.0,
) -> tuple[dict[str, Any], str]:
    """A GPU-scale scenario from measured profiles, and a sentence saying how it was sized.

    Per model: SLO = its registration delay + 4 x its profiled batch at the registration
    batch size (5 ms steps), at least 10 ms above the controller's ``max_delay_ms`` for it
    (``controller_config``: a request must be able to wait a whole delay); capacity at the
    registration defaults c0 = b0 / latency(b0); capacity c1 of :data:`MAX_WORKERS` workers
    at the largest batch within half the SLO (the handler's CPU work, JSON decoding above
    all, runs in parallel in the workers). The surging models peak at
    min(1.6 c0, 0.8 c1, ``max_rate``): above what the defaults serve, below what a larger
    batch serves; ``max_rate`` is what one Locust process sends of the heaviest bodies, so
    a model whose defaults serve more than that is not overloaded (the sentence says so).
    The third model gets a steady 0.4 c0.
    """
    import yaml

    # The controller config holds limits only (the SLOs are the scenario's, made here).
    entries = (yaml.safe_load(controller_config.read_text()) or {}).get("models") or {}
    delays = {name: int(e.get("max_delay_ms", 0)) for name, e in entries.items()}
    data = json.loads(profiles_path.read_text())
    by_name = {p["model"]: p for p in data}
    models, workload, notes = [], [], []
    for i, (name, dm) in enumerate(DEMO_MODELS.items()):
        prof = by_name[name]
        b0 = dm.batch_size
        slo = 5 * int(np.ceil((dm.max_batch_delay_ms + 4 * latency_at(prof, b0)) / 5))
        slo = max(slo, delays.get(name, 0) + 10)
        feasible = [b for b in prof["batch_sizes"] if latency_at(prof, b) <= slo / 2] or [1]
        c0 = 1000 * b0 / latency_at(prof, b0)
        c1 = MAX_WORKERS * 1000 * max(feasible) / latency_at(prof, max(feasible))
        models.append(
            {
                "name": name,
                "slo_ms": slo,
                "profile": str(profiles_path.resolve()),
                "threads": prof["threads"],
                "min_workers": 1,
                "max_workers": MAX_WORKERS,
                "max_batch": int(min(max(prof["batch_sizes"]), 256)),
            }
        )
        if i < 2:
            peak = max(1.0, min(1.6 * c0, 0.8 * c1, max_rate))
            workload.append(
                {
                    "model": name,
                    "kind": "bursty",
                    "base_rate": round(0.15 * peak, 1),
                    "spike_rate": round(peak, 1),
                    "spike_s": 8,
                    "period_s": 20,
                    "offset_s": 10 * i,
                }
            )
            notes.append(
                f"{name} SLO {slo} ms, defaults serve {c0:.0f} req/s, b={max(feasible)} "
                f"serves {c1:.0f}, peaks at {peak:.0f}"
                + (" (the load generator's cap)" if peak == max_rate else "")
            )
        else:
            rate = max(1.0, min(0.4 * c0, max_rate / 2))
            workload.append({"model": name, "kind": "poisson", "rate": round(rate, 1)})
            notes.append(f"{name} SLO {slo} ms, steady {rate:.0f} req/s")
    scenario = {
        "name": "gpu-surge",
        "duration_s": duration_s,
        "seed": seed,
        "models": models,
        "workload": workload,
        "budget": {"workers": 6},
    }
    return scenario, "; ".join(notes)
