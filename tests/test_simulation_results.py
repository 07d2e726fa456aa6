"""The held-out figures the README and docs/simulator-and-learning.md quote, recomputed from
the committed result JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tsadapt.constants import REPO_DIR
from tsadapt.experiments.evaluate_heldout import bootstrap_ci, compare, paired_diffs

RESULTS = REPO_DIR / "docs" / "results"
#: The pages that quote the figures, line breaks as spaces.
PAGES = {
    name: " ".join((REPO_DIR / name).read_text().split())
    for name in ("README.md", "docs/simulator-and-learning.md")
}


def _by_scenario(name: str) -> dict[str, list[dict]]:
    path = RESULTS / name
    if not path.is_file():
        pytest.skip(f"{name} not committed")
    by: dict[str, list[dict]] = {}
    for res in json.loads(path.read_text()):
        for r in res["rows"]:
            by.setdefault(r["scenario"], []).append(r)
    return by


def _mean(by: dict[str, list[dict]], policy: str) -> float:
    return float(
        np.mean([r["goodput_rps"] for rs in by.values() for r in rs if r["policy"] == policy])
    )


@pytest.mark.parametrize("page", sorted(PAGES))
def test_readme_quotes_the_heldout_match_share_and_ci(page: str) -> None:
    text = PAGES[page]
    by = _by_scenario("simulation-heldout.json")
    c = compare(by, "best-rule")
    lo, hi = bootstrap_ci(paired_diffs(by, "best-rule"))
    assert f"on {c.ppo_matches} of {c.n} ({100 * c.share:.0f} %)" in text
    assert f"{c.mean_goodput_diff:+.2f} req/s (95 % CI [{lo:+.2f}, {hi:+.2f}])" in text
    for p in ("ppo", "aimd", "queue"):
        assert f"{p} {_mean(by, p):.1f}" in text


@pytest.mark.parametrize("page", sorted(PAGES))
def test_readme_quotes_ppo_against_best_static(page: str) -> None:
    text = PAGES[page]
    by = _by_scenario("simulation-beststatic.json")
    c = compare(by, "best-static")
    lo, hi = bootstrap_ci(paired_diffs(by, "best-static"))
    assert (
        f"PPO - best-static {c.mean_goodput_diff:+.2f} req/s (95 % CI [{lo:+.2f}, {hi:+.2f}])"
        in text
    )
    assert f"best-static {_mean(by, 'best-static'):.1f}" in text
