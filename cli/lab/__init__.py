"""``tsadapt lab``: research and benchmarks (the simulator, benches against real servers,
fidelity, the fleet, scale-out, the GPU check, the demo server).

The only part of the command that imports ``experiments/`` (tests/test_import_rules.py). Each
lab module's ``register(subparsers)`` adds its commands; one whose extra is not installed
(``pip install 'torchserve-adapt[bench]'`` or ``[learn]``) is listed with what to install.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

#: Modules whose ``register`` adds lab commands, and what each adds (for a missing extra).
LAB_MODULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("tsadapt.cli.lab.demo", ("demo", "serve", "archive", "demo-models")),
    ("tsadapt.cli.lab.bench", ("bench", "frontend-tuning")),
    ("tsadapt.cli.lab.simulate", ("simulate", "evaluate")),
    ("tsadapt.cli.lab.sim", ("sim-bench", "fidelity")),
    ("tsadapt.cli.fleet_commands", ("fleet",)),
    ("tsadapt.experiments.scaleout.commands", ("scaleout",)),
    ("tsadapt.experiments.gpu_check.commands", ("gpu-check",)),
    ("tsadapt.cli.lab.packrat", ("packrat",)),
    ("tsadapt.cli.lab.plugin", ("plugin",)),
    ("tsadapt.cli.lab.soak", ("soak", "reliability")),
)
#: The extra that brings a third-party module a lab command imports.
EXTRA_OF = {
    "torch": "learn",
    "gymnasium": "learn",
    "stable_baselines3": "learn",
    "locust": "bench",
    "matplotlib": "bench",
    "ts": "bench",
    "model_archiver": "bench",
}
EXIT_MISSING_EXTRA = 2


def register(subparsers: Any, full: bool = True) -> None:
    """Add ``lab``; with ``full`` its commands too (they import the benches' modules)."""
    lab = subparsers.add_parser(
        "lab",
        help="research and benchmarks: simulator, benches, fidelity, fleet, GPU check, demo",
        description="Research and benchmarks: the simulator, benches against real servers, "
        "fidelity, the fleet, scale-out, the GPU check and the demo server.",
    )
    sub = lab.add_subparsers(dest="lab_command", required=True, metavar="COMMAND")
    if not full:
        return
    for module, commands in LAB_MODULES:
        before = set(sub.choices)
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as exc:
            if (exc.name or "").startswith("tsadapt"):
                raise
            for name in commands:
                if name not in sub.choices:
                    _missing(sub, name, exc.name or "?")
            continue
        if not set(sub.choices) - before:
            raise RuntimeError(f"{module}.register added no lab command")


def extra_for(module: str) -> str:
    """The extra that installs a missing third-party ``module``."""
    return EXTRA_OF.get(module.split(".")[0], "bench")


def missing_extra(command: str, module: str) -> str:
    """What to install when ``command`` needs ``module`` and it is missing."""
    extra = extra_for(module)
    return (
        f"{command} needs the {extra!r} extra (module {module!r} is missing): "
        f"pip install 'torchserve-adapt[{extra}]'"
    )


def _missing(sub: Any, name: str, module: str) -> None:
    """A lab command whose module cannot import: says which extra brings it."""
    message = missing_extra(f"tsadapt lab {name}", module)
    p = sub.add_parser(name, help=f"(needs: pip install 'torchserve-adapt[{extra_for(module)}]')")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def explain(_: argparse.Namespace) -> int:
        print(message, file=sys.stderr)
        return EXIT_MISSING_EXTRA

    p.set_defaults(func=explain)
