"""Health of the process, assembled from what each component reports about itself."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "degraded", "failing"]
_RANK = {"ok": 0, "degraded": 1, "failing": 2}


@dataclass(slots=True)
class ComponentHealth:
    """What one component (an ingest, an output, the pod cache) says about itself."""

    status: Status = "ok"
    reason: str = ""
    since: float = field(default_factory=time.time)
    details: dict[str, Any] = field(default_factory=dict)


class Health:
    """The registry components report to; ``/healthz`` renders it."""

    def __init__(self) -> None:
        self._components: dict[str, ComponentHealth] = {}
        self.accepting = True

    def set(self, component: str, status: Status, reason: str = "", **details: Any) -> None:
        """Record a component's status; ``since`` changes only when the status does."""
        current = self._components.get(component)
        if current is None or current.status != status:
            self._components[component] = ComponentHealth(status, reason, details=details)
        else:
            current.reason = reason
            current.details = details

    def get(self, component: str) -> ComponentHealth | None:
        """Return a component's last report."""
        return self._components.get(component)

    @property
    def status(self) -> Status:
        """Return the worst status of all components: a failing output makes the router degraded, not dead."""
        worst = max((_RANK[c.status] for c in self._components.values()), default=0)
        return "ok" if worst == 0 else "degraded"

    def to_dict(self) -> dict[str, Any]:
        """Return the health document served on /healthz."""
        return {
            "status": self.status,
            "accepting": self.accepting,
            "components": {
                name: {"status": c.status, "reason": c.reason, "since": c.since, **c.details}
                for name, c in sorted(self._components.items())
            },
        }
