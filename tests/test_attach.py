"""Attach options: config.properties parsing, address resolution, key-file lookup (no server)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tsadapt.attach import (
    AttachError,
    add_attach_args,
    client_url,
    metrics_page,
    read_properties,
    resolve,
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_attach_args(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key_file.json"
    path.write_text(json.dumps({"management": {"key": "m"}, "inference": {"key": "i"}}))
    return path


def test_properties_are_read_like_java_does(tmp_path: Path) -> None:
    path = tmp_path / "config.properties"
    path.write_text(
        "# comment\n! also a comment\n\ninference_address = http://127.0.0.1:9000\n"
        "management_address:http://127.0.0.1:9001\nmodel_store=/a/\\\n  b\nflag\n"
    )
    assert read_properties(path) == {
        "inference_address": "http://127.0.0.1:9000",
        "management_address": "http://127.0.0.1:9001",
        "model_store": "/a/b",
        "flag": "",
    }


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("http://0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("https://0.0.0.0:8443/", "https://127.0.0.1:8443"),
        ("http://[::]:8081", "http://[::1]:8081"),
        ("127.0.0.1:8082", "http://127.0.0.1:8082"),
        ("https://models.example:443", "https://models.example:443"),
    ],
)
def test_bind_all_addresses_become_loopback(address: str, url: str) -> None:
    assert client_url(address) == url


def test_not_an_http_address_is_named() -> None:
    with pytest.raises(AttachError, match="inference_address: not an http"):
        client_url("ftp://x:1", "inference_address")


def test_metrics_page_path() -> None:
    assert metrics_page("http://127.0.0.1:8082") == "http://127.0.0.1:8082/metrics"
    assert metrics_page("http://127.0.0.1:8082/custom") == "http://127.0.0.1:8082/custom"


def test_defaults_fill_what_the_config_leaves_out(tmp_path: Path, key_file: Path) -> None:
    config = tmp_path / "config.properties"
    config.write_text("management_address=https://0.0.0.0:9443\n")
    ep = resolve(parse("--ts-config", str(config), "--key-file", str(key_file)))
    assert ep.inference_url == "http://127.0.0.1:8080"
    assert ep.management_url == "https://127.0.0.1:9443"
    assert ep.metrics_url == "http://127.0.0.1:8082/metrics"
    assert ep.key_file == key_file.resolve()


def test_key_file_next_to_the_config_and_overrides(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path.parent)  # not where the key file is
    config = tmp_path / "config.properties"
    config.write_text("inference_address=http://127.0.0.1:7000\n")
    args = parse("--ts-config", str(config), "--management-url", "http://127.0.0.1:7001")
    ep = resolve(args)
    assert ep.key_file == key_file.resolve()
    assert (ep.inference_url, ep.management_url) == (
        "http://127.0.0.1:7000",
        "http://127.0.0.1:7001",
    )


@pytest.mark.parametrize(
    ("text", "argv", "key"),
    [
        ("disable_token_authorization=true\n", [], None),
        ("", ["--no-auth"], None),
    ],
)
def test_auth_off(tmp_path: Path, text: str, argv: list[str], key: None) -> None:
    config = tmp_path / "config.properties"
    config.write_text(text)
    assert resolve(parse("--ts-config", str(config), *argv)).key_file is key


def test_errors_name_the_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AttachError, match="--ts-config: no such file"):
        resolve(parse("--ts-config", str(tmp_path / "missing.properties")))
    config = tmp_path / "config.properties"
    config.write_text("")
    with pytest.raises(AttachError, match="no key_file.json found.*--key-file PATH, or --no-auth"):
        resolve(parse("--ts-config", str(config)))
    with pytest.raises(AttachError, match="--key-file: no such file"):
        resolve(parse("--ts-config", str(config), "--key-file", str(tmp_path / "nokey.json")))
    with pytest.raises(AttachError, match="no server to attach to.*--ts-config"):
        resolve(parse("--workdir", str(tmp_path / "nothing")))
