"""Scenario files (YAML): parsing, validation and the :class:`Scenario` they describe
(whole-scenario runs with a fixed configuration: :mod:`tsadapt.policy.sim.static_run`).

Format::

    name: bursty                      # optional (default: file stem)
    duration_s: 180
    seed: 1
    devices:                          # optional; default: one "cpu" with budget.workers cores
      - {name: cpu, cores: 2}         # ``cores`` or ``capacity`` (see simulator docs);
                                      # optional cpu_scale (1): a machine this many times
                                      # slower than the profiles' (DeviceSpec)
    models:
      - name: image
        slo_ms: 200
        profile: {alpha_ms: 6, beta_ms: 10}   # or a CSV path (batch,latency_ms[,threads])
        min_workers: 1
        max_workers: 3
        max_batch: 32
        # optional: device, threads, queue_size (100), load_delay_s (1.0), exec_cv (0),
        # batch_overhead_ms (0: added to every batch's time from the profile: work of the
        # worker the profile does not see), overhead_ms (0: per-request time outside the
        # worker, see simulator docs) or overhead_quantiles_ms (a list: that time's
        # distribution, quantiles at k/n), host_cpu_ms (0: CPU each request costs the
        # device outside the workers, which competes with them)
    workload:                         # several entries for one model add up
      - {model: image, kind: bursty, base_rate: 40, spike_rate: 160, spike_s: 10, period_s: 60}
    budget: {workers: 6}

``calibration: PATH`` (optional) names a JSON file as ``tsadapt lab fidelity calibrate`` writes
it (``{"models": {NAME: {"batch_overhead_ms": ..., "exec_cv": ..., "overhead_quantiles_ms":
[...], "host_cpu_ms": ..., "load_delay_s": ...}}}``; ``load_delay_s`` is the worker start
delay ``tsadapt lab fidelity load-delay`` measured): it gives each model these (or
``overhead_ms``) unless the model sets them itself (a model's own ``overhead_ms`` or
``overhead_quantiles_ms`` replaces both).

``profile`` may also name a JSON file as ``tsadapt lab demo-models profile`` writes it
(``docs/results/model-profiles.json``: a list of ``{model, threads, batch_sizes, median_ms,
...}``): the entry of the same model name and thread count gives the latency table (the
measured medians, interpolated between batch sizes).

Relative paths (profiles, traces) are resolved against the scenario file's folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from tsadapt.policy.defaults import (
    DEFAULT_DEVICE,
    JOB_QUEUE_SIZE,
    LOAD_DELAY_S,
    MAX_BATCH_DELAY_MS,
    MAX_BATCH_LIMIT,
    WORKER_THREADS,
)
from tsadapt.policy.sim.simulator import Simulator
from tsadapt.policy.sim.specs import DeviceSpec, LatencyModel, ModelSpec
from tsadapt.policy.sim.workload_files import workload_from_dict
from tsadapt.policy.sim.workloads import Mix, Workload
from tsadapt.policy.types import ModelSettings
from tsadapt.profile import latency_of, read_profiles

__all__ = [
    "Budget",
    "ModelEntry",
    "Scenario",
    "WorkloadEntry",
    "load_scenario",
    "scenario_from_dict",
]


@dataclass(frozen=True, kw_only=True)
class ModelEntry(ModelSpec):
    """A model of the scenario: the simulator's :class:`ModelSpec` (latency profile,
    placement, queue, overheads) plus its SLO, limits and where its profile came from.
    Its own fields are keyword-only."""

    slo_ms: float
    min_workers: int
    max_workers: int
    max_batch: int
    profile_path: str | None = None
    batch_overhead_ms: float = 0.0  # already inside ``latency`` (kept for reports)

    def spec(self, config: ModelSettings) -> ModelSpec:
        """The simulator's :class:`ModelSpec` starting from ``config``."""
        base = {f.name: getattr(self, f.name) for f in fields(ModelSpec)}
        return ModelSpec(**{**base, "initial": config})


@dataclass(frozen=True)
class WorkloadEntry:
    model: str
    workload: Workload


@dataclass(frozen=True)
class Budget:
    workers: int


@dataclass(frozen=True)
class Scenario:
    name: str
    duration_s: float
    seed: int
    models: tuple[ModelEntry, ...]
    workload: tuple[WorkloadEntry, ...]
    budget: Budget
    devices: tuple[DeviceSpec, ...]
    path: str | None = None

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    def model(self, name: str) -> ModelEntry:
        for m in self.models:
            if m.name == name:
                return m
        raise ValueError(f"scenario {self.name!r} has no model {name!r}")

    def workload_for(self, model: str) -> Workload | None:
        """The model's workload (entries for the same model superposed), or None."""
        parts = tuple(w.workload for w in self.workload if w.model == model)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else Mix(parts)

    def on_slower_machine(self, cpu_scale: float) -> Scenario:
        """This scenario on a machine ``cpu_scale`` times slower than its profiles' (every
        device's ``cpu_scale`` multiplied; > 1 slower, < 1 faster); named ``NAME-cpuSCALE``."""
        if not (cpu_scale > 0 and math.isfinite(cpu_scale)):
            raise ValueError(f"cpu_scale must be a finite number > 0, got {cpu_scale!r}")
        devices = tuple(replace(d, cpu_scale=d.cpu_scale * cpu_scale) for d in self.devices)
        return replace(self, name=f"{self.name}-cpu{cpu_scale:g}", devices=devices)

    def default_config(self, model: str) -> ModelSettings:
        """TorchServe's defaults (batch 1, 100 ms) with ``min_workers`` (>= 1) workers."""
        m = self.model(model)
        return ModelSettings(1, MAX_BATCH_DELAY_MS, max(1, m.min_workers))

    def check_config(self, configs: Mapping[str, ModelSettings]) -> None:
        """ValueError unless every model has a config within its limits and the budget."""
        missing = [n for n in self.model_names if n not in configs]
        if missing:
            raise ValueError(f"config: missing model(s) {missing}")
        extra = sorted(set(configs) - set(self.model_names))
        if extra:
            raise ValueError(f"config: unknown model(s) {extra}")
        for m in self.models:
            c = configs[m.name]
            if c.batch_size > m.max_batch:
                raise ValueError(
                    f"config[{m.name}].batch_size must be <= max_batch ({m.max_batch}), "
                    f"got {c.batch_size}"
                )
            if not m.min_workers <= c.workers <= m.max_workers:
                raise ValueError(
                    f"config[{m.name}].workers must be in [{m.min_workers}, {m.max_workers}], "
                    f"got {c.workers}"
                )
        total = sum(c.workers for c in configs.values())
        if total > self.budget.workers:
            raise ValueError(
                f"config: {total} workers exceed budget.workers ({self.budget.workers})"
            )

    def simulator(
        self, configs: Mapping[str, ModelSettings], seed: int | None = None, replication: int = 0
    ) -> Simulator:
        """A fresh simulator of this scenario, workers of ``configs`` ready at t = 0
        (``replication``: see :meth:`Simulator.from_workloads`)."""
        specs = [m.spec(configs[m.name]) for m in self.models]
        workloads = {n: w for n in self.model_names if (w := self.workload_for(n)) is not None}
        seed = self.seed if seed is None else seed
        return Simulator.from_workloads(
            specs, workloads, self.duration_s, self.devices, seed, replication
        )


# --------------------------------------------------------------------------- parsing


def _num(where: str, v: Any, *, positive: bool = False, integer: bool = False) -> Any:
    ok = isinstance(v, int | float) and not isinstance(v, bool)
    if integer:
        ok = ok and float(v).is_integer()
    if not ok or not math.isfinite(float(v)):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{where} must be {kind}, got {v!r}")
    if positive and v <= 0:
        raise ValueError(f"{where} must be > 0, got {v!r}")
    if not positive and v < 0:
        raise ValueError(f"{where} must be >= 0, got {v!r}")
    return int(v) if integer else float(v)


def require_mapping(where: str, v: Any) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise ValueError(f"{where} must be a mapping, got {v!r}")
    return v


def _require(where: str, d: Mapping[str, Any], key: str) -> Any:
    if key not in d:
        raise ValueError(f"{where}.{key} is required")
    return d[key]


def reject_unknown(where: str, d: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise ValueError(f"{where}: unknown field {extra[0]!r} (allowed: {sorted(allowed)})")


_MODEL_KEYS = {
    "name", "slo_ms", "profile", "min_workers", "max_workers", "max_batch", "device",
    "threads", "queue_size", "load_delay_s", "exec_cv", "overhead_ms", "overhead_quantiles_ms",
    "batch_overhead_ms", "host_cpu_ms",
}  # fmt: skip
_TOP_KEYS = {
    "name", "duration_s", "seed", "models", "workload", "budget", "devices", "calibration",
}  # fmt: skip
#: Model keys a calibration file may give (see the module docstring).
_CALIBRATED_KEYS = (
    "batch_overhead_ms", "overhead_ms", "overhead_quantiles_ms", "exec_cv", "host_cpu_ms",
    "load_delay_s",
)  # fmt: skip
_OVERHEAD_KEYS = ("overhead_ms", "overhead_quantiles_ms")


def json_profile(path: str | Path, model: str, threads: int) -> LatencyModel:
    """The latency table of ``model`` at ``threads`` from a ``model-profiles.json`` file."""
    p = Path(path)
    entries = read_profiles(p)
    mine = [e for e in entries if isinstance(e, Mapping) and e.get("model") == model]
    if not mine:
        known = sorted(str(e.get("model")) for e in entries if isinstance(e, Mapping))
        raise ValueError(f"profile {p}: no entry for model {model!r} (has: {known})")
    match = [e for e in mine if int(e.get("threads", threads)) == threads]
    if not match:
        have = sorted({int(e["threads"]) for e in mine})
        raise ValueError(
            f"profile {p}: model {model!r} was measured at threads {have}, not {threads} "
            "(set the model's 'threads' to the profile's)"
        )
    return latency_of(match[0])


def with_batch_overhead(latency: LatencyModel, ms: float) -> LatencyModel:
    """``latency`` with ``ms`` more per batch (beta, or every point of a table)."""
    if ms == 0:
        return latency
    if latency.table is None:
        return LatencyModel(latency.alpha_ms, latency.beta_ms + ms)
    return LatencyModel(table=tuple((b, t + ms) for b, t in latency.table))


def _profile(
    where: str, v: Any, base: Path, threads: int, model: str = ""
) -> tuple[LatencyModel, str | None]:
    if isinstance(v, str):
        p = Path(v) if Path(v).is_absolute() else base / v
        if not p.is_file():
            raise ValueError(f"{where}: no such profile file {str(p)!r}")
        try:
            if p.suffix == ".json":
                return json_profile(p, model, threads), str(p)
            return LatencyModel.from_csv(p, threads=threads), str(p)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    d = require_mapping(where, v)
    reject_unknown(where, d, {"alpha_ms", "beta_ms"})
    alpha = _num(f"{where}.alpha_ms", _require(where, d, "alpha_ms"))
    beta = _num(f"{where}.beta_ms", _require(where, d, "beta_ms"))
    if alpha + beta <= 0:
        raise ValueError(f"{where}: alpha_ms and beta_ms must not both be 0")
    return LatencyModel(alpha, beta), None


def read_calibration(path: str | Path) -> dict[str, Mapping[str, Any]]:
    """The per-model entries of a calibration file (``ValueError`` if it is missing or bad)."""
    return _calibration(str(path), Path("."))


def _calibration(v: Any, base: Path) -> dict[str, Mapping[str, Any]]:
    """The per-model entries of a calibration file (see the module docstring)."""
    if not isinstance(v, str) or not v:
        raise ValueError(f"calibration must be a file path, got {v!r}")
    p = Path(v) if Path(v).is_absolute() else base / v
    if not p.is_file():
        raise ValueError(
            f"calibration: no such file {str(p)!r} (write it with 'tsadapt lab fidelity calibrate')"
        )
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"calibration {p}: invalid JSON: {exc}") from None
    models = require_mapping(
        f"calibration {p}: models", require_mapping(f"calibration {p}", raw).get("models")
    )
    return {str(k): require_mapping(f"calibration {p}: models.{k}", e) for k, e in models.items()}


def _model(
    i: int, d: Any, base: Path, calibration: Mapping[str, Mapping[str, Any]] | None = None
) -> ModelEntry:
    w = f"models[{i}]"
    d = require_mapping(w, d)
    reject_unknown(w, d, _MODEL_KEYS)
    name = _require(w, d, "name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{w}.name must be a non-empty string, got {name!r}")
    if calibration is not None:
        if name not in calibration:
            raise ValueError(f"{w}: the calibration file has no entry for model {name!r}")
        cal = {k: v for k, v in calibration[name].items() if k in _CALIBRATED_KEYS}
        if any(k in d for k in _OVERHEAD_KEYS):  # the model's own overhead wins, whole
            cal = {k: v for k, v in cal.items() if k not in _OVERHEAD_KEYS}
        d = {**cal, **d}
    threads = _num(f"{w}.threads", d.get("threads", WORKER_THREADS), positive=True, integer=True)
    latency, ppath = _profile(f"{w}.profile", _require(w, d, "profile"), base, threads, name)
    batch_overhead = _num(f"{w}.batch_overhead_ms", d.get("batch_overhead_ms", 0.0))
    latency = with_batch_overhead(latency, batch_overhead)
    mn = _num(f"{w}.min_workers", _require(w, d, "min_workers"), integer=True)
    mx = _num(f"{w}.max_workers", _require(w, d, "max_workers"), positive=True, integer=True)
    if mx < mn:
        raise ValueError(f"{w}.max_workers must be >= min_workers ({mn}), got {mx}")
    mb = _num(f"{w}.max_batch", _require(w, d, "max_batch"), positive=True, integer=True)
    if mb > MAX_BATCH_LIMIT:
        raise ValueError(f"{w}.max_batch must be <= {MAX_BATCH_LIMIT}, got {mb}")
    device = d.get("device", DEFAULT_DEVICE)
    if not isinstance(device, str) or not device:
        raise ValueError(f"{w}.device must be a non-empty string, got {device!r}")
    return ModelEntry(
        name=name,
        slo_ms=_num(f"{w}.slo_ms", _require(w, d, "slo_ms"), positive=True),
        latency=latency,
        min_workers=mn,
        max_workers=mx,
        max_batch=mb,
        device=device,
        threads=threads,
        queue_size=_num(f"{w}.queue_size", d.get("queue_size", JOB_QUEUE_SIZE), integer=True),
        load_delay_s=_num(f"{w}.load_delay_s", d.get("load_delay_s", LOAD_DELAY_S)),
        exec_cv=_num(f"{w}.exec_cv", d.get("exec_cv", 0.0)),
        profile_path=ppath,
        overhead_ms=_num(f"{w}.overhead_ms", d.get("overhead_ms", 0.0)),
        overhead_quantiles_ms=_quantiles(f"{w}.overhead_quantiles_ms", d),
        batch_overhead_ms=batch_overhead,
        host_cpu_ms=_num(f"{w}.host_cpu_ms", d.get("host_cpu_ms", 0.0)),
    )


def _quantiles(where: str, d: Mapping[str, Any]) -> tuple[float, ...] | None:
    v = d.get("overhead_quantiles_ms")
    if v is None:
        return None
    if not isinstance(v, list) or len(v) < 2:
        raise ValueError(f"{where} must be a list of at least 2 numbers, got {v!r}")
    q = tuple(_num(f"{where}[{k}]", x) for k, x in enumerate(v))
    if any(b < a for a, b in zip(q, q[1:], strict=False)):
        raise ValueError(f"{where} must not decrease")
    if "overhead_ms" in d:
        raise ValueError(f"{where}: give overhead_ms or overhead_quantiles_ms, not both")
    return q


def _device(i: int, d: Any) -> DeviceSpec:
    w = f"devices[{i}]"
    d = require_mapping(w, d)
    reject_unknown(w, d, {"name", "cores", "capacity", "cpu_scale"})
    name = _require(w, d, "name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{w}.name must be a non-empty string, got {name!r}")
    if ("cores" in d) == ("capacity" in d):
        raise ValueError(f"{w}: give exactly one of 'cores' or 'capacity'")
    key = "cores" if "cores" in d else "capacity"
    scale = _num(f"{w}.cpu_scale", d.get("cpu_scale", 1.0), positive=True)
    return DeviceSpec(name, _num(f"{w}.{key}", d[key], positive=True), cpu_scale=scale)


def scenario_from_dict(d: Any, base_dir: str | Path = ".", name: str = "scenario") -> Scenario:
    """Validate a parsed scenario; ``ValueError`` names the offending field."""
    d = require_mapping("scenario", d)
    reject_unknown("scenario", d, _TOP_KEYS)
    base = Path(base_dir)
    duration = _num("duration_s", _require("scenario", d, "duration_s"), positive=True)
    seed = _num("seed", d.get("seed", 0), integer=True)
    models_raw = _require("scenario", d, "models")
    if not isinstance(models_raw, list) or not models_raw:
        raise ValueError("models must be a non-empty list")
    calibration = _calibration(d["calibration"], base) if "calibration" in d else None
    models = tuple(_model(i, m, base, calibration) for i, m in enumerate(models_raw))
    names = [m.name for m in models]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ValueError(f"models[{i}].name {n!r} is a duplicate")
    budget_raw = require_mapping("budget", _require("scenario", d, "budget"))
    reject_unknown("budget", budget_raw, {"workers"})
    budget = Budget(
        _num(
            "budget.workers", _require("budget", budget_raw, "workers"), positive=True, integer=True
        )
    )
    need = sum(max(1, m.min_workers) for m in models)
    if need > budget.workers:
        raise ValueError(
            f"budget.workers ({budget.workers}) is below the models' minimum workers ({need})"
        )
    wl_raw = _require("scenario", d, "workload")
    if not isinstance(wl_raw, list) or not wl_raw:
        raise ValueError("workload must be a non-empty list")
    entries = []
    for i, w in enumerate(wl_raw):
        w = require_mapping(f"workload[{i}]", w)
        model = _require(f"workload[{i}]", w, "model")
        if model not in names:
            raise ValueError(f"workload[{i}].model {model!r} is not one of {names}")
        params = {k: v for k, v in w.items() if k != "model"}
        try:
            wl = workload_from_dict(params, base_dir=base)
        except ValueError as exc:
            raise ValueError(f"workload[{i}]: {exc}") from None
        entries.append(WorkloadEntry(model, wl))
    if "devices" in d:
        if not isinstance(d["devices"], list) or not d["devices"]:
            raise ValueError("devices must be a non-empty list")
        devices = tuple(_device(i, x) for i, x in enumerate(d["devices"]))
        dnames = [x.name for x in devices]
        for i, m in enumerate(models):
            if m.device not in dnames:
                raise ValueError(f"models[{i}].device {m.device!r} is not one of {dnames}")
    else:
        devs = sorted({m.device for m in models})
        devices = tuple(DeviceSpec(n, float(budget.workers)) for n in devs)
    sname = d.get("name", name)
    if not isinstance(sname, str):
        raise ValueError(f"name must be a string, got {sname!r}")
    return Scenario(sname, duration, seed, models, tuple(entries), budget, devices)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{p}: invalid YAML: {exc}") from None
    sc = scenario_from_dict(raw, base_dir=p.parent, name=p.stem)
    return Scenario(
        sc.name, sc.duration_s, sc.seed, sc.models, sc.workload, sc.budget, sc.devices, str(p)
    )
