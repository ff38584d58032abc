"""Config of the durable spool and of the graceful shutdown."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from router.config.base import StrictModel


class SpoolConfig(StrictModel):
    """The on-disk spool (SQLite in WAL mode) that keeps accepted alerts across output outages and restarts."""

    path: Path = Field(
        description="Directory of the spool database; mount a volume that survives a container restart here."
    )
    synchronous: Literal["normal", "full"] = Field(
        default="normal",
        description=(
            "normal: a commit survives a crash of the process or container, the last commits may be lost on power "
            "loss. full: fsync on every group commit, which also survives power loss."
        ),
    )
    page_items: int = Field(
        default=1000,
        ge=1,
        description="Deliveries per output kept in memory; the rest stay on disk and are read one page at a time.",
    )
    max_dead_letters: int = Field(
        default=10_000, ge=0, description="Dead-lettered alerts kept in the spool; the oldest are deleted beyond this."
    )


class ShutdownConfig(StrictModel):
    """Graceful shutdown on SIGTERM."""

    grace_s: float = Field(
        default=20.0,
        ge=0,
        description=(
            "Time to deliver queued alerts after SIGTERM; what is left stays in the spool (or is lost without one)."
        ),
    )
