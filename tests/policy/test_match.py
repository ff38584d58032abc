"""The match language: operators, transport-independent values, priorities and config errors."""

from __future__ import annotations

import fnmatch
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.policy.match import MatchError, compile_match
from tests.policy.alerts import alert
from tests.support.data import cases


def test_equals_matches_exact_string() -> None:
    matcher = compile_match({"field": "proc.name", "equals": "sh"})
    assert matcher(alert())
    assert not matcher(alert({"proc.name": "bash"}))


def test_missing_field_never_equals() -> None:
    matcher = compile_match({"field": "fd.name", "equals": "x"})
    assert not matcher(alert())


def test_not_equals_matches_missing_field() -> None:
    matcher = compile_match({"field": "fd.name", "not_equals": "x"})
    assert matcher(alert())


@pytest.mark.parametrize("config_value", [34816, "34816"])
@pytest.mark.parametrize("event_value", [34816, "34816"])
def test_tty_case_c02_matches_number_or_text(config_value: object, event_value: object) -> None:
    """Case C02: proc.tty == 34816 whether config or event carry a number or the gRPC string."""
    document = cases("C02")[0]["event"]
    fields = {**document["output_fields"], "proc.tty": event_value}
    event = alert(fields, **{k: v for k, v in document.items() if k != "output_fields"})
    matcher = compile_match({"field": "proc.tty", "equals": config_value})
    assert matcher(event)


def test_short_form_reads_like_falco() -> None:
    matcher = compile_match("proc.tty == 34816")
    assert matcher(alert({"proc.tty": "34816"}))


def test_short_form_strips_quotes() -> None:
    matcher = compile_match('rule == "Terminal shell in container"')
    assert matcher(alert())


def test_in_operator_uses_canonical_values() -> None:
    matcher = compile_match({"field": "proc.pid", "in": ["1", 2, 3]})
    assert matcher(alert({"proc.pid": 1}))
    assert matcher(alert({"proc.pid": "2"}))
    assert not matcher(alert({"proc.pid": 4}))


def test_null_equals_grpc_null_string() -> None:
    matcher = compile_match({"field": "user.name", "equals": None})
    assert matcher(alert({"user.name": None}))
    assert matcher(alert({"user.name": "null"}))


def test_exists_treats_null_as_absent() -> None:
    matcher = compile_match({"field": "user.name", "exists": True})
    assert matcher(alert({"user.name": "root"}))
    assert not matcher(alert({"user.name": None}))
    assert not matcher(alert())


def test_list_field_matches_any_element() -> None:
    matcher = compile_match({"field": "tags", "equals": "shell"})
    assert matcher(alert())
    assert not matcher(alert(tags=["network"]))


def test_enrichment_label_path() -> None:
    event = alert()
    event.enrichment["k8s"] = {"namespace": "kube-system", "labels": {"app": "coredns"}}
    assert compile_match({"field": "enrichment.k8s.labels.app", "equals": "coredns"})(event)
    assert not compile_match({"field": "enrichment.k8s.labels.tier", "exists": True})(event)


def test_aname_index_field() -> None:
    matcher = compile_match({"field": "proc.aname[2]", "startswith": "contain"})
    assert matcher(alert({"proc.aname[2]": "containerd-shim"}))


def test_combinators_all_any_not() -> None:
    matcher = compile_match(
        {"all": [{"field": "proc.name", "equals": "sh"}, {"any": ["proc.tty == 1", {"not": "proc.tty == 2"}]}]}
    )
    assert matcher(alert({"proc.tty": 5}))
    assert not matcher(alert({"proc.tty": 2}))


@pytest.mark.parametrize(
    ("expression", "value", "expected"),
    [
        ({"field": "proc.pid", ">": 10}, "11", True),
        ({"field": "proc.pid", ">": 10}, 10, False),
        ({"field": "proc.pid", ">=": "10"}, 10, True),
        ({"field": "proc.pid", "<": 10.5}, "10", True),
        ({"field": "proc.pid", "<=": 10}, "10.0", True),
        ({"field": "proc.pid", "<": 10}, "ten", False),
    ],
)
def test_numeric_comparisons_accept_text(expression: dict[str, object], value: object, expected: bool) -> None:
    assert compile_match(expression)(alert({"proc.pid": value})) is expected


@pytest.mark.parametrize(
    ("priority", "expected"),
    [("Warning", True), ("error", True), ("Notice", False), ("Verbose", True)],
)
def test_priority_at_least_warning(priority: str, expected: bool) -> None:
    """An unknown spelling such as Verbose counts as severe, so a minimum never hides it."""
    assert compile_match({"priority": ">= warning"})(alert(priority=priority)) is expected


def test_priority_below_never_matches_unknown() -> None:
    assert not compile_match({"priority": "<= notice"})(alert(priority="Verbose"))


@pytest.mark.parametrize(
    ("row", "expected"),
    [(row, row["expect_with_min_notice"] != "drop") for row in cases("C03")],
)
def test_priority_case_c03_min_notice(row: dict[str, object], expected: bool) -> None:
    document = row["event"]
    assert isinstance(document, dict)
    event = alert(document["output_fields"], **{k: v for k, v in document.items() if k != "output_fields"})
    assert compile_match({"priority": ">= notice"})(event) is expected


@pytest.mark.parametrize(
    ("expression", "path", "reason"),
    [
        ({"all": [{"field": "x", "regex": "("}]}, "all.0.regex", "invalid regular expression"),
        ({"any": []}, "any", "non-empty list"),
        ({"field": "x", "equals": 1, "in": [1]}, "", "exactly one operator"),
        ({"field": "x", "matches": 1}, "matches", "unknown operator"),
        ({"priority": ">= loud"}, "priority", "not a priority"),
        ({"not": {"feild": "x"}}, "not", "unknown key"),
        ({"field": "x", ">": "many"}, ">", "expected a number"),
        ("proc.name ~ sh", "", "FIELD OP VALUE"),
    ],
)
def test_invalid_expression_names_path(expression: object, path: str, reason: str) -> None:
    with pytest.raises(MatchError) as caught:
        compile_match(expression)
    assert caught.value.path == path
    assert reason in caught.value.reason


_text = st.text(alphabet="ab*?[]!.-/ \\x01", max_size=8)


@given(pattern=_text, value=st.text(alphabet="ab.-/ x\n", max_size=10))
def test_glob_agrees_with_fnmatchcase(pattern: str, value: str) -> None:
    matcher = compile_match({"field": "proc.cmdline", "glob": pattern})
    assert matcher(alert({"proc.cmdline": value})) is fnmatch.fnmatchcase(value, pattern)


@given(
    pattern=st.sampled_from(["^a", "b$", "a.b", "a+", "(ab|ba)", "[ab]{2}", r"\d", "^$"]),
    value=st.text(alphabet="ab1 \n", max_size=10),
)
def test_regex_agrees_with_re_search(pattern: str, value: str) -> None:
    matcher = compile_match({"field": "proc.cmdline", "regex": pattern})
    assert matcher(alert({"proc.cmdline": value})) is (re.search(pattern, value) is not None)


@given(number=st.integers(min_value=-(2**70), max_value=2**70), bound=st.integers(min_value=-100, max_value=100))
def test_number_and_text_forms_agree(number: int, bound: int) -> None:
    for operator in ("equals", ">", ">=", "<", "<="):
        matcher = compile_match({"field": "proc.pid", operator: bound})
        assert matcher(alert({"proc.pid": number})) is matcher(alert({"proc.pid": str(number)}))


@given(value=st.integers(min_value=-(2**64), max_value=2**64))
def test_equals_config_text_matches_event_number(value: int) -> None:
    assert compile_match({"field": "proc.pid", "equals": str(value)})(alert({"proc.pid": value}))
