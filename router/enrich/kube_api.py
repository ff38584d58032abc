"""A small Kubernetes API client over aiohttp: list, watch and get, with a bearer token that rotates.

The API is JSON over HTTPS, and the router needs three verbs on a handful of resources, so it speaks
the protocol directly instead of importing a client library (docs/kubernetes.md has the measurements).

Errors::

    KubeError                 base; ``retriable`` is true when a later attempt can succeed
    ├── KubeUnavailableError       connection failed, timed out, or the server returned 5xx/429 (retriable)
    ├── KubeUnauthorizedError      401 or 403: wrong, expired or unprivileged token (retriable: tokens rotate)
    ├── ResourceExpiredError       410 Gone: the resourceVersion was compacted, so the caller must re-list
    └── KubeRequestError     any other status (not retriable)
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from router.event import loads


class KubeError(Exception):
    """A Kubernetes API request failed."""

    retriable = False

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KubeUnavailableError(KubeError):
    """The API server cannot be reached or returned a server error."""

    retriable = True


class KubeUnauthorizedError(KubeError):
    """The API server rejected the token (401) or its permissions (403)."""

    retriable = True


class ResourceExpiredError(KubeError):
    """The requested resourceVersion is too old (410 Gone); list again to get a fresh one."""

    retriable = True


class KubeRequestError(KubeError):
    """The API server rejected the request for another reason."""


class KubeConfigError(Exception):
    """The in-cluster files or the kubeconfig cannot be used; the message names the file and the fix."""


class TokenSource:
    """A bearer token, re-read from its file every ``refresh_s`` because bound service account tokens rotate."""

    def __init__(self, *, token: str | None = None, path: Path | None = None, refresh_s: float = 60.0) -> None:
        self._token = token
        self._path = path
        self._refresh_s = refresh_s
        self._read_at = float("-inf")

    def get(self) -> str | None:
        """Return the current token, re-reading the file when the last read is older than ``refresh_s``."""
        if self._path is None:
            return self._token
        now = time.monotonic()
        if now - self._read_at >= self._refresh_s:
            try:
                self._token = self._path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                # Keep the last good token: the kubelet replaces the file atomically, so a failed read
                # is transient, and the API server tells us (401) if the old token is no longer valid.
                if self._token is None:
                    raise KubeConfigError(f"cannot read the token file {self._path}: {exc.strerror}") from exc
            self._read_at = now
        return self._token


@dataclass(frozen=True, slots=True)
class KubeEndpoint:
    """API server address, TLS context and bearer token source."""

    server: str
    ssl_context: ssl.SSLContext | bool
    token: TokenSource


def in_cluster_endpoint(service_account_dir: Path, token_refresh_s: float) -> KubeEndpoint:
    """Build the endpoint from the pod's service account and KUBERNETES_SERVICE_HOST/PORT."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeConfigError(
            "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set, so the router is not running in a "
            "pod; set kubernetes.kubeconfig to run outside a cluster"
        )
    token_path = service_account_dir / "token"
    ca_path = service_account_dir / "ca.crt"
    for path in (token_path, ca_path):
        if not path.is_file():
            raise KubeConfigError(
                f"{path} is missing; mount the service account token (automountServiceAccountToken: true) "
                "or set kubernetes.kubeconfig"
            )
    context = ssl.create_default_context(cafile=str(ca_path))
    if ":" in host:
        host = f"[{host}]"
    token = TokenSource(path=token_path, refresh_s=token_refresh_s)
    token.get()
    return KubeEndpoint(server=f"https://{host}:{port}", ssl_context=context, token=token)


def kubeconfig_endpoint(path: Path, context_name: str | None, token_refresh_s: float) -> KubeEndpoint:
    """Build the endpoint from a kubeconfig file: server, CA, and a token or client certificate.

    NOTE: exec and auth-provider credential plugins are not supported; use a token, a tokenFile or a
    client certificate.
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise KubeConfigError(f"cannot read the kubeconfig {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise KubeConfigError(f"the kubeconfig {path} is not a YAML mapping")

    name = context_name or document.get("current-context")
    context = _named(document, "contexts", name, path)
    cluster = _named(document, "clusters", context.get("cluster"), path)
    user = _named(document, "users", context.get("user"), path) if context.get("user") else {}

    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise KubeConfigError(f"cluster {context.get('cluster')!r} in {path} has no https:// server")

    ssl_context: ssl.SSLContext | bool = True
    if server.startswith("https://"):
        ca_data = _file_or_data(cluster, "certificate-authority", path)
        ssl_context = ssl.create_default_context(cadata=ca_data.decode() if ca_data else None)
        if cluster.get("insecure-skip-tls-verify"):
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE
        cert = _file_or_data(user, "client-certificate", path)
        key = _file_or_data(user, "client-key", path)
        if cert and key:
            _load_cert_chain(ssl_context, cert, key)

    if isinstance(user.get("tokenFile"), str):
        token = TokenSource(path=Path(user["tokenFile"]), refresh_s=token_refresh_s)
    else:
        token = TokenSource(token=user.get("token") if isinstance(user.get("token"), str) else None)
    token.get()  # an unreadable token file stops start-up here instead of failing every request
    if "exec" in user or "auth-provider" in user:
        raise KubeConfigError(
            f"user {context.get('user')!r} in {path} uses a credential plugin, which the router does not run; "
            "give it a token, tokenFile or client certificate"
        )
    return KubeEndpoint(server=server.rstrip("/"), ssl_context=ssl_context, token=token)


def _named(document: dict[str, Any], section: str, name: Any, path: Path) -> dict[str, Any]:
    for entry in document.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(section[:-1])
            if isinstance(body, dict):
                return body
    raise KubeConfigError(f"{section[:-1]} {name!r} is not defined in the kubeconfig {path}")


def _file_or_data(section: dict[str, Any], key: str, path: Path) -> bytes | None:
    data = section.get(f"{key}-data")
    if isinstance(data, str):
        return base64.b64decode(data)
    file_name = section.get(key)
    if isinstance(file_name, str):
        file_path = Path(file_name)
        if not file_path.is_absolute():
            file_path = path.parent / file_path
        try:
            return file_path.read_bytes()
        except OSError as exc:
            raise KubeConfigError(f"cannot read {key} {file_path} named in {path}: {exc.strerror}") from exc
    return None


def _load_cert_chain(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # ssl only loads certificates from files; the private key lives in a private temporary
    # directory for the duration of the call.
    with tempfile.TemporaryDirectory() as directory:
        cert_path = Path(directory) / "client.crt"
        key_path = Path(directory) / "client.key"
        cert_path.write_bytes(cert)
        key_path.write_bytes(key)
        context.load_cert_chain(str(cert_path), str(key_path))


class KubeClient:
    """list, watch and get against one API server, on one aiohttp session."""

    def __init__(self, endpoint: KubeEndpoint, *, request_timeout_s: float = 10.0) -> None:
        self.endpoint = endpoint
        self.request_timeout_s = request_timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.endpoint.ssl_context, limit=8),
                headers={"Accept": "application/json", "User-Agent": "falco-router"},
            )
        return self._session

    def _headers(self) -> dict[str, str]:
        token = self.endpoint.token.get()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any] | None:
        """GET one object or list; return None on 404 (the object is gone, which is not an error)."""
        url = self.endpoint.server + path
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
        try:
            async with self._client().get(url, params=params, headers=self._headers(), timeout=timeout) as response:
                if response.status == 404:
                    return None
                body = await response.read()
                _raise_for_status(response.status, body, path)
                document = loads(body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeUnavailableError(f"GET {path} failed: {exc!r}") from exc
        except ValueError as exc:
            raise KubeUnavailableError(f"GET {path} returned invalid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise KubeUnavailableError(f"GET {path} returned a {type(document).__name__}, not a JSON object")
        return document

    async def list(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """List a collection; a missing collection (404) is an error here."""
        document = await self.get(path, params)
        if document is None:
            raise KubeRequestError(f"GET {path} returned 404: the resource type is not served", 404)
        return document

    async def watch(
        self, path: str, params: dict[str, str], on_connected: Callable[[], None] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield watch events (``{"type": ..., "object": ...}``) until the server closes the stream.

        ``on_connected`` is called once the server has accepted the watch (status 200). A watch ERROR
        event whose Status has code 410 raises ``ResourceExpiredError``; other ERROR events raise
        ``KubeRequestError``.
        """
        url = self.endpoint.server + path
        query = {**params, "watch": "true", "allowWatchBookmarks": "true"}
        # No total timeout: the server ends the stream after timeoutSeconds. sock_read guards against a
        # connection that dies silently (bookmarks arrive about once a minute on a live watch).
        read_limit = float(params.get("timeoutSeconds", "300")) + 30
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.request_timeout_s, sock_read=read_limit)
        try:
            async with self._client().get(url, params=query, headers=self._headers(), timeout=timeout) as response:
                if response.status != 200:
                    _raise_for_status(response.status, await response.read(), path)
                if on_connected is not None:
                    on_connected()
                async for line in response.content:
                    if not line.strip():
                        continue
                    try:
                        event = loads(line)
                    except ValueError as exc:
                        raise KubeUnavailableError(f"watch {path} sent invalid JSON: {exc}") from exc
                    if not isinstance(event, dict):
                        raise KubeUnavailableError(f"watch {path} sent a {type(event).__name__}, not an event")
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        code = status.get("code")
                        message = f"watch {path} ended with {code}: {status.get('message', '')}"
                        if code == 410:
                            raise ResourceExpiredError(message, 410)
                        raise KubeRequestError(message, code if isinstance(code, int) else None)
                    yield event
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeUnavailableError(f"watch {path} failed: {exc!r}") from exc


def _raise_for_status(status: int, body: bytes, path: str) -> None:
    if status < 300:
        return
    try:
        message = loads(body).get("message", "")
    except (ValueError, AttributeError):
        message = body[:200].decode(errors="replace")
    text = f"{path} returned {status}: {message}"
    if status == 410:
        raise ResourceExpiredError(text, status)
    if status in (401, 403):
        raise KubeUnauthorizedError(text, status)
    if status >= 500 or status == 429:
        raise KubeUnavailableError(text, status)
    raise KubeRequestError(text, status)
