"""Operator commands on a stopped router's spool: list and requeue dead letters."""

from __future__ import annotations

from pathlib import Path

from router.spool.store import DeadLetter, SpoolLock, connect


def list_dead_letters(directory: Path, output: str | None = None, limit: int = 100) -> list[DeadLetter]:
    """Return the newest dead letters, oldest first, of one output or of all."""
    db = connect(directory)
    try:
        rows = db.execute(
            "SELECT seq, output, alert_id, reason, error, attempts, dead_ns, body FROM dead_letters "
            "WHERE ?1 IS NULL OR output = ?1 ORDER BY seq DESC LIMIT ?2",
            (output, limit),
        ).fetchall()
    finally:
        db.close()
    return [DeadLetter(*row) for row in reversed(rows)]


def requeue_dead_letters(directory: Path, output: str) -> int:
    """Move an output's dead letters back to its queue, after what is queued; return how many.

    Raises ``SpoolError`` while a router uses the spool, because the router numbers deliveries in memory.
    """
    with SpoolLock(directory):
        db = connect(directory)
        try:
            db.execute("BEGIN IMMEDIATE")
            # Dead-letter order is kept: each row gets the highest delivery seq plus its own dead-letter seq.
            cursor = db.execute(
                "INSERT INTO deliveries (seq, output, alert_id, attempts, body) "
                "SELECT (SELECT coalesce(max(seq), 0) FROM deliveries) + seq, output, alert_id, 0, body "
                "FROM dead_letters WHERE output = ? ORDER BY seq",
                (output,),
            )
            moved = cursor.rowcount
            db.execute("DELETE FROM dead_letters WHERE output = ?", (output,))
            db.execute("COMMIT")
        finally:
            db.close()
    return moved
