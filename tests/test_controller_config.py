"""Controller config: the shipped file loads; bad input is rejected naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tsadapt.policy.controller_config import ConfigError, from_dict, load

SHIPPED = Path(__file__).resolve().parents[1] / "configs" / "controller.yaml"


def base() -> dict[str, Any]:
    return {
        "worker_budget": 3,
        "models": {"tabular": {"slo_ms": 60, "min_workers": 1, "max_workers": 2, "max_batch": 32}},
    }


def test_shipped_config_loads() -> None:
    config = load(SHIPPED)
    assert set(config.model_names) == {"image", "text", "tabular"}
    assert config.limits("tabular").slo_ms > 0


def test_policy_and_overrides_replace_file_values(tmp_path: Path) -> None:
    config = load(SHIPPED, policy="queue", tick_s=0.5, window_s=None)
    assert config.policy == "queue" and config.tick_s == 0.5


def deep_set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = data
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("models.tabular.slo_ms", 0, "models.tabular.slo_ms"),
        ("models.tabular.slo_ms", -5, "models.tabular.slo_ms"),
        ("models.tabular.max_workers", 0, "models.tabular.max_workers"),
        ("models.tabular.min_batch", 64, "models.tabular.max_batch"),
        ("models.tabular.max_delay_ms", 60, "models.tabular.max_delay_ms"),
        ("models.tabular.colour", "red", "models.tabular.colour"),
        ("models.resnet", {"slo_ms": 10}, "models.resnet"),
        ("models.text", {"max_workers": 2}, "models.text.slo_ms"),
        ("worker_budget", 0, "worker_budget"),
        ("policy", "magic", "policy"),
        ("tick_s", 0, "tick_s"),
        ("window_s", 0.5, "window_s"),
        ("aimd.decrease_factor", 1.5, "aimd.decrease_factor"),
        ("aimd.speed", 1, "aimd.speed"),
        ("queue.batch_wait_fraction", 0, "queue.batch_wait_fraction"),
        ("no_such_field", 1, "no_such_field"),
        ("memory_budget_mb", -1, "memory_budget_mb"),
    ],
)
def test_bad_values_name_the_field(path: str, value: Any, field: str) -> None:
    data = deep_set(base(), path, value)
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    assert err.value.path == field
    assert str(err.value).startswith(field + ":")


def test_budget_below_the_minimum_workers() -> None:
    data = base()
    data["models"]["text"] = {"slo_ms": 100, "min_workers": 3, "max_workers": 3}
    with pytest.raises(ConfigError, match="^worker_budget: 3 is below the sum of min_workers"):
        from_dict(data)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="<root>"):
        load(listed)


def test_known_models_can_come_from_the_server() -> None:
    with pytest.raises(ConfigError, match="^models.tabular: unknown model"):
        from_dict(base(), known_models=["image"])
