"""Config of routes: which alerts go to which outputs."""

from __future__ import annotations

from pydantic import Field, field_validator

from router.config.base import StrictModel
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

    @field_validator("min_priority")
    @classmethod
    def _known_priority(cls, value: str | None) -> str | None:
        if value is not None and parse_priority(value) is None:
            raise ValueError(f"unknown priority {value!r}: expected one of {', '.join(PRIORITY_NAMES)}")
        return value
