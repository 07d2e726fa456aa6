"""Fit batch latency to seed 000's Eq. 1, latency(b) = alpha * b + beta."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LinearFit:
    """latency_ms(b) = alpha_ms * b + beta_ms, with the coefficient of determination."""

    alpha_ms: float
    beta_ms: float
    r2: float

    def predict(self, batch: np.ndarray | float) -> np.ndarray | float:
        return self.alpha_ms * np.asarray(batch) + self.beta_ms


def fit_linear(batch_sizes: np.ndarray, latencies_ms: np.ndarray) -> LinearFit:
    """Least-squares fit over the raw points; R^2 = 1 - SS_res / SS_tot."""
    b = np.asarray(batch_sizes, dtype=float)
    y = np.asarray(latencies_ms, dtype=float)
    if b.shape != y.shape or b.size < 2 or np.ptp(b) == 0:
        raise ValueError("need at least two distinct batch sizes with one latency each")
    alpha, beta = np.polyfit(b, y, 1)
    residual = float(((y - (alpha * b + beta)) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - residual / total if total > 0 else 1.0
    return LinearFit(float(alpha), float(beta), r2)
