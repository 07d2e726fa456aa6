"""The one HTTP client every component uses to talk to TorchServe.

TorchServe 0.12 writes its tokens to ``key_file.json`` in its working directory::

    {"management": {"key": "...", "expiration time": "2026-...Z"},
     "inference": {"key": "...", "expiration time": "..."}, "API": {"key": "..."}}

A request without ``Authorization: Bearer KEY`` (or with an expired key) gets
HTTP 400 ``InvalidKeyException``. :class:`KeyFile` reads the file, hands out the
right key per API, and re-reads it when the key has expired or the server
rejected it (the server may have been restarted with new keys). TorchServe never
renews an expired key by itself (keys last ``token_expiration_min``, 60 minutes by
default): when the file holds no key the server accepts, :class:`TorchServeClient` asks
for a new one with the ``API`` key (``GET /token?type=...`` on the management API;
TorchServe rewrites the file) and reads the file again. The client never writes the file.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import requests

logger = logging.getLogger(__name__)

Api = Literal["management", "inference"]

#: Pooled HTTP connections per client (one per request in flight).
POOL_SIZE = 128
#: Tries to read a key file that TorchServe is still writing (0.1 s apart).
READ_ATTEMPTS = 20
#: Re-read the key file this long before the stated expiry.
EXPIRY_MARGIN_S = 30.0


class TorchServeError(RuntimeError):
    """A TorchServe call failed; carries the HTTP status and the server's message."""

    def __init__(self, status: int, message: str, url: str) -> None:
        super().__init__(f"{status} from {url}: {message}")
        self.status = status
        self.message = message
        self.url = url


def parse_expiry(text: str | None) -> float | None:
    if not text:
        return None
    # Java writes nanoseconds ("...48.505495729Z"); Python takes at most microseconds.
    text = text.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Token:
    key: str
    expires_at: float | None  # epoch seconds; None = never


class KeyFile:
    """Bearer tokens from TorchServe's ``key_file.json``; ``None`` path means auth is off."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path is not None else None
        self._tokens: dict[str, Token] = {}
        self._lock = threading.Lock()

    def reload(self) -> None:
        """Read the file again (after a restart or an expiry)."""
        if self.path is None:
            return
        raw = None
        for attempt in range(READ_ATTEMPTS):
            try:
                raw = json.loads(self.path.read_text())
                break
            except ValueError:  # TorchServe may be writing the file right now
                if attempt == READ_ATTEMPTS - 1:
                    raise
                time.sleep(0.1)
        tokens = {
            api: Token(entry["key"], parse_expiry(entry.get("expiration time")))
            for api, entry in raw.items()
        }
        with self._lock:
            self._tokens = tokens

    def token(self, api: Api) -> str | None:
        """The current key for ``api``, re-reading the file when it is missing or expired."""
        if self.path is None:
            return None
        with self._lock:
            tok = self._tokens.get(api)
        if tok is None or (
            tok.expires_at is not None and tok.expires_at - EXPIRY_MARGIN_S < time.time()
        ):
            self.reload()
            with self._lock:
                tok = self._tokens.get(api)
        if tok is None:
            raise KeyError(f"no '{api}' key in {self.path}")
        return tok.key

    def api_key(self) -> str | None:
        """The key that renews the others (the file's ``API`` entry), if there is one."""
        if self.path is None:
            return None
        with self._lock:
            tok = self._tokens.get("API")
        return tok.key if tok is not None else None

    def headers(self, api: Api) -> dict[str, str]:
        key = self.token(api)
        return {"Authorization": f"Bearer {key}"} if key else {}


def _is_auth_failure(resp: requests.Response) -> bool:
    return resp.status_code in (400, 401) and "InvalidKeyException" in resp.text


class TorchServeClient:
    """Thin, token-aware HTTP client for TorchServe's inference and management APIs."""

    def __init__(
        self,
        inference_url: str,
        management_url: str,
        keys: KeyFile,
        timeout_s: float = 30.0,
    ) -> None:
        self.inference_url = inference_url.rstrip("/")
        self.management_url = management_url.rstrip("/")
        self.keys = keys
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self._renew_lock = threading.Lock()
        # Enough pooled connections for load generators with many requests in flight.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def request(
        self, api: Api, method: str, path: str, *, timeout_s: float | None = None, **kwargs: Any
    ) -> requests.Response:
        """Send one request; on an auth failure re-read the key file and try once more."""
        base = self.management_url if api == "management" else self.inference_url
        url = f"{base}/{path.lstrip('/')}"
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        extra = kwargs.pop("headers", {})

        def send(auth: dict[str, str]) -> requests.Response:
            return self.session.request(
                method, url, headers={**auth, **extra}, timeout=timeout, **kwargs
            )

        resp = send(self.keys.headers(api))
        if _is_auth_failure(resp) and self.keys.path is not None:
            self.keys.reload()
            auth = self.keys.headers(api)
            resp = send(auth)
            if _is_auth_failure(resp) and self.renew_key(api, refused=auth):
                resp = send(self.keys.headers(api))
        return resp

    def renew_key(self, api: Api, refused: dict[str, str] | None = None) -> bool:
        """Ask TorchServe for a new ``api`` key (it rewrites the key file), then re-read the
        file; False when there is no API key or the server refused. ``refused``: the
        ``Authorization`` header the server turned down (default: the current key)."""
        api_key = self.keys.api_key()
        if api_key is None:
            return False
        failed = refused if refused is not None else self.keys.headers(api)
        with self._renew_lock:  # one renewal at a time; the others take its key
            self.keys.reload()
            if self.keys.headers(api) != failed:
                return True  # renewed meanwhile (another thread, process or a restart)
            return self._renew(api, api_key)

    def _renew(self, api: Api, api_key: str) -> bool:
        try:
            resp = self.session.get(
                f"{self.management_url}/token", params={"type": api},
                headers={"Authorization": f"Bearer {api_key}"}, timeout=self.timeout_s,
            )  # fmt: skip
        except requests.RequestException:
            return False
        if not resp.ok:
            logger.warning("TorchServe refused to renew the %s key: %s", api, resp.status_code)
            return False
        self.keys.reload()
        logger.info("renewed the expired %s key (TorchServe rewrote %s)", api, self.keys.path)
        return True

    def checked(self, api: Api, method: str, path: str, **kwargs: Any) -> Any:
        """Like :meth:`request` but raise :class:`TorchServeError` unless 2xx; return JSON."""
        resp = self.request(api, method, path, **kwargs)
        if not resp.ok:
            try:
                message = resp.json().get("message", resp.text)
            except ValueError:
                message = resp.text
            raise TorchServeError(resp.status_code, message, resp.url)
        return resp.json() if resp.content else None

    # --- convenience -------------------------------------------------------------------
    def ping(self) -> bool:
        try:
            return self.request("inference", "GET", "ping", timeout_s=2).ok
        except requests.RequestException:
            return False

    def predict(self, model: str, payload: Any, **kwargs: Any) -> requests.Response:
        return self.request("inference", "POST", f"predictions/{model}", json=payload, **kwargs)

    def describe(self, model: str) -> dict[str, Any]:
        return self.checked("management", "GET", f"models/{model}")[0]

    def list_models(self) -> list[str]:
        return [m["modelName"] for m in self.checked("management", "GET", "models")["models"]]

    def scale_workers(self, model: str, workers: int, synchronous: bool = True) -> Any:
        return self.checked(
            "management",
            "PUT",
            f"models/{model}",
            params={
                "min_worker": workers,
                "max_worker": workers,
                "synchronous": str(synchronous).lower(),
            },
        )
