"""The bounded memory queue: overflow policies, byte bound, wake-ups and in-flight bookkeeping."""

from __future__ import annotations

import asyncio

from router.event import loads, parse_alert
from router.queue import Delivery, MemoryQueue
from tests.support.data import corpus_lines


def _deliveries(count: int) -> list[Delivery]:
    lines = corpus_lines()
    return [Delivery(parse_alert(loads(lines[i % len(lines)]))) for i in range(count)]


def test_drop_oldest_by_item_count() -> None:
    reported: list[str] = []
    queue = MemoryQueue(
        3, "drop_oldest", name="out", report_drop=lambda _o, _r, alert_id, _rule: reported.append(alert_id)
    )
    first, second, third, fourth = _deliveries(4)
    for delivery in (first, second, third):
        assert queue.put(delivery) is None
    assert queue.put(fourth) is first
    assert reported == []
    assert queue.depth() == 3


def test_drop_oldest_by_bytes_may_drop_several() -> None:
    reported: list[str] = []
    small = _deliveries(3)
    sizes = [len(d.event.to_json()) for d in small]
    queue = MemoryQueue(
        100,
        "drop_oldest",
        max_bytes=sum(sizes),
        name="out",
        report_drop=lambda _o, _r, alert_id, _rule: reported.append(alert_id),
    )
    for delivery in small:
        queue.put(delivery)
    big = _deliveries(1)[0]
    # Padded to the size of the first two, so exactly those two must go.
    big.event.output_fields["padding"] = ""
    big.event.output_fields["padding"] = "x" * (sizes[0] + sizes[1] - len(big.event.to_json()))
    big.event.invalidate_json()
    assert len(big.event.to_json()) == sizes[0] + sizes[1]
    assert queue.put(big) is small[0]
    assert reported == [small[1].event.id]  # the second victim is reported by the queue itself
    assert queue.depth() == 2


def test_reject_keeps_everything_over_the_bound() -> None:
    queue = MemoryQueue(2, "reject", name="out")
    for delivery in _deliveries(3):
        assert queue.put(delivery) is None
    assert queue.is_full()
    assert queue.depth() == 3


async def test_waiting_delivery_loop_wakes_on_first_alert() -> None:
    queue = MemoryQueue(10, "drop_oldest", name="out")
    waiting = asyncio.create_task(queue.get_batch(10))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    first, second = _deliveries(2)
    queue.put(first)
    queue.put(second)
    assert await asyncio.wait_for(waiting, 1) == [first, second]
    # Emptied and waited on again: the next first alert wakes it again.
    queue.done([first, second])
    waiting = asyncio.create_task(queue.get_batch(10))
    await asyncio.sleep(0.01)
    third = _deliveries(1)[0]
    queue.put(third)
    assert await asyncio.wait_for(waiting, 1) == [third]


async def test_done_forgets_exactly_what_finished() -> None:
    queue = MemoryQueue(10, "drop_oldest", name="out")
    deliveries = _deliveries(3)
    for delivery in deliveries:
        queue.put(delivery)
    batch = await queue.get_batch(10)
    queue.done([batch[1]])  # one finished, two still in flight (retrying)
    assert queue.depth() == 2
    assert queue.oldest_ns() == deliveries[0].event.received_ns
    queue.done([batch[0], batch[2]])
    assert queue.depth() == 0
    assert queue.oldest_ns() is None
    assert not queue.is_full()
