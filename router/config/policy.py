"""Config of the policy engine: which policy files to load, and the schema of a policy file.

The router config names the files (``policy: {files: [rules/default-policy.yaml]}``); each file contains
allow-list entries, dedup rules, correlation rules and the handling of Falco's internal alerts. Every
match expression is compiled during validation, so an invalid one is reported with its file, line and
key path like any other config problem.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from router.config.base import StrictModel
from router.policy.match import compile_match
from router.priority import PRIORITY_NAMES, parse_priority

_DEFAULT_DEDUP_KEY = ("rule", "hostname", "container.id")


def check_match(value: Any) -> Any:
    """Compile a match expression to validate it; raise ``ValueError`` naming the key path and reason."""
    if value is not None:
        compile_match(value)
    return value


def _check_priority(value: str) -> str:
    if parse_priority(value) is None:
        raise ValueError(f"unknown priority {value!r}: expected one of {', '.join(PRIORITY_NAMES)}")
    return value


class PolicyConfig(StrictModel):
    """The policy files and their reload settings."""

    files: list[Path] = Field(
        default_factory=list,
        description="Policy files, merged in order; relative paths are read from the working directory.",
    )
    watch: bool = Field(
        default=True, description="Reload the policy when a policy file changes (SIGHUP always reloads)."
    )
    watch_interval_s: float = Field(default=2.0, gt=0, description="How often the files are checked for changes.")
    tick_interval_s: float = Field(
        default=1.0, gt=0, description="How often closed dedup windows are flushed and expired state is evicted."
    )


class AllowListEntry(StrictModel):
    """Known, accepted activity: matching alerts are held back from notifying outputs (Slack, webhooks)."""

    name: str = Field(min_length=1, description="Entry name, unique across policy files; the metric label.")
    match: Any = Field(description="Match expression that selects the alerts to suppress.")
    reason: str = Field(min_length=1, description="Why this activity is accepted.")
    owner: str = Field(min_length=1, description="Team or person responsible for the entry.")
    expires: dt.date | None = Field(
        default=None, description="Last day (UTC) the entry suppresses; after it the entry is reported as expired."
    )

    _match = field_validator("match")(check_match)


class DedupRule(StrictModel):
    """Fold repeats of the same alert within a window into one notification with a count."""

    name: str = Field(min_length=1, description="Rule name, unique across policy files; the metric label.")
    match: Any = Field(
        default=None, description="Match expression selecting the alerts this rule folds; all when left out."
    )
    key: list[str] = Field(
        default_factory=lambda: list(_DEFAULT_DEDUP_KEY), min_length=1, description="Fields whose values form the key."
    )
    window_s: float = Field(default=10.0, gt=0, description="Repeats within this many seconds of the first are folded.")
    distinct: list[str] = Field(
        default_factory=list, description="Fields whose distinct values the aggregate update lists (proc.cmdline)."
    )
    max_distinct: int = Field(default=10, ge=1, description="Distinct values kept per field and window.")
    max_keys: int = Field(default=100_000, ge=1, description="Open windows kept; the oldest is closed early beyond it.")

    _match = field_validator("match")(check_match)


class IncidentConfig(StrictModel):
    """The alert a correlation rule emits."""

    rule: str = Field(min_length=1, description="Rule name of the incident alert.")
    priority: str = Field(default="critical", description="Priority of the incident alert.")
    output: str | None = Field(
        default=None, description="Output text; a summary naming the rule and key when left out."
    )
    tags: list[str] = Field(default_factory=list, description="Tags of the incident alert.")

    _priority = field_validator("priority")(_check_priority)


class CorrelationRule(StrictModel):
    """Turn several alerts that share a key into one incident alert."""

    name: str = Field(min_length=1, description="Rule name, unique across policy files; the metric label.")
    kind: Literal["sequence", "threshold", "distinct"] = Field(
        description="sequence: steps in order; threshold: count matches; distinct: count distinct values of a field."
    )
    key: list[str] = Field(min_length=1, description="Fields whose values group the alerts (container.id, hostname).")
    window_s: float = Field(gt=0, description="All joined alerts fall within this many seconds of the first.")
    steps: list[Any] | None = Field(
        default=None, description="sequence: match expressions, in the order they must occur."
    )
    match: Any = Field(default=None, description="threshold and distinct: the alerts that count.")
    count: int | None = Field(default=None, ge=2, description="threshold and distinct: how many fire the incident.")
    distinct_field: str | None = Field(default=None, description="distinct: the field whose values are counted.")
    max_keys: int = Field(default=10_000, ge=1, description="Keys tracked at once; the oldest is evicted beyond it.")
    incident: IncidentConfig = Field(description="The incident alert.")

    _match = field_validator("match")(check_match)

    @field_validator("steps")
    @classmethod
    def _check_steps(cls, value: list[Any] | None) -> list[Any] | None:
        for index, step in enumerate(value or ()):
            try:
                compile_match(step)
            except ValueError as exc:
                raise ValueError(f"step {index}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> CorrelationRule:
        if self.kind == "sequence":
            if not self.steps or len(self.steps) < 2:
                raise ValueError("a sequence needs steps: a list of at least two match expressions")
            if self.match is not None or self.count is not None or self.distinct_field is not None:
                raise ValueError("a sequence takes steps only: remove match, count and distinct_field")
            return self
        if self.steps is not None:
            raise ValueError(f"a {self.kind} rule takes match and count, not steps")
        if self.count is None:
            raise ValueError(f"a {self.kind} rule needs count: how many alerts fire the incident")
        if (self.kind == "distinct") != (self.distinct_field is not None):
            raise ValueError("distinct_field is required for kind distinct and only valid there")
        return self


class InternalConfig(StrictModel):
    """Falco's internal alerts (syscall drops, metrics snapshots, hot restart failures)."""

    max_per_host: int = Field(
        default=5, ge=1, description="Internal alerts per host and interval sent to notifying outputs."
    )
    interval_s: float = Field(default=60.0, gt=0, description="Length of the rate-limit interval.")


class PolicyFile(StrictModel):
    """One policy file."""

    allow_list: list[AllowListEntry] = Field(default_factory=list, description="Allow-list entries.")
    dedup: list[DedupRule] = Field(default_factory=list, description="Dedup rules; the first whose match fits applies.")
    correlation: list[CorrelationRule] = Field(default_factory=list, description="Correlation rules.")
    internal: InternalConfig | None = Field(default=None, description="Internal alert handling (one file at most).")

    @model_validator(mode="after")
    def _unique_names(self) -> PolicyFile:
        problems = []
        for section in ("allow_list", "dedup", "correlation"):
            seen: set[str] = set()
            for index, item in enumerate(getattr(self, section)):
                if item.name in seen:
                    problems.append(f"{section}.{index}.name {item.name!r} is used twice; names must be unique")
                seen.add(item.name)
        if problems:
            raise ValueError("; ".join(problems))
        return self
