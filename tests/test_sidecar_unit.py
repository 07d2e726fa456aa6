"""Sidecar pieces that need no server: metric parsing, the decision log, re-apply plans."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import requests
from controller_helpers import config, limits, model_obs, observation

from tsadapt.plugin.actuator import restore_actions
from tsadapt.plugin.decision_log import DecisionLog, read_log
from tsadapt.plugin.exporter import MetricsExporter
from tsadapt.plugin.observer import parse_handler_counters
from tsadapt.plugin.sidecar import rebuild_policy, split_observation
from tsadapt.policy.ppo_policy import SHIPPED_POLICY, make_ppo_policy
from tsadapt.policy.rules import make_policy
from tsadapt.policy.types import Action, ModelSettings, PolicyState

PAGE = """# TYPE AdaptBatches counter
AdaptBatches{ModelName="text",Level="Model",Hostname="vm",} 20.0
AdaptBatches{ModelName="tabular",Level="Model",Hostname="vm",} 5.0
# TYPE AdaptBatchRequests counter
AdaptBatchRequests{ModelName="tabular",Level="Model",Hostname="vm",} 40.0
AdaptHandlerMilliseconds{ModelName="tabular",Level="Model",Hostname="vm",} 26.1
ts_inference_requests_total{model_name="tabular",model_version="default",hostname="vm",} 40.0
"""


def test_parse_handler_counters() -> None:
    assert parse_handler_counters(PAGE) == {"text": (20.0, 0.0), "tabular": (5.0, 40.0)}
    assert parse_handler_counters("") == {}


def test_decision_log_writes_strict_json_lines(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "d.jsonl")
    log.write({"observation": observation(model_obs(p99=math.nan)), "n": math.inf})
    log.close()
    (tmp_path / "d.jsonl").open("a").write('{"torn": ')  # a killed writer's last line
    records = read_log(tmp_path / "d.jsonl")
    assert len(records) == 1 and records[0]["n"] is None
    assert records[0]["observation"]["models"][0]["p99_ms"] is None
    json.dumps(records, allow_nan=False)


def test_restore_actions_only_for_models_that_drifted() -> None:
    desired = {"a": ModelSettings(4, 7, 2), "b": ModelSettings(8, 5, 1)}
    live = {"a": ModelSettings(16, 5, 1), "b": ModelSettings(8, 5, 1)}
    assert restore_actions(desired, live) == (Action("a", 4, 7, 2),)
    assert restore_actions(desired, desired) == ()


def test_exporter_text_exposition() -> None:
    exporter = MetricsExporter(port=0)
    try:
        exporter.update(observation(model_obs(p99=42.0, batch_size=8)), {"tabular": 2}, {})
        exporter.update(None, {"tabular": 1}, {"tabular": 1})
        text = requests.get(exporter.url, timeout=5).text
    finally:
        exporter.close()
    assert "tsadapt_controller_server_up 0" in text
    assert "tsadapt_controller_ticks_total 2" in text
    assert 'tsadapt_controller_p99_ms{model="tabular"} 42.0' in text
    assert 'tsadapt_controller_batch_size{model="tabular"} 8.0' in text
    assert 'tsadapt_controller_overrides_total{model="tabular"} 3' in text
    assert 'tsadapt_controller_apply_failures_total{model="tabular"} 1' in text


def test_split_observation_keeps_the_controlled_models_only() -> None:
    obs = observation(model_obs("a"), model_obs("b"), model_obs("c"))
    mine, others = split_observation(obs, ["c", "a"])
    assert [m.name for m in mine.models] == ["a", "c"]
    assert [m.name for m in others] == ["b"]
    assert mine.time_s == obs.time_s and mine.host == obs.host


@pytest.mark.parametrize("name", ["static", "aimd", "queue", "ppo"])
def test_rebuild_policy_follows_the_models(name: str) -> None:
    one, two = config(limits("a")), config(limits("a"), limits("b"))
    policy = make_ppo_policy(SHIPPED_POLICY, one) if name == "ppo" else make_policy(name, one)
    rebuilt = rebuild_policy(policy, two)
    assert rebuilt.name == name
    obs = observation(model_obs("a"), model_obs("b", queue=50, p99=500.0))
    actions, _ = rebuilt.decide(obs, PolicyState())
    assert {a.model for a in actions} <= {"a", "b"}
    if name == "queue":  # b's backlog is now the policy's business
        assert "b" in {a.model for a in actions}
