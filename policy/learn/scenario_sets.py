"""Which randomised scenarios train, select and evaluate the policy, and proof that the
held-out ones are none of the others.

Every randomised scenario is the first draw of :func:`scenario_gen.random_scenario` from a
generator seeded with one integer (``np.random.default_rng(seed)``; gymnasium seeds an
environment's generator the same way, through ``SeedSequence``), so distinct seeds give
independent streams and "never used" is a statement about seeds:

* training: ``tsadapt train`` trains candidate seeds ``seed .. seed + candidates - 1``, each
  over ``ppo.n_envs`` environments that Stable-Baselines3 seeds ``candidate + env index``;
  every training scenario is a later draw of one of those streams
  (:func:`training_generator_seeds`);
* selection: ``select.random_scenarios`` scenarios from seeds
  :data:`~tsadapt.policy.defaults.SELECTION_SCENARIO_SEED` on, simulated with the
  scenario's own seed (:func:`selection_scenario_seeds`); the named scenario files run with
  ``select.seeds``, simulation seeds of their own;
* held-out: ``tsadapt lab evaluate --random N`` draws from seeds
  :data:`~tsadapt.policy.defaults.HELDOUT_SCENARIO_SEED` on (:func:`heldout_scenario_seeds`),
  and :func:`check_heldout` refuses a count or a training config under which they could
  meet any seed above.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tsadapt.policy.defaults import HELDOUT_SCENARIO_SEED, SELECTION_SCENARIO_SEED, TUNING_SEEDS
from tsadapt.policy.learn.scenario_gen import random_scenario
from tsadapt.policy.learn.train_config import TrainConfig
from tsadapt.policy.sim.scenario import Scenario

#: Most random held-out scenarios ``tsadapt lab evaluate --random`` draws.
MAX_HELDOUT = 10_000


def training_generator_seeds(config: TrainConfig) -> frozenset[int]:
    """Seeds of every training environment's generator (all candidates)."""
    return frozenset(
        config.seed + c + i
        for c in range(config.select.candidates)
        for i in range(config.ppo.n_envs)
    )


def selection_scenario_seeds(config: TrainConfig) -> tuple[int, ...]:
    """Generator seeds of the random validation scenarios of seed selection."""
    return tuple(
        range(SELECTION_SCENARIO_SEED, SELECTION_SCENARIO_SEED + config.select.random_scenarios)
    )


def heldout_scenario_seeds(n: int) -> tuple[int, ...]:
    """Generator seeds of ``n`` random held-out scenarios."""
    if not (isinstance(n, int) and 1 <= n <= MAX_HELDOUT):
        raise ValueError(f"--random: need 1..{MAX_HELDOUT} scenarios, got {n!r}")
    return tuple(range(HELDOUT_SCENARIO_SEED, HELDOUT_SCENARIO_SEED + n))


def used_seeds(config: TrainConfig) -> frozenset[int]:
    """Every seed training and selection use: generator seeds of the training environments
    and of the random validation scenarios, and the validation simulation seeds."""
    return (
        training_generator_seeds(config)
        | frozenset(selection_scenario_seeds(config))
        | frozenset(config.select.seeds)
        | frozenset(TUNING_SEEDS)
    )


def check_heldout(config: TrainConfig, n: int) -> tuple[int, ...]:
    """The held-out seeds for ``n`` scenarios; an error naming the field if any of them is a
    seed ``config``'s training or selection uses."""
    seeds = heldout_scenario_seeds(n)
    shared = sorted(set(seeds) & used_seeds(config))
    if shared:
        raise ValueError(
            f"--random: held-out scenario seeds {shared[:3]} are used by training or selection "
            "(seed, select.candidates, ppo.n_envs, select.random_scenarios, select.seeds)"
        )
    return seeds


def draw(
    config: TrainConfig, seeds: Sequence[int], duration_s: float, prefix: str
) -> list[Scenario]:
    """One randomised scenario per generator seed (named ``prefix-<k>``, ``-shared`` for the
    multi-tenant family), ``duration_s`` long, from ``config.randomise``."""
    return [
        random_scenario(np.random.default_rng(s), config.randomise, duration_s, f"{prefix}-{k}")
        for k, s in enumerate(seeds)
    ]
