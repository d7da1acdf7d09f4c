"""The reference cloud collector: a grpc.aio server that nodes dial into.

It speaks both services of ``proto/edge_node/v1/edge.proto``:

- ``EdgeLink.Sync`` for nodes: a Hello first, then summaries (stored once per
  (node id, seq), answered with the highest *contiguous* stored seq) and command
  results; acks, commands and platform events go back on the same stream.
- ``Collector`` for other cloud services: list nodes, query summaries by node and
  time, send a command to a connected node and await its result (idempotent by
  command id).

Layout (STYLE.md): protobuf lives only in the servicers and the ``_pb``/``_from_pb``
helpers; everything behind them works on the frozen dataclasses below.
``CollectorStore`` owns SQLite; ``Collector`` owns the node sessions, pending
commands and the gRPC server; ``EdgeLinkServicer`` and ``CollectorServicer`` are thin
translators. ``CollectorClient`` is the matching client used by the CLI.

What it must never do:

- block the event loop: every SQLite call runs on the store's single writer thread,
  and summaries from all streams are group-committed in batches;
- acknowledge a summary before its transaction is committed (``synchronous=FULL``,
  so an ack survives a power loss of the collector box);
- buffer without bound: each stream has a bounded number of summaries awaiting
  commit (gRPC flow control pushes back on the node beyond it) and of queued
  commands (``RESOURCE_EXHAUSTED`` beyond it).

Optional pieces:

- a bearer token (``authorization: Bearer <token>`` metadata) checked on every call
  except gRPC health checks, ``UNAUTHENTICATED`` otherwise; TLS, and mTLS when a
  client CA is given (client certificates then required);
- gRPC health checking (``grpc.health.v1``) and server reflection, served when the
  packages ``grpcio-health-checking`` / ``grpcio-reflection`` are installed; without
  them the collector logs that it skips them and serves the rest.

Not implemented: PostgreSQL storage (issue 7 asks for it "when given a DSN"). Only
SQLite in WAL mode is supported; ``CollectorStore`` is the seam where a PostgreSQL
store would go.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import importlib
import json
import logging
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import grpc
import msgpack

from edge_node.cloud._proto import edge_pb2 as pb
from edge_node.cloud._proto import edge_pb2_grpc as pb_grpc
from edge_node.errors import EdgeNodeError, ProtocolError

log = logging.getLogger(__name__)

PROTO_VERSION = 1  # Hello.proto_version this collector speaks
EDGE_LINK_SERVICE = pb.DESCRIPTOR.services_by_name["EdgeLink"].full_name
COLLECTOR_SERVICE = pb.DESCRIPTOR.services_by_name["Collector"].full_name

HELLO_TIMEOUT_S = 10.0  # a stream that says nothing for this long is dropped
REFUSE_READ_TIMEOUT_S = 1.0  # how long a refused stream may take to send its first message
DEFAULT_COMMAND_TIMEOUT_S = 10.0
MAX_COMMAND_TIMEOUT_S = 300.0
MAX_IN_FLIGHT_SUMMARIES = 256  # per stream, received but not yet committed
MAX_QUEUED_COMMANDS = 256  # per stream, not yet written to the node
MAX_ID_CHARS = 128  # node ids and command ids
MAX_SEQ = 2**63 - 1  # SQLite INTEGER is signed 64-bit
BATCH_MAX_ROWS = 1000  # summaries per transaction
QUERY_PAGE_ROWS = 500  # rows fetched per executor call when streaming a query
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

# Nodes ping every 20 s (CLIENT_KEEPALIVE_OPTIONS). The server accepts pings down to
# every 10 s, also on connections without calls, so a node never earns the strikes
# that end in a ``too_many_pings`` GOAWAY; it pings idle clients itself every 30 s to
# find dead connections behind NAT.
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 2),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # gRPC sets SO_REUSEPORT by default: a second collector on the same port would
    # silently share the nodes with the first instead of failing to start.
    ("grpc.so_reuseport", 0),
)

# What clients of this collector (nodes, the CLI) should use: pings every 20 s, well
# above the server's 10 s minimum.
CLIENT_KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)

_T = TypeVar("_T")

# The generated grpc module is untyped: these typed names are the one place that says
# what its functions take.
_add_edge_link_servicer: Callable[[Any, Any], None] = pb_grpc.add_EdgeLinkServicer_to_server
_add_collector_servicer: Callable[[Any, Any], None] = pb_grpc.add_CollectorServicer_to_server
_collector_stub: Callable[[Any], Any] = pb_grpc.CollectorStub


# ---------------------------------------------------------------------------
# Errors: each maps to one gRPC status code, in one place (_STATUS_OF).
# ---------------------------------------------------------------------------


class CollectorError(EdgeNodeError):
    """Base of the collector's own errors (start-up, storage, routing)."""


class NodeNotConnected(CollectorError):
    def __init__(self, node_id: str, reason: str = "is not connected") -> None:
        super().__init__(f"node {node_id!r} {reason}")
        self.node_id = node_id


class CommandTimedOut(CollectorError):
    def __init__(self, node_id: str, command_id: str, timeout_s: float) -> None:
        super().__init__(
            f"node {node_id!r} did not answer command {command_id!r} within {timeout_s:g} s"
        )


class NodeBusy(CollectorError):
    """Too many commands queued for one node."""


class StreamReplaced(CollectorError):
    """A newer Sync stream from the same node id took over."""


class UnsupportedProtoVersion(CollectorError):
    """A node speaks a proto version this collector does not."""


class StorageError(CollectorError):
    """SQLite failed (disk full, I/O error); nothing was acknowledged."""


class CollectorStopping(CollectorError):
    """The collector is shutting down; streams end with UNAVAILABLE."""


class Unauthenticated(CollectorError):
    """A missing or wrong bearer token."""


_STATUS_OF: tuple[tuple[type[EdgeNodeError], grpc.StatusCode], ...] = (
    (ProtocolError, grpc.StatusCode.INVALID_ARGUMENT),
    (NodeNotConnected, grpc.StatusCode.UNAVAILABLE),
    (CommandTimedOut, grpc.StatusCode.DEADLINE_EXCEEDED),
    (NodeBusy, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StreamReplaced, grpc.StatusCode.ABORTED),
    (UnsupportedProtoVersion, grpc.StatusCode.FAILED_PRECONDITION),
    (StorageError, grpc.StatusCode.UNAVAILABLE),
    (CollectorStopping, grpc.StatusCode.UNAVAILABLE),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
)


def status_of(exc: EdgeNodeError) -> grpc.StatusCode:
    for cls, code in _STATUS_OF:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


# ---------------------------------------------------------------------------
# Our side of the wire: frozen dataclasses.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    node_id: str
    boot_id: str
    version: str
    proto_version: int


@dataclass(frozen=True, slots=True)
class WindowSummary:
    """One summary as a node sends it (Summary in the proto)."""

    seq: int
    window_start_unix_ms: int
    window_s: int
    payload: bytes
    empty: bool


@dataclass(frozen=True, slots=True)
class StoredSummary:
    node_id: str
    seq: int
    window_start_unix_ms: int
    window_s: int
    payload: bytes
    empty: bool
    received_unix_ms: int


@dataclass(frozen=True, slots=True)
class Command:
    command_id: str
    cmd: str
    args_json: str


@dataclass(frozen=True, slots=True)
class CommandResult:
    node_id: str
    command_id: str
    ok: bool
    result_json: str
    error_code: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class PlatformEvent:
    event_id: str
    type: str
    user: str
    payload_json: str


@dataclass(frozen=True, slots=True)
class Ack:
    highest_contiguous_seq: int


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    boot_id: str
    version: str
    last_seen_unix_ms: int
    connected: bool
    highest_contiguous_seq: int


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Server side: certificate chain and key (PEM); with ``client_ca_file`` the
    server requires client certificates signed by that CA (mTLS).
    Client side (CollectorClient): ``client_ca_file`` is the CA that signed the
    server's certificate, and ``cert_file``/``key_file`` the client's own (mTLS), or
    empty."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str | None = None


@dataclass(slots=True)
class CollectorStats:
    streams_open: int = 0
    summaries_received: int = 0
    commands_sent: int = 0
    command_results: int = 0
    messages_ignored: int = 0  # NodeMessages with no kind set (newer node)


# ---------------------------------------------------------------------------
# Sans-I/O: highest contiguous seq per node.
# ---------------------------------------------------------------------------


class ContiguousSeqs:
    """Tracks which seqs of one node are stored; ``highest`` is the largest n such
    that 1..n are all stored. Seqs stored beyond a gap wait in ``above``."""

    __slots__ = ("above", "highest")

    def __init__(self, highest: int = 0, above: set[int] | None = None) -> None:
        self.highest = highest
        self.above: set[int] = set(above or ())

    def add(self, seq: int) -> bool:
        """Record ``seq``; False when it was already recorded."""
        if seq <= self.highest or seq in self.above:
            return False
        if seq != self.highest + 1:
            self.above.add(seq)
            return True
        self.highest = seq
        while self.highest + 1 in self.above:
            self.above.remove(self.highest + 1)
            self.highest += 1
        return True

    def copy(self) -> ContiguousSeqs:
        return ContiguousSeqs(self.highest, self.above)


# ---------------------------------------------------------------------------
# Storage: SQLite (WAL) on one thread, batched.
# ---------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    node_id       TEXT PRIMARY KEY,
    boot_id       TEXT NOT NULL,
    version       TEXT NOT NULL,
    proto_version INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    acked_seq     INTEGER NOT NULL DEFAULT 0  -- highest contiguous stored seq
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
"""

_SUMMARY_COLUMNS = "node_id, seq, window_start_ms, window_s, payload, empty, received_ms"
_INSERT_SUMMARY = (
    f"INSERT OR IGNORE INTO summaries ({_SUMMARY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(slots=True)
class _PendingWrite:
    node_id: str
    summary: WindowSummary
    received_ms: int
    future: asyncio.Future[int]


def _retrieve_exception(fut: asyncio.Future[Any]) -> None:
    # A stream that died no longer awaits its futures; don't let asyncio complain
    # about a storage error nobody is left to hear (the stream saw it already).
    if not fut.cancelled():
        fut.exception()


class CollectorStore:
    """Summaries, nodes and command results in SQLite (WAL).

    Every SQLite call runs on one dedicated thread (a single-worker executor), which
    also owns the per-node ``ContiguousSeqs``; the event loop only awaits results.
    ``add_summary`` queues a row and returns a future; a writer task commits whatever
    has queued in one transaction (up to ``BATCH_MAX_ROWS``) and resolves each future
    with its node's highest contiguous seq *after* the commit. ``INSERT OR IGNORE``
    on the primary key (node_id, seq) is the dedup.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"unknown synchronous level {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self.duplicates = 0  # summaries received again after they were stored
        self.stored = 0
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # used on the executor thread only
        self._trackers: dict[str, ContiguousSeqs] = {}  # executor thread only
        self._queue: list[_PendingWrite] = []
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
            raise StorageError(f"cannot open the database {self.path}: {exc}") from exc
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

    def _open_db(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _close_db(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise StorageError("the store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"{self.path}: {exc}") from exc

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError("the store is not open")
        return self._conn

    # -- summaries ----------------------------------------------------------------

    def add_summary(
        self, node_id: str, summary: WindowSummary, received_ms: int
    ) -> asyncio.Future[int]:
        """Queue one summary; the future resolves, after the commit, to the node's
        highest contiguous stored seq (or fails with StorageError)."""
        if self._closing or self._executor is None:
            raise StorageError("the store is closed")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieve_exception)
        self._queue.append(_PendingWrite(node_id, summary, received_ms, fut))
        self._wake.set()
        return fut

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._queue[:BATCH_MAX_ROWS]
                del self._queue[:BATCH_MAX_ROWS]
                try:
                    highest, inserted = await self._run(self._write_batch, batch)
                except StorageError as exc:
                    log.error("collector: storing %d summaries failed: %s", len(batch), exc)
                    error = StorageError(f"storing summaries failed: {exc}")
                    for w in batch:
                        if not w.future.done():
                            w.future.set_exception(error)
                    continue
                self.stored += inserted
                self.duplicates += len(batch) - inserted
                for w in batch:
                    if not w.future.done():
                        w.future.set_result(highest[w.node_id])
            if self._closing:
                return

    def _tracker(self, node_id: str) -> ContiguousSeqs:
        """The node's seq tracker, loaded from the database on first use (thread)."""
        tracker = self._trackers.get(node_id)
        if tracker is not None:
            return tracker
        conn = self._db()
        row = conn.execute("SELECT acked_seq FROM nodes WHERE node_id = ?", (node_id,)).fetchone()
        tracker = ContiguousSeqs(int(row[0]) if row else 0)
        # Rows stored beyond a gap (and, if acked_seq lagged, beyond it) extend it.
        for (seq,) in conn.execute(
            "SELECT seq FROM summaries WHERE node_id = ? AND seq > ? ORDER BY seq",
            (node_id, tracker.highest),
        ):
            tracker.add(int(seq))
        self._trackers[node_id] = tracker
        return tracker

    def _write_batch(self, batch: list[_PendingWrite]) -> tuple[dict[str, int], int]:
        """Insert one batch in one transaction (thread); returns each node's highest
        contiguous seq after the commit, and how many rows were new."""
        conn = self._db()
        # Tentative copies: the in-memory state changes only if the commit succeeds.
        trackers = {w.node_id: self._tracker(w.node_id).copy() for w in batch}
        last_seen: dict[str, int] = {}
        rows = []
        for w in batch:
            s = w.summary
            rows.append(
                (
                    w.node_id,
                    s.seq,
                    s.window_start_unix_ms,
                    s.window_s,
                    s.payload,
                    int(s.empty),
                    w.received_ms,
                )
            )
            trackers[w.node_id].add(s.seq)
            last_seen[w.node_id] = max(last_seen.get(w.node_id, 0), w.received_ms)
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.executemany(_INSERT_SUMMARY, rows)
            inserted = cur.rowcount
            conn.executemany(
                "UPDATE nodes SET acked_seq = MAX(acked_seq, ?), "
                "last_seen_ms = MAX(last_seen_ms, ?) WHERE node_id = ?",
                [(trackers[n].highest, last_seen[n], n) for n in trackers],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._trackers.update(trackers)
        return {n: t.highest for n, t in trackers.items()}, inserted

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

    def _query_page(
        self,
        node_id: str,
        since_ms: int,
        until_ms: int,
        after: tuple[int, str, int] | None,
        page: int,
    ) -> list[StoredSummary]:
        where = ["window_start_ms >= ?"]
        params: list[int | str] = [since_ms if since_ms > 0 else -MAX_SEQ]
        if until_ms > 0:
            where.append("window_start_ms < ?")
            params.append(until_ms)
        if node_id:
            where.append("node_id = ?")
            params.append(node_id)
        if after is not None:
            where.append("(window_start_ms, node_id, seq) > (?, ?, ?)")
            params.extend(after)
        sql = (
            f"SELECT {_SUMMARY_COLUMNS} FROM summaries WHERE {' AND '.join(where)} "
            "ORDER BY window_start_ms, node_id, seq LIMIT ?"
        )
        return [
            StoredSummary(str(n), int(q), int(st), int(w), bytes(p), bool(e), int(rc))
            for n, q, st, w, p, e, rc in self._db().execute(sql, (*params, page))
        ]

    # -- nodes --------------------------------------------------------------------

    async def note_hello(self, hello: Hello, now_ms: int) -> int:
        """Record the node; returns its highest contiguous stored seq."""
        return await self._run(self._note_hello, hello, now_ms)

    def _note_hello(self, hello: Hello, now_ms: int) -> int:
        self._db().execute(
            "INSERT INTO nodes (node_id, boot_id, version, proto_version, first_seen_ms, "
            "last_seen_ms) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET "
            "boot_id = excluded.boot_id, version = excluded.version, "
            "proto_version = excluded.proto_version, last_seen_ms = excluded.last_seen_ms",
            (hello.node_id, hello.boot_id, hello.version, hello.proto_version, now_ms, now_ms),
        )
        return self._tracker(hello.node_id).highest

    async def list_nodes(
        self, connected: set[str] | frozenset[str] = frozenset()
    ) -> list[NodeInfo]:
        return await self._run(self._list_nodes, frozenset(connected))

    def _list_nodes(self, connected: frozenset[str]) -> list[NodeInfo]:
        out = []
        for node_id, boot_id, version, last_seen, acked in self._db().execute(
            "SELECT node_id, boot_id, version, last_seen_ms, acked_seq FROM nodes ORDER BY node_id"
        ):
            tracker = self._trackers.get(node_id)
            out.append(
                NodeInfo(
                    str(node_id),
                    str(boot_id),
                    str(version),
                    int(last_seen),
                    node_id in connected,
                    tracker.highest if tracker else int(acked),
                )
            )
        return out

    # -- command results ----------------------------------------------------------

    async def add_command_result(
        self, result: CommandResult, cmd: str, now_ms: int
    ) -> CommandResult:
        """Store a node's answer (the first one wins); returns the stored answer."""
        return await self._run(self._add_command_result, result, cmd, now_ms)

    def _add_command_result(self, r: CommandResult, cmd: str, now_ms: int) -> CommandResult:
        self._db().execute(
            "INSERT OR IGNORE INTO command_results (node_id, command_id, cmd, ok, result_json, "
            "error_code, error, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (r.node_id, r.command_id, cmd, int(r.ok), r.result_json, r.error_code, r.error, now_ms),
        )
        stored = self._command_result(r.node_id, r.command_id)
        return stored if stored is not None else r

    async def command_result(self, node_id: str, command_id: str) -> CommandResult | None:
        return await self._run(self._command_result, node_id, command_id)

    def _command_result(self, node_id: str, command_id: str) -> CommandResult | None:
        row = (
            self._db()
            .execute(
                "SELECT ok, result_json, error_code, error FROM command_results "
                "WHERE node_id = ? AND command_id = ?",
                (node_id, command_id),
            )
            .fetchone()
        )
        if row is None:
            return None
        return CommandResult(
            node_id, command_id, bool(row[0]), str(row[1]), str(row[2]), str(row[3])
        )


# ---------------------------------------------------------------------------
# One connected node.
# ---------------------------------------------------------------------------

_Outgoing = Ack | Command | PlatformEvent


class NodeSession:
    """One open Sync stream: what goes out to the node, and the summaries of this
    stream awaiting their commit (bounded: the reader waits when it is full)."""

    def __init__(self, hello: Hello) -> None:
        self.hello = hello
        self.node_id = hello.node_id
        self.in_flight: asyncio.Queue[asyncio.Future[int]] = asyncio.Queue(MAX_IN_FLIGHT_SUMMARIES)
        self.error: EdgeNodeError | None = None
        self._ack: int | None = None
        self._acked = -1
        self._queued: deque[Command | PlatformEvent] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self.acker: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def set_ack(self, highest: int) -> None:
        # Always resend, even when unchanged: a retransmitting node learns from it.
        self._ack = max(highest, self._acked)
        self._wake.set()

    def push(self, item: Command | PlatformEvent) -> None:
        if self._closed:
            raise NodeNotConnected(self.node_id, "disconnected")
        if len(self._queued) >= MAX_QUEUED_COMMANDS:
            raise NodeBusy(f"node {self.node_id!r} has {len(self._queued)} commands queued")
        self._queued.append(item)
        self._wake.set()

    def close(self, error: EdgeNodeError | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self.error = error
        self._wake.set()

    async def outgoing(self) -> AsyncIterator[_Outgoing]:
        """What to write to the node, until the session closes. An error closes it
        at once; a clean close (the node half-closed) first sends what is left."""
        while True:
            if self._closed and self.error is not None:
                return
            if self._queued:
                yield self._queued.popleft()
                continue
            if self._ack is not None:
                self._acked, self._ack = self._ack, None
                yield Ack(self._acked)
                continue
            if self._closed:
                return
            self._wake.clear()
            await self._wake.wait()

    async def ack_loop(self) -> None:
        """Turn committed summaries into acks, in the order they arrived."""
        while True:
            fut = await self.in_flight.get()
            try:
                highest = await fut
            except StorageError as exc:
                self.close(exc)
                return
            finally:
                self.in_flight.task_done()
            self.set_ack(highest)


@dataclass(slots=True)
class _PendingCommand:
    future: asyncio.Future[CommandResult]
    session: NodeSession
    cmd: str
    waiters: int = 0


# ---------------------------------------------------------------------------
# The collector: sessions, commands, the gRPC server.
# ---------------------------------------------------------------------------


def _optional_module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


class Collector:
    """The reference collector. ``start()`` opens the store and serves;
    ``stop()`` ends every stream (UNAVAILABLE, so nodes reconnect), stops the server
    and closes the store."""

    def __init__(
        self,
        listen: str,
        store: CollectorStore,
        *,
        token: str | None = None,
        tls: TlsFiles | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.listen = listen
        self.store = store
        self.token = token or None
        self.tls = tls
        self.stats = CollectorStats()
        self.port = 0
        self.health_served = False
        self.reflection_served = False
        self._clock = clock
        self._sessions: dict[str, NodeSession] = {}
        self._pending: dict[tuple[str, str], _PendingCommand] = {}
        self._server: Any = None
        self._health: Any = None

    @property
    def address(self) -> str:
        """HOST:PORT actually listened on (the port resolved when 0 was asked)."""
        host = self.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def connected_nodes(self) -> list[str]:
        return sorted(self._sessions)

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        try:
            await self._start_server()
        except BaseException:
            await self.store.close()
            raise

    async def _start_server(self) -> None:
        interceptors = [_BearerTokenInterceptor(self.token)] if self.token else []
        server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
        _add_edge_link_servicer(EdgeLinkServicer(self), server)
        _add_collector_servicer(CollectorServicer(self), server)
        services = [EDGE_LINK_SERVICE, COLLECTOR_SERVICE]
        await self._add_health(server, services)
        self._add_reflection(server, services)
        try:
            if self.tls is None:
                self.port = server.add_insecure_port(self.listen)
            else:
                self.port = server.add_secure_port(self.listen, await self._server_credentials())
        except RuntimeError as exc:  # grpc: "Failed to bind to address ..."
            raise CollectorError(f"cannot listen on {self.listen}: {exc}") from exc
        await server.start()
        self._server = server
        log.info(
            "collector listening",
            extra={"address": self.address, "db": str(self.store.path), "tls": bool(self.tls)},
        )

    async def _server_credentials(self) -> Any:
        assert self.tls is not None
        tls = self.tls
        try:
            cert = await asyncio.to_thread(_read_bytes, tls.cert_file)
            key = await asyncio.to_thread(_read_bytes, tls.key_file)
            ca = (
                await asyncio.to_thread(_read_bytes, tls.client_ca_file)
                if tls.client_ca_file
                else None
            )
        except OSError as exc:
            raise CollectorError(f"cannot read the TLS files: {exc}") from exc
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )

    async def _add_health(self, server: Any, services: list[str]) -> None:
        health = _optional_module("grpc_health.v1.health")
        health_pb2 = _optional_module("grpc_health.v1.health_pb2")
        health_pb2_grpc = _optional_module("grpc_health.v1.health_pb2_grpc")
        if health is None or health_pb2 is None or health_pb2_grpc is None:
            log.info("collector: grpcio-health-checking is not installed; no health service")
            return
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        for name in ("", *services):
            await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        services.append(health.SERVICE_NAME)
        self._health = servicer
        self.health_served = True

    def _add_reflection(self, server: Any, services: list[str]) -> None:
        reflection = _optional_module("grpc_reflection.v1alpha.reflection")
        if reflection is None:
            log.info("collector: grpcio-reflection is not installed; no reflection service")
            return
        reflection.enable_server_reflection((*services, reflection.SERVICE_NAME), server)
        self.reflection_served = True

    async def stop(self, grace_s: float = 2.0) -> None:
        if self._server is None:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        for session in list(self._sessions.values()):
            session.close(CollectorStopping("the collector is shutting down"))
        await self._server.stop(grace_s)
        self._server = None
        await self.store.close()
        log.info("collector stopped", extra={"address": self.address})

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    # -- node streams -------------------------------------------------------------

    async def open_session(self, hello: Hello) -> NodeSession:
        if not hello.node_id or len(hello.node_id) > MAX_ID_CHARS:
            raise ProtocolError("hello.node_id", f"must be 1..{MAX_ID_CHARS} characters")
        if hello.proto_version != PROTO_VERSION:
            raise UnsupportedProtoVersion(
                f"proto_version {hello.proto_version} is not supported (this collector "
                f"speaks {PROTO_VERSION})"
            )
        highest = await self.store.note_hello(hello, self.now_ms())
        session = NodeSession(hello)
        old = self._sessions.get(hello.node_id)
        if old is not None:
            old.close(StreamReplaced(f"a newer stream from node {hello.node_id!r} replaced it"))
            self._fail_pending(old, "reconnected before answering")
        self._sessions[hello.node_id] = session
        session.acker = asyncio.create_task(session.ack_loop(), name=f"acks-{hello.node_id}")
        session.set_ack(highest)
        self.stats.streams_open += 1
        log.info(
            "node connected",
            extra={"node": hello.node_id, "boot_id": hello.boot_id, "acked_seq": highest},
        )
        return session

    def close_session(self, session: NodeSession) -> None:
        session.close()
        if session.acker is not None:
            session.acker.cancel()
        if self._sessions.get(session.node_id) is session:
            del self._sessions[session.node_id]
        self._fail_pending(session, "disconnected before answering")
        self.stats.streams_open -= 1
        log.info("node disconnected", extra={"node": session.node_id})

    def _fail_pending(self, session: NodeSession, reason: str) -> None:
        for pending in self._pending.values():
            if pending.session is session and not pending.future.done():
                pending.future.set_exception(NodeNotConnected(session.node_id, reason))

    async def summary_received(self, session: NodeSession, summary: WindowSummary) -> None:
        """Queue a summary for storage; waits while the stream has too many in flight."""
        if not 1 <= summary.seq <= MAX_SEQ:
            raise ProtocolError("summary.seq", f"must be 1..{MAX_SEQ}, got {summary.seq}")
        if summary.window_s < 1:
            raise ProtocolError("summary.window_s", "must be at least 1")
        self.stats.summaries_received += 1
        fut = self.store.add_summary(session.node_id, summary, self.now_ms())
        await session.in_flight.put(fut)

    async def finish_session(self, session: NodeSession) -> None:
        """The node half-closed: ack what is in flight, then end the stream cleanly."""
        await session.in_flight.join()
        session.close()

    async def command_answered(self, session: NodeSession, result: CommandResult) -> None:
        key = (session.node_id, result.command_id)
        pending = self._pending.get(key)
        stored = await self.store.add_command_result(
            result, pending.cmd if pending else "", self.now_ms()
        )
        self.stats.command_results += 1
        pending = self._pending.get(key)
        if pending is not None and not pending.future.done():
            pending.future.set_result(stored)

    def message_ignored(self, session: NodeSession, what: str) -> None:
        self.stats.messages_ignored += 1
        log.warning("collector: ignored a message", extra={"node": session.node_id, "what": what})

    # -- the API for cloud services -----------------------------------------------

    async def send_command(
        self,
        node_id: str,
        cmd: str,
        args_json: str = "",
        command_id: str = "",
        timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
    ) -> CommandResult:
        """Send a command to a connected node and wait for its answer.

        A ``command_id`` that already has a stored result returns it without sending
        again; one that is in flight joins the waiting call."""
        args_json = _check_command(node_id, cmd, args_json, command_id, timeout_s)
        if command_id:
            stored = await self.store.command_result(node_id, command_id)
            if stored is not None:
                return stored
        else:
            command_id = uuid.uuid4().hex
        key = (node_id, command_id)
        pending = self._pending.get(key)
        if pending is None:
            session = self._sessions.get(node_id)
            if session is None:
                raise NodeNotConnected(node_id)
            future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve_exception)
            session.push(Command(command_id, cmd, args_json))
            pending = _PendingCommand(future, session, cmd)
            self._pending[key] = pending
            self.stats.commands_sent += 1
        pending.waiters += 1
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), timeout_s)
        except TimeoutError:
            raise CommandTimedOut(node_id, command_id, timeout_s) from None
        finally:
            pending.waiters -= 1
            if pending.waiters == 0 and self._pending.get(key) is pending:
                # Nobody waits any more; a late answer is still stored by command_answered.
                del self._pending[key]
                if not pending.future.done():
                    pending.future.cancel()

    def push_platform_event(self, node_id: str, event: PlatformEvent) -> None:
        """Relay a platform event to a connected node (NodeNotConnected otherwise)."""
        session = self._sessions.get(node_id)
        if session is None:
            raise NodeNotConnected(node_id)
        session.push(event)

    async def list_nodes(self) -> list[NodeInfo]:
        return await self.store.list_nodes(set(self._sessions))


def _check_command(
    node_id: str, cmd: str, args_json: str, command_id: str, timeout_s: float
) -> str:
    """Validate a SendCommand; returns the canonical args_json."""
    if not node_id:
        raise ProtocolError("node_id", "required")
    if not cmd:
        raise ProtocolError("cmd", "required")
    if len(command_id) > MAX_ID_CHARS:
        raise ProtocolError("command_id", f"at most {MAX_ID_CHARS} characters")
    if not 0 < timeout_s <= MAX_COMMAND_TIMEOUT_S:
        raise ProtocolError("timeout_ms", f"must be in (0, {MAX_COMMAND_TIMEOUT_S:g}] s")
    if not args_json:
        return "{}"
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise ProtocolError("args_json", f"not JSON: {exc}") from None
    if not isinstance(args, dict):
        raise ProtocolError("args_json", "must be a JSON object")
    return args_json


# ---------------------------------------------------------------------------
# Protobuf <-> dataclasses (the only place that knows both).
# ---------------------------------------------------------------------------


def _hello_from_pb(m: pb.Hello) -> Hello:
    return Hello(m.node_id, m.boot_id, m.version, m.proto_version)


def _summary_from_pb(m: pb.Summary) -> WindowSummary:
    return WindowSummary(m.seq, m.window_start_unix_ms, m.window_s, m.payload, m.empty)


def _result_from_pb(node_id: str, m: pb.CommandResult) -> CommandResult:
    return CommandResult(node_id, m.command_id, m.ok, m.result_json, m.error_code, m.error)


def _outgoing_to_pb(item: _Outgoing) -> pb.CloudMessage:
    if isinstance(item, Ack):
        return pb.CloudMessage(ack=pb.Ack(highest_contiguous_seq=item.highest_contiguous_seq))
    if isinstance(item, Command):
        return pb.CloudMessage(
            command=pb.Command(command_id=item.command_id, cmd=item.cmd, args_json=item.args_json)
        )
    return pb.CloudMessage(
        platform_event=pb.PlatformEvent(
            event_id=item.event_id, type=item.type, user=item.user, payload_json=item.payload_json
        )
    )


def _stored_to_pb(s: StoredSummary) -> pb.SummaryRecord:
    return pb.SummaryRecord(
        node_id=s.node_id,
        seq=s.seq,
        window_start_unix_ms=s.window_start_unix_ms,
        window_s=s.window_s,
        payload=s.payload,
        empty=s.empty,
        received_unix_ms=s.received_unix_ms,
    )


def _stored_from_pb(m: pb.SummaryRecord) -> StoredSummary:
    return StoredSummary(
        m.node_id, m.seq, m.window_start_unix_ms, m.window_s, m.payload, m.empty, m.received_unix_ms
    )


def _result_to_pb(r: CommandResult) -> pb.CommandResultRecord:
    return pb.CommandResultRecord(
        node_id=r.node_id,
        command_id=r.command_id,
        ok=r.ok,
        result_json=r.result_json,
        error_code=r.error_code,
        error=r.error,
    )


def _result_record_from_pb(m: pb.CommandResultRecord) -> CommandResult:
    return CommandResult(m.node_id, m.command_id, m.ok, m.result_json, m.error_code, m.error)


def _node_to_pb(n: NodeInfo) -> pb.NodeInfo:
    return pb.NodeInfo(
        node_id=n.node_id,
        boot_id=n.boot_id,
        version=n.version,
        last_seen_unix_ms=n.last_seen_unix_ms,
        connected=n.connected,
        highest_contiguous_seq=n.highest_contiguous_seq,
    )


def _node_from_pb(m: pb.NodeInfo) -> NodeInfo:
    return NodeInfo(
        m.node_id, m.boot_id, m.version, m.last_seen_unix_ms, m.connected, m.highest_contiguous_seq
    )


async def _abort(context: Any, exc: EdgeNodeError) -> None:
    await context.abort(status_of(exc), str(exc))


# ---------------------------------------------------------------------------
# Servicers: translate, delegate, map errors to status codes.
# ---------------------------------------------------------------------------


class EdgeLinkServicer(pb_grpc.EdgeLinkServicer):
    """``EdgeLink.Sync``: one task reads the node's messages, the handler writes
    what the session has for the node (acks, commands, platform events)."""

    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    async def Sync(
        self, request_iterator: AsyncIterator[pb.NodeMessage], context: Any
    ) -> AsyncIterator[pb.CloudMessage]:
        requests = aiter(request_iterator)
        try:
            first = await asyncio.wait_for(anext(requests), HELLO_TIMEOUT_S)
        except StopAsyncIteration:
            first = None
        except TimeoutError:
            await _abort(context, ProtocolError("hello", f"none within {HELLO_TIMEOUT_S:g} s"))
            return
        if first is None or first.WhichOneof("kind") != "hello":
            await _abort(context, ProtocolError("hello", "the first message must be Hello"))
            return
        try:
            session = await self._collector.open_session(_hello_from_pb(first.hello))
        except EdgeNodeError as exc:
            await _abort(context, exc)
            return
        reader = asyncio.create_task(self._read(session, requests), name="sync-reader")
        reader.add_done_callback(functools.partial(_reader_done, session, context))
        try:
            async for item in session.outgoing():
                yield _outgoing_to_pb(item)
            if session.error is not None:
                await _abort(context, session.error)
        finally:
            reader.cancel()
            self._collector.close_session(session)

    async def _read(self, session: NodeSession, requests: AsyncIterator[pb.NodeMessage]) -> None:
        collector = self._collector
        try:
            async for msg in requests:
                kind = msg.WhichOneof("kind")
                if kind == "summary":
                    await collector.summary_received(session, _summary_from_pb(msg.summary))
                elif kind == "command_result":
                    result = _result_from_pb(session.node_id, msg.command_result)
                    await collector.command_answered(session, result)
                elif kind == "hello":
                    raise ProtocolError("hello", "sent twice on one stream")
                else:
                    collector.message_ignored(session, "NodeMessage with no kind set")
            await collector.finish_session(session)
        except EdgeNodeError as exc:
            session.close(exc)


def _reader_done(session: NodeSession, context: Any, task: asyncio.Task[None]) -> None:
    """A reader that died of a bug ends its stream with INTERNAL, loudly. Reading
    fails too when the call has ended (aborted, cancelled, server stopping): that is
    just the end of the stream."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is None:
        return
    if session.closed or context.done():
        log.debug("collector: stream of %s ended while reading: %r", session.node_id, exc)
        return
    log.error("collector: reading a node's stream failed", exc_info=exc)
    session.close(CollectorError(f"internal error reading the stream: {exc!r}"))


class CollectorServicer(pb_grpc.CollectorServicer):
    """The ``Collector`` API for other cloud services."""

    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    async def ListNodes(self, request: pb.ListNodesRequest, context: Any) -> pb.ListNodesResponse:
        try:
            nodes = await self._collector.list_nodes()
        except EdgeNodeError as exc:
            await _abort(context, exc)
            raise AssertionError("unreachable: abort raises") from exc
        return pb.ListNodesResponse(nodes=[_node_to_pb(n) for n in nodes])

    async def QuerySummaries(
        self, request: pb.QuerySummariesRequest, context: Any
    ) -> AsyncIterator[pb.SummaryRecord]:
        if request.until_unix_ms and request.until_unix_ms <= request.since_unix_ms:
            await _abort(context, ProtocolError("until_unix_ms", "must be after since_unix_ms"))
            return
        rows = self._collector.store.query_summaries(
            request.node_id, request.since_unix_ms, request.until_unix_ms, request.limit
        )
        try:
            async for s in rows:
                yield _stored_to_pb(s)
        except EdgeNodeError as exc:
            await _abort(context, exc)

    async def SendCommand(
        self, request: pb.SendCommandRequest, context: Any
    ) -> pb.CommandResultRecord:
        timeout_s = request.timeout_ms / 1000 if request.timeout_ms else DEFAULT_COMMAND_TIMEOUT_S
        timeout_s = min(timeout_s, MAX_COMMAND_TIMEOUT_S)
        remaining = context.time_remaining()
        if remaining is not None:
            timeout_s = max(0.001, min(timeout_s, remaining))
        try:
            result = await self._collector.send_command(
                request.node_id, request.cmd, request.args_json, request.command_id, timeout_s
            )
        except EdgeNodeError as exc:
            await _abort(context, exc)
            raise AssertionError("unreachable: abort raises") from exc
        return _result_to_pb(result)


class _BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses every call without ``authorization: Bearer <token>`` (UNAUTHENTICATED),
    except health checks, which load balancers make without credentials."""

    _EXEMPT = ("/grpc.health.v1.Health/",)

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def _authorized(self, metadata: Sequence[tuple[str, Any]] | None) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(given, self._expected)
        return False

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(self._EXEMPT):
            return handler
        if self._authorized(details.invocation_metadata):
            return handler
        return _refusing_handler(handler, Unauthenticated("missing or wrong bearer token"))


def _refusing_handler(handler: Any, exc: EdgeNodeError) -> Any:
    """A handler of the same shape as ``handler`` that aborts with ``exc``."""

    async def refuse(request: Any, context: Any) -> None:
        await _abort(context, exc)

    async def refuse_stream(requests: AsyncIterator[Any], context: Any) -> None:
        # Let the client's first message (a node's Hello) land first: a grpc.aio client
        # whose write races with the end of the call reports INTERNAL ("Failed
        # execute_batch") instead of the status we send.
        with contextlib.suppress(StopAsyncIteration, TimeoutError):
            await asyncio.wait_for(anext(aiter(requests)), REFUSE_READ_TIMEOUT_S)
        await _abort(context, exc)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse_stream, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
    return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)


async def serve(
    listen: str,
    db_path: str | Path,
    token: str | None = None,
    tls: TlsFiles | None = None,
    *,
    synchronous: str = "FULL",
) -> Collector:
    """Start a collector on ``listen`` (HOST:PORT, port 0 = any free port) storing in
    the SQLite file ``db_path``; returns it started. ``await collector.stop()`` ends it."""
    collector = Collector(
        listen, CollectorStore(db_path, synchronous=synchronous), token=token, tls=tls
    )
    await collector.start()
    return collector


# ---------------------------------------------------------------------------
# Client for cloud services and the CLI.
# ---------------------------------------------------------------------------

UNARY_DEADLINE_S = 10.0  # ListNodes
QUERY_DEADLINE_S = 60.0  # a whole QuerySummaries stream


class CollectorCallError(EdgeNodeError):
    """A call to the collector failed; ``code`` is the gRPC status code's name."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{details} ({code})")
        self.code = code
        self.details = details


class CollectorClient:
    """``Collector`` API client on grpc.aio; every call has a deadline."""

    def __init__(
        self, target: str, *, token: str | None = None, tls: TlsFiles | None = None
    ) -> None:
        self.target = target
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        if tls is None:
            self._channel = grpc.aio.insecure_channel(target, options=CLIENT_KEEPALIVE_OPTIONS)
        else:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read_bytes(tls.client_ca_file) if tls.client_ca_file else None,
                private_key=_read_bytes(tls.key_file) if tls.key_file else None,
                certificate_chain=_read_bytes(tls.cert_file) if tls.cert_file else None,
            )
            self._channel = grpc.aio.secure_channel(target, creds, options=CLIENT_KEEPALIVE_OPTIONS)
        self._stub = _collector_stub(self._channel)

    async def __aenter__(self) -> CollectorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def list_nodes(self, timeout_s: float = UNARY_DEADLINE_S) -> list[NodeInfo]:
        try:
            resp = await self._stub.ListNodes(
                pb.ListNodesRequest(), timeout=timeout_s, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise _call_error(exc) from None
        return [_node_from_pb(n) for n in resp.nodes]

    async def query_summaries(
        self,
        node_id: str = "",
        since_ms: int = 0,
        until_ms: int = 0,
        limit: int = 0,
        timeout_s: float = QUERY_DEADLINE_S,
    ) -> AsyncIterator[StoredSummary]:
        request = pb.QuerySummariesRequest(
            node_id=node_id, since_unix_ms=since_ms, until_unix_ms=until_ms, limit=limit
        )
        call = self._stub.QuerySummaries(request, timeout=timeout_s, metadata=self._metadata)
        try:
            async for record in call:
                yield _stored_from_pb(record)
        except grpc.aio.AioRpcError as exc:
            raise _call_error(exc) from None
        finally:
            call.cancel()

    async def send_command(
        self,
        node_id: str,
        cmd: str,
        args_json: str = "",
        command_id: str = "",
        timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
    ) -> CommandResult:
        """The node's answer; the call's deadline is the command timeout plus a margin
        so the collector's DEADLINE_EXCEEDED (with its explanation) arrives first."""
        request = pb.SendCommandRequest(
            node_id=node_id,
            cmd=cmd,
            args_json=args_json,
            command_id=command_id,
            timeout_ms=max(1, round(timeout_s * 1000)),
        )
        try:
            resp = await self._stub.SendCommand(
                request, timeout=timeout_s + 5.0, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise _call_error(exc) from None
        return _result_record_from_pb(resp)


def _call_error(exc: Any) -> CollectorCallError:
    return CollectorCallError(exc.code().name, exc.details() or "no details")


# ---------------------------------------------------------------------------
# JSON views (the CLI's output; the contract of `edge-node summaries --json`).
# ---------------------------------------------------------------------------


def _unix_s(ms: int) -> int | float:
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def _jsonable(value: Any) -> Any:
    """msgpack data -> something json.dumps takes (bytes as hex, keys as str)."""
    if isinstance(value, dict):
        return {
            (k.hex() if isinstance(k, bytes) else str(k)): _jsonable(v) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def decode_payload(payload: bytes) -> dict[str, Any]:
    """A summary's msgpack payload as a JSON-ready map (``{}`` when empty). Raises
    ProtocolError when it is not a msgpack map."""
    if not payload:
        return {}
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ProtocolError("summary.payload", f"not msgpack: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("summary.payload", f"not a msgpack map: {type(data).__name__}")
    out: dict[str, Any] = _jsonable(data)
    return out


def summary_as_json(s: StoredSummary) -> dict[str, Any]:
    """One line of ``edge-node summaries --json``: ``node``, ``seq``, ``start`` (Unix
    s), ``window_s``, ``empty``, ``received`` (Unix s), ``events`` ({type: {outcome:
    count}}), then the payload's other keys as they are (``payload_error`` when the
    payload cannot be decoded)."""
    out: dict[str, Any] = {
        "node": s.node_id,
        "seq": s.seq,
        "start": _unix_s(s.window_start_unix_ms),
        "window_s": s.window_s,
        "empty": s.empty,
        "received": _unix_s(s.received_unix_ms),
        "events": {},
    }
    try:
        payload = decode_payload(s.payload)
    except ProtocolError as exc:
        out["payload_error"] = exc.reason
        return out
    events = payload.pop("events", {})
    if isinstance(events, dict):
        out["events"] = events
    else:
        out["payload_error"] = f"events is not a map: {events!r}"
    for key, value in payload.items():
        out.setdefault(key, value)
    return out


def result_as_json(r: CommandResult) -> dict[str, Any]:
    """What ``edge-node command`` prints: the node's answer, ``result`` decoded."""
    result: Any = None
    if r.result_json:
        try:
            result = json.loads(r.result_json)
        except json.JSONDecodeError:
            result = r.result_json
    return {
        "node": r.node_id,
        "command_id": r.command_id,
        "ok": r.ok,
        "result": result,
        "error_code": r.error_code,
        "error": r.error,
    }
