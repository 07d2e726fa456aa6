"""``tsadapt lab gpu-check --rehearse``: the kit, run here on the CPU as the GPU machine would.

1. Copy what would travel: the working tree (tracked and untracked, not ignored files) and
   a kit built for this machine's Python, into a fresh folder; check it is within 64 MiB.
2. A fresh virtual environment without pip or site packages, given only the packages the
   GPU machine has (:data:`target.GPU_MACHINE_PACKAGES`, as installed here: torch, numpy,
   ...) through a folder of links; nothing of this checkout's own environment.
3. ``bash build/gpu-kit/run.sh OUT --budget tiny`` in the copy, with a deadline; then check
   the output folder would come back and every part ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from tsadapt.experiments.gpu_check.kit import TRAVEL_LIMIT_BYTES, build_kit
from tsadapt.experiments.gpu_check.report import check_output
from tsadapt.experiments.gpu_check.target import Target, normalise

#: The longest one command may run on the GPU machine (s).
COMMAND_LIMIT_S = 600


@dataclass
class Rehearsal:
    """What the rehearsal measured and found wrong (``problems`` empty: it passed)."""

    kit_bytes: int = 0
    travel_bytes: int = 0
    build_s: float = 0.0
    run_s: float = 0.0
    statuses: dict[str, str] = field(default_factory=dict)
    out_files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        mib = 2**20
        lines = [
            f"kit {self.kit_bytes / mib:.1f} MiB + working tree = "
            f"{self.travel_bytes / mib:.1f} MiB travelling (limit {TRAVEL_LIMIT_BYTES / mib:.0f})",
            f"kit built in {self.build_s:.0f} s; run.sh (unpack + tiny budget) {self.run_s:.0f} s",
            "parts: " + ", ".join(f"{k} {v}" for k, v in self.statuses.items()),
            "output: " + ", ".join(self.out_files),
            "rehearsal "
            + ("passed" if not self.problems else "FAILED: " + "; ".join(self.problems)),
        ]
        return "\n".join(lines)


def copy_travelling_tree(repo: Path, dest: Path) -> None:
    """The files that travel with a command: tracked and untracked, not ignored."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    )
    for name in filter(None, proc.stdout.decode().split("\0")):
        src = repo / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def machine_view(target: Target, view: Path) -> list[str]:
    """Links in ``view`` to the packages of ``target.preinstalled`` installed here."""
    view.mkdir(parents=True, exist_ok=True)
    linked = []
    for dist in metadata.distributions():
        if normalise(dist.metadata["Name"]) not in target.preinstalled:
            continue
        base = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src = base / top
            if src.exists() and not (view / top).exists():
                (view / top).symlink_to(src)
        linked.append(dist.metadata["Name"])
    return sorted(linked)


def fresh_python(root: Path, view: Path) -> Path:
    """A venv with no pip and no site packages; ``view`` on its path."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "gpu-machine-packages.pth").write_text(str(view) + "\n")
    return python


def rehearse(repo: Path, time_limit_s: float = 420.0, keep: Path | None = None) -> Rehearsal:
    """Build, copy and run the kit as described above; never raises for a failed run."""
    result = Rehearsal()
    target = Target(f"{sys.version_info.major}.{sys.version_info.minor}")
    root = Path(tempfile.mkdtemp(prefix="gpu-rehearsal-")) if keep is None else keep
    try:
        tree = root / "repo"
        copy_travelling_tree(repo, tree)
        started = time.monotonic()
        info = build_kit(
            tree / "build" / "gpu-kit", target, cache=repo / "build" / "gpu-kit-cache", repo=tree
        )
        result.build_s = time.monotonic() - started
        result.kit_bytes, result.travel_bytes = info.total_bytes, info.travel_bytes
        if info.travel_bytes > TRAVEL_LIMIT_BYTES:
            result.problems.append(f"{info.travel_bytes} bytes travel, over the limit")
        python = fresh_python(root / "venv", root / "machine-packages")
        machine_view(target, root / "machine-packages")
        out = root / "out"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(
            PYTHON=str(python),
            TSADAPT_GPU_WORK=str(root / "work"),
            PATH=os.pathsep.join(
                p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p
            ),
        )
        cmd = [
            "bash",
            str(tree / "build" / "gpu-kit" / "run.sh"),
            str(out),
            "--budget",
            "tiny",
            "--time-limit",
            f"{time_limit_s - 60:g}",
        ]
        started = time.monotonic()
        with (root / "run.log").open("wb") as log:
            proc = subprocess.run(
                cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=time_limit_s
            )
        result.run_s = time.monotonic() - started
        _check_run(result, proc.returncode, out, root / "run.log")
    except subprocess.TimeoutExpired:
        result.problems.append(f"run.sh ran past {time_limit_s:.0f} s")
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        result.problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return result


def _check_run(result: Rehearsal, code: int, out: Path, log: Path) -> None:
    import json

    if code != 0:
        tail = log.read_text(errors="replace")[-1500:]
        result.problems.append(f"run.sh exited with {code}: {tail}")
    if not (out / "gpu.json").is_file():
        result.problems.append("no gpu.json written")
        return
    data = json.loads((out / "gpu.json").read_text())
    result.statuses = {k: v.get("status", "?") for k, v in data["parts"].items()}
    result.out_files = sorted(p.name for p in out.iterdir())
    failed = {
        k: data["parts"][k].get("reason", "") for k, v in result.statuses.items() if v != "ok"
    }
    if failed:
        result.problems.append(f"parts not ok: {failed}")
    result.problems += check_output(out)
    if result.run_s > COMMAND_LIMIT_S:
        result.problems.append(f"run.sh took {result.run_s:.0f} s, over {COMMAND_LIMIT_S}")
    first = (out / "gpu.md").read_text().splitlines()[0] if (out / "gpu.md").is_file() else ""
    if not first.startswith("Generated by `bash ") or "run.sh" not in first:
        result.problems.append(f"gpu.md's top line is not the command: {first!r}")
