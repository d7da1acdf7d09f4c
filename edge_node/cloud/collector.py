"""The reference cloud collector: a grpc.aio server that nodes dial into.

It speaks both services of ``proto/edge_node/v1/edge.proto``:

- ``EdgeLink.Sync`` for nodes: a Hello first, then summaries (stored once per
  (node id, seq), answered with the highest *contiguous* seq accounted for) and
  command results; acks, commands and platform events go back on the same stream.
- ``Collector`` for other cloud services: list nodes, query summaries by node and
  time, send a command to a connected node and await its result (idempotent by
  command id).

plus gRPC health checking (SERVING while the database works, NOT_SERVING when it
fails) and server reflection.

This module is the front door: it re-exports the names cloud services, the CLI and
the app use. The collector lives in modules named after what they do:

- ``collector_records``: the frozen dataclasses everything behind the servicers
  works on, and the shared limits;
- ``collector_errors``: the error hierarchy and its one mapping to status codes;
- ``collector_seqs``: the highest contiguous seq per node (sans-I/O);
- ``collector_store``: the store's machinery (one thread, group commit, health)
  and the SQLite (WAL) store;
- ``collector_store_pg``: the PostgreSQL store, for a ``postgresql://`` DSN
  (psycopg 3, the ``collector-pg`` extra; imported only then);
- ``collector_session``: one node's open stream (bounded queues both ways);
- ``collector_service``: ``Collector`` (sessions, commands, the server), ``serve``
  and ``open_store`` (SQLite for a file, PostgreSQL for a DSN);
- ``collector_servicers``: the gRPC servicers and the bearer-token interceptor;
- ``collector_health``: health checking from the store's state, reflection;
- ``collector_wire``: protobuf <-> dataclasses, the only module that knows both;
- ``collector_client``: ``CollectorClient`` and the CLI's JSON views.

What it must never do: block the event loop (every database call runs on the store's
thread), acknowledge a summary before its transaction is committed, buffer without
bound (bounded in-flight summaries and queued commands per stream), or invent data
(seqs a node says were acknowledged before this database are recorded as a gap).
Optional: a bearer token (``UNAUTHENTICATED`` otherwise; health checks exempt), TLS,
and mTLS when a client CA is given.
"""

from __future__ import annotations

from edge_node.cloud.collector_client import (
    CLIENT_KEEPALIVE_OPTIONS,
    QUERY_DEADLINE_S,
    UNARY_DEADLINE_S,
    CollectorCallError,
    CollectorClient,
    decode_payload,
    result_as_json,
    summary_as_json,
)
from edge_node.cloud.collector_errors import (
    CollectorError,
    CollectorStopping,
    CommandTimedOut,
    NodeBusy,
    NodeNotConnected,
    StorageError,
    StreamReplaced,
    Unauthenticated,
    UnsupportedProtoVersion,
    status_of,
)
from edge_node.cloud.collector_health import HEALTH_SERVICE, REFLECTION_SERVICE, StoreHealth
from edge_node.cloud.collector_records import (
    DEFAULT_COMMAND_TIMEOUT_S,
    MAX_COMMAND_TIMEOUT_S,
    MAX_ID_CHARS,
    MAX_SEQ,
    PROTO_VERSION,
    Ack,
    CollectorStats,
    Command,
    CommandResult,
    Hello,
    NodeInfo,
    PlatformEvent,
    SeqGap,
    StoredSummary,
    TlsFiles,
    WindowSummary,
)
from edge_node.cloud.collector_seqs import ContiguousSeqs
from edge_node.cloud.collector_service import SERVER_OPTIONS, Collector, open_store, serve
from edge_node.cloud.collector_session import NodeSession
from edge_node.cloud.collector_store import CollectorStore, GroupCommitStore, is_dsn
from edge_node.cloud.collector_wire import COLLECTOR_SERVICE, EDGE_LINK_SERVICE

__all__ = [
    "CLIENT_KEEPALIVE_OPTIONS",
    "COLLECTOR_SERVICE",
    "DEFAULT_COMMAND_TIMEOUT_S",
    "EDGE_LINK_SERVICE",
    "HEALTH_SERVICE",
    "MAX_COMMAND_TIMEOUT_S",
    "MAX_ID_CHARS",
    "MAX_SEQ",
    "PROTO_VERSION",
    "QUERY_DEADLINE_S",
    "REFLECTION_SERVICE",
    "SERVER_OPTIONS",
    "UNARY_DEADLINE_S",
    "Ack",
    "Collector",
    "CollectorCallError",
    "CollectorClient",
    "CollectorError",
    "CollectorStats",
    "CollectorStopping",
    "CollectorStore",
    "Command",
    "CommandResult",
    "CommandTimedOut",
    "ContiguousSeqs",
    "GroupCommitStore",
    "Hello",
    "NodeBusy",
    "NodeInfo",
    "NodeNotConnected",
    "NodeSession",
    "PlatformEvent",
    "SeqGap",
    "StorageError",
    "StoreHealth",
    "StoredSummary",
    "StreamReplaced",
    "TlsFiles",
    "Unauthenticated",
    "UnsupportedProtoVersion",
    "WindowSummary",
    "decode_payload",
    "is_dsn",
    "open_store",
    "result_as_json",
    "serve",
    "status_of",
    "summary_as_json",
]
