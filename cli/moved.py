"""Commands that moved: the old words, and where each went (``tsadapt bench`` -> ``tsadapt lab
bench``). An old command line prints its new place and exits with :data:`EXIT_MOVED`."""

from __future__ import annotations

#: Exit code of a moved command (argparse's code for a usage error).
EXIT_MOVED = 2

#: Old leading words -> the new command; the longest matching prefix wins.
MOVED: dict[tuple[str, ...], str] = {
    ("bench",): "tsadapt lab bench",
    ("simulate",): "tsadapt lab simulate",
    ("sim-bench",): "tsadapt lab sim-bench",
    ("evaluate",): "tsadapt lab evaluate",
    ("fidelity",): "tsadapt lab fidelity",
    ("fleet",): "tsadapt lab fleet",
    ("scaleout",): "tsadapt lab scaleout",
    ("gpu-check",): "tsadapt lab gpu-check",
    ("demo",): "tsadapt lab demo",
    ("archive",): "tsadapt lab archive",
    ("serve",): "tsadapt lab serve",
    ("serve", "status"): "tsadapt status",
    ("models",): "tsadapt lab demo-models",
    ("packrat", "bench"): "tsadapt lab packrat bench",
    ("packrat", "bench-planner"): "tsadapt lab packrat bench-planner",
    ("plugin", "bench-overhead"): "tsadapt lab plugin bench-overhead",
    ("plugin", "check-telemetry"): "tsadapt lab plugin check-telemetry",
}


def where(argv: list[str]) -> str | None:
    """``"tsadapt bench -> tsadapt lab bench"`` when ``argv`` starts with a moved command."""
    words = [a for a in argv if not a.startswith("-")][:2]
    for n in (2, 1):
        new = MOVED.get(tuple(words[:n])) if len(words) >= n else None
        if new:
            return f"tsadapt {' '.join(words[:n])} -> {new}"
    return None
