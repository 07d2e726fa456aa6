"""Faults injected into a real TorchServe under open-loop load while the controller (the PPO
policy) acts: each case (:mod:`tsadapt.experiments.fault_cases`) returns the row it writes into
``docs/results/reliability.md`` and the checks it must pass. One server for the module (the
text model, plugin and token auth on); the frontend-restart and plugin-missing cases start
their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tsadapt.experiments.fault_cases import FAULTS, FaultEnv, start_server
from tsadapt.experiments.fault_harness import MODEL
from tsadapt.serve.server import ServerConfig, stop

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, model_store: Path) -> Iterator[FaultEnv]:
    tmp = tmp_path_factory.mktemp("faults")
    config = ServerConfig.with_free_ports(
        workdir=tmp / "ts", model_store=model_store, models=(MODEL,)
    )
    server = start_server(config)
    try:
        yield FaultEnv(server, config, tmp, model_store)
    finally:
        stop(config.workdir)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault(env: FaultEnv, fault: str) -> None:
    env.reset()
    result = FAULTS[fault](env)
    print(result.as_dict())
    failed = [name for name, ok in result.checks.items() if not ok]
    assert result.checks and not failed, f"{fault}: {failed}; {result.as_dict()}"
