"""The k8s stage against the fake API server: field cases, waiting, watch restarts, 410s and outages."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from router.config.kubernetes import KubernetesConfig
from router.enrich.k8s import KubernetesEnrichment
from router.enrich.kube_api import KubeConfigError
from router.event import MISSING, Event, parse_alert
from router.health import Health
from router.metrics import Metrics
from tests.k8s.conftest import eventually
from tests.support.data import cases
from tests.support.fake_kube import FakeKube, TlsFiles, pod, write_kubeconfig

Factory = Callable[..., Awaitable[KubernetesEnrichment]]


@pytest.fixture
async def enrichment(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Factory]:
    """Build, connect and run a KubernetesEnrichment against the fake; stop it at the end of the test."""
    monkeypatch.delenv("NODE_NAME", raising=False)
    tasks: list[asyncio.Task[None]] = []
    built: list[KubernetesEnrichment] = []

    async def build(wait_synced: bool = True, **settings: Any) -> KubernetesEnrichment:
        settings = {"enabled": True, "kubeconfig": kubeconfig, "backoff_initial_s": 0.01, "backoff_max_s": 0.05,
                    **settings}  # fmt: skip
        result = KubernetesEnrichment(KubernetesConfig(**settings), Metrics(), Health())
        result.connect()
        tasks.extend(asyncio.create_task(coroutine, name=name) for name, coroutine in result.tasks().items())
        built.append(result)
        if wait_synced:
            await eventually(lambda: result.pods_live, "pod watch is live")
        return result

    yield build
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for result in built:
        await result.close()


async def run_stage(enrichment: KubernetesEnrichment, event: Event) -> Event:
    result = enrichment.stage.process(event)
    return await result if inspect.isawaitable(result) else result


def alert(container_id: Any = "9f8e7d6c5b4a", **fields: Any) -> Event:
    return parse_alert(
        {
            "rule": "Test rule",
            "priority": "Notice",
            "time": "2023-11-14T22:13:20.000000000Z",
            "source": "syscall",
            "output_fields": {"container.id": container_id, "k8s.ns.name": None, "k8s.pod.name": None, **fields},
        }
    )


def lookups(enrichment: KubernetesEnrichment, result: str) -> float:
    return enrichment.metrics.sample("k8s_lookups_total", result=result)


async def test_c08_deleted_pod_still_enriches(fake: FakeKube, enrichment: Factory) -> None:
    case = cases("C08")[0]
    k8s = await enrichment(node_name="host-a")
    for change in case["k8s"]:
        if change["type"] == "ADDED":
            fake.add_pod(change["pod"])
        else:
            fake.delete_pod(change["pod"])
    await eventually(lambda: k8s.cache.deleted_count == 1, "the DELETED event reached the cache")

    with capture_logs() as logs:
        event = await run_stage(k8s, parse_alert(case["event"]))

    enriched = event.enrichment["k8s"]
    assert enriched["pod"] == "job-a-x1y2z"
    assert enriched["namespace"] == "ns-batch"
    assert enriched["labels"] == {"job-name": "job-a", "team": "team-a"}
    assert enriched["pod_deleted"] is True
    assert enriched["status"] == "deleted"
    assert [entry for entry in logs if entry["log_level"] == "error"] == []
    assert lookups(k8s, "deleted") == 1


async def test_c08_output_fields_untouched(fake: FakeKube, enrichment: Factory) -> None:
    case = cases("C08")[0]
    k8s = await enrichment(node_name="host-a")
    fake.add_pod(case["k8s"][0]["pod"])
    await eventually(lambda: len(k8s.cache) == 1, "pod cached")

    event = await run_stage(k8s, parse_alert(case["event"]))

    assert event.output_fields == case["event"]["output_fields"]
    assert event.to_dict()["enrichment"]["k8s"]["pod"] == "job-a-x1y2z"


async def test_unknown_pod_waits_then_not_found(fake: FakeKube, enrichment: Factory) -> None:
    k8s = await enrichment(pod_wait_s=0.05)

    result = k8s.stage.process(alert("0123456789ab"))

    assert inspect.isawaitable(result)
    event = await result
    assert event.enrichment["k8s"] == {"status": "not_found"}
    assert lookups(k8s, "not_found") == 1


async def test_pod_arriving_during_wait_is_used(fake: FakeKube, enrichment: Factory) -> None:
    k8s = await enrichment(pod_wait_s=5)

    pending = k8s.stage.process(alert("0123456789ab"))
    assert inspect.isawaitable(pending)
    fake.add_pod(pod("late", container_id="containerd://0123456789ab" + "0" * 52))
    event = await pending

    assert event.enrichment["k8s"]["pod"] == "late"
    assert event.enrichment["k8s"]["status"] == "hit"
    assert lookups(k8s, "waited") == 1


@pytest.mark.parametrize("index", range(5))
async def test_c09_container_id_forms(fake: FakeKube, enrichment: Factory, index: int) -> None:
    case = cases("C09")[index]
    k8s = await enrichment()
    for change in case["k8s"]:
        fake.add_pod(change["pod"])
    await eventually(lambda: len(k8s.cache) == 6, "all six pods cached")

    event = await run_stage(k8s, parse_alert(case["event"]))

    assert event.get_field("enrichment.k8s.pod") == (case["expect_pod"] or MISSING)


@pytest.mark.parametrize("container_id", ["host", ""])
async def test_host_and_empty_ids_make_no_lookup(enrichment: Factory, container_id: str) -> None:
    k8s = await enrichment()

    result = k8s.stage.process(alert(container_id))

    assert isinstance(result, Event)
    assert "k8s" not in result.enrichment
    assert k8s.metrics.sample_sum("k8s_lookups_total") == 0


async def test_c01_host_alert_not_looked_up(enrichment: Factory) -> None:
    k8s = await enrichment()

    result = k8s.stage.process(parse_alert(cases("C01")[0]["event"]))

    assert isinstance(result, Event)
    assert result.enrichment == {}


async def test_c05_audit_uses_target_namespace(fake: FakeKube, enrichment: Factory) -> None:
    fake.add_namespace("ns-a", {"team": "a"})
    k8s = await enrichment()
    await eventually(lambda: "ns-a" in k8s.namespaces.labels, "namespace cached")

    result = k8s.stage.process(parse_alert(cases("C05")[0]["event"]))

    assert isinstance(result, Event)
    assert result.enrichment["k8s"] == {"status": "hit", "namespace": "ns-a", "namespace_labels": {"team": "a"}}
    assert lookups(k8s, "waited") == 0


async def test_audit_on_pod_target_enriches_pod(fake: FakeKube, enrichment: Factory) -> None:
    fake.add_pod(pod("web-1", labels={"app": "web"}))
    k8s = await enrichment()
    event = alert(None)
    event.source = "k8s_audit"
    event.output_fields = {"ka.target.namespace": "ns-a", "ka.target.name": "web-1", "ka.target.resource": "pods"}

    result = k8s.stage.process(event)

    assert isinstance(result, Event)
    assert result.get_field("enrichment.k8s.labels.app") == "web"


async def test_fields_usable_through_get_field(fake: FakeKube, enrichment: Factory) -> None:
    fake.add_namespace("ns-a", {"env": "prod"})
    fake.add_pod(pod("web-1", labels={"app": "web"}, container_id="docker://" + "ab" * 32))
    k8s = await enrichment()
    await eventually(lambda: "ns-a" in k8s.namespaces.labels, "namespace cached")

    event = await run_stage(k8s, alert("abababababab"))

    assert event.get_field("enrichment.k8s.namespace") == "ns-a"
    assert event.get_field("enrichment.k8s.labels.app") == "web"
    assert event.get_field("enrichment.k8s.namespace_labels.env") == "prod"
    assert event.get_field("enrichment.k8s.container_name") == "main"
    assert event.get_field("enrichment.k8s.image") == "registry.example/web-1:1"
    assert event.get_field("enrichment.k8s.service_account") == "default"


async def test_labels_and_annotations_allow_list(fake: FakeKube, enrichment: Factory) -> None:
    document = pod("web-1", labels={"app": "web", "pod-template-hash": "5d8f"}, container_id="a" * 64)
    document["metadata"]["annotations"] = {"team.example/owner": "x" * 100, "kubectl.kubernetes.io/last": "{}"}
    fake.add_pod(document)
    k8s = await enrichment(labels=["app"], annotations=["team.example/*"], max_value_chars=10)

    event = await run_stage(k8s, alert("aaaaaaaaaaaa"))

    assert event.enrichment["k8s"]["labels"] == {"app": "web"}
    assert event.enrichment["k8s"]["annotations"] == {"team.example/owner": "x" * 9 + "…"}
    assert event.enrichment["k8s"]["truncated"] == ["annotations.team.example/owner"]


async def test_owner_resolved_to_deployment(fake: FakeKube, enrichment: Factory) -> None:
    fake.add_owner("replicasets", "ns-a", "web-5d8f", ("Deployment", "web"))
    fake.add_pod(pod("web-5d8f-abcde", owner=("ReplicaSet", "web-5d8f"), container_id="c" * 64))
    k8s = await enrichment()
    assert k8s.owners is not None
    await eventually(lambda: bool(k8s.owners and k8s.owners.resolved), "owner resolved")

    event = await run_stage(k8s, alert("cccccccccccc"))

    assert event.enrichment["k8s"]["owner"] == {"kind": "Deployment", "name": "web"}


async def test_owner_of_finished_job_not_an_error(fake: FakeKube, enrichment: Factory) -> None:
    fake.add_pod(pod("job-b-xyz", owner=("Job", "job-b"), container_id="d" * 64))
    with capture_logs() as logs:
        k8s = await enrichment()
        await eventually(lambda: bool(k8s.owners and k8s.owners.resolved), "owner lookup done")
    event = await run_stage(k8s, alert("dddddddddddd"))

    assert event.enrichment["k8s"]["owner"] == {"kind": "Job", "name": "job-b"}
    assert [entry for entry in logs if entry["log_level"] in ("error", "warning")] == []


async def test_job_owner_resolved_to_cronjob(fake: FakeKube, enrichment: Factory) -> None:
    fake.add_owner("jobs", "ns-a", "nightly-28000000", ("CronJob", "nightly"))
    fake.add_pod(pod("nightly-28000000-abc", owner=("Job", "nightly-28000000"), container_id="e" * 64))
    k8s = await enrichment()
    await eventually(lambda: bool(k8s.owners and k8s.owners.resolved), "owner resolved")

    event = await run_stage(k8s, alert("eeeeeeeeeeee"))

    assert event.enrichment["k8s"]["owner"] == {"kind": "CronJob", "name": "nightly"}


async def test_node_mode_watches_only_this_node(fake: FakeKube, enrichment: Factory) -> None:
    fake.add_pod(pod("here", node="host-a"))
    fake.add_pod(pod("there", node="host-b"))

    k8s = await enrichment(node_name="host-a")

    assert k8s.cache.get(("pod", "ns-a/here")) is not None
    assert k8s.cache.get(("pod", "ns-a/there")) is None
    assert fake.requests[0].query["fieldSelector"] == "spec.nodeName=host-a"


async def test_node_name_from_environment(fake: FakeKube, enrichment: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "host-b")

    k8s = await enrichment()

    assert k8s.scope == "node"
    assert k8s.node_name == "host-b"


async def test_server_close_resumes_without_relist(fake: FakeKube, enrichment: Factory) -> None:
    k8s = await enrichment(watch_namespaces=False)
    await eventually(lambda: fake.open_watches == 1, "watch open")
    fake.add_pod(pod("p1"))
    await eventually(lambda: len(k8s.cache) == 1, "p1 cached")
    version = str(fake.revision)

    fake.close_watches()
    await eventually(lambda: fake.count("watch") == 2, "second watch request")
    fake.add_pod(pod("p2"))
    await eventually(lambda: len(k8s.cache) == 2, "p2 cached")

    watches = [r for r in fake.requests if r.verb == "watch"]
    assert watches[1].query["resourceVersion"] == version
    assert watches[1].query["allowWatchBookmarks"] == "true"
    assert fake.count("list") == 1
    assert k8s.metrics.sample("k8s_relists_total", resource="pods") == 0


async def test_bookmark_advances_resume_version(fake: FakeKube, enrichment: Factory) -> None:
    k8s = await enrichment(watch_namespaces=False)
    await eventually(lambda: fake.open_watches == 1, "watch open")
    fake.add_namespace("ns-z", {})  # moves the version on without a pod event
    fake.bookmark()
    await eventually(lambda: k8s.reflectors[0].resource_version == str(fake.revision), "bookmark applied")

    fake.close_watches()
    await eventually(lambda: fake.count("watch") == 2, "second watch request")

    assert [r for r in fake.requests if r.verb == "watch"][1].query["resourceVersion"] == str(fake.revision)


@pytest.mark.parametrize("expired_as", ["event", "http"])
async def test_410_twice_relists_twice(fake: FakeKube, enrichment: Factory, expired_as: str) -> None:
    fake.expired_as = expired_as  # type: ignore[assignment]
    fake.add_pod(pod("old"))
    k8s = await enrichment(watch_namespaces=False)
    await eventually(lambda: fake.open_watches == 1, "watch open")

    fake.add_pod(pod("during-first"))
    fake.expire_watches()
    await eventually(lambda: fake.count("list") == 2, "first re-list")
    await eventually(lambda: fake.open_watches == 1, "watch open after the first re-list")
    fake.delete_pod(pod("old"))
    fake.expire_watches()
    await eventually(lambda: fake.count("list") == 3, "second re-list")
    await eventually(lambda: fake.open_watches == 1, "watch open after the second re-list")

    assert k8s.metrics.sample("k8s_relists_total", resource="pods") == 2
    assert k8s.cache.get(("pod", "ns-a/during-first")) is not None
    old = k8s.cache.get(("pod", "ns-a/old"))
    assert old is not None
    assert old.deleted_at is not None
    assert k8s.pods_live


async def test_relist_serves_old_cache_until_swap(fake: FakeKube, enrichment: Factory) -> None:
    fake.add_pod(pod("p1", container_id="f" * 64))
    k8s = await enrichment(watch_namespaces=False)
    await eventually(lambda: fake.open_watches == 1, "watch open")
    served: list[bool] = []
    original = k8s.reflectors[0].on_list

    def on_list(items: list[dict[str, Any]]) -> None:
        # Called with the new list, before the swap: the old cache must still return the pod.
        served.append(k8s.cache.get(("container", "ffffffffffff")) is not None)
        original(items)

    k8s.reflectors[0].on_list = on_list
    fake.expire_watches()
    await eventually(lambda: served != [], "re-list done")

    assert served == [True]


async def test_outage_serves_stale_without_waiting(fake: FakeKube, enrichment: Factory) -> None:
    fake.add_pod(pod("p1", container_id="1" * 64))
    k8s = await enrichment(pod_wait_s=5)

    await fake.stop()
    await eventually(lambda: not k8s.pods_live, "watch noticed the outage")
    cached = k8s.stage.process(alert("111111111111"))
    unknown = k8s.stage.process(alert("222222222222"))

    assert isinstance(cached, Event)
    assert cached.enrichment["k8s"]["status"] == "stale"
    assert isinstance(unknown, Event)
    assert unknown.enrichment["k8s"] == {"status": "not_found"}
    assert k8s.health.get("kubernetes") is not None
    assert k8s.health.status == "degraded"


async def test_outage_releases_waiting_alerts(fake: FakeKube, enrichment: Factory) -> None:
    k8s = await enrichment(pod_wait_s=5)

    pending = k8s.stage.process(alert("333333333333"))
    assert inspect.isawaitable(pending)
    await fake.stop()
    event = await pending

    assert event.enrichment["k8s"] == {"status": "not_found"}


async def test_watch_recovers_after_outage(fake: FakeKube, enrichment: Factory) -> None:
    k8s = await enrichment()
    await fake.stop()
    await eventually(lambda: k8s.health.status == "degraded", "health degraded")

    fake.add_pod(pod("after", container_id="4" * 64))
    await fake.start()
    await eventually(lambda: k8s.health.status == "ok", "health ok again")
    await eventually(lambda: len(k8s.cache) == 1, "pod from after the outage cached")

    event = await run_stage(k8s, alert("444444444444"))
    assert event.enrichment["k8s"]["status"] == "hit"
    assert k8s.metrics.sample("k8s_watch_restarts_total", resource="pods", reason="unavailable") >= 1


async def test_wrong_token_is_an_error_and_retried(
    fake: FakeKube, enrichment: Factory, tls: TlsFiles, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("stale-token")
    config = write_kubeconfig(tmp_path / "rotating", fake.server, tls.ca, token_file=token_file)

    with capture_logs() as logs:
        k8s = await enrichment(wait_synced=False, kubeconfig=config, token_refresh_s=0.01, watch_namespaces=False)
        await eventually(lambda: any(r.status == 401 for r in fake.requests), "a request rejected with 401")
        token_file.write_text(fake.token)  # the kubelet rotated the token
        await eventually(lambda: k8s.pods_live, "watch live with the rotated token")

    failures = [entry for entry in logs if entry["event"] == "watch_failed"]
    assert failures
    assert failures[0]["log_level"] == "error"
    assert all("stale-token" not in str(entry) for entry in logs)


async def test_in_cluster_config(
    fake: FakeKube, tls: TlsFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enrichment: Factory
) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(fake.token)
    (account / "ca.crt").write_bytes(tls.ca.read_bytes())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(fake.port))
    fake.add_pod(pod("p1"))

    k8s = await enrichment(kubeconfig=None, service_account_dir=account)

    assert len(k8s.cache) == 1


async def test_invalid_json_line_restarts_watch(fake: FakeKube, enrichment: Factory) -> None:
    k8s = await enrichment(watch_namespaces=False)
    await eventually(lambda: fake.open_watches == 1, "watch open")

    fake.send_raw(b"{not json\n")
    await eventually(lambda: fake.count("watch") == 2, "watch reopened")
    fake.add_pod(pod("after"))
    await eventually(lambda: len(k8s.cache) == 1, "pod after the broken line cached")

    assert k8s.metrics.sample("k8s_watch_restarts_total", resource="pods", reason="unavailable") == 1
    assert fake.count("list") == 1


def test_unreadable_token_file_fails_at_connect(tls: TlsFiles, tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:1", tls.ca, token_file=tmp_path / "missing")
    k8s = KubernetesEnrichment(KubernetesConfig(enabled=True, kubeconfig=config), Metrics(), Health())

    with pytest.raises(KubeConfigError, match="cannot read the token file"):
        k8s.connect()


def test_in_cluster_without_environment_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    k8s = KubernetesEnrichment(KubernetesConfig(enabled=True, service_account_dir=tmp_path), Metrics(), Health())

    with pytest.raises(KubeConfigError, match=r"set kubernetes\.kubeconfig"):
        k8s.connect()


async def test_document_shared_by_alerts_of_pod(fake: FakeKube, enrichment: Factory) -> None:
    fake.add_pod(pod("web-1", labels={"app": "web"}, container_id="ab" * 32))
    k8s = await enrichment(watch_namespaces=False, resolve_owners=False)

    first = await run_stage(k8s, alert("abababababab"))
    second = await run_stage(k8s, alert("abababababab"))

    assert second.enrichment["k8s"] is first.enrichment["k8s"]


async def test_document_rebuilt_after_namespace_change(fake: FakeKube, enrichment: Factory) -> None:
    fake.add_namespace("ns-a", {"env": "test"})
    fake.add_pod(pod("web-1", container_id="ab" * 32))
    k8s = await enrichment(resolve_owners=False)
    await eventually(lambda: "ns-a" in k8s.namespaces.labels, "namespace cached")
    before = await run_stage(k8s, alert("abababababab"))

    fake.add_namespace("ns-a", {"env": "prod"})
    await eventually(lambda: k8s.namespaces.labels["ns-a"] == {"env": "prod"}, "namespace change cached")
    after = await run_stage(k8s, alert("abababababab"))

    assert before.enrichment["k8s"]["namespace_labels"] == {"env": "test"}
    assert after.enrichment["k8s"]["namespace_labels"] == {"env": "prod"}


async def test_document_rebuilt_after_pod_update(fake: FakeKube, enrichment: Factory) -> None:
    fake.add_pod(pod("web-1", labels={"app": "web"}, container_id="ab" * 32))
    k8s = await enrichment(watch_namespaces=False, resolve_owners=False)
    before = await run_stage(k8s, alert("abababababab"))

    fake.add_pod(pod("web-1", labels={"app": "web-v2"}, container_id="ab" * 32))

    def updated() -> bool:
        cached = k8s.cache.get(("container", "abababababab"))
        return cached is not None and cached.labels == {"app": "web-v2"}

    await eventually(updated, "the MODIFIED event reached the cache")
    after = await run_stage(k8s, alert("abababababab"))

    assert before.enrichment["k8s"]["labels"] == {"app": "web"}
    assert after.enrichment["k8s"]["labels"] == {"app": "web-v2"}


async def test_document_rebuilt_after_deletion(fake: FakeKube, enrichment: Factory) -> None:
    document = pod("web-1", container_id="ab" * 32)
    fake.add_pod(document)
    k8s = await enrichment(watch_namespaces=False, resolve_owners=False)
    before = await run_stage(k8s, alert("abababababab"))

    fake.delete_pod(document)
    await eventually(lambda: k8s.cache.deleted_count == 1, "the DELETED event reached the cache")
    after = await run_stage(k8s, alert("abababababab"))

    assert before.enrichment["k8s"]["pod_deleted"] is False
    assert after.enrichment["k8s"]["pod_deleted"] is True
    assert after.enrichment["k8s"]["status"] == "deleted"
