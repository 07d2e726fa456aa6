"""A synthetic heterogeneous catalogue of GPU models, Zipf popularity and phase-shifted loads.

Why synthetic: the demo models are handler/CPU-bound on a GPU (``tsadapt lab gpu-check`` saw ~3 %
GPU utilisation on an H200), so their GPU profiles say little about GPU packing. The catalogue
scales *published* GPU batch-latency tables instead: TensorRT 4 ResNet-50 on an NVIDIA V100
(CUDA 9, cuDNN 7), FP32, FP16 (tensor cores) and INT8, from the public benchmark "TensorRT
Performance on NVIDIA Volta V100 GPU" (gist.github.com/1duo, efd3be1dc8eb2c45863b75f20a76f8b2).
Model ``i`` takes one of these tables times a size factor (log-uniform in
:data:`SIZE_RANGE`: heavier networks than ResNet-50), an SLO from its profile, and a rate from
its Zipf share of the fleet's capacity. Everything is drawn from one seed.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsadapt.fleet.constants import (
    BURST_BASE,
    BURST_PERIOD_S,
    BURST_SPIKE,
    BURST_SPIKE_S,
    DIURNAL_RANGE,
    FLEET_MAX_BATCH,
    MEAN_LOAD_SHARE,
    WORKER_BASE_GIB,
    ZIPF_S,
)
from tsadapt.policy.sim.control import slo_feasible_batch
from tsadapt.policy.sim.specs import LatencyModel
from tsadapt.policy.sim.workloads import Bursty, Diurnal, Workload

#: Published batch latencies (ms) of ResNet-50 under TensorRT 4 on a V100 (see module docs).
PUBLISHED_TABLES: dict[str, tuple[tuple[int, float], ...]] = {
    "resnet50-trt-fp32": (
        (1, 2.677), (2, 4.083), (4, 6.082), (8, 8.276), (16, 13.054), (32, 23.133),
        (64, 42.533), (128, 80.563),
    ),
    "resnet50-trt-fp16": (
        (1, 2.078), (2, 2.651), (4, 2.837), (8, 3.294), (16, 4.351), (32, 6.589),
        (64, 11.562), (128, 21.269),
    ),
    "resnet50-trt-int8": (
        (1, 1.223), (2, 1.715), (4, 2.450), (8, 2.908), (16, 4.264), (32, 6.785),
        (40, 8.219),
    ),
}  # fmt: skip
#: Size factors of the synthetic models relative to ResNet-50 (log-uniform).
SIZE_RANGE = (4.0, 40.0)
#: Weights (GiB) per unit of size factor (ResNet-50 FP32 weights are ~0.1 GB).
WEIGHTS_GIB_PER_SIZE = 0.1
#: The SLO is ``2 x latency(b)`` times a slack in this range, ``b`` one of SLO_BATCHES.
SLO_SLACK = (1.5, 3.0)
SLO_BATCHES = (8, 16, 32)
MIXES = ("diurnal", "bursty")
#: The label of a catalogue built from :data:`PUBLISHED_TABLES`.
PUBLISHED = "published"


def measured_tables(path: Path) -> dict[str, tuple[tuple[int, float], ...]]:
    """Batch latency tables from ``tsadapt lab gpu-check``'s ``gpu-profiles.json`` (median ms per
    batch size, one table per profiled model), named ``gpu-check-<model>``."""
    try:
        rows = json.loads(Path(path).read_text())
        out = {
            f"gpu-check-{r['model']}": tuple(
                (int(b), float(ms)) for b, ms in zip(r["batch_sizes"], r["median_ms"], strict=True)
            )
            for r in rows
        }
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"--profiles {path}: expected gpu-check's gpu-profiles.json (a list of "
            f"{{model, batch_sizes, median_ms}}): {e}"
        ) from None
    if not out or any(not t or any(ms <= 0 or b < 1 for b, ms in t) for t in out.values()):
        raise ValueError(f"--profiles {path}: every profile needs batch sizes >= 1 and times > 0")
    return out


@dataclass(frozen=True)
class FleetModel:
    """One served model of the fleet: profile, SLO, memory, limit and load."""

    name: str
    family: str
    latency: LatencyModel
    slo_ms: float
    memory_gib: float
    max_batch: int
    mean_rate: float
    workload: Workload

    @functools.cached_property
    def _ms(self) -> tuple[float, ...]:
        """Batch latency (ms) for b = 0..FLEET_MAX_BATCH (index 0 repeats b = 1)."""
        b = np.maximum(np.arange(FLEET_MAX_BATCH + 1), 1)
        return tuple(float(x) for x in self.latency.batch_ms(b))

    def batch_ms(self, b: int) -> float:
        if 0 < b <= FLEET_MAX_BATCH and b == int(b):
            return self._ms[int(b)]
        return float(self.latency.batch_ms(b))

    def throughput(self, b: int) -> float:
        """Requests/s of one worker alone on a GPU running batches of ``b`` back to back."""
        return 1000.0 * b / self.batch_ms(b)


@dataclass(frozen=True)
class Catalogue:
    models: tuple[FleetModel, ...]
    gpus: int
    mix: str
    horizon_s: float
    seed: int
    #: where the latency tables come from: :data:`PUBLISHED`, or the profiles file
    tables: str = PUBLISHED

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    @functools.cached_property
    def latency_table(self) -> np.ndarray:
        """``[model, b]``: batch latency (ms) for b = 0..FLEET_MAX_BATCH (b = 0 repeats 1)."""
        return np.array([m._ms for m in self.models])


def zipf_shares(n: int, s: float = ZIPF_S) -> np.ndarray:
    """Popularity of ranks 1..n under Zipf(``s``), summing to 1."""
    if n < 1:
        raise ValueError(f"models must be >= 1, got {n}")
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def _workload(mix: str, mean: float, phase: float, horizon_s: float) -> Workload:
    if mix == "diurnal":
        lo, hi = DIURNAL_RANGE
        return Diurnal(lo * mean, hi * mean, horizon_s, phase * horizon_s)
    if mix == "bursty":
        return Bursty(
            BURST_BASE * mean, BURST_SPIKE * mean, BURST_SPIKE_S, BURST_PERIOD_S,
            phase * BURST_PERIOD_S,
        )  # fmt: skip
    raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")


def build_catalogue(
    gpus: int,
    models: int,
    mix: str,
    horizon_s: float,
    seed: int = 0,
    load: float = MEAN_LOAD_SHARE,
    profiles: Path | None = None,
) -> Catalogue:
    """``models`` synthetic models whose mean load is ``load`` of ``gpus`` GPUs (Zipf shares,
    each at its SLO batch), with ``mix`` arrivals whose peaks are phase-shifted per model.
    Latencies: the published tables scaled by a size factor, or, with ``profiles`` (a
    ``gpu-check`` profiles file), the measured tables as they are (size factor 1)."""
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    if not horizon_s > 0:
        raise ValueError(f"horizon_s must be > 0, got {horizon_s}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, gpus, models]))
    shares = zipf_shares(models)
    tables = PUBLISHED_TABLES if profiles is None else measured_tables(profiles)
    families = sorted(tables)
    out = []
    for i in range(models):
        fam = families[int(rng.integers(len(families)))]
        size = math.exp(rng.uniform(*np.log(SIZE_RANGE)))
        size = size if profiles is None else 1.0
        lat = LatencyModel(table=tuple((b, ms * size) for b, ms in tables[fam]))
        b_slo = int(SLO_BATCHES[int(rng.integers(len(SLO_BATCHES)))])
        slo = round(2.0 * float(lat.batch_ms(b_slo)) * rng.uniform(*SLO_SLACK), 1)
        max_b = slo_feasible_batch(lat, slo, FLEET_MAX_BATCH)
        thr = 1000.0 * max_b / float(lat.batch_ms(max_b))
        mean = load * gpus * float(shares[i]) * thr
        phase = float(rng.random())
        out.append(
            FleetModel(
                name=f"m{i:03d}",
                family=fam,
                latency=lat,
                slo_ms=slo,
                memory_gib=round(WORKER_BASE_GIB + WEIGHTS_GIB_PER_SIZE * size, 2),
                max_batch=max_b,
                mean_rate=mean,
                workload=_workload(mix, mean, phase, horizon_s),
            )
        )
    label = PUBLISHED if profiles is None else Path(profiles).name
    return Catalogue(tuple(out), gpus, mix, float(horizon_s), seed, label)
