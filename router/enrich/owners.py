"""Resolution of a pod's controller to the workload people name: ReplicaSet → Deployment, Job → CronJob.

Lookups run in the background when a pod is added, rate-limited and cached, never in the alert path:
an alert is enriched with the owner known at that moment (the ReplicaSet until its Deployment is known).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from router.enrich.kube_api import KubeClient, KubeError
from router.logs import get_logger
from router.metrics import Metrics

OwnerKey = tuple[str, str, str]
"""(namespace, kind, name) of a direct controller."""

_PATHS = {
    "ReplicaSet": "/apis/apps/v1/namespaces/{namespace}/replicasets/{name}",
    "Job": "/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
}


class OwnerResolver:
    """Cached, rate-limited resolution of ReplicaSet and Job owners to their own controller."""

    def __init__(
        self, client: KubeClient, metrics: Metrics, lookups_per_s: float = 5.0, max_entries: int = 10_000
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.interval_s = 1.0 / lookups_per_s
        self.max_entries = max_entries
        self.resolved: OrderedDict[OwnerKey, tuple[str, str]] = OrderedDict()
        self._queued: set[OwnerKey] = set()
        self._queue: asyncio.Queue[OwnerKey] = asyncio.Queue()
        self.log = get_logger("enrich.k8s")

    def top_owner(self, namespace: str, kind: str | None, name: str | None) -> tuple[str | None, str | None]:
        """Return the top-level owner if known, else the direct one; queue a lookup when one is needed."""
        if kind not in _PATHS or name is None:
            return kind, name
        key = (namespace, kind, name)
        resolved = self.resolved.get(key)
        if resolved is not None:
            return resolved
        self.request(key)
        return kind, name

    def request(self, key: OwnerKey) -> None:
        """Queue a background lookup of one controller, once."""
        if key[1] in _PATHS and key not in self.resolved and key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    async def run(self) -> None:
        """Resolve queued controllers, at most ``lookups_per_s`` GET requests per second, until cancelled."""
        while True:
            key = await self._queue.get()
            try:
                await self._resolve(key)
            finally:
                self._queued.discard(key)
            await asyncio.sleep(self.interval_s)

    async def _resolve(self, key: OwnerKey) -> None:
        namespace, kind, name = key
        path = _PATHS[kind].format(namespace=namespace, name=name)
        try:
            document = await self.client.get(path)
        except KubeError as exc:
            # Not cached, so the next pod of this controller requests the lookup again.
            self.metrics.k8s_owner_lookups.labels("failed").inc()
            self.log.warning("owner_lookup_failed", kind=kind, namespace=namespace, name=name, error=str(exc))
            return
        if document is None:
            # The controller is already gone (a finished Job, a scaled-away ReplicaSet): not an error.
            self.metrics.k8s_owner_lookups.labels("not_found").inc()
            self.log.debug("owner_not_found", kind=kind, namespace=namespace, name=name)
            owner = (kind, name)
        else:
            self.metrics.k8s_owner_lookups.labels("found").inc()
            owner = (kind, name)
            for reference in (document.get("metadata") or {}).get("ownerReferences") or []:
                if isinstance(reference, dict) and reference.get("controller"):
                    owner = (str(reference.get("kind")), str(reference.get("name")))
                    break
        self.resolved[key] = owner
        if len(self.resolved) > self.max_entries:
            self.resolved.popitem(last=False)
