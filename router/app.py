"""The router process: builds every component from the config, runs them, and shuts down in order.

Start-up is all or nothing: an output that cannot start stops the router with the reason, rather than
leaving a daemon that silently drops what was routed to it.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field
from typing import Any

from router.config import ConfigError, Problem, RouterConfig
from router.delivery import OutputWorker
from router.event import Event
from router.health import Health
from router.logs import get_logger
from router.metrics import Metrics
from router.outputs import create_output
from router.outputs.base import Output, OutputStartError
from router.pipeline import Backpressure, Pipeline, Stage
from router.policy.engine import PolicyEngine, PolicyStage
from router.queue import MemoryQueue, OutputQueue
from router.routing import Router
from router.sources.http import HttpIngest
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
        self.queues: dict[str, OutputQueue] = {
            name: MemoryQueue(cfg.queue.max_items, cfg.queue.overflow) for name, cfg in self.config.outputs.items()
        }
        self.policy: PolicyEngine | None = None
        if self.config.policy.files:
            # The files are read in start(), where a problem becomes a StartupError.
            self.policy = PolicyEngine(self.config.policy, self.metrics, health=self.health, inject=self._inject)
            # The policy runs after enrichment, because its expressions can read enrichment.k8s.*.
            self.stages.append(PolicyStage(self.policy))
        self.pipeline = Pipeline(Router(self.config.routes), self.queues, self.metrics, self.stages)
        if self.policy is not None:
            # Dedup updates repeat an alert that was already enriched and routed, so they skip the stages.
            self.policy.emit_update = self.pipeline.dispatch
        self.http: HttpIngest | None = None
        self.grpc: Any = None

    async def start(self, *, ingest: bool = True) -> None:
        """Start outputs, delivery loops, the pipeline and (unless ``ingest`` is false) the ingests."""
        if self.policy is not None:
            try:
                self.policy.load()
            except ConfigError as exc:
                raise StartupError("invalid policy: " + "; ".join(str(p) for p in exc.problems)) from exc
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
        self.pipeline.notifying = frozenset(name for name, output in self.outputs.items() if output.notifies)
        self.supervisor.start("pipeline", self.pipeline.run())
        if self.policy is not None:
            self.supervisor.start("policy-ticker", self.policy.run_ticker())
            if self.config.policy.watch:
                self.supervisor.start("policy-watch", self.policy.watch_files())

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

    def reload_policy(self) -> list[Problem]:
        """Reload the policy files (SIGHUP); return the problems, in which case the old policy stays active."""
        return self.policy.reload() if self.policy is not None else []

    def _inject(self, event: Event) -> None:
        # Incidents go through the stages like any alert, so they are enriched, allow-listed and routed.
        try:
            self.pipeline.submit([event])
        except Backpressure:
            self.metrics.policy_injected_lost.labels("incident").inc()
            self.log.error("alert_lost", output="pipeline", reason="backpressure", alert_id=event.id, rule=event.rule)

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
        if self.policy is not None:
            # Send the updates of open dedup windows now, or notifying outputs never learn the final count.
            self.policy.flush()
        if self.grpc is not None:
            await self.supervisor.stop(["ingest-grpc"])
        try:
            async with asyncio.timeout(grace_s):
                await self.pipeline.wait_idle()
        except TimeoutError:
            # NOTE: queues are in memory, so what is still queued now is lost; it is counted and
            # logged per output so the loss is visible.
            for name, queue in self.queues.items():
                if queue.depth():
                    self.metrics.lost.labels(name, "shutdown").inc(queue.depth())
                    self.log.error("alert_lost", output=name, reason="shutdown", alerts=queue.depth())
        if self.http is not None:
            await self.http.stop()
        await self.supervisor.stop()
        await self._close_outputs()
        self.log.info("router_stopped")

    async def _close_outputs(self) -> None:
        for name, output in self.outputs.items():
            try:
                async with asyncio.timeout(5):
                    await output.close()
            except (TimeoutError, Exception) as exc:  # noqa: BLE001 - shutdown goes on whatever one output does
                self.log.warning("output_close_failed", output=name, error=repr(exc))
