"""``tsadapt control --wait-s``: in a pod the sidecar starts before TorchServe has written
its key file; it retries attaching until the deadline, then fails naming the reason."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from tsadapt.cli.control_commands import attach_when_ready
from tsadapt.serve.attach import AttachError


def flaky(failures: int) -> tuple[Callable[[argparse.Namespace], tuple], list[int]]:
    calls: list[int] = []

    def connect_checked(args: argparse.Namespace) -> tuple:
        calls.append(1)
        if len(calls) <= failures:
            raise AttachError("--key-file: no such file: /var/run/torchserve/key_file.json")
        return None, "http://127.0.0.1:8082/metrics", ["image", "text"]

    return connect_checked, calls


@pytest.mark.parametrize(("wait_s", "failures", "attempts"), [(0.0, 0, 1), (5.0, 2, 3)])
def test_attach_retries_until_the_server_answers(wait_s, failures, attempts) -> None:
    connect, calls = flaky(failures)
    assert attach_when_ready(argparse.Namespace(wait_s=wait_s), connect)[2] == ["image", "text"]
    assert len(calls) == attempts


@pytest.mark.parametrize("wait_s", [0.0, 1.5])
def test_attach_gives_up_at_the_deadline_with_the_reason(wait_s) -> None:
    connect, calls = flaky(100)
    with pytest.raises(AttachError, match="key_file.json"):
        attach_when_ready(argparse.Namespace(wait_s=wait_s), connect)
    assert 1 <= len(calls) <= 1 + wait_s + 1


def test_negative_wait_is_refused() -> None:
    with pytest.raises(AttachError, match="--wait-s"):
        attach_when_ready(argparse.Namespace(wait_s=-1.0), flaky(0)[0])
