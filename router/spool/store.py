"""The spool database: SQLite in WAL mode, written by one thread with group commits.

Tables:

- ``accepted``: alerts an ingest accepted and the pipeline has not routed yet. A row is written before
  the ingest responds, and deleted in the transaction that writes the alert's deliveries.
- ``deliveries``: one row per alert and output, in ``seq`` order, deleted once delivered or given up on.
- ``dead_letters``: alerts an output gave up on, with the reason; bounded by ``max_dead_letters``.

Writes are queued and applied by a callback on the event loop: everything queued during one loop
iteration goes into one transaction (a group commit), so many alerts share one commit, and a delete
never overtakes the insert of the same row. An accepted alert routed within the same group is never
written to ``accepted`` at all. With ``synchronous=NORMAL`` a commit in WAL mode does not fsync, and
WAL checkpoints (which do) run in a background thread, so the loop does not wait for the disk.
A writer thread was measured first and lost to this design: the two threads contending for the GIL
raised the p99 ack latency from under 1 ms to over 10 ms (see docs/spool.md). Reads of spilled pages
use their own connection in a worker thread; WAL lets them run beside the writer.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.logs import get_logger

DATABASE_NAME = "spool.sqlite3"
LOCK_NAME = "spool.lock"
# How often the background thread copies the WAL into the database file.
CHECKPOINT_INTERVAL_S = 0.5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accepted (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY,
    output TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_by_output ON deliveries (output, seq);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    output TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    dead_ns INTEGER NOT NULL,
    body BLOB NOT NULL
);
"""

Operation = Callable[[sqlite3.Connection], None]


class SpoolError(Exception):
    """The spool could not be opened or written (disk full, permissions, a corrupt file)."""


@dataclass(slots=True)
class _Request:
    """One queued write. The frequent kinds are data, so that a group writes each kind with one statement."""

    description: str
    operation: Operation | None = None
    awaited: bool = False
    accepted_rows: list[tuple[str, bytes]] | None = None
    routed_id: str | None = None
    delivery_rows: list[tuple[int, str, str, bytes]] | None = None
    deleted_seqs: Iterable[int] | None = None
    kept_seq: int | None = None
    """A delivery row that ``operation`` reads, so the group must write it even if it is also deleted."""


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One row of the deliveries table."""

    seq: int
    attempts: int
    body: bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One row of the dead-letter table."""

    seq: int
    output: str
    alert_id: str
    reason: str
    error: str
    attempts: int
    dead_ns: int
    body: bytes


class SpoolLock:
    """An exclusive lock on a spool directory, held by the router for its lifetime.

    Two routers on one spool would deliver every alert twice and number deliveries inconsistently.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; raises ``SpoolError`` when another process holds it."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            message = f"failed to open the spool lock in {self.directory}: {exc}; check the path and its permissions"
            raise SpoolError(message) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise SpoolError(
                f"the spool in {self.directory} is in use by another falco-router process; "
                "stop it first, or give each router its own spool path"
            ) from exc
        self._fd = fd

    def release(self) -> None:
        """Release the lock (closing the file releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SpoolLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def connect(directory: Path, synchronous: str = "normal") -> sqlite3.Connection:
    """Open (and create) the spool database in ``directory``; raises ``SpoolError``."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are begun and committed explicitly by the writer.
        connection = sqlite3.connect(directory / DATABASE_NAME, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={synchronous.upper()}")
        # Checkpoints run in the checkpoint thread, never inside a commit on the event loop.
        connection.execute("PRAGMA wal_autocheckpoint=0")
        connection.executescript(_SCHEMA)
    except (OSError, sqlite3.Error) as exc:
        raise SpoolError(f"failed to open the spool in {directory}: {exc}; check the path and its permissions") from exc
    return connection


class SpoolStore:
    """The spool database of one router process."""

    def __init__(self, directory: Path, synchronous: str = "normal", max_dead_letters: int = 10_000) -> None:
        self.directory = directory
        self.synchronous = synchronous
        self.max_dead_letters = max_dead_letters
        self.log = get_logger("spool")
        self._writer_db: sqlite3.Connection | None = None
        self._reader_db: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self._checkpoint_db: sqlite3.Connection | None = None
        self._lock = SpoolLock(directory)
        self._pending: list[_Request] = []
        # Settled when the group being collected is committed; every waiter of that group shares it.
        self._group_done: asyncio.Future[None] | None = None
        self._flush_scheduled = False
        self._stop_checkpoints = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_seq = 1

    # Life cycle

    def open(self) -> None:
        """Open the database and read the next delivery sequence number; raises ``SpoolError``."""
        self._lock.acquire()
        self._writer_db = connect(self.directory, self.synchronous)
        self._reader_db = connect(self.directory, self.synchronous)
        self._checkpoint_db = connect(self.directory, self.synchronous)
        row = self._reader_db.execute("SELECT max(seq) FROM deliveries").fetchone()
        self._next_seq = (row[0] or 0) + 1

    def start(self) -> None:
        """Start the checkpoint thread; call from the event loop that performs the writes."""
        self._loop = asyncio.get_running_loop()
        self._stop_checkpoints.clear()
        self._thread = threading.Thread(target=self._checkpoint_forever, name="spool-checkpoint", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Commit the writes still queued, stop the checkpoint thread and close the database."""
        if self._pending and self._writer_db is not None:
            self._flush()
        if self._thread is not None:
            self._stop_checkpoints.set()
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        for connection in (self._writer_db, self._reader_db, self._checkpoint_db):
            if connection is not None:
                connection.close()
        self._writer_db = self._reader_db = self._checkpoint_db = None
        self._lock.release()

    def next_seq(self) -> int:
        """Return the next delivery sequence number; deliveries leave each output in this order."""
        seq = self._next_seq
        self._next_seq += 1
        return seq

    # Writes

    def submit(self, operation: Operation, description: str, *, reads_seq: int | None = None) -> None:
        """Queue a write without waiting for its commit; a failed commit is logged.

        ``reads_seq`` names a delivery row the operation reads, which must be written first.
        """
        self._queue(_Request(description, operation, kept_seq=reads_seq))

    async def commit_accepted(self, rows: list[tuple[str, bytes]]) -> None:
        """Write accepted alerts as (alert id, body) and wait for the commit; raises ``SpoolError``."""
        await self._commit(_Request("accepted", accepted_rows=rows))

    def submit_routing(self, alert_id: str, rows: list[tuple[int, str, str, bytes]]) -> None:
        """Replace an accepted alert by its deliveries, rows as (seq, output, alert id, body)."""
        self._queue(_Request("routed", routed_id=alert_id, delivery_rows=rows))

    def submit_delete(self, seqs: Iterable[int], description: str) -> None:
        """Delete deliveries that were delivered or dropped."""
        self._queue(_Request(description, deleted_seqs=seqs))

    async def barrier(self) -> None:
        """Wait until every write queued before this call is committed."""
        await self._commit(_Request("barrier"))

    async def _commit(self, request: _Request) -> None:
        assert self._loop is not None, "start() the spool before writing"
        request.awaited = True
        self._queue(request)
        if self._group_done is None:
            self._group_done = self._loop.create_future()
        await asyncio.shield(self._group_done)

    def _queue(self, request: _Request) -> None:
        self._pending.append(request)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            # Runs after the callbacks already ready, so one loop iteration's writes share a commit.
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        group, self._pending = self._pending, []
        done, self._group_done = self._group_done, None
        if group:
            self._apply(group, done)

    def _apply(self, group: list[_Request], done: asyncio.Future[None] | None) -> None:
        assert self._writer_db is not None
        db = self._writer_db
        error: SpoolError | None = None
        try:
            db.execute("BEGIN IMMEDIATE")
            _write_group(db, group)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            error = SpoolError(f"spool write failed: {exc}")
            unattended = [r.description for r in group if not r.awaited]
            if unattended:
                # The alerts are still in memory and delivered, but a restart before delivery loses them.
                self.log.error(
                    "spool_write_failed", error=str(exc), operations=len(unattended), kinds=sorted(set(unattended))
                )
        if done is None:
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def _checkpoint_forever(self) -> None:
        assert self._checkpoint_db is not None
        while not self._stop_checkpoints.wait(CHECKPOINT_INTERVAL_S):
            try:
                # PASSIVE does not wait for readers or the writer, so frames in use are copied at a later pass.
                self._checkpoint_db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                self.log.warning("spool_checkpoint_failed", error=str(exc))
        self._checkpoint_db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # Reads

    async def read_page(self, output: str, after_seq: int, limit: int) -> list[DeliveryRow]:
        """Return up to ``limit`` committed deliveries of ``output`` with ``seq > after_seq``, in order."""
        rows = await asyncio.to_thread(
            self._read,
            "SELECT seq, attempts, body FROM deliveries WHERE output = ? AND seq > ? ORDER BY seq LIMIT ?",
            (output, after_seq, limit),
        )
        return [DeliveryRow(seq, attempts, body) for seq, attempts, body in rows]

    async def read_accepted(self, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Return up to ``limit`` accepted, unrouted alerts with ``seq > after_seq``, in arrival order."""
        rows = await asyncio.to_thread(
            self._read, "SELECT seq, body FROM accepted WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        )
        return [(seq, body) for seq, body in rows]

    def output_totals(self) -> dict[str, tuple[int, int]]:
        """Return, per output, how many deliveries wait and their body bytes (at start-up)."""
        rows = self._read("SELECT output, count(*), coalesce(sum(length(body)), 0) FROM deliveries GROUP BY output", ())
        return {output: (count, size) for output, count, size in rows}

    def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        assert self._reader_db is not None
        with self._reader_lock:
            return self._reader_db.execute(sql, parameters).fetchall()


def _write_group(db: sqlite3.Connection, group: list[_Request]) -> None:
    """Write one group: each kind of row with one statement, in an order that keeps the queued order's result.

    Rows inserted and deleted within the group (an alert delivered before its commit) are skipped.
    """
    accepted: list[tuple[str, bytes]] = []
    routed_ids: list[str] = []
    inserts: list[tuple[int, str, str, bytes]] = []
    deletes: set[int] = set()
    kept: set[int] = set()
    operations: list[Operation] = []
    for request in group:
        if request.accepted_rows is not None:
            accepted.extend(request.accepted_rows)
        if request.routed_id is not None:
            routed_ids.append(request.routed_id)
        if request.delivery_rows is not None:
            inserts.extend(request.delivery_rows)
        if request.deleted_seqs is not None:
            deletes.update(request.deleted_seqs)
        if request.kept_seq is not None:
            kept.add(request.kept_seq)
        if request.operation is not None:
            operations.append(request.operation)
    routed = set(routed_ids)
    # An alert routed within this group never needs its accepted row.
    fresh = {alert_id for alert_id, _ in accepted}
    unrouted = [row for row in accepted if row[0] not in routed]
    db.executemany("INSERT OR IGNORE INTO accepted (alert_id, body) VALUES (?, ?)", unrouted)
    db.executemany("DELETE FROM accepted WHERE alert_id = ?", [(i,) for i in routed_ids if i not in fresh])
    transient = (deletes - kept) & {row[0] for row in inserts}
    db.executemany(
        "INSERT OR IGNORE INTO deliveries (seq, output, alert_id, body) VALUES (?, ?, ?, ?)",
        [row for row in inserts if row[0] not in transient],
    )
    # Operations (attempts, dead letters) only touch rows inserted above or earlier, and run before the deletes.
    for operation in operations:
        operation(db)
    db.executemany("DELETE FROM deliveries WHERE seq = ?", [(seq,) for seq in deletes - transient])


# Operations, applied by the writer thread inside its transaction.


def set_attempts(rows: list[tuple[int, int]]) -> Operation:
    """Record the attempts made so far, rows as (attempts, seq), so a restart does not reset them."""

    def apply(db: sqlite3.Connection) -> None:
        db.executemany("UPDATE deliveries SET attempts = ? WHERE seq = ?", rows)

    return apply


def move_to_dead_letters(seq: int, reason: str, error: str, *, attempts: int, dead_ns: int, keep: int) -> Operation:
    """Move a delivery to the dead-letter table, then delete the oldest dead letters beyond ``keep``."""

    def apply(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO dead_letters (output, alert_id, reason, error, attempts, dead_ns, body) "
            "SELECT output, alert_id, ?, ?, ?, ?, body FROM deliveries WHERE seq = ?",
            (reason, error, attempts, dead_ns, seq),
        )
        db.execute("DELETE FROM deliveries WHERE seq = ?", (seq,))
        db.execute("DELETE FROM dead_letters WHERE seq <= (SELECT max(seq) FROM dead_letters) - ?", (keep,))

    return apply
