"""A fake Kubernetes API server for tests: real list and watch JSON over TLS with a bearer token.

It serves pods and namespaces (list, and watch as JSON lines over a chunked response, with
resourceVersion, fieldSelector=spec.nodeName=..., allowWatchBookmarks and timeoutSeconds), and GET of
single replicasets and jobs for owner resolution. Every change gets the next resourceVersion and is
kept in a history, so a watch resumes from any version that has not been compacted. After ``compact()``
an older version gets 410 Gone, as a watch ERROR event or as HTTP 410 (``expired_as``).
A wrong token gets 401. The server binds 127.0.0.1 only and can be stopped and restarted on its port.
"""

from __future__ import annotations

import asyncio
import copy
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from aiohttp import web

from tests.support.certs import make_pki
from tests.support.data import free_port

Resource = Literal["pods", "namespaces"]


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""

    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> TlsFiles:
    """Create a CA and a server certificate for IP 127.0.0.1 signed by it."""
    pki = make_pki(directory, "kube")
    return TlsFiles(ca=pki.ca_cert, cert=pki.server.cert, key=pki.server.key)


def write_kubeconfig(
    path: Path, server: str, ca: Path, *, token: str | None = None, token_file: Path | None = None
) -> Path:
    """Write a kubeconfig with one context pointing at ``server``."""
    user: dict[str, Any] = {}
    if token is not None:
        user["token"] = token
    if token_file is not None:
        user["tokenFile"] = str(token_file)
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "tester", "user": user}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester"}}],
    }
    path.write_bytes(orjson.dumps(document))  # JSON is valid YAML
    return path


@dataclass
class _Watch:
    resource: Resource
    node: str | None
    bookmarks: bool
    queue: asyncio.Queue[dict[str, Any] | bytes | None] = field(default_factory=asyncio.Queue)


@dataclass
class RequestRecord:
    """One request the fake served: the verb (list, watch, get), its query and the response status."""

    verb: str
    path: str
    query: dict[str, str]
    status: int


class FakeKube:
    """The fake API server; tests change its state with ``add_pod``, ``delete_pod``, ``compact`` and so on."""

    def __init__(self, tls: TlsFiles, token: str = "test-token", port: int | None = None) -> None:
        self.tls = tls
        self.token = token
        self.port = port or free_port()
        self.revision = 100
        self.compacted = 0
        self.expired_as: Literal["event", "http"] = "event"
        self.objects: dict[Resource, dict[str, dict[str, Any]]] = {"pods": {}, "namespaces": {}}
        self.history: list[tuple[int, Resource, str, dict[str, Any]]] = []
        self.owners: dict[str, dict[str, Any]] = {}
        self.requests: list[RequestRecord] = []
        self._watches: list[_Watch] = []
        self._runner: web.AppRunner | None = None

    @property
    def server(self) -> str:
        """Return the https URL of the server."""
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on 127.0.0.1:``port`` over TLS."""
        app = web.Application()
        app.router.add_get("/api/v1/{resource:pods|namespaces}", self._collection)
        app.router.add_get("/apis/{group}/v1/namespaces/{namespace}/{kind:replicasets|jobs}/{name}", self._owner)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context).start()

    async def stop(self) -> None:
        """Close every watch and stop listening (the API server is down until ``start``)."""
        self.close_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._watches.clear()

    # State changes -------------------------------------------------------------------------------

    def _change(self, resource: Resource, kind: str, document: dict[str, Any]) -> dict[str, Any]:
        self.revision += 1
        stored = copy.deepcopy(document)
        stored.setdefault("metadata", {})["resourceVersion"] = str(self.revision)
        key = _key(stored)
        if kind == "DELETED":
            self.objects[resource].pop(key, None)
        else:
            self.objects[resource][key] = stored
        self.history.append((self.revision, resource, kind, stored))
        for watch in self._watches:
            if watch.resource == resource and _on_node(stored, watch.node):
                watch.queue.put_nowait({"type": kind, "object": stored})
        return stored

    def add_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        """Create or update a pod (ADDED the first time, MODIFIED after)."""
        kind = "MODIFIED" if _key(pod) in self.objects["pods"] else "ADDED"
        return self._change("pods", kind, pod)

    def delete_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        """Delete a pod (DELETED)."""
        return self._change("pods", "DELETED", pod)

    def add_namespace(self, name: str, labels: dict[str, str]) -> dict[str, Any]:
        """Create or update a namespace."""
        document = {"metadata": {"name": name, "labels": labels}}
        kind = "MODIFIED" if _key(document) in self.objects["namespaces"] else "ADDED"
        return self._change("namespaces", kind, document)

    def add_owner(self, kind: str, namespace: str, name: str, controller: tuple[str, str] | None) -> None:
        """Serve a ReplicaSet or Job, owned by ``controller`` (kind, name) when given."""
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if controller is not None:
            metadata["ownerReferences"] = [{"kind": controller[0], "name": controller[1], "controller": True}]
        self.owners[f"{kind}/{namespace}/{name}"] = {"kind": kind[:-1].capitalize(), "metadata": metadata}

    def bookmark(self) -> None:
        """Send a BOOKMARK with the current resourceVersion to every watch that asked for bookmarks."""
        for watch in self._watches:
            if watch.bookmarks:
                obj = {"kind": "Pod" if watch.resource == "pods" else "Namespace",
                       "metadata": {"resourceVersion": str(self.revision)}}  # fmt: skip
                watch.queue.put_nowait({"type": "BOOKMARK", "object": obj})

    def close_watches(self) -> None:
        """End every open watch stream from the server side, as an API server does after timeoutSeconds."""
        for watch in self._watches:
            watch.queue.put_nowait(None)

    def send_raw(self, line: bytes) -> None:
        """Write ``line`` as it is to every open watch (to test how the client handles a broken stream)."""
        for watch in self._watches:
            watch.queue.put_nowait(line)

    def compact(self) -> None:
        """Forget the history up to now: a watch or list from an older resourceVersion gets 410 Gone."""
        self.compacted = self.revision
        self.history.clear()

    def expire_watches(self) -> None:
        """Compact, then end every open watch with an ERROR event carrying a 410 Status."""
        self.compact()
        for watch in self._watches:
            watch.queue.put_nowait({"type": "ERROR", "object": _status(410, "Expired", "too old resource version")})
            watch.queue.put_nowait(None)

    def count(self, verb: str, path: str | None = None) -> int:
        """Return how many successful requests of a verb (and path) were served."""
        return sum(1 for r in self.requests if r.verb == verb and r.status == 200 and (path is None or r.path == path))

    @property
    def open_watches(self) -> int:
        """Return the number of watch streams currently open."""
        return len(self._watches)

    # HTTP --------------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        resource: Resource = request.match_info["resource"]  # type: ignore[assignment]
        query = dict(request.query)
        watching = query.get("watch") in ("true", "1")
        verb = "watch" if watching else "list"

        def answer(status: int, body: dict[str, Any]) -> web.Response:
            self.requests.append(RequestRecord(verb, request.path, query, status))
            return web.json_response(body, status=status)

        if not self._authorized(request):
            return answer(401, _status(401, "Unauthorized", "Unauthorized"))
        node = _node_selector(query.get("fieldSelector"))
        if node is False:
            return answer(400, _status(400, "BadRequest", f"unsupported fieldSelector {query.get('fieldSelector')}"))
        version = int(query.get("resourceVersion") or 0)
        if not watching:
            if version and version < self.compacted:
                return answer(410, _status(410, "Expired", "too old resource version"))
            items = [o for o in self.objects[resource].values() if _on_node(o, node)]
            kind = "PodList" if resource == "pods" else "NamespaceList"
            return answer(200, {"kind": kind, "apiVersion": "v1",
                                "metadata": {"resourceVersion": str(self.revision)}, "items": items})  # fmt: skip
        if version < self.compacted and self.expired_as == "http":
            return answer(410, _status(410, "Expired", "too old resource version"))
        self.requests.append(RequestRecord(verb, request.path, query, 200))
        return await self._stream(request, resource, node, version, query)

    async def _stream(
        self, request: web.Request, resource: Resource, node: str | None, version: int, query: dict[str, str]
    ) -> web.StreamResponse:
        watch = _Watch(resource, node, query.get("allowWatchBookmarks") == "true")
        if version < self.compacted:
            watch.queue.put_nowait({"type": "ERROR", "object": _status(410, "Expired", "too old resource version")})
            watch.queue.put_nowait(None)
        else:
            for revision, kind_of, change, obj in self.history:
                if revision > version and kind_of == resource and _on_node(obj, node):
                    watch.queue.put_nowait({"type": change, "object": obj})
        self._watches.append(watch)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            async with asyncio.timeout(float(query.get("timeoutSeconds", "1800"))):
                while (item := await watch.queue.get()) is not None:
                    await response.write(item if isinstance(item, bytes) else orjson.dumps(item) + b"\n")
        except (TimeoutError, ConnectionResetError):
            pass
        finally:
            if watch in self._watches:
                self._watches.remove(watch)
        return response

    async def _owner(self, request: web.Request) -> web.Response:
        info = request.match_info
        key = f"{info['kind']}/{info['namespace']}/{info['name']}"
        if not self._authorized(request):
            self.requests.append(RequestRecord("get", request.path, {}, 401))
            return web.json_response(_status(401, "Unauthorized", "Unauthorized"), status=401)
        document = self.owners.get(key)
        status = 200 if document is not None else 404
        self.requests.append(RequestRecord("get", request.path, {}, status))
        if document is None:
            return web.json_response(_status(404, "NotFound", f"{key} not found"), status=404)
        return web.json_response(document)


def _key(document: dict[str, Any]) -> str:
    metadata = document.get("metadata") or {}
    return f"{metadata.get('namespace', '')}/{metadata.get('name')}"


def _node_selector(selector: str | None) -> str | Literal[False] | None:
    if not selector:
        return None
    name, sep, value = selector.partition("=")
    return value if sep and name == "spec.nodeName" else False


def _on_node(document: dict[str, Any], node: str | None) -> bool:
    return node is None or (document.get("spec") or {}).get("nodeName") == node


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}  # fmt: skip


def pod(
    name: str,
    *,
    namespace: str = "ns-a",
    node: str | None = "host-a",
    container_id: str | None = None,
    labels: dict[str, str] | None = None,
    owner: tuple[str, str] | None = None,
    uid: str | None = None,
) -> dict[str, Any]:
    """Build a Pod object with one container named main."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid or f"uid-{namespace}-{name}"}
    if labels is not None:
        metadata["labels"] = labels
    if owner is not None:
        metadata["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": f"registry.example/{name}:1"}],
                            "serviceAccountName": "default"}  # fmt: skip
    if node is not None:
        spec["nodeName"] = node
    status: dict[str, Any] = {"phase": "Running"}
    if container_id is not None:
        status["containerStatuses"] = [{"name": "main", "containerID": container_id}]
    return {"kind": "Pod", "apiVersion": "v1", "metadata": metadata, "spec": spec, "status": status}
