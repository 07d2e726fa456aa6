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


def test_every_module_imports() -> None:
    """A moved name breaks an import that only runs in a subprocess or a late branch: import
    every module of every room once, so it shows here."""
    import importlib

    failed = []
    for path in room_files():
        name = module_name(path)
        if name.endswith("__main__"):
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - collected and reported together
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not failed, "\n".join(failed)
