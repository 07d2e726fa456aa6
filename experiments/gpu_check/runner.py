"""``tsadapt lab gpu-check OUT_DIR``: the four parts in order of value, within one deadline.

Each part is skipped when the time it needs is no longer left, and records its figures in
the :class:`Report` as soon as it (or one of its runs) ends.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsadapt.constants import REPO_DIR
from tsadapt.experiments.gpu_check.report import Report

PARTS = ("profiles", "bench", "colocation", "cpu16")


@dataclass(frozen=True)
class Budget:
    """How much each part measures; ``need_s`` is what a part must have left to start."""

    name: str
    gpu_batch_sizes: tuple[int, ...]
    cpu_batch_sizes: tuple[int, ...]
    repeats: int
    warmup: int
    bench_s: float
    controllers: tuple[str, ...]
    coloc_workers: tuple[int, ...]
    coloc_s: float
    coloc_concurrency: int
    packrat_args: tuple[str, ...]
    shared_s: float
    shared_controllers: str
    need_s: dict[str, float]


FULL = Budget(
    "full",
    gpu_batch_sizes=(1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256),
    cpu_batch_sizes=(1, 2, 4, 8, 16, 32, 64),
    repeats=5,
    warmup=2,
    bench_s=25.0,
    controllers=("static", "aimd", "queue", "ppo"),
    coloc_workers=(1, 2, 4),
    coloc_s=8.0,
    coloc_concurrency=32,
    packrat_args=("--batches", "32", "--rounds", "2", "--switch-rate", "60",
                  "--switch-period", "5"),
    shared_s=15.0,
    shared_controllers="static,ppo",
    # cpu16: two fresh servers per shared-budget run and Packrat's 16-core profiling; on the
    # H200 machine 191 s were not enough for --batches 32 and 20 s runs (2026-11-29).
    need_s={"profiles": 60, "bench": 70, "colocation": 60, "cpu16": 240},
)  # fmt: skip
TINY = Budget(
    "tiny",
    gpu_batch_sizes=(1, 2, 4),
    cpu_batch_sizes=(1, 2),
    repeats=2,
    warmup=1,
    bench_s=6.0,
    controllers=("static", "queue"),
    coloc_workers=(1, 2),
    coloc_s=2.0,
    coloc_concurrency=4,
    packrat_args=("--batches", "2", "--rounds", "1", "--no-switch", "--switch-batch", "2"),
    shared_s=5.0,
    shared_controllers="ppo",
    need_s={"profiles": 10, "bench": 30, "colocation": 20, "cpu16": 20},
)
BUDGETS = {b.name: b for b in (FULL, TINY)}


def machine_facts() -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "host": platform.node(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "checkout": str(REPO_DIR),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts["gpu"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    smi = shutil.which("nvidia-smi")
    if smi:
        proc = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        facts["driver"] = proc.stdout.strip() or None
    return facts


def _seed_model_store(work: Path) -> None:
    """The kit's archives (``$TSADAPT_MODEL_STORE``) where the benches look for them."""
    kit_store = os.environ.get("TSADAPT_MODEL_STORE")
    store = work / "bench" / "model-store"
    store.mkdir(parents=True, exist_ok=True)
    if kit_store:
        for mar in Path(kit_store).glob("*.mar"):
            if not (store / mar.name).exists():
                shutil.copy(mar, store / mar.name)


def run_check(
    out: Path,
    parts: tuple[str, ...],
    budget: Budget,
    time_limit_s: float,
    command: str,
    work: Path,
) -> Report:
    """Run ``parts`` (in :data:`PARTS` order) until ``time_limit_s`` is spent."""
    from tsadapt.experiments.gpu_check.colocation import plot_colocation, run_colocation
    from tsadapt.experiments.gpu_check.cpu16 import run_cpu16
    from tsadapt.experiments.gpu_check.gpu_bench import run_gpu_bench
    from tsadapt.experiments.gpu_check.profiles import (
        GPU_PROFILES,
        run_profiles,
        scenario_from_profiles,
    )

    deadline = time.monotonic() + time_limit_s
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    _seed_model_store(work)
    report = Report(out, work, command, budget.name, machine_facts())
    report.resume()
    report.save()

    def left() -> float:
        return deadline - time.monotonic()

    for name in (p for p in PARTS if p in parts):
        if left() < budget.need_s[name]:
            report.record(
                name,
                {
                    "status": "skipped",
                    "reason": f"{left():.0f} s left, the part needs {budget.need_s[name]:.0f}",
                },
            )
            continue
        print(f"gpu-check: part {name} ({left():.0f} s left)", flush=True)
        started = time.monotonic()
        try:
            if name == "profiles":
                result = run_profiles(
                    out,
                    list(budget.gpu_batch_sizes),
                    list(budget.cpu_batch_sizes),
                    budget.repeats,
                    budget.warmup,
                )
            elif name == "bench":
                profiles = out / GPU_PROFILES
                if not profiles.is_file():
                    raise RuntimeError(f"needs part 1's {GPU_PROFILES} in {out}: run it first")
                scenario, why = scenario_from_profiles(profiles, budget.bench_s)
                result = run_gpu_bench(
                    out,
                    report.extras,
                    work,
                    scenario,
                    why,
                    budget.controllers,
                    budget.bench_s,
                    command,
                    lambda p: report.record("bench", p),
                    left,
                )
            elif name == "colocation":
                result = run_colocation(
                    work,
                    "image",
                    budget.coloc_workers,
                    budget.coloc_s,
                    budget.coloc_concurrency,
                    lambda p: report.record("colocation", p),
                    left,
                )
                plot_colocation(result, out / "gpu-coloc.png")
            else:
                result = run_cpu16(
                    report.extras,
                    work,
                    left,
                    list(budget.packrat_args),
                    budget.shared_s,
                    budget.shared_controllers,
                    lambda p: report.record("cpu16", p),
                )
        except Exception as exc:  # noqa: BLE001 - a failed part must not lose the others
            previous = report.parts.get(name, {})
            result = {
                **previous,
                "status": "failed",
                "reason": f"{type(exc).__name__}: {exc}",
                "partial": bool(previous),
            }
        result["elapsed_s"] = time.monotonic() - started
        report.record(name, result)
        print(
            f"gpu-check: part {name} {result['status']} in {result['elapsed_s']:.0f} s", flush=True
        )
    return report
