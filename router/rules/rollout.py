"""The rules rollout: watch a folder of Falco rules, validate each new set, deploy it and reload Falco once.

One rollout per settled change of the source folder:

1. poll the folder and wait until its content hash has not changed for ``debounce_s`` (a ConfigMap update
   or several files copied one after another count as one rollout);
2. validate the whole set, loaded after the base files, with our own checks. Where a falco binary is
   found, ``falco -V`` checks it too. A set with errors never reaches Falco;
3. write the set into Falco's rules folder atomically and send Falco exactly one SIGHUP;
4. confirm the reload: a "Falco internal: hot restart failure" alert inside ``confirm_window_s`` fails it,
   and where Falco's metrics URL is set its rules hash must change inside the window;
5. on failure, put the previous files back and remember the failed hash so the same set is never tried
   again. The rollback sends no SIGHUP: in both failure cases Falco still runs the previous set (0.35+
   keeps the old rules after a failed dry run, and an ignored SIGHUP changes nothing), which is what the
   restored files hold.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from router.config.falco_rules import FalcoRulesConfig
from router.event import Event
from router.health import Health
from router.logs import get_logger
from router.metrics import Metrics
from router.pipeline import Backpressure
from router.priority import Priority
from router.rules.check import check_rules_set, find_falco_binary
from router.rules.falco import (
    FalcoUnreachableError,
    fetch_falco_rules_hash,
    find_falco_pid,
    send_sighup,
)
from router.rules.files import RulesSet, read_rules_dir, write_rules_set
from router.rules.validate import RuleProblem, has_errors

HOT_RESTART_FAILURE_RULE = "Falco internal: hot restart failure"
ROUTER_SOURCE = "falco_router"
RULE_REJECTED = "falco-router: rules rollout rejected"
RULE_RELOAD_FAILED = "falco-router: rules reload failed"
RULE_NOT_SIGNALLED = "falco-router: rules deployed but Falco not signalled"
_HEALTH = "falco_rules"
_MAX_PROBLEMS_SHOWN = 20


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """The outcome of a reload: ``ok``, or the reason it failed."""

    ok: bool
    reason: str = ""


class RulesRollout:
    """Runs the rollout loop for one source folder and one Falco process."""

    def __init__(
        self,
        config: FalcoRulesConfig,
        submit: Callable[[Sequence[Event]], None],
        metrics: Metrics,
        health: Health,
    ) -> None:
        if config.source_dir is None or config.target_dir is None:
            raise ValueError("falco_rules needs source_dir and target_dir")
        self.config = config
        self.source_dir: Path = config.source_dir
        self.target_dir: Path = config.target_dir
        self._submit = submit
        self.metrics = metrics
        self.health = health
        self.log = get_logger("falco_rules")
        self.active: RulesSet | None = None
        self.deployed = RulesSet({})
        """The set in target_dir: the active one, or a newer one Falco has not been signalled to load."""
        self.failed_hashes: set[str] = set()
        self._handled_hash: str | None = None
        self._seen_hash: str | None = None
        self._changed_at: float | None = None
        self._restart_failure: asyncio.Future[str] | None = None
        self._status: dict[str, Any] = {}
        self.polls = 0
        """Completed polls of the source folder; lets a caller wait for the loop to have looked again."""

    @property
    def active_sha256(self) -> str | None:
        """Return the hash of the rules set Falco runs, as last confirmed by the router."""
        return self.active.sha256 if self.active is not None else None

    def observe(self, event: Event) -> None:
        """Watch alerts passing through the pipeline for Falco's hot restart failure."""
        if event.rule != HOT_RESTART_FAILURE_RULE:
            return
        if self._restart_failure is not None and not self._restart_failure.done():
            self._restart_failure.set_result(event.output)
        else:
            # Someone else changed Falco's config or rules; the router's files did not cause it.
            self.log.warning("falco_hot_restart_failure_unexpected", output=event.output[:500])

    async def run(self) -> None:
        """Poll the source folder and roll out each settled change until cancelled."""
        self._load_active()
        loop = asyncio.get_running_loop()
        while True:
            candidate = self._read_source()
            if candidate is not None:
                if candidate.sha256 != self._seen_hash:
                    self._seen_hash = candidate.sha256
                    self._changed_at = loop.time()
                    self.log.debug("rules_source_changed", sha256=candidate.sha256, files=candidate.names())
                elif self._changed_at is not None and loop.time() - self._changed_at >= self.config.debounce_s:
                    self._changed_at = None
                    await self.rollout(candidate)
            self.polls += 1
            await asyncio.sleep(self.config.poll_interval_s)

    def _load_active(self) -> None:
        try:
            self.active = read_rules_dir(self.target_dir) if self.target_dir.is_dir() else RulesSet({})
        except OSError as exc:
            self.log.warning("rules_target_unreadable", folder=str(self.target_dir), error=str(exc))
            self.active = None
        self.deployed = self.active if self.active is not None else RulesSet({})
        self._handled_hash = self.deployed.sha256
        self._publish_active()
        self._report("ok", "waiting for changes", last_result="none")

    def _read_source(self) -> RulesSet | None:
        try:
            return read_rules_dir(self.source_dir)
        except FileNotFoundError:
            # A ConfigMap swap can remove a file between listing and reading, so the next poll reads again.
            return None
        except OSError as exc:
            self._report("degraded", f"cannot read {self.source_dir}: {exc.strerror}")
            self.log.warning("rules_source_unreadable", folder=str(self.source_dir), error=str(exc))
            return None

    async def rollout(self, candidate: RulesSet) -> None:
        """Validate, deploy and confirm one candidate set (skipped when it is active or failed before)."""
        sha256 = candidate.sha256
        if sha256 == self._handled_hash:
            return
        self._handled_hash = sha256
        if sha256 == self.deployed.sha256:
            self.log.info("rules_candidate_skipped", sha256=sha256, reason="this set is already deployed")
            return
        if sha256 in self.failed_hashes:
            self.log.info("rules_candidate_skipped", sha256=sha256, reason="this set failed before")
            return
        self.log.info("rules_rollout_started", sha256=sha256, files=candidate.names())

        problems = await self.validate(candidate)
        for problem in problems:
            self.metrics.rules_problems.labels(problem.severity).inc()
            if problem.severity == "warning":
                self.log.warning("rules_validation_warning", sha256=sha256, problem=str(problem))
        if has_errors(problems):
            self._reject(candidate, [p for p in problems if p.severity == "error"])
            return

        previous = self.deployed
        try:
            write_rules_set(self.target_dir, candidate)
        except OSError as exc:
            self._fail(candidate, "deploy_failed", f"cannot write {self.target_dir}: {exc}", rollback=previous)
            return
        self.deployed = candidate
        self.log.info("rules_deployed", sha256=sha256, folder=str(self.target_dir))

        outcome = await self._reload_falco()
        if outcome is None:
            return  # not signalled: reported by _reload_falco; the files stay for Falco's next start
        if outcome.ok:
            self.active = candidate
            self._publish_active()
            self.metrics.rules_rollouts.labels("reloaded").inc()
            self._report("ok", "Falco reloaded the rules", last_result="reloaded")
            self.log.info("rules_reloaded", sha256=sha256, files=candidate.names())
            return
        self._fail(candidate, "reload_failed", outcome.reason, rollback=previous)

    async def validate(self, candidate: RulesSet) -> list[RuleProblem]:
        """Return every problem of ``candidate`` loaded after the base files."""
        return await check_rules_set(
            candidate,
            self.config.base_files,
            falco_binary=find_falco_binary(self.config.falco_binary) if self.config.falco_validate else None,
            falco_config=self.config.falco_config,
            timeout_s=self.config.validate_timeout_s,
        )

    async def _reload_falco(self) -> ReloadOutcome | None:
        """Send one SIGHUP and wait for the outcome; None when Falco could not be signalled."""
        before = await self._falco_hash()
        try:
            pid = find_falco_pid(self.config.pid_file, self.config.process_name, scan_proc=self.config.scan_proc)
            loop = asyncio.get_running_loop()
            self._restart_failure = loop.create_future()
            send_sighup(pid)
        except FalcoUnreachableError as exc:
            self._restart_failure = None
            self.metrics.rules_rollouts.labels("not_signalled").inc()
            self._report("degraded", f"rules deployed but Falco was not signalled: {exc}", last_result="not_signalled")
            self.log.error("falco_not_signalled", reason=str(exc), folder=str(self.target_dir))
            self._alert(RULE_NOT_SIGNALLED, f"Falco was not signalled: {exc}", {})
            return None
        self.log.info("falco_signalled", pid=pid, signal="SIGHUP")
        try:
            return await self._confirm(before, self._restart_failure)
        finally:
            self._restart_failure = None

    async def _confirm(self, before: str | None, restart_failure: asyncio.Future[str]) -> ReloadOutcome:
        window = self.config.confirm_window_s
        check_hash = self.config.falco_metrics_url is not None
        poll_s = min(0.5, window / 10)
        deadline = asyncio.get_running_loop().time() + window
        while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                output = await asyncio.wait_for(asyncio.shield(restart_failure), min(poll_s, remaining))
            except TimeoutError:
                if check_hash:
                    after = await self._falco_hash()
                    if after is not None and after != before:
                        return ReloadOutcome(ok=True)
                continue
            return ReloadOutcome(ok=False, reason=f"Falco refused the new rules: {output}")
        if check_hash:
            return ReloadOutcome(
                ok=False,
                reason=(
                    f"Falco's rules hash did not change within {window} s, so Falco did not reload; Falco 0.42.0 to "
                    "0.44.1 ignore SIGHUP when watch_config_files is false"
                ),
            )
        return ReloadOutcome(ok=True)

    async def _falco_hash(self) -> str | None:
        if self.config.falco_metrics_url is None:
            return None
        try:
            return await fetch_falco_rules_hash(self.config.falco_metrics_url)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.log.warning("falco_metrics_unreachable", url=self.config.falco_metrics_url, error=repr(exc))
            return None

    def _reject(self, candidate: RulesSet, errors: list[RuleProblem]) -> None:
        self.failed_hashes.add(candidate.sha256)
        self.metrics.rules_rollouts.labels("rejected").inc()
        shown = [str(p) for p in errors[:_MAX_PROBLEMS_SHOWN]]
        for problem in shown:
            self.log.error("rules_problem", sha256=candidate.sha256, problem=problem)
        self.log.error("rules_rollout_rejected", sha256=candidate.sha256, errors=len(errors))
        self._report(
            "degraded", f"rules set rejected with {len(errors)} error(s)", last_result="rejected", problems=shown
        )
        summary = "; ".join(shown[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        self._alert(
            RULE_REJECTED,
            f"rules set {candidate.sha256[:12]} not deployed: {summary}",
            {"rules.sha256": candidate.sha256, "rules.errors": len(errors), "rules.files": candidate.names()},
        )

    def _fail(self, candidate: RulesSet, result: str, reason: str, *, rollback: RulesSet) -> None:
        self.failed_hashes.add(candidate.sha256)
        self.metrics.rules_rollouts.labels(result).inc()
        rolled_back = True
        try:
            write_rules_set(self.target_dir, rollback)
            self.deployed = rollback
        except OSError as exc:
            rolled_back = False
            self.log.error("rules_rollback_failed", folder=str(self.target_dir), error=str(exc))
        self.log.error(
            "rules_reload_failed",
            sha256=candidate.sha256,
            reason=reason,
            rolled_back_to=rollback.sha256,
            rolled_back=rolled_back,
        )
        self._report("degraded", reason, last_result=result)
        self._alert(
            RULE_RELOAD_FAILED,
            f"rules set {candidate.sha256[:12]} rolled back: {reason}",
            {
                "rules.sha256": candidate.sha256,
                "rules.active_sha256": rollback.sha256,
                "rules.rolled_back": rolled_back,
            },
        )

    def _publish_active(self) -> None:
        self.metrics.rules_active.clear()
        if self.active is not None:
            self.metrics.rules_active.labels(self.active.sha256).set(1)

    def _report(self, status: Any, reason: str, **details: Any) -> None:
        self._status.update(details)
        self._status["active_sha256"] = self.active_sha256
        self._status["deployed_sha256"] = self.deployed.sha256
        self._status["failed_sha256"] = sorted(self.failed_hashes)[:_MAX_PROBLEMS_SHOWN]
        self.health.set(_HEALTH, status, reason, **self._status)

    def _alert(self, rule: str, output: str, fields: dict[str, Any]) -> None:
        event = router_alert(rule, output, fields)
        try:
            self._submit([event])
        except Backpressure as exc:
            self.log.warning("router_alert_not_queued", rule=rule, error=repr(exc))


def router_alert(rule: str, output: str, fields: dict[str, Any]) -> Event:
    """Build an alert of the router's own, shaped like Falco's, for the ops route (source ``falco_router``)."""
    now_ns = time.time_ns()
    seconds, nanos = divmod(now_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return Event(
        rule=rule,
        priority=Priority.ERROR,
        priority_raw=Priority.ERROR.falco_name,
        time_ns=now_ns,
        time_raw=f"{stamp}.{nanos:09d}Z",
        output=output,
        output_fields=fields,
        source=ROUTER_SOURCE,
        hostname=socket.gethostname(),
        transport="internal",
    )
