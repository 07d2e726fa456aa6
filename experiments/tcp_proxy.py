"""A loopback TCP proxy whose behaviour can be switched while it runs: pass traffic through,
delay every chunk from the server by a fixed time, or swallow it (the server looks up but
never answers). The reliability runs put it between the controller and the management API.
"""

from __future__ import annotations

import socket
import threading
import time

from tsadapt import constants as C

MODES = ("pass", "delay", "blackhole")
_CHUNK = 65536


class DelayProxy:
    """Listens on a free loopback port and forwards to ``upstream_port`` on loopback."""

    def __init__(self, upstream_port: int, delay_s: float = 0.0) -> None:
        self.upstream = (C.LOOPBACK, upstream_port)
        self.mode = "pass"
        self.delay_s = delay_s
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((C.LOOPBACK, 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._halt = threading.Event()
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True, name="delay-proxy")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{C.LOOPBACK}:{self.port}"

    def set_mode(self, mode: str, delay_s: float | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: {mode!r} is not one of {MODES}")
        self.mode = mode
        if delay_s is not None:
            self.delay_s = delay_s

    def _accept(self) -> None:
        while not self._halt.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._socks.update(socks)

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        self._track(client, server)
        threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
        self._pump(server, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        try:
            while not self._halt.is_set():
                data = src.recv(_CHUNK)
                if not data:
                    break
                if from_server:
                    if self.mode == "delay":
                        time.sleep(self.delay_s)
                    while self.mode == "blackhole" and not self._halt.is_set():
                        time.sleep(0.1)  # hold the answer until the mode changes
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._halt.set()
        self._listener.close()
        with self._lock:
            for s in self._socks:
                s.close()
        self._thread.join(5)
