"""Free loopback ports for a server: every one distinct (a bench once died on an equal pair)."""

from __future__ import annotations

import socket

import pytest

from tsadapt.serve.server import ServerConfig, free_ports


@pytest.mark.parametrize("n", [1, 5, 20])
def test_free_ports_are_distinct_and_bindable(n: int) -> None:
    ports = free_ports(n)
    assert len(ports) == n == len(set(ports))
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_config_with_free_ports_never_repeats_one() -> None:
    for _ in range(200):
        ports = list(ServerConfig.with_free_ports().ports().values())
        assert len(set(ports)) == len(ports), ports
