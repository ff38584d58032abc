"""Outputs that write JSON lines: standard output and a file."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO

from router.event import Event
from router.outputs.base import DeliveryError, Output, OutputStartError, RetriableError


def json_lines(events: Sequence[Event]) -> bytes:
    """Return the alerts as JSON lines; JSON escaping keeps newlines in values inside each line."""
    return b"\n".join([e.to_json() for e in events]) + b"\n"


class StdoutOutput(Output):
    """Writes each alert to standard output as one JSON line."""

    type_name = "stdout"
    max_batch = 512
    waits_on_io = False

    def __init__(self, name: str, config: Any, stream: BinaryIO | None = None) -> None:
        super().__init__(name, config)
        self._stream = stream if stream is not None else sys.stdout.buffer

    async def send(self, event: Event) -> None:
        await self._write([event])

    async def send_batch(self, events: Sequence[Event]) -> list[DeliveryError | None]:
        try:
            await self._write(events)
        except DeliveryError as exc:
            return [exc] * len(events)
        return [None] * len(events)

    async def _write(self, events: Sequence[Event]) -> None:
        try:
            self._stream.write(json_lines(events))
            self._stream.flush()
        except OSError as exc:
            raise RetriableError("write_failed", exc.strerror or str(exc)) from exc


class FileOutput(Output):
    """Appends each alert to a file as one JSON line."""

    type_name = "file"
    max_batch = 512

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._file: BinaryIO | None = None
        self.waits_on_io = bool(config.fsync)  # fsync runs in a thread and can take long on network storage

    async def start(self) -> None:
        try:
            self._file = await asyncio.to_thread(self.config.path.open, "ab")
        except OSError as exc:
            raise OutputStartError(f"cannot open {self.config.path} for appending: {exc.strerror}") from exc

    async def send(self, event: Event) -> None:
        await self._append([event])

    async def send_batch(self, events: Sequence[Event]) -> list[DeliveryError | None]:
        try:
            await self._append(events)
        except DeliveryError as exc:
            return [exc] * len(events)
        return [None] * len(events)

    async def _append(self, events: Sequence[Event]) -> None:
        assert self._file is not None, "start() was not called"
        try:
            self._file.write(json_lines(events))
            self._file.flush()
            if self.config.fsync:
                await asyncio.to_thread(os.fsync, self._file.fileno())
        except OSError as exc:
            raise RetriableError("write_failed", exc.strerror or str(exc)) from exc

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
