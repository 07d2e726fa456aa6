"""Part 4: what a 2-core box cannot show, on the GPU machine's 16 cores (CPU workers).

``tsadapt lab packrat bench`` (planned ⟨instances, threads, batch⟩ against the fat instance, then
live switches) and ``tsadapt lab bench`` on the shared-budget scenario, each run as the command
itself in a subprocess with a deadline. ``CUDA_VISIBLE_DEVICES`` is empty there, so the
workers TorchServe starts see no GPU and run on the CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tsadapt.constants import REPO_DIR


def run_step(
    name: str, args: list[str], timeout_s: float, log: Path, report: Path
) -> dict[str, Any]:
    """Run ``tsadapt ARGS`` on the CPU only; its output goes to ``log``; the tables of the
    Markdown ``report`` it writes (else the log's tail) go to the part."""
    command = "tsadapt " + " ".join(args)
    if timeout_s < 20:
        return {"name": name, "command": command, "status": "skipped: no time left"}
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    started = time.monotonic()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tsadapt.cli", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout_s)
            status = "ok" if code == 0 else f"exit code {code}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 15)
            proc.wait(30)
            status = f"stopped at its {timeout_s:.0f} s deadline"
    tail = log.read_text(errors="replace").splitlines()
    tables = report.read_text().splitlines() if report.is_file() else []
    summary = [line for line in tables if line.startswith("|")][:40]
    return {
        "name": name,
        "command": command,
        "status": status,
        "elapsed_s": time.monotonic() - started,
        "summary": summary or ["```", *tail[-15:], "```"],
    }


def run_cpu16(
    extras: Path,
    work: Path,
    seconds_left: Any,
    packrat_args: list[str],
    shared_s: float,
    shared_controllers: str,
    on_step: Any,
) -> dict[str, Any]:
    """Both steps; each gets at most the time left (``seconds_left()``) less a margin."""
    part: dict[str, Any] = {
        "status": "running",
        "partial": True,
        "cores": os.cpu_count(),
        "steps": [],
    }
    packrat = ["lab", "packrat", "bench", "--model", "text", *packrat_args,
               "--out", str(extras / "packrat"), "--workdir", str(work / "packrat")]  # fmt: skip
    step = run_step("Packrat: planned vs fat instance, live switches", packrat,
                    0.5 * seconds_left() - 10, extras / "packrat.log",
                    extras / "packrat" / "packrat.md")  # fmt: skip
    part["steps"].append(step)
    on_step(part)
    shared = ["lab", "bench", "--scenario", "bursty-shared", "--controllers", shared_controllers,
              "--controller-config", str(REPO_DIR / "configs" / "controller.yaml"),
              "--duration", f"{shared_s:g}", "--out", str(extras / "shared"),
              "--runs-dir", str(work / "shared"), "--speed-probe-s", "0"]  # fmt: skip
    # (no box-speed probe: the GPU machine's minutes go to the runs)
    shared_md = extras / "shared" / "bench-bursty-shared.md"
    step = run_step("Shared worker budget on the real server", shared, seconds_left() - 10,
                    extras / "shared.log", shared_md)  # fmt: skip
    part["steps"].append(step)
    bad = [s["name"] for s in part["steps"] if s["status"] != "ok"]
    part.update(status="failed" if bad else "ok", partial=bool(bad))
    if bad:
        part["reason"] = "not ok: " + ", ".join(bad)
    return part
