"""Conversion of Falco's gRPC response into the same Event the HTTP JSON form gives."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.event import FLAG_PRIORITY_UNKNOWN, InvalidAlert, dumps, loads, parse_alert
from router.priority import Priority
from router.proto_gen.falco import outputs_pb2, schema_pb2
from router.sources.grpc_convert import event_from_response, format_time, typed_value
from tests.support.data import cases, corpus_lines
from tests.support.falco_grpc import response_from_alert, stringify

CORPUS = [loads(line) for line in corpus_lines()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("null", None),
        ("true", True),
        ("false", False),
        ("0", 0),
        ("-1", -1),
        ("34816", 34816),
        ("18446744073695528866", 18446744073695528866),
        ("1846.4", 1846.4),
        ("0.0", 0.0),
        ("1e+20", 1e20),
    ],
)
def test_typed_value_parses_stringified_json(text: str, expected: Any) -> None:
    value = typed_value(text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    "text",
    ["", "<NA>", "007", "-0", "+1", "3.10", "1.", ".5", "nan", "inf", "1e20", "0x1f", "192.0.2.1", "Null", " 1", "-"],
)
def test_typed_value_keeps_other_text(text: str) -> None:
    assert typed_value(text) == text


def _json_scalar_text(value: Any) -> str | None:
    # The text a JSON writer prints for a finite number, a boolean or null. None for anything else.
    if value is None or isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return json.dumps(value)
    return None


@given(
    st.one_of(
        st.text(),
        st.text(alphabet="-+.eE0123456789\u0663\u00b2", max_size=12),
        st.integers().map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(["null", "true", "nan", "NaN", "Infinity", "-0", "1E+20", "1\u0663", "-1\u0663", "1\u00b2"]),
    )
)
def test_typed_value_is_json_value_or_same_text(text: str) -> None:
    # Text becomes a value only when a JSON writer prints that value as exactly this text, so
    # converting back always gives the text again. Any other text stays as it is.
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    expected = parsed if _json_scalar_text(parsed) == text else text
    value = typed_value(text)
    assert value == expected
    assert type(value) is type(expected)


def test_format_time_caches_by_second_only() -> None:
    assert format_time(1_700_000_000, 1) == "2023-11-14T22:13:20.000000001Z"
    assert format_time(1_700_000_000, 2) == "2023-11-14T22:13:20.000000002Z"
    assert format_time(1_700_000_001, 2) == "2023-11-14T22:13:21.000000002Z"


def test_format_time_keeps_nanoseconds() -> None:
    assert format_time(1_700_000_000, 123_456_789) == "2023-11-14T22:13:20.123456789Z"


def test_format_time_pads_fraction_to_nine_digits() -> None:
    assert format_time(1_700_000_000, 5) == "2023-11-14T22:13:20.000000005Z"


def _response(**fields: Any) -> outputs_pb2.response:
    fields.setdefault("output", "text")
    message = outputs_pb2.response(rule="Some rule", priority=schema_pb2.WARNING, **fields)
    message.time.seconds = 1_700_000_000
    message.time.nanos = 123_456_789
    return message


def test_event_from_response_sets_grpc_transport() -> None:
    assert event_from_response(_response()).transport == "grpc"


def test_event_from_response_converts_time() -> None:
    event = event_from_response(_response())
    assert event.time_ns == 1_700_000_000_123_456_789
    assert event.time_raw == "2023-11-14T22:13:20.123456789Z"


@pytest.mark.parametrize("priority", list(Priority))
def test_priority_enum_becomes_titlecase_name(priority: Priority) -> None:
    message = _response()
    message.priority = priority.falco_number  # type: ignore[assignment]
    event = event_from_response(message)
    assert event.priority is priority
    assert event.priority_raw == priority.falco_name


def test_unknown_priority_number_is_flagged() -> None:
    message = _response()
    message.priority = 12  # type: ignore[assignment]  # proto3 enums are open: a newer Falco could send it
    event = event_from_response(message)
    assert event.priority is None
    assert event.priority_raw == "12"
    assert FLAG_PRIORITY_UNKNOWN in event.flags


def test_source_string_wins_over_enum() -> None:
    event = event_from_response(_response(source="aws_cloudtrail", source_deprecated=schema_pb2.PLUGIN))
    assert event.source == "aws_cloudtrail"


def test_source_absent_when_falco_sent_none() -> None:
    # Falco before 0.31 has no field 9, and the enum's SYSCALL (0) cannot be told from "not sent".
    assert event_from_response(_response()).source is None


def test_source_from_nonzero_deprecated_enum() -> None:
    event = event_from_response(_response(source_deprecated=schema_pb2.K8S_AUDIT))
    assert event.source == "k8s_audit"


def test_empty_tags_are_empty_list_on_rule_alert() -> None:
    assert event_from_response(_response(source="syscall")).tags == []


def test_empty_tags_are_absent_on_internal_alert() -> None:
    message = _response(source="internal")
    message.rule = "Falco internal: syscall event drop"
    assert event_from_response(message).tags is None


def test_empty_tags_are_absent_without_source() -> None:
    assert event_from_response(_response()).tags is None


def test_empty_hostname_is_absent() -> None:
    assert event_from_response(_response()).hostname is None


def test_pre_035_missing_value_stays_na_text() -> None:
    event = event_from_response(_response(output_fields={"user.loginname": "<NA>"}))
    assert event.output_fields == {"user.loginname": "<NA>"}


def test_empty_rule_is_invalid() -> None:
    message = _response()
    message.rule = ""
    with pytest.raises(InvalidAlert, match="rule"):
        event_from_response(message)


def test_json_output_document_gives_typed_fields() -> None:
    # Falco with json_output: true puts the whole JSON alert in output. Its output_fields keep the types
    # that the string map loses, so "201" stays a string here.
    alert = CORPUS[1]
    message = response_from_alert(alert)
    message.output = corpus_lines()[1]
    event = event_from_response(message)
    assert event.output_fields == alert["output_fields"]
    assert event.output_fields["ka.response.code"] == "201"
    assert event.output == alert["output"]


def test_json_output_document_without_fields_uses_map() -> None:
    # Falco 0.41+ with json_include_output_fields_property: false leaves output_fields out of the document.
    message = _response(output_fields={"proc.pid": "42"})
    message.output = dumps(
        {"output": "text line", "priority": "Warning", "rule": "Some rule", "time": "2023-11-14T22:13:20.123456789Z"}
    ).decode()
    event = event_from_response(message)
    assert event.output_fields == {"proc.pid": 42}
    assert event.output == "text line"


def test_brace_output_not_json_stays_text() -> None:
    event = event_from_response(_response(output="{not json"))
    assert event.output == "{not json"


def test_rendered_grpc_alert_converts() -> None:
    # The shared field case renders the protobuf message as JSON: priority is the enum name and every
    # output_fields value a string.
    rendered = cases("C10")[0]["event"]
    message = outputs_pb2.response(
        rule=rendered["rule"],
        priority=schema_pb2.priority.Value(rendered["priority"]),
        output=rendered["output"],
        hostname=rendered["hostname"],
        tags=rendered["tags"],
        source=rendered["source"],
        output_fields=rendered["output_fields"],
    )
    message.time.seconds, message.time.nanos = 1_700_000_016, 0
    event = event_from_response(message)
    assert event.priority_raw == "Notice"
    assert event.time_raw == rendered["time"]
    assert event.output_fields == {
        "container.id": "0a1b2c3d4e5f",
        "evt.time": 1700000016000000000,
        "proc.tty": 34816,
        "user.name": "root",
        "proc.pname": None,
    }


def test_null_fields_match_http_form() -> None:
    alert = cases("C01")[0]["event"]
    http = parse_alert(alert)
    grpc_event = event_from_response(response_from_alert(alert))
    assert grpc_event.output_fields == http.output_fields
    assert grpc_event.to_dict()["output_fields"] == http.to_dict()["output_fields"]


def _scalar_values() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
        st.from_regex(r"-?[0-9]{1,4}(\.[0-9]{1,3})?", fullmatch=True),
        st.sampled_from(["null", "true", "false", "<NA>", "", "007", "3.10"]),
    )


@settings(max_examples=200, deadline=None)
@given(
    alert=st.sampled_from(CORPUS),
    extra_fields=st.dictionaries(st.text(min_size=1, max_size=20), _scalar_values(), max_size=6),
)
def test_grpc_and_http_forms_normalise_alike(alert: dict[str, Any], extra_fields: dict[str, Any]) -> None:
    document = dict(alert)
    document["output_fields"] = {**(alert.get("output_fields") or {}), **extra_fields}
    http = parse_alert(document)
    grpc_event = event_from_response(response_from_alert(document))

    http_text = {key: stringify(value) for key, value in http.output_fields.items()}
    grpc_text = {key: stringify(value) for key, value in grpc_event.output_fields.items()}
    assert grpc_text == http_text
    assert grpc_event.rule == http.rule
    assert grpc_event.priority is http.priority
    assert grpc_event.time_ns == http.time_ns
    assert grpc_event.hostname == http.hostname
    assert grpc_event.tags == http.tags
    assert grpc_event.source == http.source


@settings(max_examples=200, deadline=None)
@given(
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
    )
)
def test_non_string_values_keep_type(value: Any) -> None:
    # Only strings can be misread (see typed_value); every other JSON scalar comes back exactly.
    converted = typed_value(stringify(value))
    assert converted == value
    assert type(converted) is type(value)
