"""The bench report's box-speed section: the same closed-loop probe before and after."""

from __future__ import annotations

import math

from tsadapt.experiments.bench_capacity import USERS, Capacity, speed_json, speed_lines


def cap(model: str, rps: float, status: str = "ok", reason: str = "") -> Capacity:
    return Capacity("static", model, status, reason, rps=rps)


BEFORE = [cap("image", 100.0), cap("text", 200.0), cap("tabular", math.nan, "failed", "boom")]
AFTER = [cap("image", 80.0), cap("text", 210.0), cap("tabular", 50.0)]


def test_speed_lines_give_each_model_before_after_and_the_change() -> None:
    lines = speed_lines(BEFORE, AFTER, 5.0)
    assert lines[0] == "## Box speed"
    assert f"({USERS} Locust users" in " ".join(lines)
    assert "| image | 100.0 | 80.0 | -20.0 % |" in lines
    assert "| text | 200.0 | 210.0 | +5.0 % |" in lines
    assert "| tabular | failed: boom | 50.0 | - |" in lines


def test_speed_lines_without_an_after_probe() -> None:
    lines = speed_lines(BEFORE[:1], [], 5.0)
    assert "| image | 100.0 | - | - |" in lines


def test_speed_json_is_plain_numbers_or_none() -> None:
    out = speed_json(BEFORE, AFTER, 5.0)
    assert out["before"] == {"image": 100.0, "text": 200.0, "tabular": None}
    assert out["after"]["tabular"] == 50.0 and out["seconds"] == 5.0 and out["system"] == "static"
