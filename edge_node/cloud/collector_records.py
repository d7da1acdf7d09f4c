"""The collector's side of the wire as frozen dataclasses, and its shared limits.

Everything behind the servicers (store, sessions, commands) and in front of the
client (the CLI) works on these; protobuf is translated in ``collector_wire`` only.
This module holds no logic and imports neither grpc nor protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass

PROTO_VERSION = 1  # Hello.proto_version this collector speaks
MAX_ID_CHARS = 128  # node ids and command ids
MAX_SEQ = 2**63 - 1  # SQLite INTEGER is signed 64-bit
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_COMMAND_TIMEOUT_S = 10.0
MAX_COMMAND_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class Hello:
    """``acked_through``: every seq up to it was acknowledged by some collector and has
    left the node's spool (0 from nodes that predate the field)."""

    node_id: str
    boot_id: str
    version: str
    proto_version: int
    acked_through: int = 0


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
    """``acked_elsewhere``: how many of the node's seqs this collector never stored
    because the node said they had been acknowledged before (see ``SeqGap``)."""

    node_id: str
    boot_id: str
    version: str
    last_seen_unix_ms: int
    connected: bool
    highest_contiguous_seq: int
    acked_elsewhere: int = 0


@dataclass(frozen=True, slots=True)
class SeqGap:
    """Seqs ``first..last`` of a node that this collector does not hold and will never
    get: the node's Hello said they were acknowledged already (by this collector
    before it lost its database, or by another one). Recorded, never filled in."""

    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


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


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()
