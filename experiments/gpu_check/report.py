"""The GPU check's output folder: ``gpu.md``, ``gpu.json``, a few PNGs, ``extras.tar.gz``.

:class:`Report` holds every figure the parts measured; :meth:`Report.save` rewrites the JSON
and the Markdown from it after each part, so a run cut short still leaves what it finished.
The output folder stays within what may come back from the GPU machine (a few files, no
subfolders): the detailed bench reports, run timelines and the Packrat report are written to
a scratch folder and packed into ``extras.tar.gz``.
"""

from __future__ import annotations

import json
import math
import re
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsadapt.markdown import table as markdown_table

EXTRAS = "extras"
#: What may come back from the GPU machine: files in the output folder, and bytes per file.
MAX_OUT_FILES = 8
MAX_OUT_FILE_BYTES = 16 * 2**20


def _f(x: Any, spec: str = ".1f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return format(x, spec)


@dataclass
class Report:
    """Every figure of one ``tsadapt lab gpu-check`` run, part by part."""

    out: Path
    scratch: Path  # detailed outputs, packed into out/extras.tar.gz
    command: str
    budget: str
    machine: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S %Z"))

    @property
    def extras(self) -> Path:
        path = self.scratch / EXTRAS
        path.mkdir(parents=True, exist_ok=True)
        return path

    def resume(self) -> None:
        """Take the parts an earlier command on this machine recorded (its copy in the
        scratch folder), so a second command's ``gpu.md`` holds all of them."""
        earlier = self.scratch / "gpu.json"
        if earlier.is_file():
            for name, part in json.loads(earlier.read_text()).get("parts", {}).items():
                self.parts.setdefault(name, part)

    def record(self, part: str, result: dict[str, Any]) -> None:
        self.parts[part] = {**result, "command": self.command}
        self.save()

    def save(self) -> None:
        """Write ``gpu.json``, ``gpu.md`` and ``extras.tar.gz`` from what is recorded."""
        self.out.mkdir(parents=True, exist_ok=True)
        data = {
            "command": self.command,
            "budget": self.budget,
            "started": self.started,
            "machine": self.machine,
            "parts": self.parts,
        }
        text = json.dumps(data, indent=1, default=str)
        (self.out / "gpu.json").write_text(text)
        self.scratch.mkdir(parents=True, exist_ok=True)
        (self.scratch / "gpu.json").write_text(text)
        (self.out / "gpu.md").write_text(render(self) + "\n")
        extras = self.scratch / EXTRAS
        if extras.is_dir():
            with tarfile.open(self.out / "extras.tar.gz", "w:gz") as tar:
                tar.add(extras, arcname=EXTRAS)


def _out_arg(command: str) -> str | None:
    """The output folder a check's command line names (its first positional argument)."""
    words = command.split()
    for i, word in enumerate(words):
        if word.endswith("run.sh") or word == "gpu-check":
            rest = [w for w in words[i + 1 :] if not w.startswith("-")]
            return rest[0] if rest else None
    return None


def generic_paths(text: str, command: str, checkout: str | None) -> str:
    """``text`` with the GPU machine's own paths made generic: the output folder of
    ``command`` becomes ``OUT_DIR``, the checkout's root goes (paths become relative to it),
    and the check's scratch folder becomes ``WORK``."""
    out = _out_arg(command)
    if out and out.startswith("/"):
        text = text.replace(out.rstrip("/"), "OUT_DIR")
    if checkout is None:  # runs before the checkout was recorded: infer it from the configs
        found = re.search(r'(/[^\s"\'`]+?)/configs/', text)
        checkout = found.group(1) if found else None
    if checkout:
        text = text.replace(checkout.rstrip("/") + "/", "")
    return re.sub(r"/tmp/tsadapt-gpu/runs", "WORK", text)


def merge_runs(sources: list[Path], out: Path, command: str) -> Report:
    """One report from the ``gpu.json`` of one or more runs of the check on one machine
    (later sources win; each part keeps the command that measured it), with
    :func:`generic_paths`; written into ``out`` (``gpu.json``, ``gpu.md``)."""
    if not sources:
        raise ValueError("give at least one gpu.json (or a folder holding one)")
    report = Report(out, out, command, "")
    for src in sources:
        path = src / "gpu.json" if src.is_dir() else src
        if not path.is_file():
            raise ValueError(f"no gpu.json at {src}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("parts"), dict):
            raise ValueError(f"{path}: not a gpu-check gpu.json (no 'parts')")
        own = data.get("command", "")
        text = generic_paths(json.dumps(data), own, data.get("machine", {}).get("checkout"))
        data = json.loads(text)
        own = data.get("command", own)
        for name, part in data["parts"].items():
            copy = part.pop("earlier_command", False)
            if copy and name in report.parts:
                continue  # a copy of a part an earlier source already has
            part.setdefault("command", "an earlier command on the same machine" if copy else own)
            report.parts[name] = part
        if not report.machine:
            report.budget = data.get("budget", "")
            report.started = data.get("started", "")
            report.machine = data.get("machine", {})
    report.machine.pop("checkout", None)
    report.save()
    return report


def render(report: Report) -> str:
    """``gpu.md``; its top line is the command that wrote it."""
    m = report.machine
    host = ", ".join(
        x
        for x in (m.get("arch"), f"Python {m['python']}" if m.get("python") else None)
        if x is not None
    )
    lines = [
        f"Generated by `{report.command}`",
        "",
        "# GPU check",
        "",
        f"Started {report.started}, budget `{report.budget}`. Machine: {m.get('gpu', 'no GPU')}, "
        f"{m.get('cores', '?')} CPU cores{', ' + host if host else ''}, torch "
        f"{m.get('torch', '?')} (CUDA {m.get('cuda', '–')}), driver {m.get('driver', '–')}. "
        "Every figure below is in `gpu.json`; the per-run bench reports, timelines and logs "
        "are in `extras.tar.gz`.",
        "",
    ]
    for key, title, renderer in SECTIONS:
        lines += [f"## {title}", ""]
        part = report.parts.get(key)
        if part is not None and part.get("command") and part["command"] != report.command:
            lines += [f"Measured by `{part['command']}`.", ""]
        if part is None:
            lines += ["Not run.", ""]
        elif part.get("status") != "ok":
            lines += [f"{part.get('status')}: {part.get('reason', '')}", ""]
            lines += renderer(part) if part.get("partial") else []
        else:
            lines += renderer(part)
    return "\n".join(lines)


def _profiles(part: dict[str, Any]) -> list[str]:
    rows = []
    for p in part.get("profiles", []):
        pts = dict(zip(p["batch_sizes"], p["median_ms"], strict=True))
        last = p["batch_sizes"][-1]
        rows.append(
            [
                p["model"],
                p["device"],
                _f(p["fit"]["alpha_ms"], ".3f"),
                _f(p["fit"]["beta_ms"], ".3f"),
                _f(p["fit"]["r2"], ".4f"),
                _f(pts.get(1), ".2f"),
                _f(pts.get(8), ".2f"),
                str(last),
                _f(pts[last], ".2f"),
                _f(1000 * last / pts[last], ".0f"),
            ]
        )
    head = [
        "model",
        "device",
        "alpha ms/req",
        "beta ms",
        "R^2",
        "b=1 ms",
        "b=8 ms",
        "b max",
        "b max ms",
        "req/s at b max",
    ]
    return [
        f"Each point: median of {part.get('repeats')} timed batches through the model's real "
        "handler in one process (JSON decoding, validation, collation, forward pass on the "
        "device, answers), as `tsadapt lab demo-models profile` times it; fit latency(b) = "
        f"alpha*b + beta. GPU batch sizes {part.get('gpu_batch_sizes')}; "
        f"CPU ({part.get('cpu_threads')} "
        f"intra-op thread, as a worker registers) {part.get('cpu_batch_sizes')}. "
        f"{part.get('elapsed_s', 0):.0f} s.",
        "",
        *markdown_table(head, rows),
        "",
        "![profiles](gpu-profiles.png)",
        "",
    ]


def _sent(r: dict[str, Any]) -> int | str:
    """Requests the load generator sent: each got an answer, a 503 or an error."""
    keys = ("completed", "rejected", "failed")
    return sum(int(r[k]) for k in keys) if all(k in r for k in keys) else "–"


def _bench(part: dict[str, Any]) -> list[str]:
    head = [
        "controller",
        "model",
        "SLO ms",
        "requests",
        "sent",
        "rejected (503)",
        "SLO attainment",
        "goodput req/s",
        "p99 ms",
        "worker-s",
        "busy GPU-s",
        "reconfigs",
    ]
    rows = []
    for run in part.get("runs", []):
        if run["status"] != "ok":
            rows.append(
                [
                    run["controller"],
                    "–",
                    "–",
                    "–",
                    "–",
                    "–",
                    f"{run['status']}: {run['reason']}",
                    "–",
                    "–",
                    "–",
                    "–",
                    "–",
                ]
            )
            continue
        for name, r in run["models"].items():
            rows.append(
                [
                    run["controller"],
                    name,
                    _f(r["slo_ms"], ".0f"),
                    str(r["requests"]),
                    str(_sent(r)),
                    str(r.get("rejected", "–")),
                    f"{100 * r['slo_attainment']:.1f}%",
                    _f(r["goodput_rps"], ".1f"),
                    _f(r["p99_ms"]),
                    _f(r["worker_seconds"], ".0f"),
                    _f(run["busy_gpu_s"], ".1f") if name == "overall" else "",
                    str(r.get("reconfigurations", "")),
                ]
            )
    nvml = [
        "controller",
        "NVML samples",
        "NVML util %",
        "nvidia-smi util %",
        "NVML MiB",
        "nvidia-smi MiB",
        "max |MiB diff|",
    ]
    nrows = [
        [
            run["controller"],
            str(c["n"]),
            _f(c["nvml_util"]),
            _f(c["smi_util"]),
            _f(c["nvml_mib"], ".0f"),
            _f(c["smi_mib"], ".0f"),
            _f(c["max_mib_diff"], ".0f"),
        ]
        for run in part.get("runs", [])
        if (c := run.get("nvml_vs_smi"))
    ]
    sc = part.get("scenario", {})
    return [
        f"Scenario `{sc.get('name')}` (written from the GPU profiles above: "
        f"{sc.get('description', '')}), {part.get('duration_s')} s, seed {sc.get('seed')}; "
        "every controller on a fresh TorchServe whose workers run on the GPU, with the same "
        "arrivals (`tsadapt lab bench` machinery, one run per controller). The sidecars run "
        "`configs/controller.yaml` with each model's batch and worker bounds from the "
        "scenario and the GPU memory guard on (`controller-gpu.yaml` in `extras.tar.gz`). "
        "busy GPU-s = mean NVML utilisation x run time. SLO attainment counts every "
        "scheduled request; `sent` = requests the load generator sent (answered, rejected "
        "with 503 or failed): the rest it could not send in time, and they count as misses.",
        "",
        *markdown_table(head, rows),
        "",
        "The sidecar's NVML readings (its decision log) against `nvidia-smi` sampled at the "
        "same seconds:",
        "",
        *(markdown_table(nvml, nrows) if nrows else ["No sidecar readings (no GPU or no run)."]),
        "",
        "![bench](gpu-bench.png)",
        "",
    ]


def _coloc(part: dict[str, Any]) -> list[str]:
    head = [
        "setting",
        "workers",
        "requests",
        "throughput req/s",
        "p50 ms",
        "p99 ms",
        "GPU MiB used (delta)",
        "MiB per worker",
        "per-process MiB",
    ]
    rows = [
        [
            c["setting"],
            str(c["workers"]),
            str(c["requests"]),
            _f(c["throughput_rps"]),
            _f(c["p50_ms"]),
            _f(c["p99_ms"]),
            _f(c["gpu_mib_delta"], ".0f"),
            _f(c["mib_per_worker"], ".0f"),
            c.get("per_process_mib", "–") or "–",
        ]
        for c in part.get("cases", [])
    ]
    return [
        f"Closed-loop load ({part.get('load_s')} s per setting, {part.get('concurrency')}) on "
        "one TorchServe; GPU memory = NVML's used memory minus its reading before the server "
        "started.",
        "",
        *markdown_table(head, rows),
        "",
        *([f"Skipped for time: {', '.join(part['skipped'])}.", ""] if part.get("skipped") else []),
        "![co-location](gpu-coloc.png)",
        "",
    ]


def _cpu16(part: dict[str, Any]) -> list[str]:
    lines = []
    for step in part.get("steps", []):
        lines += [
            f"### {step['name']}",
            "",
            f"`{step['command']}`: {step['status']} ({step.get('elapsed_s', 0):.0f} s)",
            "",
        ]
        lines += step.get("summary", [])
        lines.append("")
    return lines


SECTIONS = (
    ("profiles", "1. GPU batch-latency profiles against the CPU", _profiles),
    ("bench", "2. Controllers on the GPU (real TorchServe)", _bench),
    ("colocation", "3. Co-location: workers sharing one GPU", _coloc),
    ("cpu16", "4. The 16-core parts", _cpu16),
)


def check_output(out: Path) -> list[str]:
    """What in ``out`` could not come back: too many files, too large, or in a subfolder."""
    problems = []
    entries = sorted(out.rglob("*"))
    files = [p for p in entries if p.is_file()]
    if len(files) > MAX_OUT_FILES:
        problems.append(f"{len(files)} files, at most {MAX_OUT_FILES} come back")
    problems += [
        f"{p.name}: {p.stat().st_size} bytes"
        for p in files
        if p.stat().st_size > MAX_OUT_FILE_BYTES
    ]
    problems += [f"{p.relative_to(out)}: a subfolder" for p in entries if p.is_dir()]
    return problems
