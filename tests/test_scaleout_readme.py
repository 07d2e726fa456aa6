"""The scale-out figures docs/kubernetes.md quotes are those of docs/results/scale-out.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, int, str], dict]:
    rows = json.loads((ROOT / "docs" / "results" / "scale-out.json").read_text())
    return {(r["scenario"], r["scale"], r["setup"]): r for r in rows}


@pytest.fixture(scope="module")
def paragraph() -> str:
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    start = text.index("In `docs/results/scale-out.md` (simulation")
    end = text.find("\n\n", start)
    return re.sub(r"\s+", " ", text[start : end if end >= 0 else len(text)])


def pct(r: dict) -> str:
    return f"{100 * r['slo_attainment']:.2f} %"


def test_flash_crowd_figures(runs, paragraph) -> None:
    step = [runs["flash-crowd", s, "step-aware-sidecar"] for s in (10, 100)]
    static = [runs["flash-crowd", s, "hpa-static"] for s in (10, 100)]
    short = [runs["flash-crowd", s, "shortfall-sidecar"] for s in (10, 100)]
    assert f"answers {pct(step[0])} (10 pods' worth) and {pct(step[1])} (100" in paragraph
    assert f"on {step[0]['pod_seconds']:,.0f} and {step[1]['pod_seconds']:,.0f} pod-seconds" in (
        paragraph
    )
    fewer = {
        round(100 * (1 - a["pod_seconds"] / b["pod_seconds"]))
        for a, b in zip(step, static, strict=True)
    }
    assert fewer == {8} and "8 % fewer than setup 1" in paragraph
    assert all(a["slo_attainment"] >= 0.99 for a in step)
    assert f"answers {pct(static[0])} and {pct(static[1])}" in paragraph
    assert f"answers {pct(short[0])} and {pct(short[1])}" in paragraph
    assert all(
        0.45 < a["pod_seconds"] / b["pod_seconds"] < 0.55 for a, b in zip(short, step, strict=True)
    )


def test_diurnal_figures(runs, paragraph) -> None:
    short, step = (
        runs["diurnal", 10, "shortfall-sidecar"],
        runs["diurnal", 10, "step-aware-sidecar"],
    )
    assert f"({pct(short)} and {pct(step)} at 10 pods' worth)" in paragraph
    more = round(100 * (step["pod_seconds"] / short["pod_seconds"] - 1))
    assert f"costs {more} % more" in paragraph
    assert f"({step['pod_seconds']:,.0f} against {short['pod_seconds']:,.0f})" in paragraph
    assert all(
        r["slo_attainment"] >= 0.99
        for (sc, _, setup), r in runs.items()
        if sc == "diurnal" and setup in ("shortfall-sidecar", "step-aware-sidecar")
    )
