"""Behaviour of the event model's fast paths: long-integer detection, cached time parsing, alert ids."""

from __future__ import annotations

import uuid

import pytest

from router.event import InvalidAlert, loads, new_alert_id, parse_time


def test_loads_keeps_twenty_digit_integer_exact() -> None:
    assert loads(b'{"a":123456789012345678901}') == {"a": 123456789012345678901}


def test_loads_keeps_long_integer_in_string_input() -> None:
    assert loads('{"a":[1,99999999999999999999999]}') == {"a": [1, 99999999999999999999999]}


def test_loads_nineteen_digits_stays_integer() -> None:
    assert loads(b'{"a":1685022245478445995}') == {"a": 1685022245478445995}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-05-25T13:44:05.478445995Z", 1685022245478445995),
        ("2023-05-25T13:44:05.000000001Z", 1685022245000000001),
        ("2023-05-25T13:44:05Z", 1685022245000000000),
        ("2023-05-25T15:44:05.5+02:00", 1685022245500000000),
        ("2023-05-25T13:44:05.4784459951234Z", 1685022245478445995),
    ],
)
def test_parse_time_same_second_twice(text: str, expected: int) -> None:
    assert parse_time(text) == expected
    assert parse_time(text) == expected


def test_parse_time_second_shared_across_fractions() -> None:
    first = parse_time("2024-01-01T00:00:00.1Z")
    second = parse_time("2024-01-01T00:00:00.2Z")
    assert second - first == 100_000_000


def test_parse_time_invalid_date_rejected_every_time() -> None:
    for _ in range(2):
        with pytest.raises(InvalidAlert, match="not a valid date"):
            parse_time("2023-02-30T00:00:00.5Z")


def test_alert_id_is_uuid4() -> None:
    parsed = uuid.UUID(new_alert_id())
    assert parsed.version == 4
    assert parsed.variant == uuid.RFC_4122


def test_alert_ids_unique_across_blocks() -> None:
    ids = [new_alert_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
