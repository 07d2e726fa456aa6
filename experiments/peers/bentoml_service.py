"""The demo models on BentoML 1.4: one service, one batchable API per model, run by
``bentoml serve`` (``bentoml_bench`` starts it).

Each worker process loads every model exactly as a TorchServe worker does, through the
project's own handler (``tsadapt.handlers.local.load_local``: the same seeded weights,
validation, collation, forward and answers, one intra-op thread). Routes are TorchServe's
(``POST /predictions/<model>``) and the request bodies are the same JSON objects; BentoML
decodes the JSON (its own frontend's job) and the handler gets the decoded object, which it
accepts as TorchServe's decoded ``data`` field. BentoML batches along a list, so each
request's object is taken as a list of one (a pydantic ``BeforeValidator``), and the answer
is that list of one answer (``[{"label": ..., "probabilities": [...]}]``).

The scenario and mode come from the environment (``TSADAPT_BENTO_SCENARIO``,
``TSADAPT_BENTO_MODE``), read when ``bentoml serve`` imports this module in each worker;
:func:`tsadapt.experiments.peers.bentoml_app.bento_settings` derives the settings.
"""

import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import bentoml
from pydantic import BeforeValidator

from tsadapt.experiments.peers.bentoml_app import ENV_MODE, ENV_SCENARIO, bento_settings
from tsadapt.experiments.peers.timing import TimeAccount
from tsadapt.handlers.catalog import DEMO_MODELS
from tsadapt.policy.sim.scenario import load_scenario


def _one_item(value: Any) -> Any:  # noqa: ANN401 - JSON
    """A request's JSON object as a batch of one (BentoML batches along lists)."""
    return [value] if isinstance(value, dict) else value


Bodies = Annotated[list[dict[str, Any]], BeforeValidator(_one_item)]

SETTINGS = bento_settings(load_scenario(Path(os.environ[ENV_SCENARIO])), os.environ[ENV_MODE])


def _api(model: str) -> Any:  # noqa: ANN401 - a bentoml API method
    api = SETTINGS.apis[model]

    def predict(self: Any, bodies: Bodies, /) -> list[dict[str, Any]]:  # noqa: ANN401
        return self.run(model, bodies)

    predict.__name__ = predict.__qualname__ = model
    kwargs: dict[str, Any] = {"route": f"/predictions/{model}", "batchable": api.batchable}
    if api.batchable:
        kwargs.update(max_batch_size=api.max_batch_size, max_latency_ms=api.max_latency_ms)
    return bentoml.api(**kwargs)(predict)


class _Models:
    """Every demo model of the scenario, loaded through our handler in this worker."""

    def __init__(self) -> None:
        from tsadapt.handlers.local import load_local

        root = Path(tempfile.mkdtemp(prefix="tsadapt-bento-"))
        self.local = {m: load_local(DEMO_MODELS[m], root / m) for m in SETTINGS.apis}
        self.accounts = {m: TimeAccount(m) for m in SETTINGS.apis}

    def run(self, model: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        started = time.perf_counter()
        answers = self.local[model].run([{"body": b} for b in bodies])
        self.accounts[model].batch(len(bodies), (time.perf_counter() - started) * 1000.0)
        return answers


for _name in SETTINGS.apis:
    setattr(_Models, _name, _api(_name))

Models = bentoml.service(name="tsadapt-demo", **SETTINGS.service_options())(_Models)
