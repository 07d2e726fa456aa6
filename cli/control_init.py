"""``tsadapt control init``: a starting controller config from a live server, and the profile
rule that bounds ``max_batch``.

Every registered model gets an entry with its current batch size, delay and workers inside
its limits; its SLO is ``--slo-ms``, else twice the profiled latency of its current batch
(from ``--profile``), else :data:`FALLBACK_SLO_MS`. ``--profile`` files also lower
``max_batch`` by Nexus's rule (``slo_feasible_batch``: the largest batch whose profiled
latency is at most half the SLO left after the latency outside the worker), as
:func:`apply_profiles` does for ``tsadapt control``. A profile measures the handler alone,
so it brings no outside latency (0 here); a calibrated scenario (``tsadapt control
--scenario``) brings the measured one.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import yaml

from tsadapt.policy.batch_cap import apply_latencies, feasible
from tsadapt.policy.controller_config import ConfigError, ControllerConfig, ModelLimits, from_dict
from tsadapt.profile import LatencyModel, ProfileFormatError, latency_of, read_profiles

#: SLO written when neither --slo-ms nor a profile gives one: a placeholder to tune.
FALLBACK_SLO_MS = 100.0
#: Upper bound on max_batch in a generated config (unless the model already runs larger).
INIT_MAX_BATCH = 32
#: Largest max_delay_ms a generated config allows (and at most a quarter of the SLO).
INIT_MAX_DELAY_MS = 50


def load_profile(path: Path) -> tuple[str, LatencyModel]:
    """The model and its batch latency (medians at the fewest workers) from a profile JSON."""
    try:
        rows = read_profiles(path)
    except ProfileFormatError as exc:
        raise ConfigError(f"--profile {path}", str(exc)) from None
    if not rows:
        raise ConfigError(f"--profile {path}", "holds no finite latency")
    row = min(rows, key=lambda r: int(r.get("workers", 1)))
    return str(row["model"]), latency_of(row)


def apply_profiles(config: ControllerConfig, paths: list[Path]) -> ControllerConfig:
    """:func:`apply_latencies` with the latency of each ``tsadapt profile`` JSON."""
    return apply_latencies(config, [(*load_profile(p), 0.0, f"--profile {p}") for p in paths])


def _slo(args: argparse.Namespace, latency: LatencyModel | None, batch: int) -> float:
    if args.slo_ms is not None:
        return float(args.slo_ms)
    if latency is not None:
        return float(max(10, math.ceil(2 * float(latency.batch_ms(batch)) / 10) * 10))
    return FALLBACK_SLO_MS


def render(entries: list[tuple[ModelLimits, str]], default: ModelLimits, budget: int) -> str:
    """The YAML text, commented for a person to tune."""
    lines = [
        "# Controller config written by `tsadapt control init` from the live server.",
        "# Tune: each model's slo_ms (what the policy aims for), min/max_workers (what this",
        "# host can afford), max_batch (profile with `tsadapt profile`, then pass --profile to",
        "# `tsadapt control` to cap it by the SLO), and worker_budget (all models together).",
        "policy: queue            # static | aimd | queue | ppo (--policy overrides)",
        "tick_s: 1.0",
        "window_s: 5.0",
        f"worker_budget: {budget}        # all controlled models' workers together",
        "cooldown_s: 3.0          # no change to a model within this long of its last change",
        "models:",
    ]
    for lim, note in entries:
        lines.append(f"  # {lim.name}: {note}")
        lines.append(f"  {lim.name}: {_flow(lim)}")
    lines += [
        "# Models registered later (or not listed above) get these limits; delete this entry",
        "# to leave such models alone (observed and logged, never changed).",
        f"default: {_flow(default)}",
    ]
    return "\n".join(lines) + "\n"


def _flow(lim: ModelLimits) -> str:
    slo = int(lim.slo_ms) if float(lim.slo_ms).is_integer() else lim.slo_ms
    return (
        f"{{slo_ms: {slo}, min_workers: {lim.min_workers}, max_workers: {lim.max_workers}, "
        f"min_batch: {lim.min_batch}, max_batch: {lim.max_batch}, "
        f"max_delay_ms: {lim.max_delay_ms}}}"
    )


def _limits(name: str, slo: float, batch: int, delay: int, workers: int) -> ModelLimits:
    return ModelLimits(
        name=name,
        slo_ms=slo,
        min_workers=1,
        max_workers=max(workers, 2),
        max_batch=max(batch, INIT_MAX_BATCH),
        max_delay_ms=min(max(delay, INIT_MAX_DELAY_MS), max(0, math.ceil(slo / 4) - 1)),
    )


def run_init(args: argparse.Namespace) -> int:
    """Print a controller config for every model the attached server serves."""
    from tsadapt.plugin.adapt_client import AdaptClient
    from tsadapt.serve.attach import connect_checked

    client, _, registered = connect_checked(args)
    profiles = dict(load_profile(p) for p in args.profile)
    states = {s.name: s for s in AdaptClient(client).models()}
    entries = []
    for name in registered:
        s = states[name]
        latency = profiles.get(name)
        slo = _slo(args, latency, s.batch_size)
        lim = _limits(name, slo, s.batch_size, s.max_batch_delay_ms, s.min_workers)
        note = (
            f"now batch {s.batch_size}, delay {s.max_batch_delay_ms} ms, "
            f"{s.min_workers} worker(s); "
        )
        if latency is not None:
            lim = feasible(lim, latency)
            note += f"max_batch from its profile ({float(latency.batch_ms(1)):.1f} ms at b=1)"
        else:
            note += "slo_ms " + ("from --slo-ms" if args.slo_ms else "is a placeholder: set it")
        entries.append((lim, note))
    default = _limits("default", args.slo_ms or FALLBACK_SLO_MS, 1, 0, 1)
    budget = max(1, sum(lim.max_workers for lim, _ in entries))
    text = render(entries, default, budget)

    from_dict(yaml.safe_load(text))  # what we print must load
    sys.stdout.write(text)
    return 0
