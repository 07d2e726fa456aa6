"""DNN-Adapt's slot formulation (seed 000) as vectors: the observation a policy network reads
(the tick's candidate slot actions, :mod:`tsadapt.fleet.candidates`), the action it emits (the
index of one candidate; 0 = no-op) and Eq. 2's reward over one tick. Shared by the Gym
environment and the runtime policy."""

from __future__ import annotations

import numpy as np

from tsadapt.fleet.candidates import Candidate, Load, candidates, encode
from tsadapt.fleet.catalog import Catalogue
from tsadapt.fleet.sim import TickStats
from tsadapt.fleet.types import FleetObservation, SlotAction
from tsadapt.policy.learn.reward import RewardWeights, r_bfr, r_gpu, r_slo, r_ssr, reward

#: Eq. 2's weights at fleet scale (R_GPU = GPUs in use; R_SSR = slot switches).
FLEET_REWARD = RewardWeights(slo=1.0, gpu=0.3, bfr=0.05, ssr=0.05, mask="gate")


def features(obs: FleetObservation, cat: Catalogue) -> tuple[np.ndarray, list[Candidate]]:
    """The network's input for ``obs`` and the candidates its entries describe."""
    load = Load(obs, cat)
    cands = candidates(obs, cat, load)
    return encode(obs, cat, cands, load), cands


def decode(action: int, cands: list[Candidate]) -> SlotAction | None:
    """The slot action of candidate ``action`` (None: the no-op, or an empty entry)."""
    i = int(action)
    return cands[i].action if 0 <= i < len(cands) else None


def tick_reward(tick: TickStats, gpus_in_use: int, gpus: int, switched: int) -> tuple[float, dict]:
    """Eq. 2 over one tick: fleet R_SLO, R_GPU from GPUs in use, R_BFR, R_SSR."""
    terms = {
        "r_slo": r_slo(min(tick.good, tick.finished), tick.finished),
        "r_gpu": r_gpu(gpus_in_use, 0, gpus),
        "r_bfr": r_bfr(tick.fill_sum, tick.batches),
        "r_ssr": r_ssr(min(switched, 1), 1),
    }
    r = reward(terms["r_slo"], terms["r_gpu"], terms["r_bfr"], terms["r_ssr"], FLEET_REWARD)
    return r, terms
