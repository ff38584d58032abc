"""The event model: what both transports normalise to, and the JSON it writes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.event import FLAG_PRIORITY_UNKNOWN, MISSING, InvalidAlert, loads, parse_alert, parse_time
from router.priority import Priority
from tests.support.data import cases, corpus_lines


def test_every_corpus_alert_parses() -> None:
    for line in corpus_lines():
        event = parse_alert(loads(line))
        assert event.rule


def test_corpus_round_trip_keeps_falco_keys_and_types() -> None:
    for line in corpus_lines():
        original = loads(line)
        out = loads(parse_alert(original).to_json())
        for key, value in original.items():
            assert out[key] == value, key
            assert type(out[key]) is type(value), key


def test_integer_past_two_to_the_64_kept_exact() -> None:
    document = loads(
        '{"rule":"r","priority":"Debug","time":"2023-11-14T22:13:20Z","output_fields":{"x":184467440737095516160}}'
    )
    assert document["output_fields"]["x"] == 184467440737095516160
    assert b'"x":184467440737095516160' in parse_alert(document).to_json()


def test_unsigned_64_bit_field_from_corpus_stays_int() -> None:
    line = next(line for line in corpus_lines() if "18446744073695528866" in line)
    event = parse_alert(loads(line))
    assert event.output_fields["proc.exe_ino.ctime_duration_proc_start"] == 18446744073695528866
    assert b"18446744073695528866" in event.to_json()


@pytest.mark.parametrize("row", cases("C04"), ids=lambda row: row["event"]["time"])
def test_nanosecond_time_truncated_not_rounded(row: dict) -> None:
    event = parse_alert(row["event"])
    assert event.time_utc == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    assert event.time_raw == row["event"]["time"]


def test_evt_time_stays_exact_int_in_outgoing_json() -> None:
    row = cases("C04")[0]
    out = loads(parse_alert(row["event"]).to_json())
    assert out["output_fields"]["evt.time"] == 1700000000123456789
    assert b'"evt.time":1700000000123456789' in parse_alert(row["event"]).to_json()


def test_nulls_kept_as_json_null() -> None:
    event = parse_alert(cases("C01")[0]["event"])
    assert event.output_fields["k8s.ns.name"] is None
    assert b'"k8s.ns.name":null' in event.to_json()


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("Informational", Priority.INFORMATIONAL),
        ("INFO", Priority.INFORMATIONAL),
        ("info", Priority.INFORMATIONAL),
        ("Notice", Priority.NOTICE),
        ("NOTICE", Priority.NOTICE),
        ("emergency", Priority.EMERGENCY),
    ],
)
def test_priority_spellings(spelling: str, expected: Priority) -> None:
    event = parse_alert({"rule": "r", "priority": spelling, "time": "2023-11-14T22:13:20Z"})
    assert event.priority is expected


def test_unknown_priority_kept_and_flagged() -> None:
    row = next(r for r in cases("C03") if r["event"]["priority"] == "Verbose")
    event = parse_alert(row["event"])
    assert event.priority is None
    assert event.priority_raw == "Verbose"
    assert FLAG_PRIORITY_UNKNOWN in event.flags
    assert loads(event.to_json())["priority"] == "Verbose"


def test_priority_order_matches_falco() -> None:
    order = ["emergency", "alert", "critical", "error", "warning", "notice", "informational", "debug"]
    ranks = [Priority[name.upper()] for name in order]
    assert ranks == sorted(ranks, reverse=True)


def test_source_absent_stays_absent() -> None:
    line = next(line for line in corpus_lines() if '"source"' not in line)
    event = parse_alert(loads(line))
    assert event.source is None
    assert "source" not in loads(event.to_json())
    assert event.get_field("source") is MISSING


def test_get_field_resolves_top_level_fields_and_enrichment() -> None:
    event = parse_alert(cases("C02")[0]["event"])
    event.enrichment["k8s"] = {"labels": {"app": "web"}}
    assert event.get_field("proc.tty") == 34816
    assert event.get_field("priority") == "Notice"
    assert event.get_field("enrichment.k8s.labels.app") == "web"
    assert event.get_field("enrichment.k8s.labels.team") is MISSING
    assert event.get_field("no.such.field") is MISSING


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ([], "alert must be a JSON object"),
        ({"priority": "Debug", "time": "2023-11-14T22:13:20Z"}, "rule is missing"),
        ({"rule": "", "priority": "Debug", "time": "2023-11-14T22:13:20Z"}, "rule is empty"),
        ({"rule": "r", "time": "2023-11-14T22:13:20Z"}, "priority is missing"),
        ({"rule": "r", "priority": 3, "time": "2023-11-14T22:13:20Z"}, "priority is a number"),
        ({"rule": "r", "priority": "Debug"}, "time is missing"),
        ({"rule": "r", "priority": "Debug", "time": "yesterday"}, "is not an RFC 3339 timestamp"),
        ({"rule": "r", "priority": "Debug", "time": "2023-02-30T00:00:00Z"}, "is not a valid date"),
        (
            {"rule": "r", "priority": "Debug", "time": "2023-11-14T22:13:20Z", "output_fields": []},
            "output_fields is an array",
        ),
        ({"rule": "r", "priority": "Debug", "time": "2023-11-14T22:13:20Z", "tags": "a"}, "tags is a string"),
        ({"rule": "r", "priority": "Debug", "time": "2023-11-14T22:13:20Z", "output": 1}, "output is a number"),
    ],
)
def test_invalid_alert_reason(document: object, reason: str) -> None:
    with pytest.raises(InvalidAlert, match=reason):
        parse_alert(document)


@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
    st.integers(min_value=0, max_value=999),
    st.integers(min_value=0, max_value=3),
)
def test_parse_time_matches_datetime(moment: datetime, extra_nanos: int, extra_digits: int) -> None:
    digits = f"{moment.microsecond:06d}{extra_nanos:03d}" + "7" * extra_digits
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + "." + digits + "Z"
    expected = int(moment.replace(microsecond=0).timestamp()) * 1_000_000_000 + moment.microsecond * 1000 + extra_nanos
    assert parse_time(text) == expected


def test_parse_time_applies_offset() -> None:
    assert parse_time("2023-11-14T23:13:20.5+01:00") == parse_time("2023-11-14T22:13:20.500000000Z")


def test_upstream_uuid_kept_beside_our_id() -> None:
    document = {**cases("C02")[0]["event"], "uuid": "upstream-id", "message": "A shell was spawned"}
    out = loads(parse_alert(document).to_json())
    assert out["uuid"] != "upstream-id"
    assert out["router"]["upstream_uuid"] == "upstream-id"
    assert out["message"] == "A shell was spawned"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize("long_integer", [False, True], ids=["orjson", "stdlib"])
def test_non_finite_numbers_rejected(constant: str, long_integer: bool) -> None:
    # A 20-digit integer elsewhere in the body switches to the standard library parser.
    extra = ',"big":123456789012345678901234' if long_integer else ""
    body = f'{{"rule":"r","priority":"Debug","time":"2023-11-14T22:13:20Z","output_fields":{{"c":{constant}{extra}}}}}'
    with pytest.raises(ValueError):
        loads(body)
