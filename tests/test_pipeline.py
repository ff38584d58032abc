"""The pipeline between the ingests and the output queues: order, room, and who does the work."""

from __future__ import annotations

import asyncio

import pytest

from router.config.routes import RouteConfig
from router.event import Event, loads, parse_alert
from router.metrics import Metrics
from router.pipeline import Backpressure, Pipeline
from router.queue import MemoryQueue
from router.routing import Router
from tests.support.data import corpus_lines


def _pipeline(max_pending: int = 10) -> tuple[Pipeline, MemoryQueue, Metrics]:
    metrics = Metrics()
    queue = MemoryQueue(1000, "drop_oldest", name="out")
    route = RouteConfig.model_validate({"name": "all", "outputs": ["out"], "internal": "include"})
    return Pipeline(Router([route]), {"out": queue}, metrics, max_pending=max_pending), queue, metrics


def _alerts(count: int) -> list[Event]:
    lines = corpus_lines()
    return [parse_alert(loads(lines[i % len(lines)])) for i in range(count)]


async def _queued_ids(queue: MemoryQueue) -> list[str]:
    return [d.event.id for d in await queue.get_batch(1000)] if queue.depth() else []


async def test_accept_leaves_the_work_to_the_run_task() -> None:
    # The ingest returns first: the stages and routing run after, in the pipeline's own task.
    pipeline, queue, metrics = _pipeline()
    first, second = _alerts(2)
    await pipeline.accept([first, second])
    assert queue.depth() == 0
    runner = asyncio.create_task(pipeline.run())
    try:
        for _ in range(100):
            await asyncio.sleep(0)
            if queue.depth() == 2:
                break
        assert await _queued_ids(queue) == [first.id, second.id]
        assert metrics.sample("alerts_routed_total", route="all") == 2
    finally:
        runner.cancel()


async def test_accept_behind_queued_alerts_keeps_arrival_order() -> None:
    pipeline, queue, _ = _pipeline()
    earlier, later = _alerts(2)
    pipeline.submit([earlier])  # waits in the inbox for the run task
    await pipeline.accept([later])
    assert await _queued_ids(queue) == []  # the later alert did not overtake the earlier one
    runner = asyncio.create_task(pipeline.run())
    try:
        for _ in range(100):
            await asyncio.sleep(0)
            if queue.depth() == 2:
                break
        assert await _queued_ids(queue) == [earlier.id, later.id]
    finally:
        runner.cancel()


async def test_full_inbox_refuses_all_or_none() -> None:
    pipeline, queue, _ = _pipeline(max_pending=3)
    pipeline.submit(_alerts(2))
    with pytest.raises(Backpressure, match="inbox is full"):
        pipeline.submit(_alerts(2))
    with pytest.raises(Backpressure, match="inbox is full"):
        await pipeline.accept(_alerts(2))
    pipeline.submit(_alerts(1))
    assert queue.depth() == 0


async def test_accept_refused_while_shutting_down() -> None:
    pipeline, queue, _ = _pipeline()
    pipeline.accepting = False
    with pytest.raises(Backpressure, match="shutting down"):
        await pipeline.accept(_alerts(1))
    assert queue.depth() == 0


async def test_resubmit_waits_for_room() -> None:
    pipeline, queue, _ = _pipeline(max_pending=1)
    first, second = _alerts(2)
    pipeline.submit([first])
    waiting = asyncio.create_task(pipeline.resubmit(second))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    runner = asyncio.create_task(pipeline.run())
    try:
        await asyncio.wait_for(waiting, 1)
        for _ in range(100):
            await asyncio.sleep(0)
            if queue.depth() == 2:
                break
        assert await _queued_ids(queue) == [first.id, second.id]
    finally:
        runner.cancel()
