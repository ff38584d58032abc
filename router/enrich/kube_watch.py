"""List + watch of one resource type, kept in step with the API server (the informer pattern).

One ``Reflector`` lists the collection, then watches from the list's resourceVersion with bookmarks.
When the server ends a watch (timeoutSeconds, a restart of the API server behind a load balancer) it
resumes from the last resourceVersion it saw, without listing again. Only 410 Gone (the version was
compacted) triggers a re-list, and the old cache keeps serving until the new list replaces it in one step.
Connection errors back off exponentially with jitter up to ``backoff_max_s``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from router.enrich.kube_api import KubeClient, KubeError, KubeRequestError, ResourceExpiredError
from router.logs import get_logger
from router.metrics import Metrics

ItemsHandler = Callable[[list[dict[str, Any]]], None]
EventHandler = Callable[[str, dict[str, Any]], None]
StateHandler = Callable[[bool, str], None]


class Reflector:
    """Local copy of one collection, kept current by calling ``on_list`` and ``on_event`` with raw objects."""

    def __init__(
        self,
        client: KubeClient,
        resource: str,
        path: str,
        *,
        on_list: ItemsHandler,
        on_event: EventHandler,
        on_state: StateHandler,
        metrics: Metrics,
        field_selector: str | None = None,
        watch_timeout_s: int = 300,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.client = client
        self.resource = resource
        self.path = path
        self.on_list = on_list
        self.on_event = on_event
        self.on_state = on_state
        self.metrics = metrics
        self.field_selector = field_selector
        self.watch_timeout_s = watch_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.resource_version: str | None = None
        self.synced = False
        self._expired_in_row = 0
        self._delay = backoff_initial_s
        self.log = get_logger("enrich.k8s").bind(resource=resource)

    def _params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        if self.field_selector:
            params["fieldSelector"] = self.field_selector
        return params

    async def run(self) -> None:
        """List and watch until cancelled; never returns on its own."""
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                await self._watch()
                # The server ended the stream normally: resume from the last version, no re-list.
                self.metrics.k8s_watch_restarts.labels(self.resource, "closed").inc()
                self.log.debug("watch_restarted", reason="closed", resource_version=self.resource_version)
            except ResourceExpiredError as exc:
                self._expired_in_row += 1
                self.resource_version = None
                self.log.warning("watch_expired", error=str(exc), in_row=self._expired_in_row)
                self.metrics.k8s_watch_restarts.labels(self.resource, "expired").inc()
                if self._expired_in_row > 1:
                    # A second 410 right after a fresh list means the server compacts faster than we
                    # read; back off instead of listing in a tight loop.
                    await self._backoff()
            except KubeError as exc:
                self.on_state(False, type(exc).__name__)
                reason = "unauthorized" if exc.status in (401, 403) else "unavailable"
                self.metrics.k8s_watch_restarts.labels(self.resource, reason).inc()
                if isinstance(exc, KubeRequestError) or exc.status in (401, 403):
                    # An operator must act (RBAC, a revoked token): alerts go out un-enriched until then.
                    self.log.error("watch_failed", error=str(exc), retry_in_s=round(self._delay, 2))
                else:
                    self.log.warning("watch_failed", error=str(exc), retry_in_s=round(self._delay, 2))
                await self._backoff()

    async def _backoff(self) -> None:
        # Jitter in [delay/2, delay] so that routers on every node do not reconnect in lock step.
        await asyncio.sleep(random.uniform(self._delay / 2, self._delay))
        self._delay = min(self._delay * 2, self.backoff_max_s)

    def _connected(self) -> None:
        self._delay = self.backoff_initial_s
        self.on_state(True, "")

    async def _list(self) -> None:
        relist = self.synced
        document = await self.client.list(self.path, self._params())
        items = document.get("items") or []
        version = (document.get("metadata") or {}).get("resourceVersion")
        if not isinstance(version, str) or not version:
            raise KubeRequestError(f"list {self.path} returned no metadata.resourceVersion")
        self.on_list([item for item in items if isinstance(item, dict)])
        self.resource_version = version
        self.synced = True
        if relist:
            self.metrics.k8s_relists.labels(self.resource).inc()
            self.log.info("relist", items=len(items), resource_version=version)
        else:
            self.log.info("watch_started", items=len(items), resource_version=version)
        self._connected()

    async def _watch(self) -> None:
        assert self.resource_version is not None
        params = {
            **self._params(),
            "resourceVersion": self.resource_version,
            "timeoutSeconds": str(self.watch_timeout_s),
        }
        async for event in self.client.watch(self.path, params, on_connected=self._connected):
            kind = event.get("type")
            obj = event.get("object")
            if not isinstance(obj, dict):
                continue
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self.on_event(kind, obj)
            elif kind != "BOOKMARK":
                self.log.debug("watch_event_ignored", type=kind)
                continue
            # The watch delivered an event, so the version from the last list was not already expired.
            self._expired_in_row = 0
            if isinstance(version, str) and version:
                self.resource_version = version
