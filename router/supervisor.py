"""Named background tasks: started in one place, cancelled and awaited on shutdown, never dying silently."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from router.logs import get_logger


class Supervisor:
    """Owns the router's background tasks. A task that ends on its own is a fault: it is logged and
    ``on_crash`` is called, which stops the router so that the orchestrator restarts it."""

    def __init__(self, on_crash: Callable[[str, BaseException | None], None]) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._on_crash = on_crash
        self._stopping = False
        self.log = get_logger("supervisor")

    def start(self, name: str, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start a named task."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks[name] = task
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        name = task.get_name()
        self._tasks.pop(name, None)
        if self._stopping or task.cancelled():
            return
        error = task.exception()
        self.log.error(
            "task_crashed", task=name, error=repr(error) if error else "returned unexpectedly", exc_info=error
        )
        self._on_crash(name, error)

    async def stop(self, names: list[str] | None = None) -> None:
        """Cancel the named tasks (all when None) and wait for them to end."""
        if names is None:
            self._stopping = True
        tasks = [t for n, t in self._tasks.items() if names is None or n in names]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
