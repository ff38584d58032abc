"""The spool database: SQLite in WAL mode, written by one thread with group commits.

Tables:

- ``accepted``: alerts an ingest accepted and the pipeline has not routed yet. A row is written before
  the ingest answers and deleted in the transaction that writes the alert's deliveries.
- ``deliveries``: one row per alert and output, in ``seq`` order, deleted once delivered or given up on.
- ``dead_letters``: alerts an output gave up on, with the reason; bounded by ``max_dead_letters``.

Writes are queued to a writer thread, which applies everything queued since its last commit in one
transaction (a group commit), so the event loop never blocks on the disk and many alerts share one
commit. Operations are applied in the order they were queued, so a delete never overtakes the insert
of the same row. Reads use their own connection; WAL lets them run beside the writer.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.logs import get_logger

DATABASE_NAME = "spool.sqlite3"
# Operations applied in one transaction at most; bounds how long one commit holds later requests.
MAX_GROUP_OPS = 2000

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
    operation: Operation
    future: asyncio.Future[None] | None
    description: str


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


_STOP = object()


def connect(directory: Path, synchronous: str = "normal") -> sqlite3.Connection:
    """Open (and create) the spool database in ``directory``; raises ``SpoolError``."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are begun and committed explicitly by the writer.
        connection = sqlite3.connect(directory / DATABASE_NAME, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={synchronous.upper()}")
        connection.executescript(_SCHEMA)
    except (OSError, sqlite3.Error) as exc:
        raise SpoolError(f"cannot open the spool in {directory}: {exc}") from exc
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
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_seq = 1

    # Life cycle

    def open(self) -> None:
        """Open the database and read the next delivery sequence number; raises ``SpoolError``."""
        self._writer_db = connect(self.directory, self.synchronous)
        self._reader_db = connect(self.directory, self.synchronous)
        row = self._reader_db.execute("SELECT max(seq) FROM deliveries").fetchone()
        self._next_seq = (row[0] or 0) + 1

    def start(self) -> None:
        """Start the writer thread; call from the event loop that awaits the writes."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._write_forever, name="spool-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Apply every queued write, stop the writer and close the database."""
        if self._thread is not None:
            self._requests.put(_STOP)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        for connection in (self._writer_db, self._reader_db):
            if connection is not None:
                connection.close()
        self._writer_db = self._reader_db = None

    def next_seq(self) -> int:
        """Return the next delivery sequence number; deliveries leave each output in this order."""
        seq = self._next_seq
        self._next_seq += 1
        return seq

    # Writes

    def submit(self, operation: Operation, description: str) -> None:
        """Queue a write whose failure nobody waits for (the writer logs it)."""
        self._requests.put(_Request(operation, None, description))

    async def commit(self, operation: Operation, description: str) -> None:
        """Queue a write and wait until the transaction that contains it is committed."""
        assert self._loop is not None, "start() the spool before writing"
        future: asyncio.Future[None] = self._loop.create_future()
        self._requests.put(_Request(operation, future, description))
        await future

    async def barrier(self) -> None:
        """Wait until every write queued before this call is committed."""
        await self.commit(_no_operation, "barrier")

    def _write_forever(self) -> None:
        stopping = False
        while not stopping:
            group: list[_Request] = []
            first = self._requests.get()
            if first is _STOP:
                break
            group.append(first)
            # Everything queued while the previous commit ran joins this transaction.
            while len(group) < MAX_GROUP_OPS:
                try:
                    item = self._requests.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                group.append(item)
            self._apply(group)

    def _apply(self, group: list[_Request]) -> None:
        assert self._writer_db is not None
        error: SpoolError | None = None
        try:
            self._writer_db.execute("BEGIN IMMEDIATE")
            for request in group:
                request.operation(self._writer_db)
            self._writer_db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._writer_db.in_transaction:
                self._writer_db.execute("ROLLBACK")
            error = SpoolError(f"spool write failed: {exc}")
            unattended = [r.description for r in group if r.future is None]
            if unattended:
                # The alerts are still in memory and delivered, but a restart before delivery loses them.
                self.log.error(
                    "spool_write_failed", error=str(exc), operations=len(unattended), kinds=sorted(set(unattended))
                )
        assert self._loop is not None
        for request in group:
            if request.future is not None:
                self._loop.call_soon_threadsafe(_settle, request.future, error)

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


def _no_operation(_db: sqlite3.Connection) -> None:
    pass


def _settle(future: asyncio.Future[None], error: SpoolError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


# Operations, applied by the writer thread inside its transaction.


def insert_accepted(rows: list[tuple[str, bytes]]) -> Operation:
    """Record accepted alerts as (alert id, body)."""

    def apply(db: sqlite3.Connection) -> None:
        db.executemany("INSERT OR IGNORE INTO accepted (alert_id, body) VALUES (?, ?)", rows)

    return apply


def record_routing(alert_id: str, rows: list[tuple[int, str, str, bytes]]) -> Operation:
    """Replace an accepted alert by its deliveries, rows as (seq, output, alert id, body)."""

    def apply(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM accepted WHERE alert_id = ?", (alert_id,))
        db.executemany("INSERT OR IGNORE INTO deliveries (seq, output, alert_id, body) VALUES (?, ?, ?, ?)", rows)

    return apply


def delete_deliveries(seqs: Iterable[int]) -> Operation:
    """Forget deliveries that were delivered or dropped."""
    parameters = [(seq,) for seq in seqs]

    def apply(db: sqlite3.Connection) -> None:
        db.executemany("DELETE FROM deliveries WHERE seq = ?", parameters)

    return apply


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
