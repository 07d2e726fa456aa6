"""DNN-Adapt's slot formulation (seed 000) as vectors: the observation a policy network reads
(the tick's candidate slot actions, :mod:`tsadapt.fleet.candidates`), the action it emits (the
index of one candidate; 0 = no-op, "done") and Eq. 2's reward over one tick. Shared by the Gym
environment and the runtime policy.

Many slot actions per tick, autoregressively (:class:`Picks`): the policy picks a candidate,
the layout it would leave is estimated (:meth:`Load.after`), the candidates are listed again
for that layout (none on a slot already changed this tick), and so on until it picks the
no-op or has picked ``cap`` actions; the tick's actions then go through the guards together.
The same network scores every pick, whatever the fleet's size."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from tsadapt.fleet.candidates import Candidate, Load, candidates, encode
from tsadapt.fleet.catalog import Catalogue
from tsadapt.fleet.sim import TickStats
from tsadapt.fleet.types import FleetObservation, ModelView, SlotAction
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


def after(obs: FleetObservation, load: Load) -> FleetObservation:
    """``obs`` with ``load``'s slots (the measured rates, queues and attainment unchanged)."""
    slots = tuple(tuple(r) for r in load.slots)
    if slots == obs.slots:
        return obs
    count = np.zeros(len(obs.models), dtype=np.int64)
    for row in load.slots:
        for s in row:
            if not s.empty:
                count[s.model] += 1
    views: tuple[ModelView, ...] = tuple(
        v if v.slots == count[v.index] else replace(v, slots=int(count[v.index]))
        for v in obs.models
    )
    return replace(obs, models=views, slots=slots)


class Picks:
    """One tick's autoregressive picks (see the module docstring): :attr:`x` and
    :attr:`cands` describe the next pick; :meth:`pick` takes one."""

    def __init__(self, obs: FleetObservation, cat: Catalogue, cap: int) -> None:
        if cap < 1:
            raise ValueError(f"picks per tick must be >= 1, got {cap}")
        self.obs, self.cat, self.cap = obs, cat, cap
        self.load = Load(obs, cat)
        self.actions: list[SlotAction] = []
        self._list()

    def _list(self) -> None:
        done = frozenset((a.gpu, a.slot) for a in self.actions)
        self.cands = candidates(self.obs, self.cat, self.load, done)
        self.x = encode(self.obs, self.cat, self.cands, self.load)

    def pick(self, action: int) -> bool:
        """Take candidate ``action``; True while the tick takes more picks (not the no-op,
        fewer than ``cap`` so far)."""
        a = decode(action, self.cands)
        if a is None:
            return False
        self.actions.append(a)
        if len(self.actions) >= self.cap:
            return False
        self.load = self.load.after(a)
        self.obs = after(self.obs, self.load)
        self._list()
        return True
