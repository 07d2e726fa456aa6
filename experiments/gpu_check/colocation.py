"""Part 3: one GPU shared by 1, 2, 4 workers of one model, and by the three models at once.

One TorchServe per setting group; for each setting, the workers are scaled through the
management API, warmed up, then driven closed-loop (``concurrency`` requests in flight per
model) for ``load_s`` seconds. GPU memory is NVML's used memory minus its reading before the
server started (this process's own CUDA context, if any, is in that baseline); where the
driver reports processes, each worker's own memory is listed too.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.sidecar.observer import GpuProbe

#: Seconds a co-location setting takes beyond its load: scaling, warm-up.
SETTING_OVERHEAD_S = 20.0


def closed_loop(client: Any, models: list[str], concurrency: int, load_s: float) -> dict:
    """``concurrency`` senders per model for ``load_s`` s; latencies of the 2xx answers."""
    rng = np.random.default_rng(3)
    bodies = {m: [DEMO_MODELS[m].example(rng) for _ in range(16)] for m in models}
    deadline = time.monotonic() + load_s

    def sender(model: str, k: int) -> tuple[list[float], int]:
        lat, failed, i = [], 0, k
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            ok = client.predict(model, bodies[model][i % 16]).ok
            i += 1
            if ok:
                lat.append((time.perf_counter() - t0) * 1000.0)
            else:
                failed += 1
        return lat, failed

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency * len(models)) as pool:
        futures = [pool.submit(sender, m, k) for m in models for k in range(concurrency)]
        results = [f.result() for f in futures]
    elapsed = time.monotonic() - started
    lat = np.array([x for r in results for x in r[0]])
    return {
        "requests": int(lat.size),
        "failed": sum(r[1] for r in results),
        "throughput_rps": lat.size / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
    }


def _gpu_used(probe: GpuProbe) -> float:
    gpus = probe.read()
    return gpus[0].memory_used_mb if gpus else float("nan")


def _worker_memory(probe: GpuProbe, server_pid: int) -> str:
    """``pid:MiB`` of every GPU process under the server (empty where NVML has no list)."""
    import psutil

    try:
        children = {p.pid for p in psutil.Process(server_pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return ""
    per = probe.process_memory_mb()
    return " ".join(f"{pid}:{mib:.0f}" for pid, mib in sorted(per.items()) if pid in children)


def run_colocation(
    work: Path,
    model: str,
    workers: tuple[int, ...],
    load_s: float,
    concurrency: int,
    on_case: Any,
    seconds_left: Any = lambda: float("inf"),
) -> dict[str, Any]:
    """The part's figures; ``on_case`` gets the part after every setting. A setting is
    skipped when less than its load plus :data:`SETTING_OVERHEAD_S` is left."""
    from tsadapt.experiments.bench import warm_up
    from tsadapt.serve.server import ServerConfig, start, stop

    probe = GpuProbe()
    part: dict[str, Any] = {
        "status": "running",
        "partial": True,
        "load_s": load_s,
        "concurrency": f"{concurrency} in flight per model",
        "cases": [],
    }
    groups = [((model,), tuple(workers)), (tuple(DEMO_MODELS), (1,))]
    for i, (models, counts) in enumerate(groups):
        baseline = _gpu_used(probe)
        cfg = ServerConfig.with_free_ports(
            workdir=work / f"coloc-{i}", models=models, model_store=work / "bench" / "model-store"
        )
        server = start(cfg)
        try:
            client = server.client(timeout_s=120)
            for w in counts:
                if seconds_left() < load_s + SETTING_OVERHEAD_S:
                    part["skipped"] = part.get("skipped", []) + [f"{'+'.join(models)} x{w}"]
                    continue
                for m in models:
                    client.scale_workers(m, w, synchronous=True)
                warm_up(server, models, 1)
                load = closed_loop(client, list(models), concurrency, load_s)
                used = _gpu_used(probe)
                n = w * len(models)
                label = f"{model} x{w}" if len(models) == 1 else " + ".join(models)
                part["cases"].append(
                    {
                        "setting": label,
                        "workers": n,
                        **load,
                        "gpu_mib_delta": used - baseline,
                        "mib_per_worker": (used - baseline) / n,
                        "per_process_mib": _worker_memory(probe, server.pid),
                    }
                )
                on_case(part)
        finally:
            stop(cfg.workdir)
    part.update(status="ok", partial=False)
    return part


def plot_colocation(part: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = part["cases"]
    if not cases:
        return
    labels = [c["setting"] for c in cases]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in zip(
        axes,
        ("throughput_rps", "p99_ms", "mib_per_worker"),
        ("throughput req/s", "p99 ms", "GPU MiB per worker"),
        strict=True,
    ):
        ax.bar(labels, [c[key] for c in cases])
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=20, labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
