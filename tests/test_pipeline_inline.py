"""The pipeline processes in ``submit`` while its task is idle, with the same results as the task."""

from __future__ import annotations

import asyncio

import pytest

from router.config.routes import RouteConfig
from router.event import Event, parse_alert
from router.metrics import Metrics
from router.pipeline import Backpressure, Pipeline
from router.queue import MemoryQueue
from router.routing import Router


def _alert(rule: str) -> Event:
    return parse_alert({"rule": rule, "priority": "Warning", "time": "2024-01-01T00:00:00.000000001Z"})


def _pipeline(stages: tuple[object, ...] = (), max_pending: int = 10) -> tuple[Pipeline, MemoryQueue]:
    queue = MemoryQueue(100, "drop_oldest")
    router = Router([RouteConfig(name="all", outputs=["out"])])
    return Pipeline(router, {"out": queue}, Metrics(), stages, max_pending=max_pending), queue  # type: ignore[arg-type]


async def _rules(queue: MemoryQueue) -> list[str]:
    return [delivery.event.rule for delivery in await queue.get_batch(100)]


class _Failing:
    name = "failing"

    def process(self, event: Event) -> Event:
        raise RuntimeError("stage bug")


async def test_pipeline_keeps_arrival_order() -> None:
    pipeline, queue = _pipeline()
    task = asyncio.create_task(pipeline.run())
    await asyncio.sleep(0)
    pipeline.submit([_alert("a"), _alert("b")])
    pipeline.submit([_alert("c")])
    await asyncio.sleep(0.01)
    assert await _rules(queue) == ["a", "b", "c"]
    task.cancel()


async def test_pipeline_not_running_only_queues() -> None:
    pipeline, _queue = _pipeline(max_pending=2)
    pipeline.submit([_alert("a"), _alert("b")])
    with pytest.raises(Backpressure):
        pipeline.submit([_alert("c")])


async def test_pipeline_cancelled_only_queues() -> None:
    pipeline, queue = _pipeline()
    task = asyncio.create_task(pipeline.run())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pipeline.submit([_alert("a")])
    assert queue.depth() == 0


async def test_pipeline_stage_error_stops_task() -> None:
    pipeline, _queue = _pipeline(stages=(_Failing(),))
    task = asyncio.create_task(pipeline.run())
    await asyncio.sleep(0)
    pipeline.submit([_alert("a")])
    with pytest.raises(RuntimeError, match="stage bug"):
        await asyncio.wait_for(task, 5)
