"""Routes: minimum priority (case C03), rule names and globs, sources, tags, fan-out."""

from __future__ import annotations

import pytest

from router.config.routes import RouteConfig
from router.event import parse_alert
from router.routing import Router
from tests.support.data import cases


def route(**conditions: object) -> RouteConfig:
    return RouteConfig.model_validate({"name": "r", "outputs": ["o"], **conditions})


@pytest.mark.parametrize("row", cases("C03"), ids=lambda row: row["event"]["priority"])
def test_min_notice_drops_informational_spellings_only(row: dict) -> None:
    outputs, _ = Router([route(min_priority="notice")]).select(parse_alert(row["event"]))
    routed = bool(outputs)
    assert routed == (row["expect_with_min_notice"] != "drop")


def test_unknown_priority_passes_the_highest_minimum() -> None:
    verbose = next(r["event"] for r in cases("C03") if r["event"]["priority"] == "Verbose")
    outputs, _ = Router([route(min_priority="emergency")]).select(parse_alert(verbose))
    assert outputs == ["o"]


def test_rule_names_exact_and_glob() -> None:
    router = Router([route(rules=["Terminal shell*", "Read sensitive file untrusted"])])
    assert router.select(parse_alert(cases("C02")[0]["event"]))[0] == ["o"]
    assert router.select(parse_alert(cases("C01")[0]["event"]))[0] == ["o"]
    assert router.select(parse_alert(cases("C04")[0]["event"]))[0] == []


def test_sources_condition() -> None:
    router = Router([route(sources=["k8s_audit"])])
    assert router.select(parse_alert(cases("C05")[0]["event"]))[0] == ["o"]
    assert router.select(parse_alert(cases("C01")[0]["event"]))[0] == []


def test_tags_match_any() -> None:
    router = Router([route(tags=["shell", "nothing"])])
    assert router.select(parse_alert(cases("C02")[0]["event"]))[0] == ["o"]
    assert router.select(parse_alert(cases("C01")[0]["event"]))[0] == []


def test_alert_without_tags_fails_a_tag_condition() -> None:
    event = parse_alert({"rule": "r", "priority": "Warning", "time": "2023-11-14T22:13:20Z"})
    assert Router([route(tags=["shell"])]).select(event)[0] == []


def test_outputs_of_all_matching_routes_each_once() -> None:
    routes = [
        RouteConfig(name="a", outputs=["kafka", "slack"]),
        RouteConfig(name="b", outputs=["slack", "webhook"], min_priority="warning"),
        RouteConfig(name="c", outputs=["pager"], min_priority="critical"),
    ]
    outputs, matched = Router(routes).select(parse_alert(cases("C01")[0]["event"]))
    assert outputs == ["kafka", "slack", "webhook"]
    assert matched == ["a", "b"]
