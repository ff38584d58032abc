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


def _alert(rule: str, tags: list[str] | None = None, **fields: object) -> dict:
    alert: dict = {"rule": rule, "priority": "Warning", "time": "2024-01-01T00:00:00.000000000Z"}
    if tags is not None:
        alert["tags"] = tags
    alert["output_fields"] = fields
    return alert


def test_cached_selection_tells_tags_apart() -> None:
    router = Router([route(tags=["mitre_execution"])])
    for _ in range(2):  # the second round is served from the cache
        assert router.plan(parse_alert(_alert("r", ["mitre_execution"])), ()).outputs == ["o"]
        assert router.plan(parse_alert(_alert("r", ["container"])), ()).outputs == []
        assert router.plan(parse_alert(_alert("r")), ()).outputs == []


def test_match_expression_is_evaluated_for_every_alert() -> None:
    router = Router([route(match="proc.name == nc")])
    for _ in range(2):
        assert router.plan(parse_alert(_alert("r", **{"proc.name": "nc"})), ()).outputs == ["o"]
        assert router.plan(parse_alert(_alert("r", **{"proc.name": "bash"})), ()).outputs == []


def test_cached_plan_still_holds_back_suppressed() -> None:
    router = Router([route()])
    assert router.plan(parse_alert(_alert("r")), {"o"}).outputs == ["o"]
    suppressed = parse_alert(_alert("r"))
    suppressed.annotations["suppressed"] = {"entries": ["known-scanner"]}
    plan = router.plan(suppressed, {"o"})
    assert plan.outputs == []
    assert plan.held == {"o": "allow_list"}
    assert router.plan(parse_alert(_alert("r")), {"o"}).outputs == ["o"]


def test_selection_cache_stays_correct_past_its_bound() -> None:
    router = Router([route(rules=["keep *"])])
    for number in range(10_000):
        rule = f"keep {number}" if number % 2 else f"drop {number}"
        assert router.plan(parse_alert(_alert(rule)), ()).outputs == (["o"] if number % 2 else [])
    assert len(router._selections) <= 4096
