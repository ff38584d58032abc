"""The fake API server speaks the list and watch semantics the enrichment relies on."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.k8s.conftest import eventually
from tests.support.fake_kube import FakeKube, TlsFiles, pod


@pytest.fixture
async def http(tls: TlsFiles, fake: FakeKube) -> AsyncIterator[aiohttp.ClientSession]:
    context = ssl.create_default_context(cafile=str(tls.ca))
    async with aiohttp.ClientSession(
        base_url=fake.server,
        connector=aiohttp.TCPConnector(ssl=context),
        headers={"Authorization": f"Bearer {fake.token}"},
    ) as session:
        yield session


async def read_events(response: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    events = []
    async with asyncio.timeout(10):
        while len(events) < count:
            line = await response.content.readline()
            assert line, f"stream ended after {len(events)} of {count} events"
            events.append(json.loads(line))
    return events


async def test_list_returns_pod_list_with_resource_version(fake: FakeKube, http: aiohttp.ClientSession) -> None:
    fake.add_pod(pod("p1"))

    async with http.get("/api/v1/pods") as response:
        body = await response.json()

    assert response.status == 200
    assert body["kind"] == "PodList"
    assert body["metadata"]["resourceVersion"] == str(fake.revision)
    assert [item["metadata"]["name"] for item in body["items"]] == ["p1"]


async def test_list_filters_on_node_name(fake: FakeKube, http: aiohttp.ClientSession) -> None:
    fake.add_pod(pod("here", node="host-a"))
    fake.add_pod(pod("there", node="host-b"))

    async with http.get("/api/v1/pods", params={"fieldSelector": "spec.nodeName=host-a"}) as response:
        body = await response.json()

    assert [item["metadata"]["name"] for item in body["items"]] == ["here"]


async def test_wrong_token_gets_401_status(fake: FakeKube, http: aiohttp.ClientSession) -> None:
    async with http.get("/api/v1/pods", headers={"Authorization": "Bearer wrong"}) as response:
        body = await response.json()

    assert response.status == 401
    assert body["kind"] == "Status"
    assert body["code"] == 401


async def test_watch_streams_changes_after_version(fake: FakeKube, http: aiohttp.ClientSession) -> None:
    first = fake.add_pod(pod("p1", container_id="containerd://" + "a" * 64))
    version = first["metadata"]["resourceVersion"]
    fake.add_pod(pod("p2"))

    params = {"watch": "true", "resourceVersion": version}
    async with http.get("/api/v1/pods", params=params) as response:
        fake.add_pod(pod("p2", labels={"app": "x"}))
        fake.delete_pod(pod("p1"))
        events = await read_events(response, 3)

    assert response.status == 200
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "p2"),
        ("MODIFIED", "p2"),
        ("DELETED", "p1"),
    ]
    assert [int(e["object"]["metadata"]["resourceVersion"]) for e in events] == sorted(
        int(e["object"]["metadata"]["resourceVersion"]) for e in events
    )


async def test_watch_filters_on_node_name(fake: FakeKube, http: aiohttp.ClientSession) -> None:
    params = {"watch": "true", "resourceVersion": str(fake.revision), "fieldSelector": "spec.nodeName=host-a"}
    async with http.get("/api/v1/pods", params=params) as response:
        fake.add_pod(pod("there", node="host-b"))
        fake.add_pod(pod("here", node="host-a"))
        events = await read_events(response, 1)

    assert events[0]["object"]["metadata"]["name"] == "here"


async def test_bookmark_only_when_allowed(fake: FakeKube, http: aiohttp.ClientSession) -> None:
    version = str(fake.revision)
    async with (
        http.get("/api/v1/pods", params={"watch": "true", "resourceVersion": version}) as plain,
        http.get(
            "/api/v1/pods", params={"watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true"}
        ) as bookmarked,
    ):
        await _until_open(fake, 2)
        fake.bookmark()
        fake.add_pod(pod("p1"))
        plain_events = await read_events(plain, 1)
        bookmarked_events = await read_events(bookmarked, 2)

    assert [e["type"] for e in plain_events] == ["ADDED"]
    assert [e["type"] for e in bookmarked_events] == ["BOOKMARK", "ADDED"]
    assert bookmarked_events[0]["object"]["metadata"]["resourceVersion"] == version


async def test_server_close_ends_stream(fake: FakeKube, http: aiohttp.ClientSession) -> None:
    async with http.get("/api/v1/pods", params={"watch": "true", "resourceVersion": str(fake.revision)}) as response:
        await _until_open(fake, 1)
        fake.close_watches()
        async with asyncio.timeout(10):
            rest = await response.content.read()

    assert rest == b""


async def test_watch_from_compacted_version_gets_error_event(fake: FakeKube, http: aiohttp.ClientSession) -> None:
    old = str(fake.revision)
    fake.add_pod(pod("p1"))
    fake.compact()

    async with http.get("/api/v1/pods", params={"watch": "true", "resourceVersion": old}) as response:
        events = await read_events(response, 1)

    assert response.status == 200
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410


async def test_watch_from_compacted_version_gets_http_410(fake: FakeKube, http: aiohttp.ClientSession) -> None:
    old = str(fake.revision)
    fake.add_pod(pod("p1"))
    fake.compact()
    fake.expired_as = "http"

    async with http.get("/api/v1/pods", params={"watch": "true", "resourceVersion": old}) as response:
        body = await response.json()

    assert response.status == 410
    assert body["code"] == 410


async def test_list_from_compacted_version_gets_410(fake: FakeKube, http: aiohttp.ClientSession) -> None:
    old = str(fake.revision)
    fake.add_pod(pod("p1"))
    fake.compact()

    async with http.get("/api/v1/pods", params={"resourceVersion": old}) as response:
        assert response.status == 410


async def test_expire_watches_sends_410_and_closes(fake: FakeKube, http: aiohttp.ClientSession) -> None:
    async with http.get("/api/v1/pods", params={"watch": "true", "resourceVersion": str(fake.revision)}) as response:
        await _until_open(fake, 1)
        fake.expire_watches()
        events = await read_events(response, 1)
        async with asyncio.timeout(10):
            rest = await response.content.read()

    assert events[0]["object"]["code"] == 410
    assert rest == b""


async def test_namespaces_list_and_watch(fake: FakeKube, http: aiohttp.ClientSession) -> None:
    fake.add_namespace("ns-a", {"team": "a"})

    async with http.get("/api/v1/namespaces") as response:
        body = await response.json()
    params = {"watch": "true", "resourceVersion": body["metadata"]["resourceVersion"]}
    async with http.get("/api/v1/namespaces", params=params) as watch:
        fake.add_namespace("ns-a", {"team": "b"})
        events = await read_events(watch, 1)

    assert body["items"][0]["metadata"]["labels"] == {"team": "a"}
    assert events[0]["type"] == "MODIFIED"
    assert events[0]["object"]["metadata"]["labels"] == {"team": "b"}


async def test_owner_get_found_and_missing(fake: FakeKube, http: aiohttp.ClientSession) -> None:
    fake.add_owner("replicasets", "ns-a", "web-5d8f", ("Deployment", "web"))

    async with http.get("/apis/apps/v1/namespaces/ns-a/replicasets/web-5d8f") as found:
        body = await found.json()
    async with http.get("/apis/batch/v1/namespaces/ns-a/jobs/gone") as missing:
        missing_body = await missing.json()

    assert body["metadata"]["ownerReferences"][0]["name"] == "web"
    assert missing.status == 404
    assert missing_body["code"] == 404


async def _until_open(fake: FakeKube, count: int) -> None:
    await eventually(lambda: fake.open_watches >= count, f"{count} watches open")
