"""The collector's storage: summaries, nodes, command results and seq gaps.

``GroupCommitStore`` is what every store does alike: every database call runs on one
dedicated thread (a single-worker executor), which also owns the per-node
``ContiguousSeqs``; the event loop only awaits results. Summaries from every stream
are group-committed by one writer task. The database calls are written once too,
in a ``SqlDialect`` (placeholder, ``MAX``/``GREATEST``, how an insert skips a stored
key); subclasses supply the dialect, the schema, the connection and the group
commit's insert: ``CollectorStore`` (SQLite, here) and
``collector_store_pg.PgCollectorStore`` (PostgreSQL, given a DSN).

What it must never do:

- block the event loop (no database call on the loop thread);
- resolve a summary's future before the transaction holding it is committed
  (SQLite: ``synchronous=FULL`` by default, so an ack survives a power loss of the box);
- invent data: seqs a node says were acknowledged before this database existed are
  recorded as a gap (``acked_elsewhere``), never as summaries.

It also knows whether it works: every failed call marks it unhealthy, a committed
write marks it healthy again (``healthy``, ``on_health_change``), and ``probe()``
makes a tiny real write so that an idle store still finds out (the gRPC health
service reports from this).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol, TypeVar

from edge_node.cloud.collector_errors import StorageError
from edge_node.cloud.collector_records import (
    MAX_SEQ,
    CommandResult,
    Hello,
    NodeInfo,
    SeqGap,
    StoredSummary,
    WindowSummary,
)
from edge_node.cloud.collector_seqs import ContiguousSeqs

log = logging.getLogger(__name__)

BATCH_MAX_ROWS = 1000  # summaries per transaction
# Group commit: a batch is committed this long after its first row (or at
# BATCH_MAX_ROWS). Every commit costs an fsync and a trip to the database thread;
# with thousands of nodes sending one summary a second each, rows arriving within a
# few ms share one, at the price of those ms of ack latency.
COMMIT_DELAY_S = 0.005
QUERY_PAGE_ROWS = 500  # rows fetched per executor call when streaming a query
BUSY_TIMEOUT_MS = 5000  # how long a write waits for a lock held by another process

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    node_id       TEXT PRIMARY KEY,
    boot_id       TEXT NOT NULL,
    version       TEXT NOT NULL,
    proto_version INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    acked_seq     INTEGER NOT NULL DEFAULT 0  -- highest contiguous seq accounted for
);
CREATE TABLE IF NOT EXISTS summaries (
    node_id         TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    window_start_ms INTEGER NOT NULL,
    window_s        INTEGER NOT NULL,
    payload         BLOB NOT NULL,
    empty           INTEGER NOT NULL,
    received_ms     INTEGER NOT NULL,
    PRIMARY KEY (node_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS summaries_by_start ON summaries (window_start_ms, node_id, seq);
CREATE INDEX IF NOT EXISTS summaries_by_node_start
    ON summaries (node_id, window_start_ms, seq);
CREATE TABLE IF NOT EXISTS command_results (
    node_id     TEXT NOT NULL,
    command_id  TEXT NOT NULL,
    cmd         TEXT NOT NULL,
    ok          INTEGER NOT NULL,
    result_json TEXT NOT NULL,
    error_code  TEXT NOT NULL,
    error       TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (node_id, command_id)
) WITHOUT ROWID;
-- Seqs a node said were acknowledged before (Hello.acked_through) that this database
-- never held: a fresh or restored database. Not data; the reason the ack moved on.
CREATE TABLE IF NOT EXISTS acked_elsewhere (
    node_id     TEXT NOT NULL,
    first_seq   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    boot_id     TEXT NOT NULL,
    recorded_ms INTEGER NOT NULL,
    PRIMARY KEY (node_id, first_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""

SUMMARY_COLUMNS = "node_id, seq, window_start_ms, window_s, payload, empty, received_ms"
_NODE_COLUMNS = "node_id, boot_id, version, proto_version, first_seen_ms, last_seen_ms, acked_seq"
_GAP_COLUMNS = "node_id, first_seq, last_seq, boot_id, recorded_ms"
_RESULT_COLUMNS = "node_id, command_id, cmd, ok, result_json, error_code, error, received_ms"
_LIST_NODES = (
    "SELECT n.node_id, n.boot_id, n.version, n.last_seen_ms, n.acked_seq, "
    "(SELECT COALESCE(SUM(g.last_seq - g.first_seq + 1), 0) FROM acked_elsewhere g "
    "WHERE g.node_id = n.node_id) FROM nodes n ORDER BY n.node_id"
)

# SQLite's group commit: one executemany per table, in one transaction.
_INSERT_SUMMARY = (
    f"INSERT OR IGNORE INTO summaries ({SUMMARY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_RAISE_ACK = (
    "UPDATE nodes SET acked_seq = MAX(acked_seq, ?), "
    "last_seen_ms = MAX(last_seen_ms, ?) WHERE node_id = ?"
)

DSN_SCHEMES = ("postgresql://", "postgres://")
"""A ``db`` starting with one of these is a PostgreSQL DSN (``collector_store_pg``)."""

HealthListener = Callable[[bool, str], None]
"""``(healthy, reason)``: called on the event loop when the store's health changes."""


@dataclass(slots=True)
class PendingWrite:
    node_id: str
    summary: WindowSummary
    received_ms: int
    future: asyncio.Future[int]


SummaryRow = tuple[str, int, int, int, bytes, bool, int]
"""One summary as stored, in ``SUMMARY_COLUMNS`` order."""
AckRow = tuple[str, int, int]
"""``(node_id, acked_seq, last_seen_ms)``: where a group commit moves a node's ack."""


class Rows(Protocol):
    """What ``execute`` returns, sqlite3's cursor and psycopg's alike: tuples."""

    def fetchone(self) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


class Executes(Protocol):
    """A connection (sqlite3's, psycopg's) or a cursor: runs one statement."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Rows: ...


class ExecutesMany(Executes, Protocol):
    """What a transaction is written through (a sqlite3 connection, a psycopg cursor)."""

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> object: ...


class SqlDialect:
    """The statements both stores send, written once, built once per dialect.

    What differs between SQLite and PostgreSQL here is only spelling: the parameter
    placeholder (``?`` for sqlite3, ``%s`` for psycopg), the two-argument maximum
    (SQLite's scalar ``MAX``, ``GREATEST``) and how an insert skips a row whose key is
    stored (``INSERT OR IGNORE``, ``ON CONFLICT (key) DO NOTHING``). What differs more
    (the schema, the group commit, the probe, transactions) stays in each store.
    """

    def __init__(self, *, param: str, greatest: str, or_ignore: bool) -> None:
        self.param: Final = param
        self.greatest: Final = greatest
        self.or_ignore: Final = or_ignore
        p = param
        self.acked_seq: Final = f"SELECT acked_seq FROM nodes WHERE node_id = {p}"
        self.seqs_after: Final = (
            f"SELECT seq FROM summaries WHERE node_id = {p} AND seq > {p} ORDER BY seq"
        )
        self.upsert_node: Final = (
            f"INSERT INTO nodes ({_NODE_COLUMNS}) VALUES ({self._values(_NODE_COLUMNS)}) "
            "ON CONFLICT (node_id) DO UPDATE SET "
            "boot_id = excluded.boot_id, version = excluded.version, "
            "proto_version = excluded.proto_version, last_seen_ms = excluded.last_seen_ms, "
            f"acked_seq = {greatest}(nodes.acked_seq, excluded.acked_seq)"
        )
        self.insert_gap: Final = self._insert_ignoring(
            "acked_elsewhere", _GAP_COLUMNS, key="node_id, first_seq"
        )
        self.gaps: Final = (
            f"SELECT first_seq, last_seq FROM acked_elsewhere WHERE node_id = {p} "
            "ORDER BY first_seq"
        )
        self.insert_result: Final = self._insert_ignoring(
            "command_results", _RESULT_COLUMNS, key="node_id, command_id"
        )
        self.result: Final = (
            "SELECT ok, result_json, error_code, error FROM command_results "
            f"WHERE node_id = {p} AND command_id = {p}"
        )

    def _values(self, columns: str) -> str:
        """One placeholder per column of ``columns`` (comma-separated names)."""
        return ", ".join([self.param] * len(columns.split(",")))

    def _insert_ignoring(self, table: str, columns: str, *, key: str) -> str:
        values = f"VALUES ({self._values(columns)})"
        if self.or_ignore:
            return f"INSERT OR IGNORE INTO {table} ({columns}) {values}"
        return f"INSERT INTO {table} ({columns}) {values} ON CONFLICT ({key}) DO NOTHING"


def is_dsn(db: str | Path) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` URI; a Path is always a file."""
    return isinstance(db, str) and db.lower().startswith(DSN_SCHEMES)


def retrieve_exception(fut: asyncio.Future[Any]) -> None:
    """Done-callback: a stream that died no longer awaits its futures; don't let
    asyncio complain about an error nobody is left to hear (the stream saw it)."""
    if not fut.cancelled():
        fut.exception()


class GroupCommitStore(ABC):
    """Summaries, nodes, command results and seq gaps in a database, one thread.

    ``add_summary`` queues a row and returns a future; a writer task commits whatever
    has queued within ``commit_delay_s`` of the first in one transaction (up to
    ``BATCH_MAX_ROWS``) and resolves each future with its node's highest contiguous
    seq *after* the commit. The primary key (node_id, seq) is the dedup.

    The ``_``-prefixed database calls run on the store's thread, never on the loop;
    they are written here once, in the subclass's SQL dialect (``sql``). Subclasses
    supply the connection (``_open_db``, ``_db``, ``_transaction``, ``_close_db``),
    the probe and the group commit's insert (``_insert_batch``), name the exceptions
    that mean "the database failed" (``db_errors``: counted, logged, the store
    unhealthy, StorageError to the caller) and say where the data is (``location``:
    logged, so never a password).
    """

    db_errors: tuple[type[Exception], ...] = (OSError,)
    sql: ClassVar[SqlDialect]
    # Where the shared calls' warnings go: each store's own module's logger.
    _log: ClassVar[logging.Logger] = log

    def __init__(self, location: str, *, commit_delay_s: float = COMMIT_DELAY_S) -> None:
        if not 0 <= commit_delay_s <= 1:
            raise ValueError(f"commit_delay_s must be in [0, 1], got {commit_delay_s}")
        self.location = location
        self.commit_delay_s = commit_delay_s
        self.duplicates = 0  # summaries received again after they were stored
        self.stored = 0
        self.commits = 0  # transactions that stored summaries
        self.failures = 0  # calls that failed with a storage error
        self.healthy = True
        self.last_error: str | None = None
        self.last_write_ok = 0.0  # time.monotonic() of the last committed write
        self.on_health_change: HealthListener | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._trackers: dict[str, ContiguousSeqs] = {}  # executor thread only
        self._queue: list[PendingWrite] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    # -- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collector-db")
        try:
            await self._run(self._open_db)
        except StorageError as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise StorageError(f"cannot open the database {self.location}: {exc}") from exc
        self._closing = False
        self._writer = asyncio.create_task(self._write_loop(), name="collector-db-writer")

    async def close(self) -> None:
        """Commit what is queued, then close the database."""
        if self._executor is None:
            return
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
            self._writer = None
        await self._run(self._close_db)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def _run(self, fn: Callable[..., _T], *args: Any, write: bool = False) -> _T:
        """Run ``fn(*args)`` on the database thread. Any failure marks the store
        unhealthy; a ``write`` that returns (its commit done) marks it healthy."""
        if self._executor is None:
            raise StorageError("the store is not open")
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except self.db_errors as exc:
            self.failures += 1
            self._set_health(False, f"{type(exc).__name__}: {exc}")
            raise StorageError(f"{self.location}: {exc}") from exc
        if write:
            self.last_write_ok = time.monotonic()
            self._set_health(True, "")
        return result

    def _set_health(self, healthy: bool, reason: str) -> None:
        if not healthy:
            self.last_error = reason
        if healthy == self.healthy:
            return
        self.healthy = healthy
        if healthy:
            log.warning("collector: the database works again", extra={"db": self.location})
        else:
            log.error("collector: the database failed: %s", reason, extra={"db": self.location})
        if self.on_health_change is not None:
            self.on_health_change(healthy, reason)

    # -- health -------------------------------------------------------------------

    async def probe(self, now_ms: int) -> None:
        """One small committed write (raises StorageError when it fails): how an idle
        store finds out that its disk is full, locked or gone, and when it is back."""
        await self._run(self._probe, now_ms, write=True)

    # -- summaries ----------------------------------------------------------------

    def add_summary(
        self, node_id: str, summary: WindowSummary, received_ms: int
    ) -> asyncio.Future[int]:
        """Queue one summary; the future resolves, after the commit, to the node's
        highest contiguous stored seq (or fails with StorageError)."""
        if self._closing or self._executor is None:
            raise StorageError("the store is closed")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(retrieve_exception)
        self._queue.append(PendingWrite(node_id, summary, received_ms, fut))
        self._wake.set()
        return fut

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            if self.commit_delay_s > 0 and len(self._queue) < BATCH_MAX_ROWS and not self._closing:
                await asyncio.sleep(self.commit_delay_s)  # let the batch fill
            self._wake.clear()
            while self._queue:
                batch = self._queue[:BATCH_MAX_ROWS]
                del self._queue[:BATCH_MAX_ROWS]
                try:
                    highest, inserted = await self._run(self._write_batch, batch, write=True)
                except StorageError as exc:
                    log.error("collector: storing %d summaries failed: %s", len(batch), exc)
                    error = StorageError(f"storing summaries failed: {exc}")
                    for w in batch:
                        if not w.future.done():
                            w.future.set_exception(error)
                    continue
                self.commits += 1
                self.stored += inserted
                self.duplicates += len(batch) - inserted
                for w in batch:
                    if not w.future.done():
                        w.future.set_result(highest[w.node_id])
            if self._closing:
                return

    async def query_summaries(
        self,
        node_id: str = "",
        since_ms: int = 0,
        until_ms: int = 0,
        limit: int = 0,
    ) -> AsyncIterator[StoredSummary]:
        """Stored summaries, oldest window first (start, node, seq); fetched in pages
        so a large range never sits in memory at once. Zero values do not filter."""
        after: tuple[int, str, int] | None = None
        remaining = limit if limit > 0 else None
        while remaining is None or remaining > 0:
            page = QUERY_PAGE_ROWS if remaining is None else min(QUERY_PAGE_ROWS, remaining)
            rows = await self._run(self._query_page, node_id, since_ms, until_ms, after, page)
            for r in rows:
                yield r
            if len(rows) < page:
                return
            last = rows[-1]
            after = (last.window_start_unix_ms, last.node_id, last.seq)
            if remaining is not None:
                remaining -= len(rows)

    # -- nodes --------------------------------------------------------------------

    async def note_hello(self, hello: Hello, now_ms: int) -> int:
        """Record the node; returns its highest contiguous seq accounted for.

        When the Hello says seqs up to ``acked_through`` were acknowledged before and
        this database lacks some of them, they are recorded as gaps (and logged) in the
        same transaction, and the ack moves past them."""
        return await self._run(self._note_hello, hello, now_ms, write=True)

    async def acked_elsewhere(self, node_id: str) -> list[SeqGap]:
        """The node's recorded gaps, in seq order."""
        return await self._run(self._acked_elsewhere, node_id)

    async def list_nodes(
        self, connected: set[str] | frozenset[str] = frozenset()
    ) -> list[NodeInfo]:
        return await self._run(self._list_nodes, frozenset(connected))

    # -- command results ----------------------------------------------------------

    async def add_command_result(
        self, result: CommandResult, cmd: str, now_ms: int
    ) -> CommandResult:
        """Store a node's answer (the first one wins); returns the stored answer."""
        return await self._run(self._add_command_result, result, cmd, now_ms, write=True)

    async def command_result(self, node_id: str, command_id: str) -> CommandResult | None:
        return await self._run(self._command_result, node_id, command_id)

    # -- the database calls (on the store's thread) --------------------------------
    # Written once, over the subclass's ``sql``, ``_db()`` and ``_transaction()``; a
    # subclass supplies those, the connection's life, the probe and the batch insert.

    @abstractmethod
    def _open_db(self) -> None:
        """Connect, create the schema if missing."""

    @abstractmethod
    def _close_db(self) -> None: ...

    @abstractmethod
    def _db(self) -> Executes:
        """The open connection; StorageError when the store is not open."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[ExecutesMany]:
        """One transaction, committed when the block ends, rolled back if it raises."""

    @abstractmethod
    def _probe(self, now_ms: int) -> None:
        """One small committed write."""

    @abstractmethod
    def _insert_batch(self, rows: list[SummaryRow], acks: list[AckRow]) -> int:
        """In one transaction: insert the rows, skipping (node_id, seq) already stored,
        and raise each node's acked_seq and last_seen_ms to its ack's (never lower
        them); returns how many rows were new."""

    def _tracker(self, node_id: str) -> ContiguousSeqs:
        """The node's seq tracker, loaded from the database on first use."""
        tracker = self._trackers.get(node_id)
        if tracker is not None:
            return tracker
        conn = self._db()
        row = conn.execute(self.sql.acked_seq, (node_id,)).fetchone()
        tracker = ContiguousSeqs(int(row[0]) if row else 0)
        # Rows stored beyond a gap (and, if acked_seq lagged, beyond it) extend it.
        for (seq,) in conn.execute(self.sql.seqs_after, (node_id, tracker.highest)):
            tracker.add(int(seq))
        self._trackers[node_id] = tracker
        return tracker

    def _write_batch(self, batch: list[PendingWrite]) -> tuple[dict[str, int], int]:
        """Insert one batch in one transaction, skipping (node_id, seq) already
        stored; returns each node's highest contiguous seq after the commit (its
        tracker updated only then), and how many rows were new."""
        self._db()  # first: a store that reconnects re-reads its trackers
        # Tentative copies: the in-memory state changes only if the commit succeeds.
        trackers = {w.node_id: self._tracker(w.node_id).copy() for w in batch}
        last_seen: dict[str, int] = {}
        rows: list[SummaryRow] = []
        for w in batch:
            s = w.summary
            rows.append(
                (
                    w.node_id,
                    s.seq,
                    s.window_start_unix_ms,
                    s.window_s,
                    s.payload,
                    s.empty,
                    w.received_ms,
                )
            )
            trackers[w.node_id].add(s.seq)
            last_seen[w.node_id] = max(last_seen.get(w.node_id, 0), w.received_ms)
        acks = [(n, trackers[n].highest, last_seen[n]) for n in sorted(trackers)]
        inserted = self._insert_batch(rows, acks)
        self._trackers.update(trackers)
        return {n: t.highest for n, t in trackers.items()}, inserted

    def _query_page(
        self,
        node_id: str,
        since_ms: int,
        until_ms: int,
        after: tuple[int, str, int] | None,
        page: int,
    ) -> list[StoredSummary]:
        """Up to ``page`` rows ordered by (window start, node id, seq), after ``after``;
        zero values do not filter."""
        p = self.sql.param
        where = [f"window_start_ms >= {p}"]
        params: list[int | str] = [since_ms if since_ms > 0 else -MAX_SEQ]
        if until_ms > 0:
            where.append(f"window_start_ms < {p}")
            params.append(until_ms)
        if node_id:
            where.append(f"node_id = {p}")
            params.append(node_id)
        if after is not None:
            where.append(f"(window_start_ms, node_id, seq) > ({p}, {p}, {p})")
            params.extend(after)
        sql = (
            f"SELECT {SUMMARY_COLUMNS} FROM summaries WHERE {' AND '.join(where)} "
            f"ORDER BY window_start_ms, node_id, seq LIMIT {p}"
        )
        return [
            StoredSummary(str(n), int(q), int(st), int(w), bytes(b), bool(e), int(rc))
            for n, q, st, w, b, e, rc in self._db().execute(sql, (*params, page))
        ]

    def _note_hello(self, hello: Hello, now_ms: int) -> int:
        self._db()  # first: a store that reconnects re-reads its trackers
        tracker = self._tracker(hello.node_id).copy()
        gaps = tracker.skip_through(hello.acked_through)
        with self._transaction() as tx:
            tx.execute(
                self.sql.upsert_node,
                (
                    hello.node_id,
                    hello.boot_id,
                    hello.version,
                    hello.proto_version,
                    now_ms,
                    now_ms,
                    tracker.highest,
                ),
            )
            if gaps:
                tx.executemany(
                    self.sql.insert_gap,
                    [(hello.node_id, g.first, g.last, hello.boot_id, now_ms) for g in gaps],
                )
        self._trackers[hello.node_id] = tracker
        if gaps:
            self._log.warning(
                "collector: node %s says seqs up to %d were acknowledged before; this "
                "database lacks %d of them (recorded as acknowledged elsewhere: %s)",
                hello.node_id,
                hello.acked_through,
                sum(g.count for g in gaps),
                ", ".join(f"{g.first}..{g.last}" for g in gaps[:5]),
                extra={"node": hello.node_id, "boot_id": hello.boot_id},
            )
        return tracker.highest

    def _acked_elsewhere(self, node_id: str) -> list[SeqGap]:
        return [
            SeqGap(int(first), int(last))
            for first, last in self._db().execute(self.sql.gaps, (node_id,))
        ]

    def _list_nodes(self, connected: frozenset[str]) -> list[NodeInfo]:
        out = []
        rows = self._db().execute(_LIST_NODES)
        for node_id, boot_id, version, last_seen, acked, elsewhere in rows:
            tracker = self._trackers.get(node_id)
            out.append(
                NodeInfo(
                    str(node_id),
                    str(boot_id),
                    str(version),
                    int(last_seen),
                    node_id in connected,
                    tracker.highest if tracker else int(acked),
                    int(elsewhere),
                )
            )
        return out

    def _add_command_result(self, r: CommandResult, cmd: str, now_ms: int) -> CommandResult:
        """Store the result unless one is stored for (node, command id); return the
        stored one."""
        self._db().execute(
            self.sql.insert_result,
            (r.node_id, r.command_id, cmd, r.ok, r.result_json, r.error_code, r.error, now_ms),
        )
        stored = self._command_result(r.node_id, r.command_id)
        return stored if stored is not None else r

    def _command_result(self, node_id: str, command_id: str) -> CommandResult | None:
        row = self._db().execute(self.sql.result, (node_id, command_id)).fetchone()
        if row is None:
            return None
        return CommandResult(
            node_id, command_id, bool(row[0]), str(row[1]), str(row[2]), str(row[3])
        )


class CollectorStore(GroupCommitStore):
    """Summaries, nodes, command results and seq gaps in SQLite (WAL).

    ``INSERT OR IGNORE`` on the primary key (node_id, seq) is the dedup.
    """

    db_errors = (sqlite3.Error, OSError)
    sql = SqlDialect(param="?", greatest="MAX", or_ignore=True)

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        commit_delay_s: float = COMMIT_DELAY_S,
    ) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"unknown synchronous level {synchronous!r}")
        if busy_timeout_ms < 0:
            raise ValueError(f"busy_timeout_ms must be >= 0, got {busy_timeout_ms}")
        super().__init__(str(Path(path)), commit_delay_s=commit_delay_s)
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None  # used on the executor thread only

    def _open_db(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _close_db(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError("the store is not open")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE: take the write lock (waiting up to busy_timeout) at BEGIN, not at
        # the first write, so a transaction never fails half way on a lock.
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _probe(self, now_ms: int) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO store_meta (key, value) VALUES ('probed_ms', ?)",
                (now_ms,),
            )

    def _insert_batch(self, rows: list[SummaryRow], acks: list[AckRow]) -> int:
        with self._transaction() as conn:
            inserted = conn.executemany(_INSERT_SUMMARY, rows).rowcount
            conn.executemany(_RAISE_ACK, [(acked, seen, node) for node, acked, seen in acks])
        return inserted
