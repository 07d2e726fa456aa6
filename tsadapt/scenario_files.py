"""Where a scenario named on the command line (``--scenario NAME``) is found."""

from __future__ import annotations

from pathlib import Path

from tsadapt import constants as C

LOADTESTS_DIR = C.REPO_DIR / "loadtests"
#: Where ``--scenario NAME`` is looked up, first match wins.
SCENARIO_DIRS = (LOADTESTS_DIR / "scenarios", C.REPO_DIR / "configs" / "scenarios")


def resolve_scenario(name_or_path: str | Path) -> Path:
    """A scenario YAML from a path, or from a name in :data:`SCENARIO_DIRS`."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ValueError(f"scenario file not found: {p}")
        return p.resolve()
    for d in SCENARIO_DIRS:
        cand = d / f"{p.name}.yaml"
        if cand.is_file():
            return cand.resolve()
    known = sorted({f.stem for d in SCENARIO_DIRS if d.is_dir() for f in d.glob("*.yaml")})
    raise ValueError(f"unknown scenario {str(name_or_path)!r}; known: {', '.join(known)}")
