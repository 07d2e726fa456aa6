"""The parallel flag's slow-down, fitted from ``tsadapt lab gpu-check``'s co-location runs.

Measured on one H200 through a real TorchServe (closed loop, 32 requests in flight):
``image x1`` 135.0 req/s, ``x2`` 180.6 req/s, ``x4`` 159.9 req/s. With ``k`` workers of one
model running together, relative throughput ``T(k) = thr(k) / thr(1)``, so each of the ``k``
concurrent batches takes ``f(k) = k / T(k)`` times as long as alone. The slow-down model is
the quadratic ``f(k) = 1 + a (k - 1) + b (k - 1)^2`` through the measured points (least squares;
exact with the two points we have): two parallel workers give 1.34x one worker, four 1.18x.

Caveat (stated in the report): the demo models are handler/CPU-bound on an H200 (GPU
utilisation was ~3 %), so this curve measures co-location on one GPU *host* (pre-processing,
the Python workers, the GPU) rather than kernel-level interference of GPU-bound models; it is
the only co-location measurement we have, and the fleet sweep uses it as the parallel cost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tsadapt.fleet.constants import SLOTS_PER_GPU

#: The committed co-location measurements: the GPU check's report, from the repository root.
COLOCATION_FILE = Path("docs/results/gpu.json")
#: The fit of the committed measurements (tests/test_fleet_interference.py re-fits the file).
FIT_A, FIT_B = 0.3468, 0.1484


def throughputs(cases: Sequence[Mapping]) -> dict[int, float]:
    """``{workers: req/s}`` of the single-model cases (``"image xN"``) of a co-location run."""
    out = {}
    for c in cases:
        setting = str(c.get("setting", ""))
        if " x" in setting and "+" not in setting:
            out[int(c["workers"])] = float(c["throughput_rps"])
    if 1 not in out or len(out) < 2:
        raise ValueError("colocation.cases: need the 1-worker case and at least one more")
    return out


def fit(thr: Mapping[int, float]) -> tuple[float, float]:
    """``(a, b)`` of ``f(k) = 1 + a (k-1) + b (k-1)^2`` from ``{k: throughput}``."""
    ks = np.array([k for k in sorted(thr) if k > 1], dtype=np.float64)
    f = ks / (np.array([thr[int(k)] for k in ks]) / thr[1])
    x = np.stack([ks - 1, (ks - 1) ** 2], axis=1)
    (a, b), *_ = np.linalg.lstsq(x, f - 1.0, rcond=None)
    return float(a), float(b)


def fit_file(path: Path = COLOCATION_FILE) -> tuple[float, float]:
    """The fit of a ``gpu-check`` raw file (``parts.colocation.cases``)."""
    data = json.loads(Path(path).read_text())
    return fit(throughputs(data["parts"]["colocation"]["cases"]))


def slowdown_table(a: float = FIT_A, b: float = FIT_B, n: int = SLOTS_PER_GPU) -> tuple[float, ...]:
    """``f(1..n)``: the ``DeviceSpec.interference`` of a fleet GPU."""
    return tuple(1.0 + a * (k - 1) + b * (k - 1) ** 2 for k in range(1, n + 1))
