"""Config of routes: which alerts go to which outputs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from router.config.base import StrictModel
from router.config.policy import check_match
from router.priority import PRIORITY_NAMES, parse_priority


class RouteConfig(StrictModel):
    """Send the alerts that match every condition given here to each of ``outputs``.

    Every route is evaluated for every alert; an alert goes to the union of the outputs of the routes it
    matches, each output at most once. A condition left out matches everything.
    """

    name: str = Field(min_length=1, description="Route name, used in logs, metrics and dry-run output.")
    outputs: list[str] = Field(min_length=1, description="Names of the outputs to send to.")
    min_priority: str | None = Field(
        default=None,
        description="Least severe priority routed (emergency .. debug, info accepted). Unknown priorities always pass.",
    )
    rules: list[str] | None = Field(
        default=None, description="Rule names to route; shell-style wildcards allowed (Terminal shell*)."
    )
    sources: list[str] | None = Field(default=None, description="Event sources to route (syscall, k8s_audit, ...).")
    tags: list[str] | None = Field(default=None, description="Route an alert that carries any of these tags.")
    match: Any = Field(default=None, description="Match expression the alert must also satisfy (see docs/policy.md).")
    internal: Literal["exclude", "include", "only"] = Field(
        default="exclude",
        description="Falco's internal health alerts: exclude (security routes), include, or only (an ops route).",
    )
    suppressed: Literal["drop", "mark"] = Field(
        default="mark",
        description=(
            "Allow-listed alerts never reach notifying outputs. mark: send them to the other outputs (Kafka) "
            "marked router.suppressed; drop: send them nowhere."
        ),
    )

    _match = field_validator("match")(check_match)

    @field_validator("min_priority")
    @classmethod
    def _known_priority(cls, value: str | None) -> str | None:
        if value is not None and parse_priority(value) is None:
            raise ValueError(f"unknown priority {value!r}: expected one of {', '.join(PRIORITY_NAMES)}")
        return value
