"""Seed selection for ``tsadapt train``: train several PPO seeds, keep the best on validation.

PPO's outcome depends on its seed more than on most reward settings we tried. Of the four
seeds ``configs/train.yaml`` trains, one scored 1538.7 req/s of summed validation goodput
against the best one's 1640.5 (376 against 456 on ``diurnal-shared``), and another
reconfigured 8 times as often as the best, for 15 req/s less on ``bursty`` (the
``selection`` metadata of ``policy/trained/ppo.zip``). So, when ``select.candidates`` > 1,
``tsadapt train`` trains seeds ``seed, seed + 1, ...`` (one process each, ``processes``
at once), runs every candidate behind the guards over ``select.scenario_files`` x
``select.seeds`` - best-static's tuning seeds by default, none an evaluation seed, so the
choice never sees the runs ``tsadapt lab evaluate`` reports - and keeps the candidate that
:func:`better` ranks first: highest validation goodput, then, within a tie, fewest
worker-seconds, then fewest reconfigurations. Every candidate's scores go into the chosen
file's metadata (``selection``), so the choice can be checked, and every candidate's file is
kept next to it (:func:`candidates_dir`), so ``tsadapt lab evaluate --random`` can rank the
candidates on held-out scenarios and say whether selection ranked them the same way.

With ``select.random_scenarios`` > 0 every candidate is also run once on that many random
validation scenarios (:mod:`policy.learn.scenario_sets`: seeds of their own, none a training
or a held-out one); their summed goodput is recorded as ``random_goodput_rps`` next to
the ranking score, which it does not change.

Adaptive validation runs start where ``tsadapt lab evaluate`` starts them: the demo models'
registration defaults (:func:`sim_control.registration_configs`).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tsadapt.constants import REPO_DIR
from tsadapt.policy.learn.train_config import TrainConfig

REPO = REPO_DIR
#: Validation goodput differences (req/s, summed over scenarios) up to this are ties.
SCORE_TIE_RPS = 0.05

#: ``on_progress(candidate_seed, done_steps, total_steps, mean_episode_reward)``.
CandidateProgress = Callable[[int, int, int, float], None]


@dataclass(frozen=True)
class Validation:
    """One candidate's validation: per scenario, means over the validation seeds."""

    seed: int
    goodput_rps: dict[str, float]
    worker_seconds: dict[str, float]
    reconfigurations: dict[str, float]
    train_seconds: float
    validate_seconds: float
    #: Summed goodput and worker-seconds over the random validation scenarios (0 if none).
    random_goodput_rps: float = 0.0
    random_worker_seconds: float = 0.0

    @property
    def score(self) -> float:
        """Summed mean goodput over the validation scenarios (req/s)."""
        return float(sum(self.goodput_rps.values()))

    @property
    def total_worker_seconds(self) -> float:
        return float(sum(self.worker_seconds.values()))

    @property
    def total_reconfigurations(self) -> float:
        return float(sum(self.reconfigurations.values()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "score_goodput_rps": round(self.score, 3),
            "worker_seconds": round(self.total_worker_seconds, 1),
            "reconfigurations": round(self.total_reconfigurations, 1),
            "train_seconds": round(self.train_seconds, 1),
            "validate_seconds": round(self.validate_seconds, 1),
            "random_goodput_rps": round(self.random_goodput_rps, 3),
            "random_worker_seconds": round(self.random_worker_seconds, 1),
            "scenarios": {
                name: {
                    "goodput_rps": round(g, 3),
                    "worker_seconds": round(self.worker_seconds[name], 1),
                    "reconfigurations": round(self.reconfigurations[name], 1),
                }
                for name, g in self.goodput_rps.items()
            },
        }


def better(a: Validation, b: Validation) -> bool:
    """Does ``a`` rank before ``b``? More goodput by more than a tie; within a tie, fewer
    worker-seconds, then fewer reconfigurations, then the lower seed."""
    if abs(a.score - b.score) > SCORE_TIE_RPS:
        return a.score > b.score
    key_a = (a.total_worker_seconds, a.total_reconfigurations, a.seed)
    return key_a < (b.total_worker_seconds, b.total_reconfigurations, b.seed)


def choose(validations: Sequence[Validation]) -> Validation:
    """The candidate :func:`better` ranks first."""
    if not validations:
        raise ValueError("no candidates to choose from")
    best = validations[0]
    for v in validations[1:]:
        if better(v, best):
            best = v
    return best


def resolve_scenario_file(path: str) -> Path:
    """``path`` as given if it exists, else relative to the repo; an error names the field."""
    p = Path(path)
    for candidate in (p, REPO / p):
        if candidate.is_file():
            return candidate
    raise ValueError(f"select.scenario_files: no such scenario file {path!r}")


def validate(policy_file: Path, scenario_files: Sequence[str], seeds: Sequence[int]) -> dict:
    """Mean goodput, worker-seconds and reconfigurations per scenario of one policy file."""
    from tsadapt.policy.sim.control import registration_configs, run_named
    from tsadapt.policy.sim.scenario import load_scenario

    out: dict[str, dict[str, float]] = {"goodput": {}, "worker_s": {}, "reconf": {}}
    for path in scenario_files:
        sc = load_scenario(resolve_scenario_file(path))
        runs = [
            run_named(sc, "ppo", s, policy_file, initial=registration_configs(sc)).as_dict()
            for s in seeds
        ]
        out["goodput"][sc.name] = float(np.mean([r["goodput_rps"] for r in runs]))
        out["worker_s"][sc.name] = float(np.mean([r["worker_seconds"] for r in runs]))
        out["reconf"][sc.name] = float(np.mean([r["reconfigurations"] for r in runs]))
    return out


def validate_random(policy_file: Path, config: TrainConfig) -> tuple[float, float]:
    """Summed goodput and worker-seconds of one policy file over the random validation
    scenarios (one run each, the scenario's own seed; (0, 0) when there are none)."""
    from tsadapt.policy.learn.scenario_sets import draw, selection_scenario_seeds
    from tsadapt.policy.sim.control import run_named

    horizon = config.env.episode_ticks * config.env.tick_s
    goodput = worker_s = 0.0
    for sc in draw(config, selection_scenario_seeds(config), horizon, "select"):
        r = run_named(sc, "ppo", sc.seed, policy_file)
        goodput += r.overall.goodput_rps
        worker_s += r.overall.worker_seconds
    return goodput, worker_s


def candidates_dir(out: Path) -> Path:
    """Where :func:`train_selected` keeps every candidate's policy file (``seed<N>.zip``)."""
    return Path(out).parent / "candidates"


def _train_and_validate(
    config: TrainConfig, out: Path, command: str, progress: Any
) -> tuple[dict[str, Any], Validation]:
    """One candidate (runs in a worker process): train, then validate."""
    from tsadapt.policy.learn.ppo_train import train

    def on(done: int, total: int, mean: float) -> None:
        if progress is not None:
            progress.put((config.seed, done, total, mean))

    meta = train(config, out, command=command, on_progress=on)
    t0 = time.perf_counter()
    v = validate(out, config.select.scenario_files, config.select.seeds)
    random_goodput, random_worker_s = validate_random(out, config)
    return meta, Validation(
        seed=config.seed,
        goodput_rps=v["goodput"],
        worker_seconds=v["worker_s"],
        reconfigurations=v["reconf"],
        train_seconds=float(meta["train_seconds"]),
        validate_seconds=time.perf_counter() - t0,
        random_goodput_rps=random_goodput,
        random_worker_seconds=random_worker_s,
    )


def _processes(config: TrainConfig) -> int:
    wanted = config.select.processes or (os.cpu_count() or 1)
    return max(1, min(wanted, config.select.candidates))


def train_selected(
    config: TrainConfig,
    out: Path,
    command: str = "",
    on_progress: CandidateProgress | None = None,
    on_validated: Callable[[Validation], None] | None = None,
) -> dict[str, Any]:
    """Train ``select.candidates`` seeds, validate each, write the best to ``out``; return
    its metadata (with ``selection``: every candidate's scores, the chosen seed, the wall
    time of the whole selection)."""
    from tsadapt.policy.ppo_policy import copy_policy_file

    sel = config.select
    for path in sel.scenario_files:
        resolve_scenario_file(path)  # fail before hours of training, not after
    seeds = [config.seed + i for i in range(sel.candidates)]
    t0 = time.perf_counter()
    results: dict[int, tuple[dict[str, Any], Validation]] = {}
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="tsadapt-select-") as tmp, ctx.Manager() as mgr:
        progress = mgr.Queue()
        files = {s: Path(tmp) / f"seed{s}.zip" for s in seeds}
        with ProcessPoolExecutor(_processes(config), mp_context=ctx) as pool:
            futures = {
                pool.submit(
                    _train_and_validate, replace(config, seed=s), files[s], command, progress
                ): s
                for s in seeds
            }
            pending = set(futures)
            while pending:
                _drain(progress, on_progress)
                for f in [f for f in pending if f.done()]:
                    pending.discard(f)
                    meta, v = f.result()
                    results[futures[f]] = (meta, v)
                    if on_validated is not None:
                        on_validated(v)
                time.sleep(0.2)
            _drain(progress, on_progress)
        best = choose([results[s][1] for s in seeds])
        meta = dict(results[best.seed][0])
        meta["selection"] = {
            "chosen_seed": best.seed,
            "rule": "highest summed validation goodput; within "
            f"{SCORE_TIE_RPS} req/s, fewest worker-seconds, then fewest reconfigurations",
            "scenario_files": list(sel.scenario_files),
            "validation_seeds": list(sel.seeds),
            "random_scenarios": sel.random_scenarios,
            "processes": _processes(config),
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "candidates": [results[s][1].as_dict() for s in seeds],
        }
        copy_policy_file(files[best.seed], out, meta)
        keep = candidates_dir(out)
        keep.mkdir(parents=True, exist_ok=True)
        for old in keep.glob("seed*.zip"):
            old.unlink()
        for s in seeds:
            shutil.copyfile(files[s], keep / f"seed{s}.zip")
    return meta


def _drain(progress: Any, on_progress: CandidateProgress | None) -> None:
    while True:
        try:
            item = progress.get_nowait()
        except queue.Empty:
            return
        if on_progress is not None:
            on_progress(*item)
