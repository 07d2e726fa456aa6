"""KeyFile: token parsing, expiry and re-reading, without a server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tsadapt.client import KeyFile


def _write(path: Path, mgmt: str, expires: datetime) -> None:
    stamp = expires.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"  # Java prints nanoseconds
    path.write_text(
        json.dumps(
            {
                "management": {"key": mgmt, "expiration time": stamp},
                "inference": {"key": "inf-" + mgmt, "expiration time": stamp},
                "API": {"key": "api"},
            }
        )
    )


def test_headers_carry_the_right_key(tmp_path: Path) -> None:
    path = tmp_path / "key_file.json"
    _write(path, "m1", datetime.now(UTC) + timedelta(hours=1))
    keys = KeyFile(path)
    assert keys.headers("management") == {"Authorization": "Bearer m1"}
    assert keys.headers("inference") == {"Authorization": "Bearer inf-m1"}


def test_cached_key_is_used_until_it_expires(tmp_path: Path) -> None:
    path = tmp_path / "key_file.json"
    _write(path, "m1", datetime.now(UTC) + timedelta(hours=1))
    keys = KeyFile(path)
    assert keys.token("management") == "m1"
    _write(path, "m2", datetime.now(UTC) + timedelta(hours=1))
    assert keys.token("management") == "m1"  # still valid: no re-read
    keys.reload()
    assert keys.token("management") == "m2"


def test_expired_key_is_reread(tmp_path: Path) -> None:
    path = tmp_path / "key_file.json"
    _write(path, "old", datetime.now(UTC) + timedelta(seconds=5))  # inside the margin
    keys = KeyFile(path)
    keys.reload()
    _write(path, "new", datetime.now(UTC) + timedelta(hours=1))
    assert keys.token("management") == "new"


def test_auth_off_sends_no_header() -> None:
    assert KeyFile(None).headers("management") == {}


def test_missing_api_is_named(tmp_path: Path) -> None:
    path = tmp_path / "key_file.json"
    path.write_text(json.dumps({"API": {"key": "x"}}))
    with pytest.raises(KeyError, match="no 'management' key"):
        KeyFile(path).token("management")


def test_expiry_parses_java_nanoseconds() -> None:
    from tsadapt.client import parse_expiry

    ts = parse_expiry("2026-11-23T13:51:48.505495729Z")
    assert (
        ts is not None
        and abs(ts - datetime(2026, 11, 23, 13, 51, 48, 505495, UTC).timestamp()) < 1e-3
    )
    assert parse_expiry(None) is None


def test_half_written_key_file_is_read_again(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "key_file.json"
    path.write_text('{"management": {"key": "m')  # TorchServe is still writing it
    timer = threading.Timer(0.3, _write, (path, "done", datetime.now(UTC) + timedelta(hours=1)))
    timer.start()
    try:
        assert KeyFile(path).token("management") == "done"
    finally:
        timer.join()
