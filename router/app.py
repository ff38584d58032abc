"""The router process: builds every component from the config, runs them, and shuts down in order.

Start-up is all or nothing: an output that cannot start stops the router with the reason, rather than
leaving a daemon that silently drops what was routed to it.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.config import ConfigError, Problem, RouterConfig, config_warnings, load_config
from router.delivery import OutputWorker
from router.enrich.k8s import KubernetesEnrichment
from router.enrich.kube_api import KubeConfigError
from router.event import Event
from router.health import Health
from router.logs import configure_logging, get_logger
from router.metrics import Metrics
from router.outputs import create_output
from router.outputs.base import Output, OutputStartError
from router.pipeline import Backpressure, Pipeline, Stage
from router.policy.engine import PolicyEngine, PolicyStage
from router.queue import MemoryQueue, OutputQueue, drop_reporter
from router.routing import Router
from router.rules.rollout import RulesRollout
from router.sources.http import HttpIngest
from router.spool import Spool, SpoolError
from router.supervisor import Supervisor

# Sections built once at start-up; a reload that changes them logs that a restart is needed.
_RESTART_SECTIONS = ("outputs", "ingest", "falco_rules", "kubernetes", "policy", "spool", "shutdown")


CLOSE_RESERVE_S = 3.0
"""Part of the shutdown grace period kept for closing outputs (a quarter of it when it is shorter)."""
GRPC_DRAIN_SHARE = 0.5
"""Share of the shutdown grace period spent at most reading what Falco has already written to the gRPC
stream. A backlog of alerts streams at several thousand a second, and what is read is delivered or
counted, while what is left unread is lost uncounted, so reading gets the larger share."""
MIN_CLOSE_S = 0.5
"""Time outputs get to close even when the grace period is used up, such as on a failed start."""


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
    config_path: Path | None = None
    """The file the config came from; SIGHUP reloads it. None for the embedded default (no reload)."""

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
                self.queues[name] = MemoryQueue(
                    cfg.queue.max_items,
                    cfg.queue.overflow,
                    max_bytes=cfg.queue.max_bytes,
                    name=name,
                    report_drop=drop_reporter(self.metrics),
                )
        self.kubernetes: KubernetesEnrichment | None = None
        if self.config.kubernetes.enabled:
            # Enrichment runs before policy, so policy stages can match on enrichment.k8s.
            self.kubernetes = KubernetesEnrichment(self.config.kubernetes, self.metrics, self.health)
            self.stages.insert(0, self.kubernetes.stage)
        self.policy: PolicyEngine | None = None
        if self.config.policy.files:
            # The files are read in start(), where a problem becomes a StartupError.
            self.policy = PolicyEngine(self.config.policy, self.metrics, health=self.health, inject=self._inject)
            # The policy runs after enrichment, because its expressions can read enrichment.k8s.*.
            self.stages.append(PolicyStage(self.policy))
        self.pipeline = Pipeline(Router(self.config.routes), self.queues, self.metrics, self.stages, journal=self.spool)
        if self.policy is not None:
            # Dedup updates repeat an alert that was already enriched and routed, so they skip the stages.
            self.policy.emit_update = self.pipeline.dispatch
        self.http: HttpIngest | None = None
        self.grpc: Any = None
        self.rules: RulesRollout | None = None
        if self.config.falco_rules.enabled:
            self.rules = RulesRollout(self.config.falco_rules, self.pipeline.submit, self.metrics, self.health)
            self.pipeline.observers.append(self.rules.observe)
        self.config_reloads = 0
        self._shut_down = False
        self._signals: list[signal.Signals] = []

    async def start(self, *, ingest: bool = True) -> None:
        """Start outputs, delivery loops, the pipeline and (unless ``ingest`` is false) the ingests."""
        if self.spool is not None:
            try:
                self.spool.open()
            except SpoolError as exc:
                raise StartupError(str(exc)) from exc
        if self.policy is not None:
            try:
                self.policy.load()
            except ConfigError as exc:
                raise StartupError("invalid policy: " + "; ".join(str(p) for p in exc.problems)) from exc
        problems: list[str] = []
        if self.kubernetes is not None:
            try:
                self.kubernetes.connect()
            except KubeConfigError as exc:
                raise StartupError(f"kubernetes: {exc}") from exc
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
        if self.kubernetes is not None:
            for task_name, coroutine in self.kubernetes.tasks().items():
                self.supervisor.start(task_name, coroutine)
        if self.rules is not None:
            self.supervisor.start("falco-rules", self.rules.run())
        if self.spool is not None:
            self.supervisor.start("spool-gauges", self._export_spool_gauges(self.spool))
            # Alerts accepted before the last stop go through the pipeline before any new one.
            await self.spool.resume(self.pipeline)
        if self.policy is not None:
            self.supervisor.start("policy-ticker", self.policy.run_ticker())
            if self.config.policy.watch:
                self.supervisor.start("policy-watch", self.policy.watch_files())

        if ingest:
            await self._start_ingests()
        for warning in config_warnings(self.config):
            self.log.warning("config_warning", warning=warning)
        self.log.info("router_started", outputs=sorted(self.outputs), routes=[r.name for r in self.config.routes])

    async def _start_ingests(self) -> None:
        if self.config.ingest.http.enabled:
            self.http = HttpIngest(self.config.ingest.http, self.pipeline, self.metrics, self.health)
            try:
                await self.http.start()
            except OSError as exc:
                raise StartupError(
                    f"HTTP ingest cannot listen on {self.config.ingest.http.listen}: {exc.strerror}"
                ) from exc
        if self.config.ingest.grpc.enabled:
            # Imported only when enabled: grpcio costs memory on every node that never uses it.
            from router.sources.grpc import GrpcIngest  # noqa: PLC0415

            self.grpc = GrpcIngest(self.config.ingest.grpc, self.pipeline, self.metrics, self.health)
            self.supervisor.start("ingest-grpc", self.grpc.run())

    def reload(self) -> None:
        """Reload the config file, then the policy files (SIGHUP); each keeps its old version when invalid."""
        self.reload_config()
        self.reload_policy()

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
        """Stop gracefully on SIGTERM and SIGINT; reload the config file on SIGHUP."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self._signals = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]

    def remove_signal_handlers(self) -> None:
        """Give back the signals taken by ``install_signal_handlers``."""
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals = []

    def reload_config(self) -> bool:
        """Reload routes and log settings from ``config_path``; keep the running config if the new one is invalid.

        Outputs, ingests and falco_rules are built once at start-up: a change there is logged as needing a
        restart and the running settings stay. Returns whether the new config was applied.
        """
        if self.config_path is None:
            self.log.warning("config_reload_skipped", reason="the router runs on the embedded default config")
            return False
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            return self._reject_reload([str(p) for p in exc.problems])
        restart_needed = [name for name in _RESTART_SECTIONS if getattr(new, name) != getattr(self.config, name)]
        missing = sorted({o for route in new.routes for o in route.outputs} - set(self.queues))
        if missing:
            return self._reject_reload(
                [f"routes name outputs that are not running: {', '.join(missing)}; restart the router to add outputs"]
            )
        for name in restart_needed:
            self.log.warning("config_reload_restart_required", section=name, path=str(self.config_path))
        self.pipeline.router = Router(new.routes)
        configure_logging(new.log.level, new.log.format)
        self.config = new.model_copy(update={name: getattr(self.config, name) for name in restart_needed})
        self.config_reloads += 1
        self.health.set("config", "ok", "loaded", path=str(self.config_path), reloads=self.config_reloads)
        self.log.info(
            "config_reloaded",
            path=str(self.config_path),
            routes=[r.name for r in new.routes],
            log_level=new.log.level,
            restart_required=restart_needed,
        )
        return True

    def _reject_reload(self, problems: list[str]) -> bool:
        for problem in problems:
            self.log.error("config_reload_problem", path=str(self.config_path), problem=problem)
        self.log.error("config_reload_rejected", path=str(self.config_path), problems=len(problems))
        self.health.set(
            "config",
            "degraded",
            "the new config is invalid; the previous one stays in use",
            path=str(self.config_path),
            reloads=self.config_reloads,
            problems=problems,
        )
        return False

    async def run_until_stopped(self, grace_s: float = 20.0) -> int:
        """Wait for a stop request, then shut down; return the process exit code."""
        await self.stopped.wait()
        await self.shutdown(grace_s)
        return self.exit_code

    async def shutdown(self, grace_s: float = 20.0) -> None:
        """Stop accepting (503), deliver what can be delivered, and stop everything, all within ``grace_s``.

        A part of the grace period (at most CLOSE_RESERVE_S) is kept for closing the outputs, so that a
        dead broker cannot stretch the shutdown past the time the orchestrator allows.
        """
        if self._shut_down:
            return  # a second call would count the undelivered alerts as lost twice
        self._shut_down = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        self.log.info("router_stopping", grace_s=grace_s)
        self.health.accepting = False
        if self.grpc is not None:
            # Stopped while the pipeline still accepts, so the gRPC ingest can hand over what it has read
            # and what Falco has already written to the stream: Falco cannot send those alerts again.
            await self.grpc.drain(limit_s=grace_s * GRPC_DRAIN_SHARE)
            await self.supervisor.stop(["ingest-grpc"])
        self.pipeline.accepting = False
        if self.policy is not None:
            # Send the updates of open dedup windows now, or notifying outputs never learn the final count.
            self.policy.flush()
        try:
            async with asyncio.timeout(max(grace_s - min(CLOSE_RESERVE_S, grace_s / 4), 0.0)):
                await self.pipeline.wait_idle()
        except TimeoutError:
            self._account_undelivered()
        if self.http is not None:
            await self.http.stop()
        await self.supervisor.stop()
        if self.kubernetes is not None:
            await self.kubernetes.close()
        await self._close_outputs(max(deadline - loop.time(), MIN_CLOSE_S))
        if self._signals:
            self.remove_signal_handlers()
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

    async def _close_outputs(self, timeout_s: float = 5.0) -> None:
        # Closed together, so the slowest output (a dead broker) sets the time, not the sum of them.
        names = list(self.outputs)
        results = await asyncio.gather(
            *(self._close_output(self.outputs[name], timeout_s) for name in names), return_exceptions=True
        )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                self.log.warning("output_close_failed", output=name, error=repr(result))

    @staticmethod
    async def _close_output(output: Output, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await output.close()
