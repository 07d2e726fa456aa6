"""``tsadapt control init``: a starting controller config from a live server, and the profile
rule that bounds ``max_batch``.

Every registered model gets an entry with its current batch size, delay and workers inside
its limits. Its SLO is the one asked for: ``--slo-ms MS`` (every model) or ``--slo-ms
MODEL=MS``, or with ``--slo-from-profile`` the rule :data:`PROFILE_SLO_BATCH` states (written
as a comment); a model left without one is an error naming the flags, never an invented
figure. ``--profile`` files also lower ``max_batch`` by Nexus's rule
(``slo_feasible_batch``: the largest batch whose profiled latency is at most half the SLO
left after the latency outside the worker), as :func:`apply_profiles` does for ``tsadapt
control``. A profile measures the handler alone, so it brings no outside latency (0 here); a
calibrated scenario (``tsadapt control --scenario``) brings the measured one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml

from tsadapt.policy.controller_config import ConfigError, ControllerConfig, ModelLimits, from_dict
from tsadapt.policy.sim.control import apply_latencies, feasible
from tsadapt.policy.sim.specs import LatencyModel

#: --slo-from-profile: the SLO is twice the profiled latency at this batch (or the largest
#: profiled batch below it), rounded up to 10 ms, so the half-SLO rule lets batches that
#: large through.
PROFILE_SLO_BATCH = 8
#: Exit code when a model is left without an SLO.
EXIT_NO_SLO = 2
#: Upper bound on max_batch in a generated config (unless the model already runs larger).
INIT_MAX_BATCH = 32
#: Largest max_delay_ms a generated config allows (and at most a quarter of the SLO).
INIT_MAX_DELAY_MS = 50


def load_profile(path: Path) -> tuple[str, LatencyModel]:
    """The model and its batch latency (medians at the fewest workers) from a profile JSON."""
    from tsadapt.serve.profiler import Point, _medians

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        points = [Point(**p) for p in doc["points"]]
        model = str(doc["model"])
    except FileNotFoundError:
        raise ConfigError(f"--profile {path}", "no such file") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"--profile {path}", f"not a `tsadapt profile` JSON ({type(exc).__name__}: {exc})"
        ) from None
    if not points:
        raise ConfigError(f"--profile {path}", "holds no measured points")
    medians = _medians(points, min(p.workers for p in points))
    if not medians:
        raise ConfigError(f"--profile {path}", "holds no finite latency")
    return model, LatencyModel(table=tuple(medians.items()))


def apply_profiles(config: ControllerConfig, paths: list[Path]) -> ControllerConfig:
    """:func:`apply_latencies` with the latency of each ``tsadapt profile`` JSON."""
    return apply_latencies(config, [(*load_profile(p), 0.0, f"--profile {p}") for p in paths])


def add_init_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``tsadapt control init`` (the attach options come separately)."""
    p.add_argument(
        "--slo-ms",
        action="append",
        default=[],
        metavar="[MODEL=]MS",
        help="the SLO to write: MS for every model, MODEL=MS for one (repeatable)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        action="append",
        default=[],
        help="a `tsadapt profile` JSON (repeatable): caps that model's max_batch by the "
        "half-SLO rule",
    )
    p.add_argument(
        "--slo-from-profile",
        action="store_true",
        help=f"a model with a --profile and no --slo-ms gets slo_ms = 2 x its profiled "
        f"latency at batch {PROFILE_SLO_BATCH}, rounded up to 10 ms (the rule is written "
        "beside it)",
    )


def parse_slos(values: list[str]) -> tuple[float | None, dict[str, float]]:
    """``--slo-ms`` values -> (the SLO for every model, per-model SLOs)."""
    every: float | None = None
    per: dict[str, float] = {}
    for value in values:
        name, _, ms = value.rpartition("=")
        try:
            slo = float(ms)
        except ValueError:
            raise ConfigError("--slo-ms", f"{value!r} is not MS or MODEL=MS") from None
        if not (math.isfinite(slo) and slo > 0):
            raise ConfigError("--slo-ms", f"{value!r}: the SLO must be > 0 ms")
        if name:
            per[name] = slo
        else:
            every = slo
    return every, per


def profile_slo(latency: LatencyModel) -> tuple[float, str]:
    """The ``--slo-from-profile`` SLO of a profiled model, and the rule as a comment."""
    batches = [int(b) for b, _ in latency.table]
    batch = max([b for b in batches if b <= PROFILE_SLO_BATCH] or [min(batches)])
    at = float(latency.batch_ms(batch))
    slo = float(max(10, math.ceil(2 * at / 10) * 10))
    return slo, (
        f"slo_ms from --slo-from-profile: 2 x {at:.1f} ms (profiled at batch {batch}), "
        "rounded up to 10 ms"
    )


def batch_note(lim: ModelLimits, latency: LatencyModel) -> str:
    """Why ``max_batch`` is what the profile rule left, when it left no batching."""
    if lim.max_batch > 1:
        return f"max_batch {lim.max_batch} by the half-SLO rule"
    two = float(latency.batch_ms(2))
    return (
        f"max_batch 1: the SLO is too tight to batch: a batch of 2 takes {two:.1f} ms by the "
        f"profile, more than half of slo_ms {lim.slo_ms:g}; slo_ms >= "
        f"{math.ceil(2 * two)} would allow it"
    )


def render(entries: list[tuple[ModelLimits, str]], default: ModelLimits | None, budget: int) -> str:
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
    if default is None:
        lines += [
            "# Models registered later are observed and logged, never changed; a `default:`",
            "# entry (same fields, with slo_ms) would control them.",
        ]
    else:
        lines += [
            "# Models registered later (or not listed above) get these limits; delete this",
            "# entry to leave such models alone (observed and logged, never changed).",
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

    every, per_model = parse_slos(args.slo_ms)
    profiles = dict(load_profile(p) for p in args.profile)
    client, _, registered = connect_checked(args)
    unknown = sorted(set(per_model) - set(registered))
    if unknown:
        raise ConfigError("--slo-ms", f"model(s) {', '.join(unknown)} not registered")
    states = {s.name: s for s in AdaptClient(client).models()}
    entries, missing = [], []
    for name in registered:
        s = states[name]
        latency = profiles.get(name)
        slo = per_model.get(name, every)
        notes = [
            f"now batch {s.batch_size}, delay {s.max_batch_delay_ms} ms, {s.min_workers} worker(s)"
        ]
        if slo is not None:
            notes.append("slo_ms from --slo-ms")
        elif latency is not None and args.slo_from_profile:
            slo, rule = profile_slo(latency)
            notes.append(rule)
        else:
            missing.append(name)
            continue
        lim = _limits(name, slo, s.batch_size, s.max_batch_delay_ms, s.min_workers)
        if latency is not None:
            lim = feasible(lim, latency)
            notes.append(batch_note(lim, latency))
        else:
            notes.append("max_batch not checked against a profile (pass --profile)")
        entries.append((lim, "; ".join(notes)))
    if missing:
        print(
            f"tsadapt control init: error: no SLO for {', '.join(missing)}: pass --slo-ms MS "
            "(every model) or --slo-ms MODEL=MS, or --profile FILE with --slo-from-profile",
            file=sys.stderr,
        )
        return EXIT_NO_SLO
    default = None if every is None else _limits("default", every, 1, 0, 1)
    budget = max(1, sum(lim.max_workers for lim, _ in entries))
    text = render(entries, default, budget)

    from_dict(yaml.safe_load(text))  # what we print must load
    sys.stdout.write(text)
    return 0
