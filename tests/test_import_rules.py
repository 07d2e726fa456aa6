"""Imports go one way between rooms: a room imports only rooms below it (setup.cfg's order).

Every ``import`` and ``from ... import`` of every module is read with :mod:`ast`, function-level
ones too, so a lazy import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Rooms, lowest first: (import prefix, folder). A module belongs to the longest prefix.
ROOMS: tuple[tuple[str, str], ...] = (
    ("tsadapt", "tsadapt"),  # the base: constants, the TorchServe client, small helpers
    ("tsadapt.handlers", "handlers"),  # demo models, handlers, the per-worker placement hook
    ("tsadapt.plugin", "plugin"),  # the Java plugin's build and its client
    ("tsadapt.serve", "serve"),  # a real TorchServe to work against: start, archive, profile
    ("tsadapt.policy", "policy"),  # the controller contract: types, guards, rules, loop
    ("tsadapt.policy.sim", "policy/sim"),  # the simulator
    ("tsadapt.policy.learn", "policy/learn"),  # training
    ("tsadapt.fleet", "fleet"),  # GPU slots at fleet scale: simulator, Nexus, PPO, baselines
    ("tsadapt.sidecar", "sidecar"),  # the controller against the real server
    ("tsadapt.packrat_cpu", "packrat_cpu"),  # the Packrat planner and live apply
    ("tsadapt.experiments", "experiments"),  # benches, fidelity, evaluation, checks
    ("tsadapt.cli", "cli"),  # the tsadapt command
)
RANK = {prefix: i for i, (prefix, _) in enumerate(ROOMS)}
#: Pairs that the order allows but the product must not have: the running sidecar never
#: needs the simulator or the training stack.
FORBIDDEN = {
    ("tsadapt.sidecar", "tsadapt.policy.sim"),
    ("tsadapt.sidecar", "tsadapt.policy.learn"),
    ("tsadapt.sidecar", "tsadapt.fleet"),
}
#: The command's only modules that may import experiments/: the lab group (``tsadapt lab``).
#: The rest of the command is the product, which never imports experiment code.
LAB = "tsadapt.cli.lab"


def room_of(module: str) -> str | None:
    """The room a ``tsadapt...`` module belongs to (None for other packages)."""
    best = None
    for prefix, _ in ROOMS:
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best):
                best = prefix
    return best


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    folder = next(
        (prefix, Path(f))
        for prefix, f in sorted(ROOMS, key=lambda r: -len(r[1]))
        if rel.is_relative_to(f)
    )
    parts = rel.relative_to(folder[1]).with_suffix("").parts
    parts = parts[:-1] if parts and parts[-1] == "__init__" else parts
    return ".".join([folder[0], *parts])


def imports_of(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every absolute import in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def in_lab(module: str) -> bool:
    return module == LAB or module.startswith(LAB + ".")


def violations(path: Path) -> list[str]:
    name = module_name(path)
    own = room_of(name)
    bad = []
    for line, target in imports_of(path):
        room = room_of(target)
        if room is None or room == own:
            continue
        product_cli = own == "tsadapt.cli" and room == "tsadapt.experiments" and not in_lab(name)
        if RANK[room] > RANK[own] or (own, room) in FORBIDDEN or product_cli:
            bad.append(f"{path.relative_to(REPO)}:{line}: {own} imports {target} ({room})")
    return bad


def room_files() -> list[Path]:
    """Every module of every room, in subpackages too (``experiments/fidelity/``)."""
    return sorted({p for _, folder in ROOMS for p in (REPO / folder).rglob("*.py")})


def test_every_room_module_is_checked() -> None:
    files = room_files()
    assert len(files) > 60
    assert {room_of(module_name(p)) for p in files} == set(RANK)


def test_imports_go_one_way() -> None:
    bad = [v for p in room_files() for v in violations(p)]
    assert not bad, "upward imports:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("source", "target", "allowed"),
    [
        ("tsadapt.cli.main", "tsadapt.experiments.bench", False),
        ("tsadapt.cli.control_commands", "tsadapt.experiments.bench_schedule", False),
        ("tsadapt.cli.lab.bench", "tsadapt.experiments.bench", True),
        ("tsadapt.cli.lab.bench", "tsadapt.cli.arg_types", True),
        ("tsadapt.experiments.bench", "tsadapt.sidecar.runner", True),
        ("tsadapt.sidecar.runner", "tsadapt.experiments.bench", False),
        ("tsadapt.handlers.base", "tsadapt.packrat_cpu.planner", False),
        ("tsadapt.policy.guards", "tsadapt.policy.sim.simulator", False),
        ("tsadapt.sidecar.observer", "tsadapt.policy.learn.gym_env", False),
        ("tsadapt.policy.sim.control", "tsadapt.policy.loop", True),
    ],
)
def test_the_rule_itself(tmp_path: Path, source: str, target: str, allowed: bool) -> None:
    """The checker flags an upward import written into a module of the source room."""
    prefix = room_of(source)
    package = source.removeprefix(prefix).strip(".").split(".")[:-1]
    probe = REPO / dict(ROOMS)[prefix] / Path(*package, "_import_rule_probe.py")
    probe.write_text(f"def f():\n    import {target}\n")
    try:
        assert (not violations(probe)) == allowed
    finally:
        probe.unlink()


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports(path: Path) -> list[str]:
    """Every use of another module's ``_private`` name in ``path``: ``from M import _x`` and
    ``m._x`` where ``m`` is a module imported by name (``import a.b as m``,
    ``from a import m``)."""
    own = module_name(path)
    modules = {module_name(p) for p in room_files()}
    tree = ast.parse(path.read_text(), str(path))
    bad, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("tsadapt") or node.module == own:
                continue
            for a in node.names:
                if f"{node.module}.{a.name}" in modules:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                elif _is_private(a.name):
                    bad.append(f"{node.lineno}: from {node.module} import {a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and a.name in modules and a.name != own:
                    aliases[a.asname] = a.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and _is_private(node.attr)
        ):
            bad.append(f"{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    return [f"{path.relative_to(REPO)}:{b}" for b in bad]


def test_no_module_imports_another_modules_private_names() -> None:
    bad = [v for p in room_files() for v in private_imports(p)]
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "source",
    [
        "from tsadapt.policy.sim.batching import _FLUSH_BLOCK\n",
        "from tsadapt.policy.sim import batching\nx = batching._FLUSH_BLOCK\n",
        "import tsadapt.policy.sim.batching as b\nx = b._release\n",
    ],
)
def test_the_private_rule_itself(source: str) -> None:
    probe = REPO / "policy" / "_import_rule_probe.py"
    probe.write_text(source)
    try:
        assert private_imports(probe)
    finally:
        probe.unlink()


def import_graph() -> dict[str, set[str]]:
    """Module -> the room modules it imports (at any level, lazily too)."""
    modules = {module_name(p): p for p in room_files()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for _, target in imports_of(path):
            if target in modules and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    """No two modules import each other, directly or around a loop (lazy imports count)."""
    assert cycles(import_graph()) == []


def test_the_cycle_finder_itself() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_every_module_imports() -> None:
    """A moved name breaks an import that only runs in a subprocess or a late branch: import
    every module of every room once, so it shows here."""
    import importlib

    failed = []
    for path in room_files():
        name = module_name(path)
        if name.endswith("__main__"):
            continue
        if name in PEER_ONLY:
            failed += _import_in_peer_env(name, *PEER_ONLY[name])
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - collected and reported together
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not failed, "\n".join(failed)


#: Modules that only a peer's own venv can import (``make install-peers``): the peer, and
#: the environment its server process is started with.
PEER_ONLY = {
    "tsadapt.experiments.peers.bentoml_service": (
        "bentoml",
        {"TSADAPT_BENTO_SCENARIO": "loadtests/scenarios/co-surge.yaml",
         "TSADAPT_BENTO_MODE": "adaptive", "BENTOML_DO_NOT_TRACK": "True"},
    ),
}  # fmt: skip


def _import_in_peer_env(name: str, peer: str, env: dict[str, str]) -> list[str]:
    """Import ``name`` with the peer's Python, where its venv exists (else nothing to say)."""
    import os
    import subprocess

    from tsadapt.experiments.peers.envs import peer_python

    python, _ = peer_python(peer)
    if python is None:
        return []
    done = subprocess.run([str(python), "-c", f"import {name}"], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)  # fmt: skip
    return [] if done.returncode == 0 else [f"{name} (in {python}): {done.stderr[-600:]}"]


#: What the running controller must never load: the simulator, training, the fleet, the
#: experiments, and the training stack's libraries.
CONTROL_FORBIDDEN = (
    "tsadapt.policy.sim",
    "tsadapt.policy.learn",
    "tsadapt.fleet",
    "tsadapt.experiments",
    "stable_baselines3",
    "gymnasium",
)
CONTROL_PATH = """
import json, sys
from tsadapt.cli.main import main
from tsadapt.policy.controller_config import load
from tsadapt.policy.factory import make_policy

config, profile, policy, dead = sys.argv[1:5]
# ``tsadapt control`` as typed, up to the server it cannot reach (config, --profile, attach)
main(["control", "--config", config, "--profile", profile, "--policy", policy,
      "--inference-url", dead, "--management-url", dead, "--metrics-url", dead, "--no-auth",
      "--metrics-port", "0", "--max-ticks", "1"])
make_policy(policy, load(config, policy=policy), None)  # what it builds next
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("policy", ["static", "aimd", "queue", "ppo"])
def test_the_control_path_loads_no_simulator_or_training(tmp_path: Path, policy: str) -> None:
    import json
    import subprocess
    import sys

    from tsadapt.serve.server import free_port

    config = tmp_path / "controller.yaml"
    config.write_text(
        "worker_budget: 2\n"
        "models:\n  m: {slo_ms: 100, min_workers: 1, max_workers: 2, max_batch: 16}\n"
    )
    profile = tmp_path / "m.json"
    profile.write_text(
        json.dumps({"format": "tsadapt-profiles", "version": 1, "profiles": [
            {"model": "m", "batch_sizes": [1, 8, 16], "median_ms": [5.0, 20.0, 60.0]}]})
    )  # fmt: skip
    dead = f"http://127.0.0.1:{free_port()}"
    out = subprocess.run(
        [sys.executable, "-c", CONTROL_PATH, str(config), str(profile), policy, dead],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.splitlines()[-1])
    assert "tsadapt.sidecar.runner" in loaded and "tsadapt.policy.batch_cap" in loaded
    bad = [m for m in loaded if m.startswith(CONTROL_FORBIDDEN)]
    assert not bad, f"`tsadapt control --policy {policy}` loads {bad}"
