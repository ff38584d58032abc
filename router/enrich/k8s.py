"""Kubernetes enrichment: the pipeline stage, and the watches that keep its pod cache current.

The stage puts the cached metadata of the alert's pod under ``event.enrichment["k8s"]`` and never
touches Falco's ``output_fields``. In steady state it makes no API call per alert: a lookup is a dict
access. Only when the pod is not cached yet and the watch is up does the stage return an awaitable and
wait, up to ``pod_wait_s``, for the watch to deliver it; while the watch is down alerts pass at once.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, NamedTuple

from router.config.kubernetes import KubernetesConfig
from router.enrich.kube_api import KubeClient, KubeEndpoint, in_cluster_endpoint, kubeconfig_endpoint
from router.enrich.kube_watch import Reflector
from router.enrich.owners import OwnerResolver
from router.enrich.pod_cache import KeyFilter, LookupKey, NamespaceCache, PodCache, PodInfo, container_key, parse_pod
from router.event import Event
from router.health import Health
from router.logs import get_logger
from router.metrics import Metrics

HEALTH_COMPONENT: Final = "kubernetes"

STATUS_HIT: Final = "hit"
STATUS_DELETED: Final = "deleted"
STATUS_STALE: Final = "stale"
STATUS_NOT_FOUND: Final = "not_found"
LOOKUP_RESULTS: Final = (STATUS_HIT, STATUS_DELETED, STATUS_STALE, STATUS_NOT_FOUND, "waited")
MAX_CACHED_DOCUMENTS: Final = 50_000
"""Bound of the stage's built documents; the whole map is cleared when it is reached."""


class KubernetesEnrichment:
    """The pod and namespace caches, the watches that feed them, the owner resolver and the stage."""

    def __init__(
        self,
        config: KubernetesConfig,
        metrics: Metrics,
        health: Health,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.health = health
        self.cache = PodCache(config.deleted_grace_s, clock) if clock else PodCache(config.deleted_grace_s)
        self.namespaces = NamespaceCache()
        self.label_filter = KeyFilter(config.labels, config.max_keys, config.max_value_chars)
        self.annotation_filter = KeyFilter(config.annotations, config.max_keys, config.max_value_chars)
        self.node_name = config.node_name or os.environ.get(config.node_name_env) or None
        self.client: KubeClient | None = None
        self.owners: OwnerResolver | None = None
        self.reflectors: list[Reflector] = []
        self._up: dict[str, bool] = {}
        self.log = get_logger("enrich.k8s")
        self.stage = KubernetesStage(self)

    @property
    def pods_live(self) -> bool:
        """Tell whether the pod watch is connected and the cache current, so waiting for a pod makes sense."""
        return self._up.get("pods", False)

    def connect(self, endpoint: KubeEndpoint | None = None) -> None:
        """Build the API client and the watches; raises ``KubeConfigError`` when no credentials can be used."""
        config = self.config
        if endpoint is None:
            if config.kubeconfig is not None:
                endpoint = kubeconfig_endpoint(config.kubeconfig, config.context, config.token_refresh_s)
            else:
                endpoint = in_cluster_endpoint(config.service_account_dir, config.token_refresh_s)
        self.client = KubeClient(endpoint, request_timeout_s=config.request_timeout_s)
        common: dict[str, Any] = {
            "metrics": self.metrics,
            "watch_timeout_s": config.watch_timeout_s,
            "backoff_initial_s": config.backoff_initial_s,
            "backoff_max_s": config.backoff_max_s,
        }
        self.reflectors = [
            Reflector(
                self.client,
                "pods",
                "/api/v1/pods",
                on_list=self._pods_listed,
                on_event=self._pod_changed,
                on_state=lambda up, reason: self._set_state("pods", up, reason),
                field_selector=f"spec.nodeName={self.node_name}" if self.node_name else None,
                **common,
            )
        ]
        if config.watch_namespaces:
            self.reflectors.append(
                Reflector(
                    self.client,
                    "namespaces",
                    "/api/v1/namespaces",
                    on_list=lambda items: self.namespaces.replace(items, self.label_filter),
                    on_event=self._namespace_changed,
                    on_state=lambda up, reason: self._set_state("namespaces", up, reason),
                    **common,
                )
            )
        if config.resolve_owners:
            self.owners = OwnerResolver(self.client, self.metrics, config.owner_lookups_per_s)
        for reflector in self.reflectors:
            self._up[reflector.resource] = False
            self.metrics.k8s_watch_up.labels(reflector.resource).set(0)
        self.health.set(HEALTH_COMPONENT, "degraded", "not_synced", node=self.node_name or "")
        self.log.info("k8s_enrichment_started", server=endpoint.server, node=self.node_name or "", scope=self.scope)

    @property
    def scope(self) -> str:
        """Return ``node`` when only this node's pods are watched, ``cluster`` otherwise."""
        return "node" if self.node_name else "cluster"

    def tasks(self) -> dict[str, Coroutine[Any, Any, None]]:
        """Return the background tasks to supervise, by name."""
        tasks = {f"k8s-watch-{r.resource}": r.run() for r in self.reflectors}
        if self.owners is not None:
            tasks["k8s-owners"] = self.owners.run()
        return tasks

    async def close(self) -> None:
        """Close the API client (the tasks are cancelled by the supervisor)."""
        if self.client is not None:
            await self.client.close()

    def _set_state(self, resource: str, up: bool, reason: str) -> None:
        if self._up.get(resource) == up:
            return
        self._up[resource] = up
        self.metrics.k8s_watch_up.labels(resource).set(1 if up else 0)
        if resource == "pods" and not up:
            # Waiting alerts would wait for nothing: let them go now, marked not_found.
            self.cache.release_waiters()
        down = sorted(name for name, is_up in self._up.items() if not is_up)
        if down:
            self.health.set(HEALTH_COMPONENT, "degraded", f"watch_down: {', '.join(down)}", last_error=reason)
            if not up:
                self.log.warning("k8s_cache_stale", resource=resource, error=reason)
        else:
            self.health.set(HEALTH_COMPONENT, "ok", "", pods=len(self.cache))
            self.log.info("k8s_cache_current", pods=len(self.cache), namespaces=len(self.namespaces.labels))

    def _parse(self, document: dict[str, Any]) -> PodInfo | None:
        pod = parse_pod(document, self.label_filter, self.annotation_filter)
        if pod is not None and self.owners is not None and pod.owner_kind and pod.owner_name:
            self.owners.request((pod.namespace, pod.owner_kind, pod.owner_name))
        return pod

    def _pods_listed(self, items: list[dict[str, Any]]) -> None:
        pods = [pod for pod in map(self._parse, items) if pod is not None]
        self.cache.replace(pods)
        self._update_gauges()

    def _pod_changed(self, kind: str, document: dict[str, Any]) -> None:
        pod = self._parse(document)
        if pod is None:
            return
        if kind == "DELETED":
            self.cache.delete(pod)
        else:
            self.cache.upsert(pod)
        self._update_gauges()

    def _namespace_changed(self, kind: str, document: dict[str, Any]) -> None:
        if kind == "DELETED":
            self.namespaces.delete(document)
        else:
            self.namespaces.upsert(document, self.label_filter)

    def _update_gauges(self) -> None:
        self.metrics.k8s_cache_pods.labels("live").set(len(self.cache))
        self.metrics.k8s_cache_pods.labels("deleted").set(self.cache.deleted_count)


class KubernetesStage:
    """The pipeline stage that adds ``enrichment.k8s`` to alerts from pods."""

    name = "k8s"

    def __init__(self, enrichment: KubernetesEnrichment) -> None:
        self.enrichment = enrichment
        self.cache = enrichment.cache
        # Resolved once and tallied: labels() and inc() each take a lock that would otherwise run per alert.
        metrics = enrichment.metrics
        self._counted = {result: metrics.tally(metrics.k8s_lookups.labels(result)) for result in LOOKUP_RESULTS}
        self.wait_s = enrichment.config.pod_wait_s
        # Built enrichment.k8s documents by (pod, status, container key), so alerts of one pod share one
        # dict instead of building twelve keys each time. An entry holds the inputs it was built from and
        # is rebuilt when the pod object, its namespace's labels or its resolved owner has changed.
        self._documents: dict[tuple[int, str, str | None], _BuiltDocument] = {}

    def process(self, event: Event) -> Event | Awaitable[Event]:
        """Enrich from the cache; return an awaitable only when the pod may still arrive on the watch."""
        fields = event.output_fields
        if event.source == "k8s_audit":
            self._enrich_audit(event, fields)
            return event
        key, container = lookup_key(fields)
        if key is None:
            return event
        pod = self.cache.get(key)
        if pod is not None:
            self._set(event, pod, container, waited=False)
            return event
        if self.enrichment.pods_live and self.wait_s > 0:
            return self._wait(event, key, container)
        self._not_found(event)
        return event

    async def _wait(self, event: Event, key: LookupKey, container: str | None) -> Event:
        pod = await self.cache.wait_for(key, self.wait_s)
        if pod is None:
            self._not_found(event)
        else:
            self._set(event, pod, container, waited=True)
        return event

    def _set(self, event: Event, pod: PodInfo, container: str | None, *, waited: bool) -> None:
        if pod.deleted_at is not None:
            status = STATUS_DELETED
        elif not self.enrichment.pods_live:
            status = STATUS_STALE
        else:
            status = STATUS_HIT
        self._counted["waited" if waited else status].inc()
        event.enrichment["k8s"] = self._document(pod, status, container)
        event.invalidate_json()

    def _document(self, pod: PodInfo, status: str, container: str | None) -> dict[str, Any]:
        enrichment = self.enrichment
        owner = _top_owner(pod, enrichment)
        namespace_labels = enrichment.namespaces.labels.get(pod.namespace)
        key = (id(pod), status, container)
        built = self._documents.get(key)
        # The identity checks also catch a new PodInfo that reuses the id of a freed one.
        if (
            built is not None
            and built.pod is pod
            and built.namespace_labels is namespace_labels
            and built.owner == owner
        ):
            return built.document
        document = pod_document(pod, status, container, enrichment)
        if len(self._documents) >= MAX_CACHED_DOCUMENTS:
            self._documents.clear()
        self._documents[key] = _BuiltDocument(pod, namespace_labels, owner, document)
        return document

    def _not_found(self, event: Event) -> None:
        self._counted[STATUS_NOT_FOUND].inc()
        event.enrichment["k8s"] = {"status": STATUS_NOT_FOUND}
        event.invalidate_json()

    def _enrich_audit(self, event: Event, fields: dict[str, Any]) -> None:
        namespace = fields.get("ka.target.namespace")
        if not isinstance(namespace, str) or not namespace:
            return
        resource = fields.get("ka.target.resource")
        name = fields.get("ka.target.name")
        # Audit events come from the API server, so the pod may run on another node and is not waited for.
        if resource in (None, "pods") and isinstance(name, str) and name:
            pod = self.cache.get(("pod", f"{namespace}/{name}"))
            if pod is not None:
                self._set(event, pod, None, waited=False)
                return
        labels = self.enrichment.namespaces.labels.get(namespace)
        if labels is None:
            document: dict[str, Any] = {"status": STATUS_NOT_FOUND, "namespace": namespace}
            self._counted[STATUS_NOT_FOUND].inc()
        else:
            status = STATUS_HIT if self.enrichment.pods_live else STATUS_STALE
            document = {"status": status, "namespace": namespace, "namespace_labels": labels}
            self._counted[status].inc()
        event.enrichment["k8s"] = document
        event.invalidate_json()


class _BuiltDocument(NamedTuple):
    pod: PodInfo
    namespace_labels: dict[str, str] | None
    owner: tuple[str | None, str | None]
    document: dict[str, Any]


def _top_owner(pod: PodInfo, enrichment: KubernetesEnrichment) -> tuple[str | None, str | None]:
    owners = enrichment.owners
    if owners is not None:
        return owners.top_owner(pod.namespace, pod.owner_kind, pod.owner_name)
    return pod.owner_kind, pod.owner_name


def lookup_key(fields: dict[str, Any]) -> tuple[LookupKey | None, str | None]:
    """Return the cache key for an alert's output_fields and its container key; (None, None) for no lookup.

    container.id comes first; ``host`` means a process outside any container, so nothing is looked up.
    Without a usable container id, k8s.pod.uid and then k8s.ns.name + k8s.pod.name are tried.
    """
    raw = fields.get("container.id")
    if raw == "host":
        return None, None
    container = container_key(raw)
    if container is not None:
        return ("container", container), container
    uid = fields.get("k8s.pod.uid") or fields.get("k8s.pod.id")
    if isinstance(uid, str) and uid:
        return ("uid", uid), None
    namespace, name = fields.get("k8s.ns.name"), fields.get("k8s.pod.name")
    if isinstance(namespace, str) and namespace and isinstance(name, str) and name:
        return ("pod", f"{namespace}/{name}"), None
    return None, None


def pod_document(pod: PodInfo, status: str, container: str | None, enrichment: KubernetesEnrichment) -> dict[str, Any]:
    """Build the ``enrichment.k8s`` object for one pod.

    The stage shares one document between the alerts of a pod, and the label dicts with the cache
    (no per-alert copy), so stages after it must treat the document and its dicts as read-only.
    """
    owner_kind, owner_name = _top_owner(pod, enrichment)
    document: dict[str, Any] = {
        "status": status,
        "namespace": pod.namespace,
        "pod": pod.name,
        "pod_uid": pod.uid,
        "pod_deleted": pod.deleted_at is not None,
        "labels": pod.labels,
        "annotations": pod.annotations,
        "namespace_labels": enrichment.namespaces.labels.get(pod.namespace, {}),
        "owner": {"kind": owner_kind, "name": owner_name} if owner_kind else None,
        "node": pod.node,
        "service_account": pod.service_account,
        "images": pod.images,
    }
    info = pod.containers.get(container) if container else None
    if info is not None:
        document["container_name"] = info.name
        document["image"] = info.image
    if pod.truncated:
        document["truncated"] = pod.truncated
    return document
