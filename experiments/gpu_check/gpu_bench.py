"""Part 2: static, aimd, queue and ppo on a real TorchServe whose workers use the GPU.

``tsadapt lab bench`` machinery (:func:`tsadapt.experiments.bench.run_bench`), one call per
controller with
the same scenario and seed (the same arrivals), so each controller's figures are saved as
soon as its run ends. TorchServe gives every worker a ``gpu_id`` when it finds GPUs; the
handlers run there. Beside each run, :class:`GpuSampler` reads NVML (the sidecar's
:class:`~tsadapt.sidecar.observer.GpuProbe`) and ``nvidia-smi`` once a second, for busy
GPU-seconds; the sidecar's own NVML readings come from its decision log.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tsadapt.constants import REPO_DIR
from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.sidecar.observer import GpuProbe

#: The controller config every bench run starts from (the scenario's SLOs go into a copy).
CONTROLLER_CONFIG = REPO_DIR / "configs" / "controller.yaml"
#: GPU memory guard settings of the bench's sidecars: a CUDA context and a demo model take
#: well under this per worker; the reserve keeps room for the allocator's growth.
GPU_MB_PER_WORKER = 1024.0
#: Seconds a bench run takes beyond its load: server start, warm-up, drain, stop.
RUN_OVERHEAD_S = 40.0
GPU_RESERVE_MB = 4096.0


def nvidia_smi() -> tuple[float, float] | None:
    """(utilisation %, used MiB) of GPU 0 from ``nvidia-smi``; None where it is missing."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    proc = subprocess.run(
        [exe, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "--id=0"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    try:
        util, mem = proc.stdout.strip().splitlines()[0].split(",")
        return float(util), float(mem)
    except (IndexError, ValueError):
        return None


class GpuSampler(threading.Thread):
    """``(epoch, nvml util, nvml MiB, smi util, smi MiB)`` of GPU 0 every ``period_s``."""

    def __init__(self, probe: GpuProbe, period_s: float = 1.0) -> None:
        super().__init__(daemon=True, name="gpu-sampler")
        self.probe, self.period_s = probe, period_s
        self.samples: list[tuple[float, float, float, float, float]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        nan = math.nan
        while not self._halt.is_set():
            gpus = self.probe.read()
            smi = nvidia_smi()
            util, mem = (gpus[0].utilisation_pct, gpus[0].memory_used_mb) if gpus else (nan, nan)
            self.samples.append((time.time(), util, mem, *(smi or (nan, nan))))
            self._halt.wait(self.period_s)

    def stop(self) -> list[tuple[float, float, float, float, float]]:
        self._halt.set()
        self.join(15)
        return self.samples


def sidecar_vs_smi(decision_log: Path | None, samples: list[tuple]) -> dict[str, float] | None:
    """The sidecar's NVML readings (decision log) next to the nearest ``nvidia-smi`` sample."""
    from tsadapt.sidecar.decision_log import read_log

    if decision_log is None or not decision_log.is_file() or not samples:
        return None
    smi = np.array([(s[0], s[3], s[4]) for s in samples if not math.isnan(s[3])])
    pairs = []
    for rec in read_log(decision_log):
        gpus = ((rec.get("observation") or {}).get("host") or {}).get("gpus") or []
        if not gpus or "wall_time" not in rec or smi.size == 0:
            continue
        i = int(np.argmin(np.abs(smi[:, 0] - rec["wall_time"])))
        if abs(smi[i, 0] - rec["wall_time"]) <= 1.0:
            pairs.append((gpus[0]["utilisation_pct"], gpus[0]["memory_used_mb"], *smi[i, 1:]))
    if not pairs:
        return None
    a = np.array(pairs)
    return {
        "n": len(a),
        "nvml_util": float(a[:, 0].mean()),
        "smi_util": float(a[:, 2].mean()),
        "nvml_mib": float(a[:, 1].mean()),
        "smi_mib": float(a[:, 3].mean()),
        "max_mib_diff": float(np.abs(a[:, 1] - a[:, 3]).max()),
    }


def gpu_controller_config(scenario: dict[str, Any], out: Path) -> Path:
    """:data:`CONTROLLER_CONFIG` for the GPU: each model's ``max_batch`` (within its queue
    size, the plugin's bound) and ``max_workers`` from the scenario, a worker budget that
    lets every model have them, and the GPU memory guard on (:data:`GPU_RESERVE_MB` kept
    free, :data:`GPU_MB_PER_WORKER` per worker); the bench then gives every model its SLO
    and caps its batch at half the SLO."""
    data = yaml.safe_load(CONTROLLER_CONFIG.read_text())
    for m in scenario["models"]:
        entry = data["models"][m["name"]]
        queue = DEMO_MODELS[m["name"]].job_queue_size  # the plugin's batch-size bound
        entry.update(max_batch=min(m["max_batch"], queue), max_workers=m["max_workers"],
                     gpu_memory_mb_per_worker=GPU_MB_PER_WORKER)  # fmt: skip
    data["worker_budget"] = sum(m["max_workers"] for m in scenario["models"])
    data["gpu_memory_reserve_mb"] = GPU_RESERVE_MB
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def _model_row(r: Any, reconfigs: int | str) -> dict[str, Any]:
    return {**asdict(r), "reconfigurations": reconfigs}


def run_gpu_bench(
    out: Path,
    extras: Path,
    work: Path,
    scenario: dict[str, Any],
    description: str,
    controllers: tuple[str, ...],
    duration_s: float,
    command: str,
    on_run: Callable[[dict[str, Any]], None],
    seconds_left: Callable[[], float] = lambda: float("inf"),
) -> dict[str, Any]:
    """Each controller in turn on ``scenario``; ``on_run`` gets the part after every run. A
    controller is skipped when less than its run plus :data:`RUN_OVERHEAD_S` is left."""
    from tsadapt.experiments.bench import BenchConfig, run_bench

    scenario_path = extras / f"{scenario['name']}.yaml"
    scenario_path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    probe = GpuProbe()
    part: dict[str, Any] = {
        "status": "running",
        "partial": True,
        "scenario": {**scenario, "description": description},
        "duration_s": duration_s,
        "runs": [],
    }
    bench_out = extras / "bench"
    controller_config = gpu_controller_config(scenario, extras / "controller-gpu.yaml")
    for ctl in controllers:
        if seconds_left() < duration_s + RUN_OVERHEAD_S:
            why = f"{seconds_left():.0f} s left, a run needs {duration_s + RUN_OVERHEAD_S:.0f}"
            part["runs"].append({"controller": ctl, "status": "skipped", "reason": why})
            on_run(part)
            continue
        cfg = BenchConfig(
            scenario=str(scenario_path),
            controllers=(ctl,),
            duration_s=duration_s,
            out_dir=bench_out / ctl,
            runs_dir=work / "bench",
            command=command,
            controller_config=controller_config,
            warmup_rounds=1,
        )
        sampler = GpuSampler(probe)
        sampler.start()
        started = time.time()
        try:
            results, _ = run_bench(cfg)
        except Exception as exc:  # noqa: BLE001 - one controller's failure ends only its run
            results = []
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            samples = sampler.stop()
        elapsed = time.time() - started
        if not results or results[0].status != "ok":
            why = results[0].reason if results else reason
            status = results[0].status if results else "failed"
            part["runs"].append({"controller": ctl, "status": status, "reason": why})
        else:
            res = results[0]
            utils = [s[1] for s in samples if not math.isnan(s[1])]
            models = {
                n: _model_row(r, res.reconfigurations.get(n, 0)) for n, r in res.per_model.items()
            }
            models["overall"] = _model_row(res.overall, sum(res.reconfigurations.values()))
            part["runs"].append(
                {
                    "controller": ctl,
                    "status": "ok",
                    "reason": "",
                    "models": models,
                    "busy_gpu_s": float(np.mean(utils)) / 100 * duration_s if utils else math.nan,
                    "wall_s": elapsed,
                    "samples": samples,
                    "nvml_vs_smi": sidecar_vs_smi(res.decision_log, samples),
                    "png": str(res.png) if res.png else None,
                }
            )
            if res.png and res.png.is_file():
                shutil.copy(res.png, bench_out / f"timeline-{ctl}.png")
        on_run(part)
    ok = [r for r in part["runs"] if r["status"] == "ok"]
    part.update(status="ok" if ok else "failed", partial=False)
    if not ok:
        part["reason"] = "no controller's run succeeded"
    plot_bench(part, out / "gpu-bench.png")
    return part


def plot_bench(part: dict[str, Any], path: Path) -> None:
    """SLO attainment and p99 per controller and model, and GPU utilisation over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in part["runs"] if r["status"] == "ok"]
    if not runs:
        return
    names = [n for n in runs[0]["models"] if n != "overall"] + ["overall"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    width = 0.8 / len(runs)
    for k, run in enumerate(runs):
        x = np.arange(len(names)) + k * width
        axes[0].bar(
            x,
            [100 * run["models"][n]["slo_attainment"] for n in names],
            width,
            label=run["controller"],
        )
        axes[1].bar(x, [run["models"][n]["p99_ms"] for n in names], width)
        s = np.array([(t, u) for t, u, *_ in run["samples"]]) if run["samples"] else None
        if s is not None and s.size:
            axes[2].plot(s[:, 0] - s[0, 0], s[:, 1], label=run["controller"])
    for ax, title in zip(axes[:2], ("SLO attainment %", "p99 ms"), strict=True):
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    axes[2].set_title("GPU utilisation % (NVML)")
    axes[2].set_xlabel("s since the run's start")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
