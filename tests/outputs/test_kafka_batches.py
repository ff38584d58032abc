"""The Kafka output builds its own record batches: partitions, order, sizes and limits against a real broker."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from router.config import parse_config
from router.config.outputs import KafkaOutputConfig
from router.event import Event, parse_alert
from router.outputs import create_output
from router.outputs.base import Output, PermanentError
from router.outputs.kafka import producer_options
from tests.support.data import cases
from tests.support.tansu import TansuBroker

HOSTS = ("node-a", "node-b", "node-c", "node-d", "node-e", "node-f")


def kafka_config(broker: TansuBroker, topic: str, extra: str = "") -> str:
    return f"""    type: kafka
    brokers: ["{broker.bootstrap}"]
    topic: {topic}
    enable_idempotence: false
    request_timeout_s: 5
    close_timeout_s: 1{extra}"""


def make_output(body: str) -> Output:
    config = parse_config(f"outputs:\n  audit:\n{body}\nroutes: [{{name: all, outputs: [audit]}}]\n", "test.yaml")
    return create_output("audit", config.outputs["audit"])


def alert(seq: int, hostname: str = "node-a", case: str = "C13") -> Event:
    event = parse_alert(cases(case)[0]["event"])
    event.hostname = hostname
    event.output_fields = {**event.output_fields, "seq": seq}
    return event


async def send(output: Output, events: list[Event]) -> list[object]:
    await output.start()
    try:
        return list(await output.send_batch(events))
    finally:
        await output.close()


async def test_key_goes_to_default_partitioner_choice(tansu: TansuBroker) -> None:
    await tansu.create_topic("keyed", partitions=4)
    events = [alert(seq, HOSTS[seq % len(HOSTS)]) for seq in range(60)]

    results = await send(make_output(kafka_config(tansu, "keyed")), events)
    messages = await tansu.consume_all("keyed", len(events))

    assert results == [None] * len(events)
    assert len(messages) == len(events)
    partitioner = DefaultPartitioner()
    for message in messages:
        assert message.key is not None
        assert message.partition == partitioner(message.key, [0, 1, 2, 3], [0, 1, 2, 3])


async def test_each_key_keeps_arrival_order(tansu: TansuBroker) -> None:
    await tansu.create_topic("per-key", partitions=3)
    events = [alert(seq, HOSTS[seq % 3]) for seq in range(90)]

    results = await send(make_output(kafka_config(tansu, "per-key")), events)
    messages = await tansu.consume_all("per-key", len(events))

    assert results == [None] * len(events)
    for host in HOSTS[:3]:
        written = [m.value for m in sorted(messages, key=lambda m: m.offset) if m.key == host.encode()]
        assert written == [e.to_json() for e in events if e.hostname == host]


async def test_oversized_batch_split_in_order(tansu: TansuBroker) -> None:
    # Each alert is about 0.5 KiB, so a 4 KiB batch takes about seven and 50 alerts need several batches.
    await tansu.create_topic("split", partitions=2)
    events = [alert(seq, HOSTS[seq % 2]) for seq in range(50)]
    output = make_output(kafka_config(tansu, "split", "\n    max_batch_bytes: 4096"))

    results = await send(output, events)
    messages = await tansu.consume_all("split", len(events))

    assert results == [None] * len(events)
    assert len(messages) == len(events)
    for host in HOSTS[:2]:
        by_offset = sorted((m for m in messages if m.key == host.encode()), key=lambda m: m.offset)
        assert [m.value for m in by_offset] == [e.to_json() for e in events if e.hostname == host]


async def test_too_large_alert_fails_alone(tansu: TansuBroker) -> None:
    await tansu.create_topic("mixed")
    small, large, last = alert(0), alert(1, case="C06"), alert(2)
    output = make_output(kafka_config(tansu, "mixed", "\n    max_message_bytes: 2048"))
    assert len(large.to_json()) > 2048
    assert len(small.to_json()) < 1500

    results = await send(output, [small, large, last])
    messages = await tansu.consume_all("mixed", 2)

    assert results[0] is None
    assert isinstance(results[1], PermanentError)
    assert results[1].reason == "message_too_large"
    assert results[2] is None
    assert [m.value for m in messages] == [small.to_json(), last.to_json()]


async def test_keyless_alerts_of_one_call_share_a_partition(tansu: TansuBroker) -> None:
    await tansu.create_topic("keyless", partitions=4)
    events = [alert(seq) for seq in range(20)]
    output = make_output(kafka_config(tansu, "keyless", "\n    key_field: null"))

    results = await send(output, events)
    messages = await tansu.consume_all("keyless", len(events))

    assert results == [None] * len(events)
    assert {m.key for m in messages} == {None}
    assert len({m.partition for m in messages}) == 1
    assert [m.value for m in sorted(messages, key=lambda m: m.offset)] == [e.to_json() for e in events]


@pytest.mark.parametrize(
    ("extra", "linger_ms", "batch_bytes"),
    [
        ("", 0, 524_288),
        ("\n    linger_ms: 20\n    max_batch_bytes: 65536", 20, 65_536),
        # A topic limit below the batch size caps the batch, or a full batch would be rejected whole.
        ("\n    max_message_bytes: 262144", 0, 262_144),
    ],
)
def test_producer_gets_linger_and_batch_size(extra: str, linger_ms: int, batch_bytes: int) -> None:
    body = f'    type: kafka\n    brokers: ["127.0.0.1:9"]\n    topic: t{extra}'
    config = parse_config(f"outputs:\n  audit:\n{body}\nroutes: [{{name: all, outputs: [audit]}}]\n", "test.yaml")
    output_config = config.outputs["audit"]
    assert isinstance(output_config, KafkaOutputConfig)

    options = producer_options(output_config)

    assert options["linger_ms"] == linger_ms
    assert options["max_batch_size"] == batch_bytes
