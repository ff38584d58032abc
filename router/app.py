"""The router process: builds every component from the config, runs them, and shuts down in order.

Start-up is all or nothing: an output that cannot start stops the router with the reason, rather than
leaving a daemon that silently drops what was routed to it.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field
from typing import Any

from router.config import RouterConfig
from router.delivery import OutputWorker
from router.health import Health
from router.logs import get_logger
from router.metrics import Metrics
from router.outputs import create_output
from router.outputs.base import Output, OutputStartError
from router.pipeline import Pipeline, Stage
from router.queue import MemoryQueue, OutputQueue
from router.routing import Router
from router.sources.http import HttpIngest
from router.spool import Spool, SpoolError
from router.supervisor import Supervisor


class StartupError(Exception):
    """The router cannot start; the message lists every reason."""


@dataclass
class RouterApp:
    """One running router."""

    config: RouterConfig
    metrics: Metrics = field(default_factory=Metrics)
    health: Health = field(default_factory=Health)
    outputs: dict[str, Output] = field(default_factory=dict)
    overrides: dict[str, Output] = field(default_factory=dict)
    """Output instances to use instead of creating them from the config (tests and replay)."""
    stages: list[Stage] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log = get_logger("app")
        self.stopped = asyncio.Event()
        self.exit_code = 0
        self.supervisor = Supervisor(self._crashed)
        self.spool = Spool(self.config.spool, self.metrics) if self.config.spool else None
        self.queues: dict[str, OutputQueue] = {}
        for name, cfg in self.config.outputs.items():
            if self.spool is not None:
                self.queues[name] = self.spool.create_queue(name, cfg.queue)
            else:
                self.queues[name] = MemoryQueue(cfg.queue.max_items, cfg.queue.overflow)
        self.pipeline = Pipeline(Router(self.config.routes), self.queues, self.metrics, self.stages, journal=self.spool)
        self.http: HttpIngest | None = None
        self.grpc: Any = None

    async def start(self, *, ingest: bool = True) -> None:
        """Start outputs, delivery loops, the pipeline and (unless ``ingest`` is false) the ingests."""
        if self.spool is not None:
            try:
                self.spool.open()
            except SpoolError as exc:
                raise StartupError(str(exc)) from exc
        problems: list[str] = []
        for name, cfg in self.config.outputs.items():
            output = self.overrides.get(name) or create_output(name, cfg)
            try:
                await output.start()
            except OutputStartError as exc:
                problems.append(f"output {name} ({cfg.type}): {exc}")
                continue
            self.outputs[name] = output
        if problems:
            await self._close_outputs()
            raise StartupError("; ".join(problems))

        for name, output in self.outputs.items():
            worker = OutputWorker(output, self.queues[name], self.config.outputs[name].retry, self.metrics, self.health)
            self.supervisor.start(f"deliver-{name}", worker.run())
        self.supervisor.start("pipeline", self.pipeline.run())
        if self.spool is not None:
            self.supervisor.start("spool-gauges", self._export_spool_gauges(self.spool))
            # Alerts accepted before the last stop go through the pipeline before any new one.
            await self.spool.resume(self.pipeline)

        if ingest:
            await self._start_ingests()
        self.log.info("router_started", outputs=sorted(self.outputs), routes=[r.name for r in self.config.routes])

    async def _start_ingests(self) -> None:
        if self.config.ingest.http.enabled:
            self.http = HttpIngest(self.config.ingest.http, self.pipeline, self.metrics, self.health)
            try:
                await self.http.start()
            except OSError as exc:
                raise StartupError(f"HTTP ingest cannot listen on {self.config.ingest.http.listen}: {exc.strerror}") from exc
        if self.config.ingest.grpc.enabled:
            from router.sources.grpc import GrpcIngest

            self.grpc = GrpcIngest(self.config.ingest.grpc, self.pipeline, self.metrics, self.health)
            self.supervisor.start("ingest-grpc", self.grpc.run())

    def _crashed(self, name: str, _error: BaseException | None) -> None:
        self.exit_code = 1
        self.stopped.set()

    def request_stop(self) -> None:
        """Ask the router to stop (SIGTERM, SIGINT)."""
        self.stopped.set()

    def install_signal_handlers(self) -> None:
        """Stop gracefully on SIGTERM and SIGINT."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    async def run_until_stopped(self, grace_s: float = 20.0) -> int:
        """Wait for a stop request, then shut down; return the process exit code."""
        await self.stopped.wait()
        await self.shutdown(grace_s)
        return self.exit_code

    async def shutdown(self, grace_s: float = 20.0) -> None:
        """Stop accepting (503), deliver what can be delivered within ``grace_s``, then stop everything."""
        self.log.info("router_stopping", grace_s=grace_s)
        self.health.accepting = False
        self.pipeline.accepting = False
        if self.grpc is not None:
            await self.supervisor.stop(["ingest-grpc"])
        try:
            async with asyncio.timeout(grace_s):
                await self.pipeline.wait_idle()
        except TimeoutError:
            self._account_undelivered()
        if self.http is not None:
            await self.http.stop()
        await self.supervisor.stop()
        await self._close_outputs()
        if self.spool is not None:
            await self.spool.close()
        self.log.info("router_stopped")

    def _account_undelivered(self) -> None:
        for name, queue in self.queues.items():
            if not queue.depth():
                continue
            if queue.durable:
                # The spool keeps them; the next start delivers them.
                self.log.info("alerts_kept_in_spool", output=name, alerts=queue.depth())
            else:
                # Memory queues lose what is still queued; counted and logged per output so the loss is visible.
                self.metrics.lost.labels(name, "shutdown").inc(queue.depth())
                self.log.error("alert_lost", output=name, reason="shutdown", alerts=queue.depth())

    @staticmethod
    async def _export_spool_gauges(spool: Spool, interval_s: float = 1.0) -> None:
        while True:
            spool.update_gauges()
            await asyncio.sleep(interval_s)

    async def _close_outputs(self) -> None:
        for name, output in self.outputs.items():
            try:
                async with asyncio.timeout(5):
                    await output.close()
            except (TimeoutError, Exception) as exc:  # noqa: BLE001 - shutdown goes on whatever one output does
                self.log.warning("output_close_failed", output=name, error=repr(exc))
