"""Attach to a running TorchServe: one set of options, one resolution, every command.

Where the server is comes from, in order:

1. ``--ts-config PATH``: the user's ``config.properties`` (TorchServe's defaults for what it
   leaves out: inference ``http://127.0.0.1:8080``, management ``:8081``, metrics ``:8082``);
2. otherwise the server ``tsadapt lab serve start`` recorded in ``--workdir``;
3. otherwise, when only URLs are given, TorchServe's default addresses.

``--inference-url``/``--management-url``/``--metrics-url`` override any of them. The token
comes from ``--key-file``; without it from ``key_file.json`` where TorchServe writes it (the
directory the server was started from, then the current directory, then next to the config).
``--no-auth`` (or ``disable_token_authorization=true`` in the config) sends no token.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import requests

from tsadapt import constants as C
from tsadapt.client import KeyFile, TorchServeClient

logger = logging.getLogger(__name__)

#: TorchServe 0.12's addresses when config.properties does not set them.
DEFAULT_ADDRESSES = {
    "inference_address": f"http://{C.LOOPBACK}:{C.DEFAULT_INFERENCE_PORT}",
    "management_address": f"http://{C.LOOPBACK}:{C.DEFAULT_MANAGEMENT_PORT}",
    "metrics_address": f"http://{C.LOOPBACK}:{C.DEFAULT_METRICS_PORT}",
}
#: Bind-all hosts a client cannot connect to; the same host on loopback is used instead.
_ANY_HOST = {"0.0.0.0": C.LOOPBACK, "[::]": "[::1]", "::": "[::1]"}


class AttachError(RuntimeError):
    """The server could not be located or reached; the message names what and where."""


def read_properties(path: Path) -> dict[str, str]:
    """``key=value`` (or ``key: value``) pairs of a Java properties file; comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise AttachError(f"--ts-config: no such file: {path}")
    out: dict[str, str] = {}
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#!":
            continue
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        key, value = (line[:cut], line[cut + 1 :]) if cut >= 0 else (line, "")
        out[key.strip()] = value.strip()
    return out


def client_url(address: str, field: str = "address") -> str:
    """A URL a client can use for a TorchServe ``*_address`` (bind-all host -> loopback)."""
    text = address.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AttachError(f"{field}: not an http(s) address: {address!r}")
    netloc = parts.netloc
    for any_host, local in _ANY_HOST.items():
        if netloc == any_host or netloc.startswith(any_host + ":"):
            netloc = local + netloc[len(any_host) :]
            break
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def metrics_page(url: str) -> str:
    """The Prometheus page of a metrics address (``/metrics`` added when no path is given)."""
    return url if urlsplit(url).path not in ("", "/") else url.rstrip("/") + "/metrics"


@dataclass(frozen=True)
class Endpoint:
    """Where a server answers and which key file authorises us (None: auth off)."""

    inference_url: str
    management_url: str
    metrics_url: str
    key_file: Path | None
    source: str  # what the addresses came from, for messages

    def client(self, timeout_s: float = 30.0) -> TorchServeClient:
        return TorchServeClient(
            self.inference_url, self.management_url, KeyFile(self.key_file), timeout_s
        )


def add_attach_args(parser: argparse.ArgumentParser, workdir_default: Path | None = None) -> None:
    """The options every command that talks to a running server takes."""
    g = parser.add_argument_group("server to attach to")
    g.add_argument(
        "--ts-config",
        type=Path,
        default=None,
        help="the config.properties TorchServe was started with (reads its addresses)",
    )
    g.add_argument(
        "--workdir",
        type=Path,
        default=workdir_default if workdir_default is not None else C.DEFAULT_WORKDIR,
        help="work dir of a server `tsadapt lab serve start` started (default: %(default)s)",
    )
    g.add_argument("--key-file", type=Path, default=None, help="TorchServe's key_file.json")
    g.add_argument("--no-auth", action="store_true", help="the server has token auth off")
    g.add_argument("--inference-url", default=None, help="override the inference address")
    g.add_argument("--management-url", default=None, help="override the management address")
    g.add_argument("--metrics-url", default=None, help="override the metrics address")


def _server_dirs(config_path: Path) -> list[Path]:
    """Working directories of running TorchServe frontends started with ``config_path``."""
    wanted = config_path.resolve()
    dirs = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            if not any("org.pytorch.serve.ModelServer" in a for a in cmd):
                continue
            cwd = Path(proc.cwd())
            # the config path as TorchServe got it, possibly relative to where it started
            if any((cwd / a.split("=", 1)[-1]).resolve() == wanted for a in cmd if a):
                dirs.append(cwd)
        except (psutil.Error, OSError, ValueError):
            continue
    return dirs


def find_key_file(config_path: Path | None) -> Path | None:
    """``key_file.json`` where TorchServe writes it: its working directory, then ours, then
    next to the config."""
    candidates = _server_dirs(config_path) if config_path is not None else []
    candidates.append(Path.cwd())
    if config_path is not None:
        candidates.append(config_path.resolve().parent)
    for folder in candidates:
        path = folder / C.KEY_FILE
        if path.is_file():
            return path
    return None


def _from_properties(path: Path) -> tuple[dict[str, str], bool]:
    props = read_properties(path)
    urls = {
        key: client_url(props.get(key, default), f"{path}: {key}")
        for key, default in DEFAULT_ADDRESSES.items()
    }
    auth = props.get("disable_token_authorization", "false").strip().lower() != "true"
    return urls, auth


def resolve(args: argparse.Namespace) -> Endpoint:
    """Work out addresses and key file from the attach options (see the module docstring)."""
    overrides = {
        "inference_address": getattr(args, "inference_url", None),
        "management_address": getattr(args, "management_url", None),
        "metrics_address": getattr(args, "metrics_url", None),
    }
    ts_config = getattr(args, "ts_config", None)
    key_file: Path | None = getattr(args, "key_file", None)
    auth = not getattr(args, "no_auth", False)
    recorded = Path(getattr(args, "workdir", None) or C.DEFAULT_WORKDIR) / C.SERVER_STATE_FILE
    if ts_config is not None:
        urls, config_auth = _from_properties(Path(ts_config))
        auth = auth and config_auth
        source = f"--ts-config {ts_config}"
    elif recorded.is_file():
        from tsadapt.serve.server import RunningServer

        server = RunningServer.load(recorded.parent)
        urls = {
            "inference_address": server.inference_url,
            "management_address": server.management_url,
            "metrics_address": server.metrics_url,
        }
        if key_file is None and server.key_file:
            key_file = Path(server.key_file)
        auth = auth and server.key_file is not None
        source = f"the server recorded in {recorded.parent}"
    elif any(overrides.values()):
        urls = {k: client_url(v) for k, v in DEFAULT_ADDRESSES.items()}
        source = "the given URLs"
    else:
        raise AttachError(
            f"no server to attach to: no {C.SERVER_STATE_FILE} in {recorded.parent.resolve()}; "
            "give --ts-config PATH (the config.properties TorchServe runs with), or "
            "--workdir of a server `tsadapt lab serve start` started"
        )
    for key, value in overrides.items():
        if value:
            urls[key] = client_url(value, f"--{key.split('_')[0]}-url")
    if not auth:
        key_file = None
    elif key_file is None:
        key_file = find_key_file(Path(ts_config) if ts_config is not None else None)
        if key_file is None:
            raise AttachError(
                f"no {C.KEY_FILE} found (looked in the server's working directory, "
                f"{Path.cwd()}{' and next to ' + str(ts_config) if ts_config else ''}): give "
                "--key-file PATH, or --no-auth for a server with token authorization off"
            )
    elif not Path(key_file).is_file():
        raise AttachError(f"--key-file: no such file: {key_file}")
    return Endpoint(
        urls["inference_address"],
        urls["management_address"],
        metrics_page(urls["metrics_address"]),
        Path(key_file).resolve() if key_file is not None else None,
        source,
    )


def check(endpoint: Endpoint, client: TorchServeClient) -> list[str]:
    """The registered models; an :class:`AttachError` naming the problem if the server does
    not answer or refuses our key."""
    url = f"{endpoint.management_url}/models"
    try:
        resp = client.request("management", "GET", "models", timeout_s=5)
    except requests.RequestException as exc:
        raise AttachError(
            f"no TorchServe answers at {endpoint.management_url} (from {endpoint.source}): "
            f"{type(exc).__name__}"
        ) from None
    except (KeyError, ValueError, OSError) as exc:
        raise AttachError(f"cannot read the key file {endpoint.key_file}: {exc}") from None
    if "InvalidKeyException" in resp.text or resp.status_code == 401:
        where = f"the key in {endpoint.key_file}" if endpoint.key_file else "no key (--no-auth)"
        raise AttachError(
            f"{url} refused {where}: wrong or expired token (TorchServe rewrites "
            f"{C.KEY_FILE} on every start; give the current one with --key-file)"
        )
    if not resp.ok:
        raise AttachError(f"{url} answered {resp.status_code}: {resp.text[:200]}")
    models = [m["modelName"] for m in resp.json().get("models", [])]
    while "nextPageToken" in resp.json():  # more than one page of models
        token = resp.json()["nextPageToken"]
        resp = client.request("management", "GET", "models", params={"next_page_token": token})
        models += [m["modelName"] for m in resp.json().get("models", [])]
    return models


def connect(args: argparse.Namespace, timeout_s: float = 30.0) -> tuple[TorchServeClient, str]:
    """A client for the server the attach options name, and its Prometheus metrics URL.

    Re-callable: every call re-resolves (a restarted server may have written a new key file).
    """
    endpoint = resolve(args)
    return endpoint.client(timeout_s), endpoint.metrics_url


def connect_checked(
    args: argparse.Namespace, timeout_s: float = 30.0
) -> tuple[TorchServeClient, str, list[str]]:
    """:func:`connect`, then :func:`check`: client, metrics URL and the registered models."""
    endpoint = resolve(args)
    client = endpoint.client(timeout_s)
    return client, endpoint.metrics_url, check(endpoint, client)
