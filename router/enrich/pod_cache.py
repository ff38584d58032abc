"""The pod and namespace cache that alerts are enriched from, indexed for constant-time lookups.

Pods are indexed by container id (the first 12 hex characters, the form Falco sends), by pod uid and by
namespace + name. A deleted pod stays in every index for ``deleted_grace_s`` so that an alert from a
short-lived Job pod that arrives after the DELETED event is still enriched. The watch code mutates the
cache; the enrichment stage only reads it.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

_HEX12: Final = re.compile(r"[0-9a-f]{12}")
CONTAINER_ID_CHARS: Final = 12
TRUNCATION_MARK: Final = "…"

LookupKey = tuple[str, str]
"""("container", id12), ("uid", uid) or ("pod", "namespace/name")."""


def container_key(raw: Any) -> str | None:
    """Return the 12-hex-character index key of a container id, or None for host, empty and malformed ids.

    Accepts the forms both sides use: ``containerd://<64 hex>`` (cri-o://, docker:// likewise) from the
    pod status and the 12-character id Falco sends.
    """
    if not isinstance(raw, str) or not raw:
        return None
    # partition instead of a regex substitution: this runs once per alert.
    _runtime, separator, rest = raw.partition("://")
    short = (rest if separator else raw)[:CONTAINER_ID_CHARS].lower()
    return short if _HEX12.fullmatch(short) else None


class KeyFilter:
    """Allow-list of label or annotation keys (shell globs), with a maximum key count and value length."""

    __slots__ = ("_match_all", "_pattern", "max_keys", "max_value_chars")

    def __init__(self, globs: Iterable[str], max_keys: int, max_value_chars: int) -> None:
        globs = list(globs)
        self._match_all = "*" in globs
        self._pattern = re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None
        self.max_keys = max_keys
        self.max_value_chars = max_value_chars

    def apply(self, source: Any, prefix: str, truncated: list[str]) -> dict[str, str]:
        """Return the allowed keys of ``source``, sorted, at most ``max_keys``.

        Keys of cut values (and ``<prefix>.*`` when keys were dropped) are appended to ``truncated``.
        """
        if not isinstance(source, dict) or self._pattern is None or self.max_keys == 0:
            return {}
        kept: dict[str, str] = {}
        for key in sorted(source):
            if not (self._match_all or self._pattern.match(key)):
                continue
            if len(kept) == self.max_keys:
                truncated.append(f"{prefix}.*")
                break
            value = str(source[key])
            if len(value) > self.max_value_chars:
                value = value[: self.max_value_chars - 1] + TRUNCATION_MARK
                truncated.append(f"{prefix}.{key}")
            kept[key] = value
        return kept


@dataclass(slots=True)
class ContainerInfo:
    """One container of a pod, as the alert's container.id points at it."""

    name: str
    image: str


@dataclass(slots=True)
class PodInfo:
    """The cached part of one pod: only the fields enrichment uses, with labels already filtered."""

    uid: str
    namespace: str
    name: str
    node: str | None
    service_account: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    owner_kind: str | None
    owner_name: str | None
    containers: dict[str, ContainerInfo]
    images: list[str]
    truncated: list[str]
    deleted_at: float | None = None

    def lookup_keys(self) -> list[LookupKey]:
        """Return every index key of this pod."""
        keys: list[LookupKey] = [("uid", self.uid), ("pod", f"{self.namespace}/{self.name}")]
        keys.extend(("container", cid) for cid in self.containers)
        return keys


def parse_pod(document: dict[str, Any], labels: KeyFilter, annotations: KeyFilter) -> PodInfo | None:
    """Build a ``PodInfo`` from a Pod object; None when it has no uid, name or namespace."""
    metadata = document.get("metadata") or {}
    spec = document.get("spec") or {}
    status = document.get("status") or {}
    uid, name, namespace = metadata.get("uid"), metadata.get("name"), metadata.get("namespace")
    if not (isinstance(uid, str) and isinstance(name, str) and isinstance(namespace, str)):
        return None

    images: dict[str, str] = {}
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict) and isinstance(container.get("name"), str):
                images[container["name"]] = str(container.get("image") or "")

    containers: dict[str, ContainerInfo] = {}
    # Pods in ContainerCreating have statuses without containerID, or none at all: those are skipped.
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for container_status in status.get(key) or []:
            if not isinstance(container_status, dict):
                continue
            cid = container_key(container_status.get("containerID"))
            if cid is None:
                continue
            container_name = str(container_status.get("name") or "")
            image = images.get(container_name) or str(container_status.get("image") or "")
            containers[cid] = ContainerInfo(container_name, image)

    owner_kind = owner_name = None
    for reference in metadata.get("ownerReferences") or []:
        if isinstance(reference, dict) and reference.get("controller"):
            owner_kind, owner_name = reference.get("kind"), reference.get("name")
            break

    truncated: list[str] = []
    return PodInfo(
        uid=uid,
        namespace=namespace,
        name=name,
        node=spec.get("nodeName"),
        service_account=spec.get("serviceAccountName"),
        labels=labels.apply(metadata.get("labels"), "labels", truncated),
        annotations=annotations.apply(metadata.get("annotations"), "annotations", truncated),
        owner_kind=owner_kind,
        owner_name=owner_name,
        containers=containers,
        images=[image for image in images.values() if image],
        truncated=truncated,
    )


@dataclass(slots=True)
class _Indexes:
    container: dict[str, PodInfo] = field(default_factory=dict)
    uid: dict[str, PodInfo] = field(default_factory=dict)
    pod: dict[str, PodInfo] = field(default_factory=dict)

    def add(self, pod: PodInfo) -> None:
        self.uid[pod.uid] = pod
        self.pod[f"{pod.namespace}/{pod.name}"] = pod
        for cid in pod.containers:
            self.container[cid] = pod

    def discard(self, pod: PodInfo) -> None:
        # Remove only entries that still point at this pod: a StatefulSet pod recreated under the same
        # name must keep its by-name entry when the old one expires.
        for index, key in (
            (self.uid, pod.uid),
            (self.pod, f"{pod.namespace}/{pod.name}"),
            *((self.container, cid) for cid in pod.containers),
        ):
            if index.get(key) is pod:
                del index[key]


class PodCache:
    """Pods by container id, uid and namespace/name, with recently deleted pods kept for a grace period."""

    def __init__(self, deleted_grace_s: float = 120.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.deleted_grace_s = deleted_grace_s
        self.clock = clock
        self._indexes = _Indexes()
        self._live: dict[str, PodInfo] = {}
        self._deleted: deque[PodInfo] = deque()
        self._waiters: dict[LookupKey, list[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return len(self._live)

    @property
    def deleted_count(self) -> int:
        """Return how many deleted pods are kept for late alerts."""
        return len(self._deleted)

    def get(self, key: LookupKey) -> PodInfo | None:
        """Return the pod for a lookup key; a deleted pod past its grace period is not returned."""
        kind, value = key
        if kind == "container":
            pod = self._indexes.container.get(value)
        elif kind == "uid":
            pod = self._indexes.uid.get(value)
        else:
            pod = self._indexes.pod.get(value)
        if pod is not None and pod.deleted_at is not None and self.clock() - pod.deleted_at > self.deleted_grace_s:
            return None
        return pod

    def upsert(self, pod: PodInfo) -> None:
        """Add a pod or replace the cached version of it (ADDED, MODIFIED)."""
        old = self._live.get(pod.uid)
        if old is not None:
            self._indexes.discard(old)
        self._live[pod.uid] = pod
        self._indexes.add(pod)
        self._wake(pod)
        self.expire()

    def delete(self, pod: PodInfo) -> None:
        """Mark a pod deleted and keep it for ``deleted_grace_s`` (DELETED)."""
        old = self._live.pop(pod.uid, None)
        if old is not None:
            self._indexes.discard(old)
        pod.deleted_at = self.clock()
        self._indexes.add(pod)
        self._deleted.append(pod)
        # An alert may be waiting for a pod that lived and died between two watch events.
        self._wake(pod)
        self.expire()

    def replace(self, pods: Iterable[PodInfo]) -> None:
        """Swap in the result of a fresh list in one step, so lookups never see a half-built cache.

        Pods that were cached but are missing from the list were deleted while the watch was down:
        they are kept as deleted, like a DELETED event would.
        """
        now = self.clock()
        indexes = _Indexes()
        live: dict[str, PodInfo] = {}
        for pod in pods:
            live[pod.uid] = pod
        deleted = deque(p for p in self._deleted if p.uid not in live)
        for uid, pod in self._live.items():
            if uid not in live:
                pod.deleted_at = now
                deleted.append(pod)
        for pod in deleted:
            indexes.add(pod)
        for pod in live.values():
            indexes.add(pod)
        self._indexes, self._live, self._deleted = indexes, live, deleted
        for pod in live.values():
            self._wake(pod)
        self.expire()

    def expire(self) -> None:
        """Drop deleted pods whose grace period is over."""
        limit = self.clock() - self.deleted_grace_s
        while self._deleted and (self._deleted[0].deleted_at or 0.0) < limit:
            pod = self._deleted.popleft()
            if self._live.get(pod.uid) is not pod:
                self._indexes.discard(pod)

    async def wait_for(self, key: LookupKey, timeout_s: float) -> PodInfo | None:
        """Wait up to ``timeout_s`` for a pod with this key to be added; return it or None."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        try:
            async with asyncio.timeout(timeout_s):
                await future
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._waiters[key]
        return self.get(key)

    def release_waiters(self) -> None:
        """Wake every waiting alert now (the watch went down, so the pod will not come soon)."""
        waiters, self._waiters = self._waiters, {}
        for futures in waiters.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)

    def _wake(self, pod: PodInfo) -> None:
        if not self._waiters:
            return
        for key in pod.lookup_keys():
            for future in self._waiters.pop(key, ()):
                if not future.done():
                    future.set_result(None)


class NamespaceCache:
    """Namespace labels by namespace name."""

    def __init__(self) -> None:
        self.labels: dict[str, dict[str, str]] = {}

    def upsert(self, document: dict[str, Any], labels: KeyFilter) -> None:
        """Add or replace a namespace (ADDED, MODIFIED)."""
        metadata = document.get("metadata") or {}
        name = metadata.get("name")
        if isinstance(name, str):
            self.labels[name] = labels.apply(metadata.get("labels"), "namespace_labels", [])

    def delete(self, document: dict[str, Any]) -> None:
        """Forget a namespace (DELETED)."""
        name = (document.get("metadata") or {}).get("name")
        if isinstance(name, str):
            self.labels.pop(name, None)

    def replace(self, documents: Iterable[dict[str, Any]], labels: KeyFilter) -> None:
        """Swap in the result of a fresh list in one step."""
        fresh = NamespaceCache()
        for document in documents:
            fresh.upsert(document, labels)
        self.labels = fresh.labels
