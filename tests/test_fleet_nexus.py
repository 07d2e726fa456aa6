"""Nexus's squishy bin packing against exhaustive search on small instances, and its mapping
onto physical GPUs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tsadapt.fleet.catalog import FleetModel, build_catalogue
from tsadapt.fleet.nexus import (
    Node,
    Session,
    _node,
    plan_actions,
    residual_node,
    squishy_bin_packing,
)
from tsadapt.fleet.types import Slot
from tsadapt.policy.sim.specs import LatencyModel
from tsadapt.policy.sim.workloads import Poisson


def _model(i: int, beta: float, alpha: float, slo: float, mem: float = 1.0) -> FleetModel:
    lat = LatencyModel(alpha_ms=alpha, beta_ms=beta)
    max_b = max(b for b in range(1, 65) if alpha * b + beta <= slo / 2)
    return FleetModel(f"m{i}", "test", lat, slo, mem, max_b, 1.0, Poisson(1.0))


def _partitions(items: list[int]):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        for k in range(len(part)):
            yield part[:k] + [[first, *part[k]]] + part[k + 1 :]
        yield [[first], *part]


def _optimum(sessions: list[Session]) -> int:
    """Fewest GPUs over every partition of the residual nodes into feasible merged nodes."""
    nodes = {s.model: residual_node(s, s.rate) for s in sessions}
    best = math.inf
    for part in _partitions([s.model for s in sessions]):
        ok = True
        for block in part:
            duty = min(nodes[m].duty_ms for m in block)
            if _node([(sessions[m], sessions[m].rate) for m in block], duty) is None:
                ok = False
                break
        if ok:
            best = min(best, len(part))
    return int(best)


@pytest.mark.parametrize("seed", range(12))
def test_residual_packing_against_exhaustive_search(seed: int) -> None:
    """Five residual sessions (each below one GPU's throughput): Nexus's greedy uses no fewer
    GPUs than the optimum (its nodes are feasible) and at most one more."""
    rng = np.random.default_rng(seed)
    sessions = []
    for i in range(5):
        m = _model(i, rng.uniform(5, 20), rng.uniform(0.5, 3), rng.uniform(100, 300))
        sessions.append(Session(i, rng.uniform(0.05, 0.5) * m.throughput(m.max_batch), m))
    nodes = squishy_bin_packing(sessions)
    for n in nodes:
        items = [(sessions[m], r) for m, _, r in n.sessions]
        assert _node(items, n.duty_ms) is not None
    opt = _optimum(sessions)
    assert opt <= len(nodes) <= opt + 1


def test_worked_example_saturates_then_packs() -> None:
    """A model at 2.5 GPUs of load takes 2 whole GPUs at its SLO batch; its residual half
    shares a GPU with a light model, their batches fitting in the shared duty cycle."""
    heavy = _model(0, 10.0, 1.0, 100.0)  # l(b) = b + 10, B = 40, T = 40 / 50 ms = 800/s
    light = _model(1, 5.0, 0.5, 200.0)
    assert heavy.max_batch == 40
    nodes = squishy_bin_packing([Session(0, 2000.0, heavy), Session(1, 50.0, light)])
    full = [n for n in nodes if n.occupancy == 1.0]
    assert [n.sessions[0][:2] for n in full] == [(0, 40), (0, 40)]
    shared = [n for n in nodes if n.occupancy < 1.0]
    assert len(shared) == 1 and sorted(shared[0].models) == [0, 1]
    n = shared[0]
    assert sum(heavy.batch_ms(b) if m == 0 else light.batch_ms(b) for m, b, _ in n.sessions) <= (
        n.duty_ms
    )


def test_a_residual_near_one_gpu_fills_its_gpu_alone() -> None:
    m = _model(0, 10.0, 1.0, 100.0)
    s = Session(0, 0.99 * m.throughput(m.max_batch), m)
    node = residual_node(s, s.rate)
    assert node is not None and node.occupancy > 0.95
    assert node.duty_ms + m.batch_ms(node.sessions[0][1]) <= m.slo_ms
    assert len(squishy_bin_packing([s, Session(1, 50.0, _model(1, 5.0, 0.5, 200.0))])) == 2


def test_replanning_the_same_plan_changes_nothing() -> None:
    cat = build_catalogue(8, 10, "diurnal", 60.0)
    sessions = [Session(i, m.mean_rate, m) for i, m in enumerate(cat.models)]
    nodes = squishy_bin_packing(sessions)
    empty = [[Slot() for _ in range(4)] for _ in range(8)]
    actions, dropped = plan_actions(nodes, empty)
    assert dropped == 0
    slots = [list(r) for r in empty]
    for a in actions:
        slots[a.gpu][a.slot] = a.slot_value()
    again, _ = plan_actions(nodes, slots)
    assert again == []


def test_nodes_beyond_the_fleet_are_reported() -> None:
    nodes = [Node(((i, 1, 1.0),), 10.0, 0.5) for i in range(3)]
    _, dropped = plan_actions(nodes, [[Slot()] * 4, [Slot()] * 4])
    assert dropped == 1
