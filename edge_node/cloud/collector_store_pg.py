"""The collector's storage in PostgreSQL, for clouds that outgrow one box.

The same contract as the SQLite store (``collector_store.CollectorStore``), the same
machinery (``GroupCommitStore``: one database thread, group commit, health) and the
same statements, written once there in a ``SqlDialect`` (here ``%s`` placeholders,
``GREATEST``, ``ON CONFLICT DO NOTHING``); what is this module's own is the schema,
the connection and the group commit's insert. psycopg 3, synchronously, on the
store's thread:

- the schema is created if missing, in one transaction under an advisory lock, so
  collectors starting together against one database do not race; columns holding ids
  use the "C" collation, so summaries come back in the same order as from SQLite;
- a group commit is one statement, so one transaction and one round trip: every row
  of the batch through ``unnest`` (``ON CONFLICT (node_id, seq) DO NOTHING``) and
  the nodes' acks (``GREATEST``), in two data-modifying CTEs;
- a connection the server dropped (restart, failover, an idle timeout, the network)
  is replaced on the next call, which is then tried once more: every call is
  idempotent (the dedup, ``GREATEST`` on acks, first-result-wins), so a retried
  commit that had in fact landed only counts its rows as duplicates. While the server
  cannot be reached every call fails fast (refused, or ``connect_timeout``; TCP
  keepalives and ``tcp_user_timeout`` end a connection to a vanished host) and the
  store is unhealthy; the health probe reconnects once the server is back;
- at every node's Hello its seq tracker is re-read from the database, so collectors
  sharing one database can hand a node over between them (one stream at a time).

What it must never do: show the DSN's password (``location`` is the DSN without it;
error texts are scrubbed of it), acknowledge before ``COMMIT`` returned (how durable a
commit is, is the server's ``synchronous_commit``: ``on`` unless the DSN or the
server says otherwise), or let one node's bad input fail the database for everyone:
PostgreSQL text cannot hold NUL, so an id with one is refused (``ProtocolError``,
naming the field) before it reaches the server, and free text with one is stored
with U+FFFD in its place (logged).

Not handled: a server that accepts connections but never answers (a hung, e.g.
SIGSTOPped, postgres) blocks the store's thread until it answers again.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Concatenate, Final, ParamSpec, TypeVar
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from edge_node.cloud.collector_errors import StorageError
from edge_node.cloud.collector_records import CommandResult, Hello, SeqGap, StoredSummary
from edge_node.cloud.collector_store import (
    COMMIT_DELAY_S,
    SUMMARY_COLUMNS,
    AckRow,
    GroupCommitStore,
    SqlDialect,
    SummaryRow,
    is_dsn,
)
from edge_node.errors import ProtocolError

log = logging.getLogger(__name__)

# libpq settings used unless the DSN sets them: fail fast when the server is gone
# (a refused connection fails at once; a host that does not answer after
# CONNECT_TIMEOUT_S; an established connection whose peer vanished within ~15 s),
# and name ourselves in pg_stat_activity.
CONNECT_DEFAULTS: Final[dict[str, str]] = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "3",
    "keepalives_count": "3",
    "tcp_user_timeout": "15000",
    "application_name": "edge-node-collector",
}

_SCHEMA_LOCK = 0x6564_6765_6E6F_6465 & 0x7FFF_FFFF_FFFF_FFFF  # "edgenode", an advisory lock id

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    node_id       TEXT COLLATE "C" PRIMARY KEY,
    boot_id       TEXT NOT NULL,
    version       TEXT NOT NULL,
    proto_version BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    acked_seq     BIGINT NOT NULL DEFAULT 0  -- highest contiguous seq accounted for
);
CREATE TABLE IF NOT EXISTS summaries (
    node_id         TEXT COLLATE "C" NOT NULL,
    seq             BIGINT NOT NULL,
    window_start_ms BIGINT NOT NULL,
    window_s        BIGINT NOT NULL,
    payload         BYTEA NOT NULL,
    empty           BOOLEAN NOT NULL,
    received_ms     BIGINT NOT NULL,
    PRIMARY KEY (node_id, seq)
);
CREATE INDEX IF NOT EXISTS summaries_by_start ON summaries (window_start_ms, node_id, seq);
CREATE INDEX IF NOT EXISTS summaries_by_node_start
    ON summaries (node_id, window_start_ms, seq);
CREATE TABLE IF NOT EXISTS command_results (
    node_id     TEXT COLLATE "C" NOT NULL,
    command_id  TEXT COLLATE "C" NOT NULL,
    cmd         TEXT NOT NULL,
    ok          BOOLEAN NOT NULL,
    result_json TEXT NOT NULL,
    error_code  TEXT NOT NULL,
    error       TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (node_id, command_id)
);
-- Seqs a node said were acknowledged before (Hello.acked_through) that this database
-- never held: a fresh or restored database. Not data; the reason the ack moved on.
CREATE TABLE IF NOT EXISTS acked_elsewhere (
    node_id     TEXT COLLATE "C" NOT NULL,
    first_seq   BIGINT NOT NULL,
    last_seq    BIGINT NOT NULL,
    boot_id     TEXT NOT NULL,
    recorded_ms BIGINT NOT NULL,
    PRIMARY KEY (node_id, first_seq)
);
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# A group commit is this one statement, so one transaction and one round trip: every
# row of the batch (arrays, sent in binary) inserted unless its (node_id, seq) is
# stored, and the nodes' acks moved on. WITH ORDINALITY keeps the arrival order, so of
# two copies of one (node, seq) in a batch the first is kept, as with SQLite.
_WRITE_BATCH = f"""
WITH inserted AS (
    INSERT INTO summaries ({SUMMARY_COLUMNS})
    SELECT {SUMMARY_COLUMNS} FROM unnest(
        %b::text[], %b::bigint[], %b::bigint[], %b::bigint[], %b::bytea[], %b::boolean[],
        %b::bigint[]
    ) WITH ORDINALITY AS r({SUMMARY_COLUMNS}, arrival)
    ORDER BY arrival
    ON CONFLICT (node_id, seq) DO NOTHING
    RETURNING 1
), acked AS (
    UPDATE nodes AS n
    SET acked_seq = GREATEST(n.acked_seq, v.acked_seq),
        last_seen_ms = GREATEST(n.last_seen_ms, v.last_seen_ms)
    FROM unnest(%b::text[], %b::bigint[], %b::bigint[]) AS v(node_id, acked_seq, last_seen_ms)
    WHERE n.node_id = v.node_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM acked)
"""

# _WRITE_BATCH's array parameters: one per summary column, then one per field of an
# AckRow (node_id, acked_seq, last_seen_ms).
_SUMMARY_WIDTH = len(SUMMARY_COLUMNS.split(","))
_ACK_WIDTH = 3

_S = TypeVar("_S", bound="PgCollectorStore")
_P = ParamSpec("_P")
_T = TypeVar("_T")

_URI_PASSWORD = re.compile(r"(://[^:/@?#\s]*:)[^@\s]*@")
_PARAM_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for logs and errors: ``postgresql://user@host:port/db``
    (other parameters left out), or the text with anything like a password masked when
    it does not parse."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return _mask(dsn)
    user = params.get("user")
    host = str(params.get("host") or "")
    port = params.get("port")
    where = "" if host.startswith("/") else host
    text = "postgresql://"
    text += f"{quote(str(user), safe='')}@" if user else ""
    text += where + (f":{port}" if port else "")
    text += "/" + quote(str(params.get("dbname") or ""), safe="")
    if host.startswith("/"):
        text += f"?host={host}"
    return text


def _mask(text: str) -> str:
    text = _URI_PASSWORD.sub(r"\1***@", text)
    return _PARAM_PASSWORD.sub(r"\1***", text)


def _reconnecting(
    method: Callable[Concatenate[_S, _P], _T],
) -> Callable[Concatenate[_S, _P], _T]:
    """A database call (thread) that survives the loss of an open connection: the
    call is tried once more on a fresh one. Every call is idempotent. Any psycopg
    error leaves with its text scrubbed of the password."""

    def call(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            had_connection = self._connected()
            try:
                return method(self, *args, **kwargs)
            except psycopg.OperationalError:
                if not had_connection or self._connected():
                    raise  # the server answered with an error, or never was reached
                log.warning(
                    "collector: lost the PostgreSQL connection; reconnecting",
                    extra={"db": self.location},
                )
                return method(self, *args, **kwargs)
        except psycopg.Error as exc:
            raise self._scrubbed(exc) from None

    functools.update_wrapper(call, method)
    return call


class PgCollectorStore(GroupCommitStore):
    """Summaries, nodes, command results and seq gaps in PostgreSQL.

    ``dsn``: a ``postgresql://`` URI (libpq's rules: ``PGPASSWORD``, ``PGPASSFILE``
    and ``~/.pgpass`` supply a password the URI leaves out; ``sslmode`` & co. as
    query parameters). Never kept in a public attribute; ``location`` is safe to show.
    """

    db_errors = (psycopg.Error, OSError)
    sql = SqlDialect(param="%s", greatest="GREATEST", or_ignore=False)
    _log = log

    def __init__(self, dsn: str, *, commit_delay_s: float = COMMIT_DELAY_S) -> None:
        if not is_dsn(dsn):
            raise ValueError(f"db: not a PostgreSQL DSN (postgresql://...): {_mask(dsn)!r}")
        try:
            params = {str(k): str(v) for k, v in conninfo_to_dict(dsn).items()}
        except psycopg.Error as exc:
            reason = _mask(str(exc)).strip().splitlines()[0]
            raise ValueError(f"db: cannot parse the PostgreSQL DSN: {reason}") from None
        super().__init__(redact_dsn(dsn), commit_delay_s=commit_delay_s)
        password = params.get("password", "")
        self._secrets = sorted({password, quote(password, safe="")} - {""}, key=len, reverse=True)
        self._conninfo = make_conninfo("", **{**CONNECT_DEFAULTS, **params})
        self.reconnects = 0  # connections made after the first
        self._conn: psycopg.Connection[TupleRow] | None = None  # the store's thread only
        self._ever_connected = False

    def __repr__(self) -> str:
        return f"PgCollectorStore({self.location!r})"

    # -- connection (thread) --------------------------------------------------------

    def _connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def _db(self) -> psycopg.Connection[TupleRow]:
        """The open connection, or a new one (schema ensured, trackers re-read)."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._executor is None:
            raise StorageError("the store is not open")
        self._conn = None
        conn = psycopg.connect(self._conninfo, autocommit=True)
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        if self._ever_connected:
            self.reconnects += 1
            log.warning("collector: connected to PostgreSQL again", extra={"db": self.location})
        self._ever_connected = True
        # What the database says wins over what this process remembers (a failover
        # may have lost the last commits; another collector may have stored more).
        self._trackers.clear()
        self._conn = conn
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor[TupleRow]]:
        conn = self._db()
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    def _scrubbed(self, exc: psycopg.Error) -> psycopg.Error:
        text = str(exc)
        clean = _mask(text)
        for secret in self._secrets:
            clean = clean.replace(secret, "***")
        if clean == text:
            return exc
        scrubbed = type(exc)(clean)
        scrubbed.__traceback__ = exc.__traceback__
        return scrubbed

    def _open_db(self) -> None:
        self._db()

    def _close_db(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @_reconnecting
    def _probe(self, now_ms: int) -> None:
        self._db().execute(
            "INSERT INTO store_meta (key, value) VALUES ('probed_ms', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(now_ms),),
        )

    # -- the shared database calls (thread) ------------------------------------------
    # Written once in GroupCommitStore, in this store's dialect (``sql``); each is
    # tried once more on a fresh connection when the server dropped this one.

    _write_batch = _reconnecting(GroupCommitStore._write_batch)
    _query_page = _reconnecting(GroupCommitStore._query_page)
    _acked_elsewhere = _reconnecting(GroupCommitStore._acked_elsewhere)
    _list_nodes = _reconnecting(GroupCommitStore._list_nodes)
    _add_command_result = _reconnecting(GroupCommitStore._add_command_result)
    _command_result = _reconnecting(GroupCommitStore._command_result)

    @_reconnecting
    def _note_hello(self, hello: Hello, now_ms: int) -> int:
        self._trackers.pop(hello.node_id, None)  # re-read: another collector may have stored
        return super()._note_hello(hello, now_ms)

    def _insert_batch(self, rows: list[SummaryRow], acks: list[AckRow]) -> int:
        params = (*_columns(rows, _SUMMARY_WIDTH), *_columns(acks, _ACK_WIDTH))
        counts = self._db().execute(_WRITE_BATCH, params).fetchone()
        return int(counts[0]) if counts else 0

    # -- refusing what PostgreSQL text cannot hold (loop) ----------------------------

    async def query_summaries(
        self,
        node_id: str = "",
        since_ms: int = 0,
        until_ms: int = 0,
        limit: int = 0,
    ) -> AsyncIterator[StoredSummary]:
        if "\x00" in node_id:
            return  # no stored node id holds one
        async for row in super().query_summaries(node_id, since_ms, until_ms, limit):
            yield row

    async def note_hello(self, hello: Hello, now_ms: int) -> int:
        for field, value in (
            ("hello.node_id", hello.node_id),
            ("hello.boot_id", hello.boot_id),
            ("hello.version", hello.version),
        ):
            _refuse_nul(field, value)
        return await super().note_hello(hello, now_ms)

    async def acked_elsewhere(self, node_id: str) -> list[SeqGap]:
        if "\x00" in node_id:
            return []
        return await super().acked_elsewhere(node_id)

    async def add_command_result(
        self, result: CommandResult, cmd: str, now_ms: int
    ) -> CommandResult:
        _refuse_nul("command_result.command_id", result.command_id)
        texts = (cmd, result.result_json, result.error_code, result.error)
        if any("\x00" in t for t in texts):
            log.warning(
                "collector: a command result holds NUL characters, which PostgreSQL text "
                "cannot: stored with U+FFFD in their place",
                extra={"node": result.node_id, "command_id": result.command_id},
            )
            cmd, result_json, error_code, error = (t.replace("\x00", "\ufffd") for t in texts)
            result = CommandResult(
                result.node_id, result.command_id, result.ok, result_json, error_code, error
            )
        return await super().add_command_result(result, cmd, now_ms)

    async def command_result(self, node_id: str, command_id: str) -> CommandResult | None:
        _refuse_nul("command_id", command_id)
        if "\x00" in node_id:
            return None
        return await super().command_result(node_id, command_id)


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as ``width`` columns, one array parameter each (empty arrays for no rows)."""
    return [[row[i] for row in rows] for i in range(width)]


def _refuse_nul(field: str, value: str) -> None:
    if "\x00" in value:
        raise ProtocolError(field, "contains a NUL character (PostgreSQL text cannot hold one)")
