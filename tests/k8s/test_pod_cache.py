"""The pod cache: container id forms, skipped statuses, the deleted grace period and the re-list swap."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.enrich.k8s import lookup_key
from router.enrich.pod_cache import KeyFilter, PodCache, PodInfo, container_key, parse_pod
from tests.support.data import cases
from tests.support.fake_kube import pod

ALL = KeyFilter(["*"], 32, 256)
NONE = KeyFilter([], 32, 256)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def parsed(document: dict[str, Any]) -> PodInfo:
    info = parse_pod(document, ALL, NONE)
    assert info is not None
    return info


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("containerd://1a2b3c4d5e6f" + "1" * 52, "1a2b3c4d5e6f"),
        ("cri-o://aabbccddeeff" + "2" * 52, "aabbccddeeff"),
        ("docker://123456ABCDEF" + "3" * 52, "123456abcdef"),
        ("1a2b3c4d5e6f", "1a2b3c4d5e6f"),
        ("host", None),
        ("", None),
        (None, None),
        ("containerd://", None),
        ("<NA>", None),
        ("1a2b3c", None),
    ],
)
def test_container_key_forms(raw: Any, expected: str | None) -> None:
    assert container_key(raw) == expected


def test_c09_statuses_without_id_are_skipped() -> None:
    events = cases("C09")[0]["k8s"]

    infos = {event["pod"]["metadata"]["name"]: parse_pod(event["pod"], ALL, NONE) for event in events}

    assert {name: sorted(info.containers) for name, info in infos.items() if info} == {
        "pod-c1": ["1a2b3c4d5e6f"],
        "pod-c2": ["aabbccddeeff"],
        "pod-c3": ["123456abcdef"],
        "pod-c4": [],
        "pod-c5": [],
        "pod-c6": [],
    }


def test_init_and_ephemeral_statuses_are_indexed() -> None:
    document = pod("p1")
    document["spec"]["initContainers"] = [{"name": "init", "image": "registry.example/init:1"}]
    document["status"]["initContainerStatuses"] = [{"name": "init", "containerID": "containerd://" + "b" * 64}]
    document["status"]["ephemeralContainerStatuses"] = [{"name": "debug"}, {"name": "dbg", "containerID": "c" * 64}]

    info = parsed(document)

    assert info.containers["bbbbbbbbbbbb"].image == "registry.example/init:1"
    assert info.containers["cccccccccccc"].name == "dbg"


@pytest.mark.parametrize(
    ("container_id", "expected"),
    [("host", None), ("", None), ("9f8e7d6c5b4a", ("container", "9f8e7d6c5b4a"))],
)
def test_lookup_key_from_container_id(container_id: str, expected: Any) -> None:
    assert lookup_key({"container.id": container_id})[0] == expected


def test_lookup_key_falls_back_to_uid_then_name() -> None:
    assert lookup_key({"k8s.pod.uid": "u1", "k8s.ns.name": "ns", "k8s.pod.name": "p"})[0] == ("uid", "u1")
    assert lookup_key({"container.id": None, "k8s.ns.name": "ns", "k8s.pod.name": "p"})[0] == ("pod", "ns/p")
    assert lookup_key({"k8s.ns.name": None, "k8s.pod.name": None})[0] is None


def test_deleted_pod_served_within_grace() -> None:
    clock = Clock()
    cache = PodCache(deleted_grace_s=120, clock=clock)
    info = parsed(pod("job-a", container_id="containerd://" + "9" * 64))
    cache.upsert(info)

    cache.delete(parsed(pod("job-a", container_id="containerd://" + "9" * 64)))
    clock.now += 119
    found = cache.get(("container", "999999999999"))

    assert found is not None
    assert found.deleted_at is not None


def test_deleted_pod_gone_after_grace() -> None:
    clock = Clock()
    cache = PodCache(deleted_grace_s=120, clock=clock)
    cache.upsert(parsed(pod("job-a", container_id="containerd://" + "9" * 64)))
    cache.delete(parsed(pod("job-a", container_id="containerd://" + "9" * 64)))

    clock.now += 121

    assert cache.get(("container", "999999999999")) is None
    cache.expire()
    assert cache.deleted_count == 0


def test_recreated_name_survives_expiry_of_old_pod() -> None:
    clock = Clock()
    cache = PodCache(deleted_grace_s=10, clock=clock)
    cache.upsert(parsed(pod("db-0", uid="old")))
    cache.delete(parsed(pod("db-0", uid="old")))
    cache.upsert(parsed(pod("db-0", uid="new")))

    clock.now += 11
    cache.expire()
    found = cache.get(("pod", "ns-a/db-0"))

    assert found is not None
    assert found.uid == "new"


def test_replace_keeps_missing_pods_as_deleted() -> None:
    cache = PodCache()
    cache.upsert(parsed(pod("stays")))
    cache.upsert(parsed(pod("went")))

    cache.replace([parsed(pod("stays")), parsed(pod("new"))])

    went = cache.get(("pod", "ns-a/went"))
    assert went is not None
    assert went.deleted_at is not None
    assert len(cache) == 2


def test_key_filter_globs_and_bounds() -> None:
    labels = {"app": "web", "app.kubernetes.io/name": "web", "secret-ish": "x", "team": "t" * 300}
    truncated: list[str] = []

    kept = KeyFilter(["app*", "team"], 2, 16).apply(labels, "labels", truncated)

    assert kept == {"app": "web", "app.kubernetes.io/name": "web"}
    assert truncated == ["labels.*"]


def test_key_filter_truncates_long_value() -> None:
    truncated: list[str] = []

    kept = KeyFilter(["team"], 8, 16).apply({"team": "t" * 300}, "labels", truncated)

    assert kept == {"team": "t" * 15 + "…"}
    assert truncated == ["labels.team"]


operations = st.lists(
    st.tuples(st.sampled_from(["upsert", "delete", "tick"]), st.integers(0, 4), st.integers(0, 2)), max_size=40
)


@given(operations)
def test_indexes_match_a_model(steps: list[tuple[str, int, int]]) -> None:
    """Whatever the order of adds, deletes and time passing, a lookup returns the newest pod of that name."""
    clock = Clock()
    cache = PodCache(deleted_grace_s=5, clock=clock)
    model: dict[str, tuple[str, float | None]] = {}
    for action, number, generation in steps:
        name = f"p{number}"
        uid = f"{name}-{generation}"
        document = pod(name, uid=uid, container_id=f"containerd://{number:012x}{generation:052x}")
        if action == "upsert":
            cache.upsert(parsed(document))
            model[name] = (uid, None)
        elif action == "delete" and name in model and model[name][1] is None and model[name][0] == uid:
            cache.delete(parsed(document))
            model[name] = (uid, clock.now)
        elif action == "tick":
            clock.now += 3
    for name, (uid, deleted_at) in model.items():
        found = cache.get(("pod", f"ns-a/{name}"))
        if deleted_at is not None and clock.now - deleted_at > 5:
            assert found is None, name
        else:
            assert found is not None, name
            assert found.uid == uid
