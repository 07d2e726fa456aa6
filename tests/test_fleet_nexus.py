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
    merge,
    plan_actions,
    residual_node,
    squishy_bin_packing,
)
from tsadapt.fleet.types import Slot
from tsadapt.policy.sim.control import slo_feasible_batch
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


def _paper_model(name: str, points: tuple[tuple[int, float], ...], slo: float) -> FleetModel:
    lat = LatencyModel(table=points)
    return FleetModel(
        name, "paper", lat, slo, 1.0, slo_feasible_batch(lat, slo, 64), 1.0, Poisson(1.0)
    )


def test_paper_section_4_1_example() -> None:
    """The worked example of Nexus's Section 4.1 "Squishy bin packing" (Shen et al., SOSP'19,
    https://homes.cs.washington.edu/~arvind/papers/nexus.pdf, Table 2 and Figure 2).

    Models A, B, C with SLOs 200, 250 and 250 ms. The profiles hold only the batch latencies
    the text states: A 75 ms at 8 and 100 ms at 16 (16 / 100 ms = 160 req/s), B 50 ms at 4 and
    125 ms at 16 (128 req/s), C 60 ms at 4 and 125 ms at 16 (128 req/s); linear between them,
    as the paper's batch_lat(b) = alpha b + beta.

    Figure 2(a), high rates: the largest batch within half the SLO is 16 for each model, so
    each model takes rate / 160 (A) or rate / 128 (B, C) GPUs of its own.

    Figure 2(b), A at 64 req/s and B, C at 32 req/s: A runs batches of 8 in a 125 ms duty
    cycle (75 + 125 = 200 ms, its SLO); B's 4 requests per cycle take 50 ms and fit the slack
    (75 + 50 = 125 ms), worst case 125 + 50 = 175 <= 250 ms; C's 4 take 60 ms and do not.
    "It is possible to co-locate Model B, but not Model C, on the same GPU as Model A."
    C then has a GPU of its own (its batch there is ours: the text does not give it).
    """
    a = _paper_model("A", ((8, 75.0), (16, 100.0)), 200.0)
    b = _paper_model("B", ((4, 50.0), (16, 125.0)), 250.0)
    c = _paper_model("C", ((4, 60.0), (16, 125.0)), 250.0)
    assert [m.max_batch for m in (a, b, c)] == [16, 16, 16]
    assert [m.throughput(16) for m in (a, b, c)] == [160.0, 128.0, 128.0]

    # Figure 2(a): whole GPUs per model at batch 16, nothing left over.
    high = squishy_bin_packing([Session(0, 320.0, a), Session(1, 256.0, b), Session(2, 384.0, c)])
    assert sorted(n.sessions[0][:2] for n in high) == [(0, 16)] * 2 + [(1, 16)] * 2 + [(2, 16)] * 3
    assert all(len(n.sessions) == 1 and n.occupancy == 1.0 for n in high)

    # Figure 2(b): A and B share one GPU; C does not fit with A.
    low = [Session(0, 64.0, a), Session(1, 32.0, b), Session(2, 32.0, c)]
    by_model = {s.model: s for s in low}
    alone_a = residual_node(low[0], 64.0)
    assert alone_a is not None and alone_a.sessions[0][1] == 8 and alone_a.duty_ms == 125.0
    alone_c = residual_node(low[2], 32.0)
    assert alone_c is not None and merge(alone_a, alone_c, by_model) is None
    nodes = squishy_bin_packing(low)
    assert len(nodes) == 2
    shared = next(n for n in nodes if 0 in n.models)
    assert shared.duty_ms == 125.0
    assert sorted(shared.sessions) == [(0, 8, 64.0), (1, 4, 32.0)]
    assert a.batch_ms(8) + b.batch_ms(4) == shared.duty_ms  # the slack is filled exactly
    assert shared.duty_ms + b.batch_ms(4) == 175.0 <= b.slo_ms
    other = next(n for n in nodes if n is not shared)
    assert other.models == (2,)


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
