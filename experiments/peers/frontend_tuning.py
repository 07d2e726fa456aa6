"""``tsadapt lab frontend-tuning``: what can be won back inside TorchServe, one setting at a
time, measured side by side in one run.

Each variant changes one thing against TorchServe as the demo server runs it (``baseline``:
TorchServe's own defaults; the registration defaults, one worker per model at its registered
batch size and delay; our handler):

* how a request body reaches the handler: TorchServe's worker decodes ``application/json``
  with the standard library before the handler sees it (``TS_DECODE_INPUT_REQUEST``, on by
  default), and the handler then walks every number to refuse booleans, since it no longer
  has the raw text to look for a boolean token in; or the handler gets the raw bytes and
  decodes them itself (``handlers/base.py``), with the standard library or orjson;
* the frontend's Netty threads (``number_of_netty_threads``, ``netty_client_threads``; by
  default as many as the host has cores).

The capacity of each model is its closed loop (``bench_capacity.closed_loop``: 32 users, the
open-loop runs' payloads, a warm-up not counted). Variants run in turn and the repeats
interleave (A B C ... A B C ...), so that a slow stretch of the box falls on each; the ratio
to the baseline is taken repeat by repeat.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tsadapt import constants as C
from tsadapt.experiments.bench_capacity import USERS, WARMUP_S, capacities
from tsadapt.experiments.bench_seeds import Stat, finite_json
from tsadapt.markdown import table


@dataclass(frozen=True)
class Variant:
    """One server setting against the baseline: environment of TorchServe and its workers,
    and lines added to ``config.properties``."""

    name: str
    what: str
    env: tuple[tuple[str, str], ...] = ()
    properties: tuple[tuple[str, str], ...] = ()


VARIANTS = (
    Variant("ts-decodes", "TorchServe's worker decodes the JSON (stdlib), the handler walks "
            "every number for booleans", env=((C.TS_DECODE_ENV, "true"),)),
    Variant("raw-stdlib", "the handler gets the raw bytes and decodes them (stdlib), no walk "
            "when the text has no boolean token",
            env=((C.TS_DECODE_ENV, "false"), (C.JSON_DECODER_ENV, "stdlib"))),
    Variant("raw-orjson", "as raw-stdlib, decoded with orjson",
            env=((C.TS_DECODE_ENV, "false"), (C.JSON_DECODER_ENV, "orjson"))),
    Variant("netty-1", "ts-decodes, with 1 frontend and 1 backend Netty thread",
            env=((C.TS_DECODE_ENV, "true"),),
            properties=(("number_of_netty_threads", "1"), ("netty_client_threads", "1"))),
    Variant("netty-4", "ts-decodes, with 4 frontend and 4 backend Netty threads",
            env=((C.TS_DECODE_ENV, "true"),),
            properties=(("number_of_netty_threads", "4"), ("netty_client_threads", "4"))),
)  # fmt: skip
BASELINE = "ts-decodes"


@dataclass(frozen=True)
class Measured:
    """One model's closed loop under one variant, in one repeat."""

    variant: str
    model: str
    repeat: int
    status: str  # ok or failed
    rps: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    failed: int = 0
    reason: str = ""


def variants_named(names: Sequence[str]) -> tuple[Variant, ...]:
    """The variants of ``names`` (the baseline first, added if missing)."""
    known = {v.name: v for v in VARIANTS}
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"variants: unknown {', '.join(bad)}; known: {', '.join(known)}")
    return tuple(known[n] for n in dict.fromkeys([BASELINE, *names]))


def measure_variant(variant: Variant, models: Sequence[str], seconds: float, repeat: int,
                    rundir: Path, model_store: Path) -> list[Measured]:  # fmt: skip
    """Every model's closed loop on a fresh TorchServe with ``variant``'s settings."""
    from tsadapt.experiments.bench_run import start_server
    from tsadapt.serve.server import ServerConfig, ServerError, start, stop

    cfg = ServerConfig.with_free_ports(
        workdir=rundir / "server", model_store=model_store, models=tuple(models),
        env=variant.env, properties=variant.properties,
    )  # fmt: skip
    try:
        server = start_server(start, cfg)
    except ServerError as exc:
        return [Measured(variant.name, m, repeat, "failed", reason=str(exc)) for m in models]
    try:
        caps = capacities(variant.name, server.inference_url, cfg.workdir, tuple(models),
                          seconds, rundir)  # fmt: skip
    finally:
        stop(cfg.workdir)
    return [Measured(variant.name, c.model, repeat, c.status, c.rps, c.p50_ms, c.p99_ms,
                     c.failed, c.reason) for c in caps]  # fmt: skip


def run_all(variants: Sequence[Variant], models: Sequence[str], seconds: float, repeats: int,
            runs_dir: Path, progress: Callable[[str], None] = print) -> list[Measured]:  # fmt: skip
    """Every variant on every repeat, interleaved."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out: list[Measured] = []
    for k in range(repeats):
        for v in variants:
            progress(f"repeat {k + 1}/{repeats}: {v.name}")
            rundir = runs_dir / f"{stamp}-r{k}-{v.name}"
            rundir.mkdir(parents=True, exist_ok=True)
            out += measure_variant(v, models, seconds, k, rundir, runs_dir / "model-store")
    return out


def ratios(results: Sequence[Measured], variant: str, model: str) -> list[float]:
    """``variant``'s req/s over the baseline's, repeat by repeat (both ok)."""
    by = {(r.variant, r.repeat): r for r in results if r.model == model and r.status == "ok"}
    return [by[(variant, k)].rps / by[(BASELINE, k)].rps
            for (v, k) in sorted(by) if v == variant and (BASELINE, k) in by
            and by[(BASELINE, k)].rps > 0]  # fmt: skip


def summary(results: Sequence[Measured], variants: Sequence[Variant],
            models: Sequence[str]) -> dict[str, dict[str, dict[str, Stat]]]:  # fmt: skip
    """model -> variant -> figure (rps, p50_ms, p99_ms, ratio) -> mean ± sd over repeats."""
    out: dict[str, dict[str, dict[str, Stat]]] = {}
    for m in models:
        for v in variants:
            ok = [r for r in results if r.model == m and r.variant == v.name and r.status == "ok"]
            out.setdefault(m, {})[v.name] = {
                "rps": Stat.of([r.rps for r in ok]), "p50_ms": Stat.of([r.p50_ms for r in ok]),
                "p99_ms": Stat.of([r.p99_ms for r in ok]),
                "ratio": Stat.of(ratios(results, v.name, m)),
            }  # fmt: skip
    return out


HEADER = ["model", "variant", "repeats ok", "req/s", "x baseline (paired)", "p50 ms", "p99 ms"]


def write_report(out_dir: Path, command: str, results: Sequence[Measured],
                 variants: Sequence[Variant], models: Sequence[str], seconds: float,
                 repeats: int, load_avg: tuple[float, float], started: str = "",
                 rendered_by: str = "") -> Path:  # fmt: skip
    """``frontend-tuning.md`` and its ``.json`` under ``out_dir``; the Markdown's path.
    ``rendered_by``: the command that wrote it again from an earlier run's JSON."""
    started = started or time.strftime("%Y-%m-%d %H:%M")
    again = f" (written again from its JSON by `{rendered_by}`)" if rendered_by else ""
    s = summary(results, variants, models)
    rows = [[m, v.name, f"{s[m][v.name]['rps'].n}/{repeats}", s[m][v.name]["rps"].text(".1f"),
             s[m][v.name]["ratio"].text(".3f"), s[m][v.name]["p50_ms"].text(".1f"),
             s[m][v.name]["p99_ms"].text(".1f")] for m in models for v in variants]  # fmt: skip
    failed = [r for r in results if r.status != "ok"]
    lines = [
        "# What TorchServe settings win back: closed-loop capacity, one setting at a time",
        "",
        f"Generated by `{command}` on {started}{again}. Machine: "
        f"{platform.machine()}, {os.cpu_count()} CPU cores (1-minute load average "
        f"{load_avg[0]:.1f} at the start, {load_avg[1]:.1f} at the end, this command's own "
        f"servers and Locust included), Python {platform.python_version()}.",
        "",
        f"TorchServe at the registration defaults (one worker per model at its registered "
        f"batch size and delay), our handler; per model a closed loop of {USERS} Locust users "
        f"for {seconds:.0f} s after a {WARMUP_S:.0f} s warm-up, on a fresh server per variant "
        f"and repeat; {repeats} repeats, interleaved. The ratio to the baseline "
        f"(`{BASELINE}`: TorchServe's defaults) is taken repeat by repeat, then averaged. See "
        "`experiments/peers/frontend_tuning.py`.",
        "",
        *table(
            ["variant", "what changes", "environment", "config.properties"],
            [
                [
                    v.name,
                    v.what,
                    ", ".join(f"`{k}={x}`" for k, x in v.env) or "–",
                    ", ".join(f"`{k}={x}`" for k, x in v.properties) or "–",
                ]
                for v in variants
            ],
        ),
        "",
        *table(HEADER, rows),
        "",
    ]
    if failed:
        lines += ["Runs that failed:", ""]
        lines += [f"- repeat {r.repeat}, {r.variant}, {r.model}: {r.reason[:300]}" for r in failed]
        lines += [""]
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "frontend-tuning.md"
    md.write_text("\n".join(lines) + "\n")
    data = {
        "command": command, "started": started, "seconds": seconds, "repeats": repeats,
        "users": USERS, "models": list(models),
        "baseline": BASELINE, "load_avg": list(load_avg),
        "variants": [asdict(v) for v in variants],
        "summary": {m: {v: {f: {"mean": x.mean, "sd": x.sd, "n": x.n} for f, x in fs.items()}
                        for v, fs in vs.items()} for m, vs in s.items()},
        "runs": [asdict(r) for r in results],
    }  # fmt: skip
    md.with_suffix(".json").write_text(json.dumps(finite_json(data), indent=2) + "\n")
    return md


def rewrite_from_json(path: Path, out_dir: Path, rendered_by: str) -> Path:
    """Write the report again from an earlier run's JSON (no server started)."""
    try:
        data = json.loads(Path(path).read_text())
        results = [Measured(**{k: math.nan if v is None else v for k, v in r.items()})
                   for r in data["runs"]]  # fmt: skip
        variants = variants_named([v["name"] for v in data["variants"]])
        models = data.get("models") or list(dict.fromkeys(r.model for r in results))
        return write_report(out_dir, data["command"], results, variants, models,
                            float(data["seconds"]), int(data["repeats"]),
                            tuple(data["load_avg"]), data.get("started", "an earlier date"),
                            rendered_by)  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a frontend-tuning JSON ({exc})") from None
