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


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-30T00:00:00.500000000Z",  # no such date
        "2023-05-25T13:44:05.47844599xZ",  # a letter in the fraction
        "2023-05-25T13:44:05.４78445995Z",  # a full-width digit: isdigit() accepts it, RFC 3339 does not
        "2023-05-25T13:44:05.-78445995Z",
    ],
)
def test_parse_time_fast_path_rejects_invalid(text: str) -> None:
    for _ in range(2):  # the second time, after any caching
        with pytest.raises(InvalidAlert):
            parse_time(text)


def test_parse_time_falco_form_agrees_with_offset_form() -> None:
    # The same instants written in Falco's form (the fast path) and with an offset (the full parse).
    for second in range(0, 86_400 * 2, 3_599):  # 28 and 29 February of a leap year
        falco_form = "2024-02-28T00:00:00.000000007Z"
        moment = parse_time(falco_form) + second * 1_000_000_000
        day, rest = divmod(second, 86_400)
        hours, rest = divmod(rest, 3_600)
        text = f"2024-02-{28 + day:02d}T{hours:02d}:{rest // 60:02d}:{rest % 60:02d}.000000007Z"
        offset = f"2024-02-{28 + day:02d}T{hours:02d}:{rest // 60:02d}:{rest % 60:02d}.000000007+00:00"
        assert parse_time(text) == parse_time(offset) == moment


def test_forked_child_does_not_reuse_parent_ids() -> None:
    import os  # noqa: PLC0415 - only this test forks

    new_alert_id()  # fill the pool in the parent
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave without running pytest's teardown
        os.write(write_end, ",".join(new_alert_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write_end)
    child_ids = os.read(read_end, 1 << 16).decode().split(",")
    os.close(read_end)
    os.waitpid(pid, 0)
    parent_ids = [new_alert_id() for _ in range(10)]
    assert len(child_ids) == 10
    assert not set(child_ids) & set(parent_ids)


@pytest.mark.parametrize(
    "body",
    [
        b'{"rule":"r","output_fields":{"evt.num":123456789012345678901}}',
        b'{"rule":"r","tags":["a"],"count":123456789012345678901}',
        b'{"rule":"r","tags":[123456789012345678901]}',
        b'{"rule":"r","output_fields":{"nested":{"n":123456789012345678901}}}',
        b'{"rule":"r","output_fields":{"list":[1,123456789012345678901]}}',
        b'{"rule":"r","extra":{"n":123456789012345678901},"output_fields":{}}',
        b'{"rule":"r","extra":[123456789012345678901],"tags":[]}',
        b'[{"rule":"r","output_fields":{"n":-123456789012345678901}}]',
        b'{"rule":"r","output_fields":{"ratio":0.5,"n":123456789012345678901}}',
    ],
)
def test_loads_keeps_long_integers_wherever_they_sit(body: bytes) -> None:
    import json  # noqa: PLC0415 - the reference parser of this test only

    assert loads(body) == json.loads(body)
    assert "123456789012345678901" in repr(loads(body))


def test_loads_keeps_ordinary_floats() -> None:
    assert loads(b'{"rule":"r","output_fields":{"ratio":0.5,"big":1e25}}') == {
        "rule": "r",
        "output_fields": {"ratio": 0.5, "big": 1e25},
    }
