"""Figures quoted in the README and docs/ against the JSON under docs/results/ they come from.

Each entry of :data:`FIGURES` is one quoted figure: the page, the text around it with ``{}``
where the figure goes, the JSON file, the key path to the value and its format. The test
fills the value in from the JSON and looks for the text in the page, so a figure that drifts
from its source (the page edited, or the result regenerated) fails here. To add a figure, add
a line; a key path is dotted (a key holding dots is matched whole), ``#len`` takes a list's
length, ``[k=v,k=v]`` picks the row of a list whose keys have those values; several ``{}``
in one text take a tuple of paths, and a text may carry its own formats (``{:.2f}``) instead
of ``fmt``; ``scale`` multiplies (100 for a fraction quoted in %).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"


class Figure(NamedTuple):
    """One quoted figure (or several in one text): where it is and where it comes from."""

    doc: str
    text: str  # the page's text, ``{}`` for each figure
    source: str  # JSON file under docs/results/
    paths: tuple[str, ...]  # dotted key path per ``{}``; ``#len`` = the list's length
    fmt: str = ".1f"
    scale: float = 1.0  # e.g. 100 for a fraction quoted in %


def bench(doc: str, text: str, scenario: str, ctrl: str, key: str, fmt: str = ".1f") -> Figure:
    """A figure of ``docs/results/bench-<scenario>.json``: a controller's mean over seeds."""
    return Figure(doc, text, f"bench-{scenario}.json", (f"controllers.{ctrl}.{key}.mean",), fmt)


def gpu(text: str, model: str, device: str, fmt: str) -> Figure:
    """A model's fitted alpha (ms per request) on the H200 run's GPU or one CPU thread."""
    row = f"parts.profiles.profiles[model={model},device={device}]"
    return Figure("docs/gpu-check.md", text, "gpu.json", (f"{row}.fit.alpha_ms",), fmt)


ATT, GOOD = "slo_attainment_pct", "goodput_rps"
FIGURES: list[Figure] = [
    # README: results summary
    bench("README.md", "on `surge`, ppo attains\n  {} % of", "surge", "ppo", ATT),
    bench("README.md", "SLOs ({} req/s of goodput)", "surge", "ppo", GOOD, ".2f"),
    bench("README.md", "against {} % (", "surge", "static", ATT),
    bench("README.md", " ({} req/s)\n  for the", "surge", "static", GOOD, ".2f"),
    bench("README.md", "on `co-surge`, ppo attains {} % and", "co-surge", "ppo", ATT),
    bench("README.md", "% and aimd {} % against", "co-surge", "aimd", ATT),
    bench("README.md", "against {} %,\n  ppo ahead", "co-surge", "static", ATT),
    bench("README.md", "with {} worker-seconds", "co-surge", "ppo", "worker_seconds", ".0f"),
    bench("README.md", "worker-seconds against {};", "co-surge", "aimd", "worker_seconds", ".0f"),
    Figure("README.md", "`azure-conv` (120 s, `bench-azure-conv.md`), ppo attains {} % and aimd "
           "{} % against\n  {} %, ppo ahead of aimd", "bench-azure-conv.json",
           tuple(f"controllers.{c}.{ATT}.mean" for c in ("ppo", "aimd", "static"))),
    Figure("README.md", "seeds with {:.0f} worker-seconds against {:.0f}.", "bench-azure-conv.json",
           tuple(f"controllers.{c}.worker_seconds.mean" for c in ("ppo", "aimd"))),
    bench("README.md", "Azure trace (60.2 % against {} %)", "azure-conv", "static", ATT),
    bench("README.md", "on the Azure trace ({} % against", "azure-conv", "bentoml-nobatch", ATT),
    bench("README.md", "Azure trace it attains {} % on", "azure-conv", "bentoml-adaptive", ATT),
    bench("README.md", "% on {} worker-seconds, ppo 99.7", "azure-conv", "bentoml-adaptive",
          "worker_seconds", ".0f"),
    bench("README.md", "worker-seconds, ppo {} % on 360.", "azure-conv", "ppo", ATT),
    bench("README.md", "(fixed: {} % on its 2 valid", "azure-conv", "rayserve-fixed", ATT),
    # README: the peers (bench-<scenario>.json holds every system's runs; peers*.json the
    # capacity and the light-load figures)
    bench("README.md", "defaults on `surge` ({} % against", "surge", "bentoml-nobatch", ATT),
    bench("README.md", "% against {} %, ahead on every", "surge", "static", ATT),
    Figure("README.md", "worker answers {} req/s closed loop there, TorchServe's {})",
           "peers-surge.json", ("capacity[system=bentoml-nobatch,model=image].rps",
                                "capacity[system=static,model=image].rps")),
    bench("README.md", "heavier `co-surge` ({} % against", "co-surge", "bentoml-nobatch", ATT),
    bench("README.md", "% against {} %) and on the Azure", "co-surge", "static", ATT),
    bench("README.md", "batching attains {} % on\n", "surge", "bentoml-adaptive", ATT),
    bench("README.md", "    {} worker-seconds, ppo", "surge", "bentoml-adaptive", "worker_seconds",
          ".0f"),
    bench("README.md", "worker-seconds, ppo {} % on", "surge", "ppo", ATT),
    bench("README.md", "on `co-surge` it attains {} %, because", "co-surge", "bentoml-adaptive",
          ATT),
    Figure("README.md", "BentoML\n    answers in {} ms at the median and {} ms at the p99",
           "peers-surge.json", ("load_levels.light.bentoml-nobatch.p50_ms.mean",
                                "load_levels.light.bentoml-nobatch.p99_ms.mean")),
    Figure("README.md", "TorchServe at its defaults in\n    {} and {} ms", "peers-surge.json",
           ("load_levels.light.static.p50_ms.mean", "load_levels.light.static.p99_ms.mean")),
    Figure("README.md", "TorchServe under ppo in {} and {} ms.", "peers-surge.json",
           ("load_levels.light.ppo.p50_ms.mean", "load_levels.light.ppo.p99_ms.mean")),
    bench("README.md", "far behind on two cores: {} % fixed", "surge", "rayserve-fixed", ATT),
    bench("README.md", "% fixed and {} %\n    autoscaling", "surge", "rayserve-auto", ATT),
    Figure("README.md", "server on {} of {} scenarios", "fidelity.json",
           ("scenarios_agreeing#len", "scenarios#len"), "d"),
    Figure("README.md", "holds\n  {} MiB resident", "sidecar-rss.json",
           ("numpy (tsadapt control --policy ppo).median_mb",)),
    Figure("README.md", "({} MiB on the torch path", "sidecar-rss.json",
           ("torch (PPOPolicy, the previous path).median_mb",)),
    # README: the soak hour
    Figure("README.md", "`BaseHandler` model, {} requests", "soak.json", ("requests",), "d"),
    Figure("README.md", "grew by\n  {} % at most (the JVM)", "soak.json",
           ("processes[process=frontend (JVM)].rss_growth_pct",), ".2f"),
    # docs/simulator-and-learning.md
    Figure("docs/simulator-and-learning.md", "(`load_worker_cpu_s`; the committed run: {})",
           "fidelity-calibration.json", ("cpu.load_worker_cpu_s",), ".2f"),
    # docs/kubernetes.md: the sidecar's memory (the scale-out figures: test_scaleout_readme.py)
    Figure("docs/kubernetes.md", "holds {} MiB resident", "sidecar-rss.json",
           ("numpy (tsadapt control --policy ppo).median_mb",)),
    Figure("docs/kubernetes.md", "against {} MiB for the same", "sidecar-rss.json",
           ("torch (PPOPolicy, the previous path).median_mb",)),
    # docs/gpu-check.md: the H200 run
    gpu("image 3.52 vs {},", "image", "cpu", ".2f"),
    gpu("image {} vs 5.90,", "image", "cuda:0", ".2f"),
    gpu("text {} vs 1.071,", "text", "cuda:0", ".3f"),
    gpu("text 0.026 vs {},", "text", "cpu", ".3f"),
    gpu("tabular {} vs 0.055.", "tabular", "cuda:0", ".3f"),
    gpu("tabular 0.043 vs {}.", "tabular", "cpu", ".3f"),
    Figure("docs/gpu-check.md", "one image worker {} req/s, two {}\n  (1.34x), four {} (1.18x)",
           "gpu.json", tuple(f"parts.colocation.cases[setting=image x{n}].throughput_rps"
                             for n in (1, 2, 4))),
    # docs/benches-and-peers.md: Ray on surge; what TorchServe settings win back (the
    # multi-seed table's rows are added below)
    bench("docs/benches-and-peers.md", "valid and it attains {} %\n(fixed)", "surge",
          "rayserve-fixed", ATT),
    bench("docs/benches-and-peers.md", "(fixed) and {} % (autoscaling)", "surge", "rayserve-auto",
          ATT),
    Figure("docs/benches-and-peers.md", "image model's capacity by\nx{} (decoded with the "
           "standard library) and x{} (with orjson)", "frontend-tuning.json",
           ("summary.image.raw-stdlib.ratio.mean", "summary.image.raw-orjson.ratio.mean"),
           ".3f"),
    Figure("docs/benches-and-peers.md", "`netty_client_threads`) by x{} and x{};",
           "frontend-tuning.json",
           ("summary.image.netty-1.ratio.mean", "summary.image.netty-4.ratio.mean"), ".3f"),
]  # fmt: skip

#: The multi-seed table's rows in docs/benches-and-peers.md: (scenario, controller, label);
#: the scenario's best adaptive controller (its JSON's ``best_adaptive``) is in bold.
BENCH_ROWS = [
    (scenario, ctrl, f"**{ctrl}**" if ctrl == best else ctrl)
    for scenario in ("surge", "co-surge", "azure-conv")
    for best in [json.loads((RESULTS / f"bench-{scenario}.json").read_text())["best_adaptive"]]
    for ctrl in ("static", "aimd", "queue", "ppo")
]
for _scenario, _ctrl, _label in BENCH_ROWS:
    _base = f"controllers.{_ctrl}"
    FIGURES.append(
        Figure(
            "docs/benches-and-peers.md",
            f"| {_scenario} | {_label} | {{:.1f}} ± {{:.1f}} | {{:.2f}} ± {{:.2f}} | {{:.0f}} |",
            f"bench-{_scenario}.json",
            tuple(
                f"{_base}.{k}"
                for k in (
                    "slo_attainment_pct.mean",
                    "slo_attainment_pct.sd",
                    "goodput_rps.mean",
                    "goodput_rps.sd",
                    "worker_seconds.mean",
                )
            ),
        )
    )


@cache
def _json(name: str) -> Any:
    return json.loads((RESULTS / name).read_text())


@cache
def _page(doc: str) -> str:
    return (REPO / doc).read_text()


def _key(node: dict[str, Any], rest: str) -> str | None:
    """The longest key of ``node`` that ``rest`` starts with, followed by ``.``, ``[`` or
    nothing."""
    for k in sorted(node, key=len, reverse=True):
        if rest == k or (rest.startswith(k) and rest[len(k)] in ".["):
            return k
    return None


def value(doc: Any, path: str) -> Any:
    """The value at a dotted key path (a key may hold dots: the longest match wins)."""
    length = path.endswith("#len")
    path = path.removesuffix("#len")
    node, rest = doc, path
    while rest:
        if isinstance(node, list):
            selector, _, rest = rest.partition("]")
            wanted = dict(kv.split("=", 1) for kv in selector.strip("[").split(","))
            rows = [r for r in node if all(str(r.get(k)) == v for k, v in wanted.items())]
            if len(rows) != 1:
                raise KeyError(f"{selector}]: {len(rows)} rows match")
            node, rest = rows[0], rest.removeprefix(".")
            continue
        key = _key(node, rest)
        if key is None:
            raise KeyError(f"{rest!r} not in {sorted(node)}")
        node, rest = node[key], rest[len(key) :].removeprefix(".")
    return len(node) if length else node


def expected(fig: Figure) -> str:
    """The figure's text with its values filled in from the JSON."""
    values = [value(_json(fig.source), p) for p in fig.paths]
    values = [v * fig.scale if fig.scale != 1.0 else v for v in values]
    if "{:" in fig.text:  # formats written into the text
        return fig.text.format(*values)
    return fig.text.format(*(format(v, fig.fmt) for v in values))


@pytest.mark.parametrize("fig", FIGURES, ids=lambda f: f"{f.doc}:{f.text[:40]}")
def test_a_quoted_figure_matches_its_json(fig: Figure) -> None:
    text = expected(fig)
    assert text in _page(fig.doc), f"{fig.doc} should quote {text!r} ({fig.source})"


@pytest.mark.parametrize("scenario", ["co-surge", "azure-conv"])
def test_ppo_ahead_of_aimd_as_the_readme_counts(scenario: str) -> None:
    """The README's "ppo ahead of aimd on N of M seeds" (once per scenario): N positive paired
    differences."""
    path = "paired[controller=ppo,against=aimd].goodput_diff"
    diffs = value(_json(f"bench-{scenario}.json"), path)
    ahead = sum(d > 0 for d in diffs.values())
    assert f"ppo ahead of aimd on {ahead} of {len(diffs)} seeds" in _page("README.md")


def static_pct(controllers: dict) -> float:
    """static's mean SLO attainment (%) in a bench JSON's ``controllers``."""
    return controllers["static"]["slo_attainment_pct"]["mean"]


@pytest.mark.parametrize("scenario", ["azure-conv", "co-surge", "surge"])
def test_the_five_seed_runs_as_the_docs_quote_them(scenario: str) -> None:
    """docs/benches-and-peers.md's five-seed bullets (whitespace folded): ppo's and the best
    rule's means, ppo's paired differences against the best rule seed by seed, and how many
    are positive."""
    doc = _json(f"seeds5/bench-{scenario}.json")
    page = " ".join(_page("docs/benches-and-peers.md").split())
    c = dict(doc["controllers"])
    apart = f"seeds5/{scenario}-static/bench-{scenario}.json"
    if "static" not in c and (RESULTS / apart).is_file():  # static ran in its own invocation
        c["static"] = _json(apart)["controllers"]["static"]
    rules = [r for r in ("static", "aimd", "queue") if r in c]
    best = max(rules, key=lambda r: c[r]["goodput_rps"]["mean"])
    assert best in {p["against"] for p in doc["paired"] if p["controller"] == "ppo"}

    def means(ctrl: str) -> str:
        return (
            f"{c[ctrl]['slo_attainment_pct']['mean']:.1f} % "
            f"({c[ctrl]['goodput_rps']['mean']:.2f} req/s) on "
            f"{c[ctrl]['worker_seconds']['mean']:.0f}"
        )

    assert f"`{scenario}`:" in page
    assert (
        f"ppo attains {means('ppo')} worker-seconds; {best}, the best rule, {means(best)}" in page
    )
    diffs = value(doc, f"paired[controller=ppo,against={best}].goodput_diff")
    listed = ", ".join(f"{d:+.2f}" for d in diffs.values())
    ahead = sum(d > 0 for d in diffs.values())
    assert f"ppo against {best}, seed by seed: {listed} req/s, **ahead on {ahead} of 5**" in page
    if "static" in c:
        static = f"static {c['static']['slo_attainment_pct']['mean']:.1f} %"
        assert static in page, static
    readme = " ".join(_page("README.md").split())
    said = {
        "azure-conv": f"on the Azure trace ppo is ahead of the best rule ({best}) on {ahead} of 5",
        "co-surge": f"on `co-surge` on {ahead} of 5",
        "surge": (
            f"on `surge`, run on a far slower day (static {static_pct(c):.1f} % where it had "
            f"{static_pct(_json('bench-surge.json')['controllers']):.1f} %), on {ahead} of 5"
        ),
    }[scenario]
    assert said in readme


def test_the_rules_tie_ppo_on_surge_as_the_readme_says() -> None:
    """The README's "aimd and queue within 0.2 req/s of it" on surge: each rule's mean
    goodput is that close to ppo's."""
    ctl = _json("bench-surge.json")["controllers"]
    gaps = [abs(ctl[c]["goodput_rps"]["mean"] - ctl["ppo"]["goodput_rps"]["mean"])
            for c in ("aimd", "queue")]  # fmt: skip
    assert "with aimd and queue within 0.2 req/s of it" in _page("README.md")
    assert max(gaps) < 0.2, gaps


def machine_speed_attainment(
    speed: str, scenario: str, policy: str, folder: str = "machine-speed"
) -> str:
    """Mean SLO attainment (%) of ``policy`` on ``scenario`` in ``<folder>/<speed>/`` (run
    with ``--cpu-scale``, the scenario is named ``NAME-cpuX``; at x1 it may not be)."""
    rows = _json(f"{folder}/{speed}/simulation.json")
    names = (scenario, f"{scenario}-cpu{speed[1:]}")
    values = [r["slo_attainment"] for r in rows if r["scenario"] in names and r["policy"] == policy]
    assert len(values) == 5, (speed, scenario, policy)
    return f"{100 * sum(values) / len(values):.1f}"


def test_the_slow_machine_figures_the_docs_quote() -> None:
    """docs/benches-and-peers.md's simulated slow machine, from the two evaluate runs."""
    a = machine_speed_attainment
    page = " ".join(_page("docs/benches-and-peers.md").split())
    quoted = [
        f"aimd {a('x1.4', 'surge', 'aimd')} %, ppo {a('x1.4', 'surge', 'ppo')} %, queue "
        f"{a('x1.4', 'surge', 'queue')} %, static {a('x1.4', 'surge', 'static')} %",
        f"ppo attains {a('x1', 'surge', 'ppo')} % against aimd's {a('x1', 'surge', 'aimd')} % "
        f"and static's {a('x1', 'surge', 'static')} %",
        f"(`co-surge` ({a('x1.4', 'co-surge', 'ppo')} % against aimd's "
        f"{a('x1.4', 'co-surge', 'aimd')} %)"[1:],
        f"({a('x1.4', 'azure-conv', 'ppo')} % against {a('x1.4', 'azure-conv', 'aimd')} %)",
    ]
    for text in quoted:
        assert text in page, text


def test_the_peer_counts_the_readme_states() -> None:
    """BentoML without batching ahead of static on every surge seed; Ray's invalid runs on
    co-surge, counted from the peers reports."""
    pairs = _json("peers-surge.json")["fixed_pairs"]
    diffs = next(p for p in pairs if p["system"] == "bentoml-nobatch")["goodput_diff"]
    assert all(d > 0 for d in diffs.values())
    page = _page("README.md")
    assert "ahead on every seed" in page
    n = {}
    for report in ("peers.json", "peers-azure-conv.json"):
        invalid = _json(report)["invalid"]
        n[report] = (sum(len(invalid.get(r, {})) for r in ("rayserve-fixed", "rayserve-auto")),
                     2 * len(_json(report)["seeds"]))  # fmt: skip
    assert "on `co-surge` {} of its {} runs are invalid".format(*n["peers.json"]) in page
    assert "Azure trace {} of {} (fixed".format(*n["peers-azure-conv.json"]) in page
    fixed_valid = len(_json("peers-azure-conv.json")["per_seed"]["rayserve-fixed"])
    assert f"on its {fixed_valid} valid seeds" in page


def test_the_frontend_variants_range_the_docs_state() -> None:
    """ "on text and tabular every variant lies within xA-B of the baseline"."""
    summary = _json("frontend-tuning.json")["summary"]
    r = [v["ratio"]["mean"] for m in ("text", "tabular") for v in summary[m].values()]
    text = f"every variant lies within x{min(r):.2f}-{max(r):.2f} of the baseline"
    assert text in _page("docs/benches-and-peers.md").replace("\n", " ")


def test_a_drifted_figure_is_caught() -> None:
    """The check itself: the same text with another value is not in the page."""
    fig = FIGURES[0]
    real = value(_json(fig.source), fig.paths[0])
    assert fig.text.format(format(real + 0.1, fig.fmt)) not in _page(fig.doc)
    assert expected(fig) in _page(fig.doc)


def test_key_paths() -> None:
    with pytest.raises(KeyError):
        value({"a": {"b": 1}}, "a.c")
    assert value({"a.b": [1, 2, 3]}, "a.b#len") == 3
    rows = {"r": [{"k": "x", "n": 1, "v": 5}, {"k": "x", "n": 2, "v": 7}]}
    assert value(rows, "r[k=x,n=2].v") == 7
    with pytest.raises(KeyError):
        value(rows, "r[k=x].v")  # two rows match: ambiguous


def test_the_readme_is_short_its_links_resolve_and_ci_runs_its_test_command() -> None:
    readme = _page("README.md")
    assert len(readme.splitlines()) <= 300
    links = re.findall(r"\]\(((?:docs/)[^)#]+)\)", readme)
    assert links and all((REPO / link).exists() for link in links), links
    for page in (REPO / "docs").glob("*.md"):
        for link in re.findall(r"\]\(([^)#:]+)\)", page.read_text()):
            assert (page.parent / link).exists(), f"{page.name}: {link}"
    assert "make test " in readme and "make demo " in readme
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, flags=re.MULTILINE), ci


def test_the_residual_design_figures_the_docs_quote() -> None:
    """docs/simulator-and-learning.md's residual design: held-out matches and paired
    difference, and surge at 1x and 1.4x, from docs/results/designs/residual/."""
    from tsadapt.experiments.evaluate_heldout import bootstrap_ci, compare, paired_diffs

    by: dict[str, list[dict]] = {}
    for res in _json("designs/residual/heldout/simulation-heldout.json"):
        for r in res["rows"]:
            by.setdefault(r["scenario"], []).append(r)
    c = compare(by, "best-rule")
    lo, hi = bootstrap_ci(paired_diffs(by, "best-rule"))
    shipped: dict[str, list[dict]] = {}
    for res in _json("simulation-heldout.json"):
        for r in res["rows"]:
            shipped.setdefault(r["scenario"], []).append(r)
    s = compare(shipped, "best-rule")
    a = machine_speed_attainment
    page = " ".join(_page("docs/simulator-and-learning.md").split())
    quoted = [
        f"matched the best rule on {c.ppo_matches} of the {c.n} held-out scenarios, mean paired "
        f"difference {c.mean_goodput_diff:+.2f} req/s (95 % CI [{lo:+.2f}, {hi:+.2f}])",
        f"it attains {a('x1', 'surge', 'ppo', 'designs/residual')} % at the profiled speed",
        f"and {a('x1.4', 'surge', 'ppo', 'designs/residual')} % on a machine 1.4x slower",
        f"(shipped {a('x1.4', 'surge', 'ppo')} %, aimd {a('x1.4', 'surge', 'aimd')} %)",
        f"the shipped direct policy ({s.ppo_matches}, {s.mean_goodput_diff:+.2f})",
        f"(the shipped policy {a('x1', 'surge', 'ppo')} %)",
    ]
    for text in quoted:
        assert text in page, text


def test_the_fleet_tick_figures_the_docs_quote() -> None:
    """docs/fleet.md's longer per-tick training, against picks8, from both reports."""

    def ppo(report: str, gpus: int, models: int) -> str:
        key = ("ppo", "diurnal", gpus, models)
        rows = [
            r
            for r in _json(f"{report}/fleet.json")
            if (r["policy"], r["mix"], r["gpus"], r["models"]) == key
        ]
        assert len(rows) == 1, (report, gpus, models)
        return f"{100 * rows[0]['attainment']:.2f} % on {rows[0]['mean_gpus']:.2f}"

    page = " ".join(_page("docs/fleet.md").split())
    tick, picks8 = "fleet-tick", "fleet-picks8"
    nexus = [
        r
        for r in _json(f"{tick}/fleet.json")
        if (r["mix"], r["gpus"], r["models"]) == ("diurnal", 128, 200)
        and r["policy"].startswith("nexus")
        and r["attainment"] >= 0.99
    ]
    nexus99 = min(r["mean_gpus"] for r in nexus)
    for text in (
        f"32x50 it holds {ppo(tick, 32, 50)} GPUs (`picks8`: {ppo(picks8, 32, 50)})",
        f"on 128x200 {ppo(tick, 128, 200)} GPUs (`picks8`: {ppo(picks8, 128, 200)};",
        f"the cheapest Nexus at 99 %: {nexus99:.2f} GPUs)",
    ):
        assert text in page, text
