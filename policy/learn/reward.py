"""DNN-Adapt's reward (seed 000, Eq. 2) as named, pure, unit-tested terms.

``R = a*R_SLO + (b*R_GPU + g*R_BFR + w*R_SSR) * SLO_mask`` with, per model and per
control interval:

* :func:`r_slo` - SLO satisfaction rate: requests answered within the SLO / requests
  finished (completed, rejected or failed) in the interval.
* :func:`r_slo_team` - R_SLO blended with the host's SLO rate (``team`` weight; the
  paper's R_SLO is ``team = 0``).
* :func:`r_gpu` - resource cost: 1 with the fewest workers allowed, 0 with the most
  (on CPU a worker is the unit; on a GPU host the same function takes GPU counts).
* :func:`r_bfr` - batch fill rate: mean of batch size / configured batch size.
* :func:`r_ssr` - reconfiguration (slot switch) rate: 1 with no setting changed, 0
  with every setting changed.
* :func:`slo_mask` - the paper writes ``SLO_mask = 1 - R_SLO`` (``mask: paper``); read
  literally, the secondary terms then vanish exactly when the SLO is met, so a policy is
  never rewarded for giving back workers while it meets the SLO. ``mask: gate`` uses
  ``R_SLO`` instead, so the secondary terms count in proportion to SLO satisfaction,
  which is what the paper's text says the mask is for ("prioritise the SLO satisfaction
  rate over the other terms"). Both are available; ``configs/train.yaml`` picks one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

MaskMode = Literal["paper", "gate"]
MASK_MODES: tuple[str, ...] = ("paper", "gate")


@dataclass(frozen=True)
class RewardWeights:
    """Eq. 2's weights (alpha, beta, gamma, omega) and the mask reading."""

    slo: float = 1.0
    gpu: float = 0.1
    bfr: float = 0.05
    ssr: float = 0.05
    mask: MaskMode = "gate"
    #: Share of the host's SLO rate in R_SLO (0 = this model only): see :func:`r_slo_team`.
    team: float = 0.0

    def __post_init__(self) -> None:
        for k in ("slo", "gpu", "bfr", "ssr"):
            v = getattr(self, k)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"reward.{k} must be a number >= 0, got {v!r}")
        if not (isinstance(self.team, int | float) and 0 <= self.team <= 1):
            raise ValueError(f"reward.team must be a number in [0, 1], got {self.team!r}")
        if self.mask not in MASK_MODES:
            raise ValueError(f"reward.mask must be one of {MASK_MODES}, got {self.mask!r}")


def r_slo(good: int, finished: int) -> float:
    """SLO satisfaction rate in [0, 1]; 1.0 when no request finished in the interval."""
    if good < 0 or finished < 0 or good > finished:
        raise ValueError(f"need 0 <= good <= finished, got good={good}, finished={finished}")
    return good / finished if finished else 1.0


def r_slo_team(own: float, host: float, team: float) -> float:
    """R_SLO of a model that shares a host: ``(1 - team) * own + team * host``.

    ``host`` is :func:`r_slo` over every model on the host. With ``team`` > 0 a model that
    holds a worker of a shared budget is charged for the requests its neighbours miss, so
    giving the worker to a neighbour with more at stake can pay.
    """
    if not 0 <= team <= 1:
        raise ValueError(f"team must be in [0, 1], got {team}")
    return (1.0 - team) * own + team * host


def r_gpu(workers: int, min_workers: int, max_workers: int) -> float:
    """1 at ``min_workers``, 0 at ``max_workers``, linear between (1 if they are equal)."""
    if not min_workers <= max_workers:
        raise ValueError(f"min_workers {min_workers} > max_workers {max_workers}")
    if max_workers == min_workers:
        return 1.0
    w = min(max(workers, min_workers), max_workers)
    return (max_workers - w) / (max_workers - min_workers)


def r_bfr(fill_sum: float, batches: int) -> float:
    """Mean batch fill rate in [0, 1]; 1.0 when no batch ran (nothing was over-sized)."""
    if batches < 0 or fill_sum < 0:
        raise ValueError("fill_sum and batches must be >= 0")
    return min(fill_sum / batches, 1.0) if batches else 1.0


def r_ssr(changed_settings: int, n_settings: int = 3) -> float:
    """1 - (settings changed this interval / settings a model has)."""
    if not 0 <= changed_settings <= n_settings:
        raise ValueError(f"changed_settings must be in [0, {n_settings}], got {changed_settings}")
    return 1.0 - changed_settings / n_settings


def slo_mask(slo: float, mode: MaskMode = "gate") -> float:
    """The weight of the secondary terms: ``1 - R_SLO`` (paper) or ``R_SLO`` (gate)."""
    if mode == "paper":
        return 1.0 - slo
    if mode == "gate":
        return slo
    raise ValueError(f"mask must be one of {MASK_MODES}, got {mode!r}")


def reward(slo: float, gpu: float, bfr: float, ssr: float, weights: RewardWeights) -> float:
    """Eq. 2: ``a*R_SLO + (b*R_GPU + g*R_BFR + w*R_SSR) * SLO_mask``."""
    secondary = weights.gpu * gpu + weights.bfr * bfr + weights.ssr * ssr
    return weights.slo * slo + secondary * slo_mask(slo, weights.mask)
