"""The reliability fixes without a TorchServe: a decision log that cannot be written never
stops the controller (``/dev/full`` is a real full disk), and the actuator does not retry a
call the server refused (a real HTTP server on loopback answers)."""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tsadapt import constants as C
from tsadapt.client import KeyFile, TorchServeClient
from tsadapt.policy.types import Action, ModelSettings
from tsadapt.sidecar.actuator import Actuator
from tsadapt.sidecar.decision_log import DecisionLog


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_reported_once_and_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    log = DecisionLog(Path("/dev/full"))
    with caplog.at_level(logging.ERROR, logger="tsadapt.sidecar.decision_log"):
        for tick in range(5):
            log.write({"event": "tick", "tick": tick})
    log.close()
    assert log.dropped == 5 and log.errors == 5
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "keeps running" in errors[0].getMessage()


def test_the_decision_log_writes_whole_lines(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "d.jsonl")
    for tick in range(3):
        log.write({"tick": tick})
    log.close()
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    assert [json.loads(line)["tick"] for line in lines] == [0, 1, 2]


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 404
    calls = 0

    def do_PUT(self) -> None:  # noqa: N802 - http.server API
        type(self).calls += 1
        body = json.dumps({"code": self.status, "type": "ModelNotFound", "message": "gone"})
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Answer]]]:
    handler = type("Answer", (_Answer,), {"calls": 0})
    httpd = http.server.ThreadingHTTPServer((C.LOOPBACK, 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{C.LOOPBACK}:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(("status", "tries"), [(404, 1), (400, 1), (500, 3)])
def test_the_actuator_retries_only_what_may_succeed(
    server: tuple[str, type[_Answer]], status: int, tries: int
) -> None:
    url, handler = server
    handler.status = status
    client = TorchServeClient(url, url, KeyFile(None), timeout_s=5)
    actuator = Actuator(client, retries=2, backoff_s=0.0)
    result = actuator.apply_one(Action("m", 8, 5, 1), ModelSettings(4, 5, 1))
    assert result is not None and not result.ok
    assert result.attempts == tries and handler.calls == tries
