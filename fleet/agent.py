"""DNN-Adapt's slot formulation (seed 000) as vectors: the observation a policy network reads,
the action it emits (slot incl. no-op, model incl. empty, batch delta in [-4, 5], parallel
flag) and Eq. 2's reward over one tick. Shared by the Gym environment and the runtime policy."""

from __future__ import annotations

import numpy as np

from tsadapt.fleet.catalog import Catalogue
from tsadapt.fleet.constants import BATCH_DELTAS, FLEET_MAX_BATCH
from tsadapt.fleet.sim import TickStats
from tsadapt.fleet.types import EMPTY, FleetObservation, SlotAction
from tsadapt.policy.learn.reward import RewardWeights, r_bfr, r_gpu, r_slo, r_ssr, reward

#: Eq. 2's weights at fleet scale (R_GPU = GPUs in use; R_SSR = slot switches).
FLEET_REWARD = RewardWeights(slo=1.0, gpu=0.3, bfr=0.05, ssr=0.05, mask="gate")
MODEL_FEATURES = 5
SLOT_FEATURES = 3


def action_nvec(gpus: int, slots: int, models: int) -> tuple[int, ...]:
    """``MultiDiscrete`` sizes: slot id + no-op, model + empty, batch delta, parallel flag."""
    return (gpus * slots + 1, models + 1, len(BATCH_DELTAS), 2)


def obs_size(gpus: int, slots: int, models: int) -> int:
    return models * MODEL_FEATURES + gpus * slots * SLOT_FEATURES


def features(obs: FleetObservation, cat: Catalogue) -> np.ndarray:
    """Per model: load in GPUs (rate / T at its SLO batch, /4), queue, SLO, attainment and
    slots held; per slot: model id, batch size, parallel flag; all scaled into [0, 1]."""
    out = []
    for v in obs.models:
        m = cat.models[v.index]
        out += [
            v.rate_rps / m.throughput(m.max_batch) / 4.0,
            v.queue / 1000.0,
            m.slo_ms / 1000.0,
            v.attainment,
            v.slots / 8.0,
        ]
    n = len(cat.models)
    for row in obs.slots:
        for s in row:
            out += [(s.model + 1) / n, s.batch / FLEET_MAX_BATCH, float(s.parallel)]
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def decode(action: np.ndarray, obs: FleetObservation, cat: Catalogue) -> SlotAction | None:
    """The incremental change ``action`` asks for (None: no-op). Keeping a slot's model
    changes its batch by the delta; another model starts at its SLO batch plus the delta."""
    slot_id, model, delta_i, par = (int(x) for x in action)
    if slot_id == 0:
        return None
    S = len(obs.slots[0])
    g, s = divmod(slot_id - 1, S)
    cur = obs.slots[g][s]
    m = model - 1
    delta = BATCH_DELTAS[delta_i]
    if m == EMPTY:
        return None if cur.empty else SlotAction(g, s, EMPTY, 1)
    base = cur.batch if cur.model == m else cat.models[m].max_batch
    return SlotAction(g, s, m, max(1, base + delta), bool(par))


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
