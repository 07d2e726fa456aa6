"""The controller's typed configuration (``configs/controller.yaml``), loaded and validated once.

Every error names the offending field (``models.tabular.max_workers: ...``) so a bad file is
rejected at start, before the sidecar touches the server.

``models:`` names the models to control (any name: they are checked against the live server,
not a catalog); an optional ``default:`` entry (same fields) gives limits and an SLO to every
registered model the file does not name. :meth:`ControllerConfig.for_models` turns the file's
config into the one for the models registered right now.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

#: Policies the sidecar can run (built by :func:`tsadapt.policy.factory.make_policy`).
POLICY_NAMES = ("static", "aimd", "queue", "ppo")
DEFAULT_TICK_S = 1.0
DEFAULT_WINDOW_S = 5.0
DEFAULT_COOLDOWN_S = 3.0
#: Ten cooldowns: a policy caught in a two-value cycle moves once per this long, not per cooldown.
DEFAULT_FLIP_HOLD_S = 30.0
#: Largest batch TorchServe is asked to form (the plugin accepts any positive int).
BATCH_SIZE_LIMIT = 1024
#: Largest max batch delay (ms) a config may allow.
DELAY_LIMIT_MS = 10_000
#: The ``name`` of a ``default:`` entry's limits (never a model's name).
DEFAULT_ENTRY = "default"


class ConfigError(ValueError):
    """The controller config is invalid; the message starts with the field's path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True)
class ModelLimits:
    """One model's SLO and the bounds every action on it must respect."""

    name: str
    slo_ms: float
    min_workers: int = 1
    max_workers: int = 2
    min_batch: int = 1
    max_batch: int = 32
    max_delay_ms: int = 50
    memory_mb_per_worker: float = 0.0
    gpu_memory_mb_per_worker: float = 0.0  # what one more worker takes on its GPU

    @property
    def slo_s(self) -> float:
        return self.slo_ms / 1000.0


@dataclass(frozen=True)
class AimdParams:
    """Clipper-style AIMD on batch size, driven by end-to-end p99 and the batch fill rate."""

    additive_step: int = 2
    decrease_factor: float = 0.75
    headroom: float = 0.8  # probe upwards only while p99 < headroom * SLO
    fill_high: float = 0.75  # batches this full mean the batch (or capacity) is the limit
    fill_low: float = 0.3  # batches this empty mean the batch size is larger than needed


@dataclass(frozen=True)
class QueueParams:
    """Ray-Serve-style: workers from ongoing requests, batch from arrival rate x SLO budget."""

    target_ongoing_per_worker: float = 8.0
    batch_wait_fraction: float = 0.25  # share of the SLO a request may wait for its batch
    ewma_alpha: float = 0.5
    #: Seconds fewer workers must be wanted before the count goes down (Ray Serve's
    #: downscale_delay_s). Replaces ``downscale_delay_ticks`` (see :func:`queue_params`).
    downscale_delay_s: float = 5.0


@dataclass(frozen=True)
class ControllerConfig:
    """Sidecar settings, guard limits and policy parameters."""

    models: tuple[ModelLimits, ...]
    worker_budget: int
    policy: str = "aimd"
    tick_s: float = DEFAULT_TICK_S
    window_s: float = DEFAULT_WINDOW_S
    memory_budget_mb: float | None = None
    #: GPU memory (MiB) every GPU keeps free: a worker is added only while the fullest GPU,
    #: as NVML reads it, has room for it beyond this (None: no GPU memory guard).
    gpu_memory_reserve_mb: float | None = None
    cooldown_s: float = DEFAULT_COOLDOWN_S
    max_batch_step: int = 8
    max_delay_step_ms: int = 20
    max_worker_step: int = 1
    emergency_attainment: float = 0.5
    emergency_min_requests: int = 10
    emergency_delay_ms: int = 0
    #: Hysteresis: a model leaves the emergency state only after its condition has been clear
    #: for this many consecutive ticks (and attainment is back to ``emergency_exit_attainment``);
    #: until then the policy may not raise the delay above ``emergency_delay_ms`` nor remove
    #: workers. 0: leave as soon as the condition clears (no hysteresis).
    emergency_exit_ticks: int = 5
    #: SLO attainment (over >= ``emergency_min_requests``) a model must be back to before it
    #: leaves the emergency state; above ``emergency_attainment``.
    emergency_exit_attainment: float = 0.9
    #: A setting that went a -> b -> a may not go back to b within this long of its last
    #: change (the flip-flop guard, ``policy/flip_guard.py``). 0: no such guard.
    flip_hold_s: float = DEFAULT_FLIP_HOLD_S
    retries: int = 2
    retry_backoff_s: float = 0.2
    aimd: AimdParams = field(default_factory=AimdParams)
    queue: QueueParams = field(default_factory=QueueParams)
    #: Limits for registered models ``models`` does not name (None: leave them alone).
    default: ModelLimits | None = None

    def __post_init__(self) -> None:
        validate(self)

    def for_models(self, registered: Iterable[str]) -> tuple[ControllerConfig, dict[str, str]]:
        """The config for the models registered now, and why each other model is left alone.

        Configured models that are registered keep their limits; the others get ``default``
        (in name order, while the worker budget still covers their ``min_workers``).
        Configured models that are not registered are simply absent.
        """
        live = sorted(set(registered))
        models = [m for m in self.models if m.name in live]
        used = sum(m.min_workers for m in models)
        left: dict[str, str] = {}
        for name in live:
            if name in self.model_names:
                continue
            if self.default is None:
                left[name] = "not in the controller config (no default: entry)"
            elif used + self.default.min_workers > self.worker_budget:
                left[name] = f"worker_budget {self.worker_budget} has no room for its min_workers"
            else:
                models.append(replace(self.default, name=name))
                used += self.default.min_workers
        return replace(self, models=tuple(models)), left

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    def limits(self, name: str) -> ModelLimits:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"model '{name}' is not in the controller config")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(ok: bool, path: str, message: str) -> None:
    if not ok:
        raise ConfigError(path, message)


def _positive(value: float, path: str) -> None:
    _check(
        isinstance(value, int | float) and math.isfinite(value) and value > 0,
        path,
        f"must be > 0, got {value!r}",
    )


def _fraction(value: float, path: str) -> None:
    _check(
        isinstance(value, int | float) and 0 < value <= 1, path, f"must be in (0, 1], got {value!r}"
    )


def _validate_limits(m: ModelLimits, p: str) -> None:
    _positive(m.slo_ms, f"{p}.slo_ms")
    _check(m.min_workers >= 1, f"{p}.min_workers", f"must be >= 1, got {m.min_workers}")
    _check(
        m.max_workers >= m.min_workers,
        f"{p}.max_workers",
        f"must be >= min_workers ({m.min_workers}), got {m.max_workers}",
    )
    _check(m.min_batch >= 1, f"{p}.min_batch", f"must be >= 1, got {m.min_batch}")
    _check(
        m.max_batch >= m.min_batch,
        f"{p}.max_batch",
        f"must be >= min_batch ({m.min_batch}), got {m.max_batch}",
    )
    _check(m.max_batch <= BATCH_SIZE_LIMIT, f"{p}.max_batch", f"must be <= {BATCH_SIZE_LIMIT}")
    _check(
        0 <= m.max_delay_ms <= DELAY_LIMIT_MS,
        f"{p}.max_delay_ms",
        f"must be in [0, {DELAY_LIMIT_MS}], got {m.max_delay_ms}",
    )
    _check(
        m.max_delay_ms < m.slo_ms,
        f"{p}.max_delay_ms",
        f"must be below slo_ms ({m.slo_ms}): a request could wait its whole SLO",
    )
    _check(m.memory_mb_per_worker >= 0, f"{p}.memory_mb_per_worker", "must be >= 0")
    _check(m.gpu_memory_mb_per_worker >= 0, f"{p}.gpu_memory_mb_per_worker", "must be >= 0")


def validate(config: ControllerConfig) -> None:
    """Raise :class:`ConfigError` naming the first bad field.

    A config with no models is valid only with a ``default:`` entry, or as the live config of
    a server none of whose models is controlled (:meth:`ControllerConfig.for_models`).
    """
    _check(
        config.policy in POLICY_NAMES,
        "policy",
        f"unknown policy {config.policy!r}; known: {', '.join(POLICY_NAMES)}",
    )
    for name in ("tick_s", "window_s", "retry_backoff_s"):
        _positive(getattr(config, name), name)
    _check(config.window_s >= config.tick_s, "window_s", "must be >= tick_s")
    _check(config.cooldown_s >= 0, "cooldown_s", f"must be >= 0, got {config.cooldown_s}")
    _check(config.flip_hold_s >= 0, "flip_hold_s", f"must be >= 0, got {config.flip_hold_s}")
    for name in ("max_batch_step", "max_delay_step_ms", "max_worker_step", "worker_budget"):
        value = getattr(config, name)
        _check(isinstance(value, int) and value >= 1, name, f"must be an int >= 1, got {value!r}")
    _check(config.retries >= 0, "retries", "must be >= 0")
    _check(config.emergency_min_requests >= 1, "emergency_min_requests", "must be >= 1")
    _check(0 <= config.emergency_attainment <= 1, "emergency_attainment", "must be in [0, 1]")
    _check(config.emergency_delay_ms >= 0, "emergency_delay_ms", "must be >= 0")
    _check(
        isinstance(config.emergency_exit_ticks, int) and config.emergency_exit_ticks >= 0,
        "emergency_exit_ticks",
        f"must be an int >= 0, got {config.emergency_exit_ticks!r}",
    )
    _check(
        config.emergency_attainment <= config.emergency_exit_attainment <= 1,
        "emergency_exit_attainment",
        f"must be in [emergency_attainment ({config.emergency_attainment}), 1], "
        f"got {config.emergency_exit_attainment!r}",
    )
    if config.memory_budget_mb is not None:
        _positive(config.memory_budget_mb, "memory_budget_mb")
    if config.gpu_memory_reserve_mb is not None:
        _check(config.gpu_memory_reserve_mb >= 0, "gpu_memory_reserve_mb", "must be >= 0")
    seen: set[str] = set()
    for m in config.models:
        p = f"models.{m.name}"
        _check(m.name not in seen, p, "listed twice")
        seen.add(m.name)
        _validate_limits(m, p)
    if config.default is not None:
        _validate_limits(config.default, DEFAULT_ENTRY)
    minimum = sum(m.min_workers for m in config.models)
    _check(
        minimum <= config.worker_budget,
        "worker_budget",
        f"{config.worker_budget} is below the sum of min_workers ({minimum})",
    )
    if config.memory_budget_mb is not None:
        need = sum(m.min_workers * m.memory_mb_per_worker for m in config.models)
        _check(
            need <= config.memory_budget_mb,
            "memory_budget_mb",
            f"{config.memory_budget_mb} is below what min_workers need ({need})",
        )
    a, q = config.aimd, config.queue
    _check(
        isinstance(a.additive_step, int) and a.additive_step >= 1,
        "aimd.additive_step",
        "must be an int >= 1",
    )
    _check(0 < a.decrease_factor < 1, "aimd.decrease_factor", "must be in (0, 1)")
    _fraction(a.headroom, "aimd.headroom")
    _fraction(a.fill_high, "aimd.fill_high")
    _check(0 <= a.fill_low < a.fill_high, "aimd.fill_low", "must be in [0, fill_high)")
    _positive(q.target_ongoing_per_worker, "queue.target_ongoing_per_worker")
    _fraction(q.batch_wait_fraction, "queue.batch_wait_fraction")
    _fraction(q.ewma_alpha, "queue.ewma_alpha")
    _check(q.downscale_delay_s >= 0, "queue.downscale_delay_s", "must be >= 0 (seconds)")


def _build(cls: type, data: Any, path: str) -> Any:
    """``cls(**data)`` with unknown keys and wrong shapes reported by path."""
    if not isinstance(data, Mapping):
        raise ConfigError(path or "<root>", f"must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(where, f"unknown field; known: {', '.join(sorted(known))}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(path or "<root>", str(exc)) from None


#: The tick-based key ``queue.downscale_delay_s`` replaced (every time setting is in seconds).
OLD_DOWNSCALE_KEY = "downscale_delay_ticks"


def queue_params(data: Mapping[str, Any], tick_s: Any) -> dict[str, Any]:
    """``queue:`` with the old ``downscale_delay_ticks: N`` converted to
    ``downscale_delay_s: N x tick_s`` (a warning names the new key); both at once is an error."""
    out = dict(data)
    if OLD_DOWNSCALE_KEY not in out:
        return out
    if "downscale_delay_s" in out:
        raise ConfigError(
            f"queue.{OLD_DOWNSCALE_KEY}",
            "give downscale_delay_s (seconds) only; downscale_delay_ticks is its old form",
        )
    ticks = out.pop(OLD_DOWNSCALE_KEY)
    _check(
        isinstance(ticks, int) and not isinstance(ticks, bool) and ticks >= 0,
        f"queue.{OLD_DOWNSCALE_KEY}",
        f"must be an integer >= 0, got {ticks!r}",
    )
    _check(
        isinstance(tick_s, (int, float)) and tick_s > 0, "tick_s", f"must be > 0, got {tick_s!r}"
    )
    out["downscale_delay_s"] = ticks * float(tick_s)
    logger.warning(
        "queue.%s: %d ticks read as downscale_delay_s: %g (seconds); write that instead",
        OLD_DOWNSCALE_KEY, ticks, out["downscale_delay_s"],
    )  # fmt: skip
    return out


def _limits(name: str, spec: Any, path: str) -> ModelLimits:
    _check(
        isinstance(spec, Mapping) and "slo_ms" in spec,
        f"{path}.slo_ms",
        "is required (state it here, or pass the scenario that states it)",
    )
    if "name" in spec:
        raise ConfigError(f"{path}.name", "give the name as the key only")
    return _build(ModelLimits, {"name": name, **spec}, path)


def from_dict(
    data: Mapping[str, Any], known_models: Iterable[str] | None = None
) -> ControllerConfig:
    """Build and validate a config; with ``known_models`` (e.g. the models a server has
    registered) only those names are accepted, otherwise any name is."""
    if not isinstance(data, Mapping):
        raise ConfigError("<root>", "the config must be a YAML mapping")
    body = dict(data)
    raw_models = body.pop("models", None)
    raw_default = body.pop(DEFAULT_ENTRY, None)
    if raw_models is None and raw_default is not None:
        raw_models = {}
    if not isinstance(raw_models, Mapping) or not (raw_models or raw_default is not None):
        raise ConfigError(
            "models", "must map model name -> {slo_ms: ..., ...} (or give a default: entry)"
        )
    known = set(known_models) if known_models is not None else None
    models = []
    for name, spec in raw_models.items():
        path = f"models.{name}"
        _check(
            known is None or name in known,
            path,
            f"unknown model; known: {', '.join(sorted(known or ()))}",
        )
        _check(name != DEFAULT_ENTRY, path, "'default' is reserved: use a top-level default:")
        models.append(_limits(str(name), spec, path))
    if raw_default is not None:
        body[DEFAULT_ENTRY] = _limits(DEFAULT_ENTRY, raw_default, DEFAULT_ENTRY)
    if isinstance(body.get("queue"), Mapping):
        body["queue"] = queue_params(body["queue"], body.get("tick_s", DEFAULT_TICK_S))
    for key, cls in (("aimd", AimdParams), ("queue", QueueParams)):
        if key in body:
            body[key] = _build(cls, body[key] or {}, key)
    _check("worker_budget" in body, "worker_budget", "is required")
    return _build(ControllerConfig, {"models": tuple(models), **body}, "")


def with_slos(data: Mapping[str, Any], slos: Mapping[str, float], source: str) -> dict[str, Any]:
    """``data`` for the models of ``slos`` (stated in ``source``, e.g. a scenario file, the one
    place that states them), each entry's ``slo_ms`` taken from there; entries for other
    models are left out. An entry that states its own SLO for such a model is an error, so
    no SLO is ever written twice or overridden."""
    out = dict(data)
    models = out.get("models")
    if not isinstance(models, Mapping):
        return out
    merged = {}
    for name, spec in models.items():
        if name not in slos:
            continue
        if isinstance(spec, Mapping):
            _check(
                "slo_ms" not in spec,
                f"models.{name}.slo_ms",
                f"also stated in {source}; state each SLO once (remove it here)",
            )
            spec = {**spec, "slo_ms": float(slos[name])}
        merged[name] = spec
    out["models"] = merged
    return out


def load(
    path: Path,
    policy: str | None = None,
    slos: Mapping[str, float] | None = None,
    slo_source: str = "the scenario",
    **overrides: Any,
) -> ControllerConfig:
    """Read ``path``; ``policy`` and ``overrides`` (non-None values) replace file values;
    ``slos`` are the models' SLOs as ``slo_source`` states them (:func:`with_slos`)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(str(path), "no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError("<root>", "the config must be a YAML mapping")
    data = dict(data)
    if policy is not None:
        data["policy"] = policy
    data.update({k: v for k, v in overrides.items() if v is not None})
    if slos:
        data = with_slos(data, slos, slo_source)
    return from_dict(data)
