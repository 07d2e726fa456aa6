"""How much memory the sidecar holds, measured on a real TorchServe under load.

Starts TorchServe with the demo models and the plugin, sends open-loop requests to all
three models, and runs, one after the other, (1) ``tsadapt control --policy ppo`` as
shipped (the numpy runtime) and (2) the same sidecar loop with the torch policy
(``PPOPolicy``, what ``tsadapt control --policy ppo`` ran before), sampling each process's
resident set size (psutil) twice a second after a warm-up. Writes
``docs/results/sidecar-rss.md``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil

from tsadapt.markdown import table

CONTROLLER_YAML = Path(__file__).resolve().parents[2] / "configs" / "controller.yaml"
WARMUP_S = 10.0
#: share of the request rate per model
MIX = {"tabular": 0.5, "text": 0.3, "image": 0.2}


def _load(server, rate: float, stop: threading.Event, sent: list[int]) -> None:
    """Open-loop Poisson arrivals over the three demo models until ``stop``."""
    from tsadapt.experiments.loadgen import timed_post
    from tsadapt.handlers.catalog import DEMO_MODELS

    client = server.client(timeout_s=30.0)
    rng = np.random.default_rng(0)
    bodies = {m: json.dumps(DEMO_MODELS[m].example(rng)).encode() for m in MIX}
    names, weights = list(MIX), np.array(list(MIX.values()))
    with ThreadPoolExecutor(max_workers=32) as pool:
        t = time.perf_counter()
        while not stop.is_set():
            t += rng.exponential(1.0 / rate)
            delay = t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            model = names[int(rng.choice(len(names), p=weights / weights.sum()))]
            pool.submit(timed_post, client, model, bodies[model])
            sent[0] += 1


def _sample(proc: subprocess.Popen, duration_s: float) -> dict[str, float]:
    p = psutil.Process(proc.pid)
    time.sleep(WARMUP_S)
    rss, t_end = [], time.monotonic() + duration_s
    while time.monotonic() < t_end and proc.poll() is None:
        rss.append(p.memory_info().rss / 2**20)
        time.sleep(0.5)
    if proc.poll() is not None:
        raise RuntimeError(f"sidecar exited early ({proc.returncode})")
    maps = Path(f"/proc/{proc.pid}/maps")
    torch_mapped = maps.exists() and "libtorch" in maps.read_text()
    return {
        "median_mb": float(np.median(rss)),
        "max_mb": float(np.max(rss)),
        "samples": len(rss),
        "torch_loaded": bool(torch_mapped),
    }


def _run(cmd: list[str], duration_s: float, log: Path) -> dict[str, float]:
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            return _sample(proc, duration_s)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def measure(duration_s: float, rate: float, out_dir: Path) -> Path:
    from tsadapt.serve.archive import archive_all
    from tsadapt.serve.server import ServerConfig, start, stop

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tsadapt-rss-") as tmp:
        root = Path(tmp)
        store = root / "model-store"
        archive_all(store)
        config = ServerConfig.with_free_ports(workdir=root / "server", model_store=store)
        server = start(config)
        stop_load, sent = threading.Event(), [0]
        loader = threading.Thread(target=_load, args=(server, rate, stop_load, sent), daemon=True)
        loader.start()
        common = [
            "--workdir", str(config.workdir), "--config", str(CONTROLLER_YAML),
            "--scenario", "bursty",
        ]  # fmt: skip
        variants = {
            "numpy (tsadapt control --policy ppo)": [
                sys.executable, "-m", "tsadapt.cli", "control", "--policy", "ppo",
                "--metrics-port", "0", "--decision-log", str(root / "numpy.jsonl"), *common,
            ],
            "torch (PPOPolicy, the previous path)": [
                sys.executable, "-m", "tsadapt.experiments.scaleout.torch_sidecar",
                "--decision-log", str(root / "torch.jsonl"), *common,
            ],
        }  # fmt: skip
        results = {}
        try:
            for name, cmd in variants.items():
                results[name] = _run(cmd, duration_s, root / f"{len(results)}.log")
                ticks = sum(1 for _ in (root / f"{name.split()[0]}.jsonl").open())
                results[name]["decision_log_lines"] = ticks
        finally:
            stop_load.set()
            loader.join(timeout=30)
            stop(config.workdir)
    wall = time.perf_counter() - t0
    mix = ", ".join(f"{m} {v:.0%}" for m, v in MIX.items())
    rows = [
        [
            name,
            f"{r['median_mb']:.1f}",
            f"{r['max_mb']:.1f}",
            "yes" if r["torch_loaded"] else "no",
            str(r["samples"]),
            str(r["decision_log_lines"]),
        ]
        for name, r in results.items()
    ]
    lines = [
        "# Sidecar memory under load",
        "",
        f"Written by `tsadapt lab scaleout sidecar-rss --duration {duration_s:g} --rate {rate:g}` "
        f"({time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {wall:.0f} s wall, "
        f"{os.cpu_count()} CPUs). A real TorchServe 0.12 with the demo models and the plugin "
        f"receives {rate:g} requests/s (open loop; {mix}; "
        f"{sent[0]} sent); each sidecar runs `configs/controller.yaml` (the SLOs of the "
        "`bursty` scenario) with the shipped PPO "
        f"policy against it for {WARMUP_S:.0f} s of warm-up plus {duration_s:g} s, while its "
        "resident set size is sampled every 0.5 s (psutil). `torch mapped` says whether "
        "libtorch was in the process's memory map.",
        "",
        *table(
            [
                "sidecar",
                "RSS median (MiB)",
                "RSS max (MiB)",
                "torch mapped",
                "samples",
                "decision-log lines",
            ],
            rows,
        ),  # fmt: skip
        "",
        "Target for one sidecar container per pod: under 100 MB.",
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "sidecar-rss.md"
    path.write_text("\n".join(lines) + "\n")
    (out_dir / "sidecar-rss.json").write_text(json.dumps(results, indent=1) + "\n")
    return path
