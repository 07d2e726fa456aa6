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


BURSTY_SLOS = {"image": 200.0, "text": 150.0, "tabular": 50.0}


def test_shipped_config_loads_with_a_scenarios_slos() -> None:
    config = load(SHIPPED, slos=BURSTY_SLOS)
    assert set(config.model_names) == {"image", "text", "tabular"}
    assert {m.name: m.slo_ms for m in config.models} == BURSTY_SLOS


def test_policy_and_overrides_replace_file_values(tmp_path: Path) -> None:
    config = load(SHIPPED, policy="queue", tick_s=0.5, window_s=None, slos=BURSTY_SLOS)
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
        ("models.resnet", {"slo_ms": 10}, "models.resnet.max_delay_ms"),
        ("models.default", {"slo_ms": 100}, "models.default"),
        ("default", {"max_workers": 2}, "default.slo_ms"),
        ("default", {"slo_ms": 100, "max_batch": 0}, "default.max_batch"),
        ("default", {"slo_ms": 100, "colour": 1}, "default.colour"),
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
    assert from_dict(base(), known_models=["tabular"]).model_names == ("tabular",)
    with pytest.raises(ConfigError, match="^models.tabular: unknown model"):
        from_dict(base(), known_models=["image"])


def test_any_model_name_is_accepted_without_a_catalog() -> None:
    data = base()
    data["models"]["mymlp"] = {"slo_ms": 80, "max_delay_ms": 10}
    assert from_dict(data).limits("mymlp").slo_ms == 80


def test_a_default_entry_alone_is_a_config() -> None:
    config = from_dict({"worker_budget": 2, "default": {"slo_ms": 100, "max_delay_ms": 10}})
    assert config.models == () and config.default is not None
    with pytest.raises(ConfigError, match="^models: must map"):
        from_dict({"worker_budget": 2})


def with_default(**default: Any) -> dict[str, Any]:
    return {**base(), "default": {"slo_ms": 200, "max_delay_ms": 20, **default}}


@pytest.mark.parametrize(
    ("data", "registered", "controlled", "left"),
    [
        # a configured model that is not registered is simply absent
        (base(), ["other"], (), {"other": "not in the controller config (no default: entry)"}),
        (base(), ["tabular"], ("tabular",), {}),
        # default: adopts every other registered model, in name order
        (with_default(), ["b", "tabular", "a"], ("tabular", "a", "b"), {}),
        # ... while the worker budget (3) covers their min_workers
        (
            with_default(min_workers=1, max_workers=1),
            ["tabular", "a", "b", "c"],
            ("tabular", "a", "b"),
            {"c": "worker_budget 3 has no room for its min_workers"},
        ),
    ],
)
def test_for_models_follows_the_registered_models(
    data: dict[str, Any], registered: list[str], controlled: tuple[str, ...], left: dict[str, str]
) -> None:
    config, left_alone = from_dict(data).for_models(registered)
    assert config.model_names == controlled
    assert left_alone == left
    if "a" in controlled:
        assert config.limits("a").slo_ms == 200 and config.limits("a").name == "a"


@pytest.mark.parametrize(("tick_s", "ticks", "seconds"), [(1.0, 5, 5.0), (0.5, 4, 2.0)])
def test_the_old_tick_based_downscale_delay_is_read_in_seconds(
    tick_s: float, ticks: int, seconds: float, caplog: pytest.LogCaptureFixture
) -> None:
    """Every time setting is in seconds; a config with the old ``downscale_delay_ticks``
    still loads, converted with its tick, and the log names the new key."""
    config = from_dict({**base(), "tick_s": tick_s, "queue": {"downscale_delay_ticks": ticks}})
    assert config.queue.downscale_delay_s == seconds
    assert "downscale_delay_s" in caplog.text


@pytest.mark.parametrize(
    ("queue", "field"),
    [
        ({"downscale_delay_ticks": 2, "downscale_delay_s": 2.0}, "queue.downscale_delay_ticks"),
        ({"downscale_delay_ticks": 1.5}, "queue.downscale_delay_ticks"),
        ({"downscale_delay_s": -1.0}, "queue.downscale_delay_s"),
    ],
)
def test_bad_downscale_delays_name_the_field(queue: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict({**base(), "queue": queue})
    assert info.value.path == field


@pytest.mark.parametrize(("tick_s", "patience"), [(1.0, 5), (0.5, 10), (2.0, 3), (3.0, 2)])
def test_the_queue_rule_holds_workers_for_the_delay_in_seconds(
    tick_s: float, patience: int
) -> None:
    from tsadapt.policy.factory import make_policy

    config = from_dict({**base(), "tick_s": tick_s, "queue": {"downscale_delay_s": 5.0}})
    assert make_policy("queue", config).downscale_patience == patience
