"""The reference collector itself: node sessions, command routing, the gRPC server.

``Collector`` owns the open node sessions, the commands awaiting an answer and the
grpc.aio server (our two services, health checking and reflection); the store
(``collector_store``: SQLite; ``collector_store_pg``: PostgreSQL) owns the data, the
servicers (``collector_servicers``) only translate. ``serve()`` builds and starts one;
``open_store()`` picks the store from what ``db`` is.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from edge_node.cloud._proto import edge_pb2_grpc as pb_grpc
from edge_node.cloud.collector_errors import (
    CollectorError,
    CollectorStopping,
    CommandTimedOut,
    NodeNotConnected,
    StreamReplaced,
    UnsupportedProtoVersion,
)
from edge_node.cloud.collector_health import PROBE_INTERVAL_S, StoreHealth, add_reflection
from edge_node.cloud.collector_records import (
    DEFAULT_COMMAND_TIMEOUT_S,
    MAX_COMMAND_TIMEOUT_S,
    MAX_ID_CHARS,
    MAX_MESSAGE_BYTES,
    MAX_SEQ,
    PROTO_VERSION,
    CollectorStats,
    Command,
    CommandResult,
    Hello,
    NodeInfo,
    PlatformEvent,
    TlsFiles,
    WindowSummary,
    read_bytes,
)
from edge_node.cloud.collector_servicers import (
    BearerTokenInterceptor,
    CollectorServicer,
    EdgeLinkServicer,
)
from edge_node.cloud.collector_session import NodeSession
from edge_node.cloud.collector_store import (
    BUSY_TIMEOUT_MS,
    COMMIT_DELAY_S,
    CollectorStore,
    GroupCommitStore,
    is_dsn,
    retrieve_exception,
)
from edge_node.cloud.collector_wire import COLLECTOR_SERVICE, EDGE_LINK_SERVICE
from edge_node.errors import ProtocolError
from edge_node.interaction.messages import json_object

log = logging.getLogger(__name__)

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

# The generated grpc module is untyped: these typed names are the one place that says
# what its functions take.
_add_edge_link_servicer: Callable[[Any, Any], None] = pb_grpc.add_EdgeLinkServicer_to_server
_add_collector_servicer: Callable[[Any, Any], None] = pb_grpc.add_CollectorServicer_to_server


@dataclass(slots=True)
class _PendingCommand:
    future: asyncio.Future[CommandResult]
    session: NodeSession
    cmd: str
    waiters: int = 0


class Collector:
    """The reference collector. ``start()`` opens the store and serves;
    ``stop()`` ends every stream (UNAVAILABLE, so nodes reconnect), stops the server
    and closes the store."""

    def __init__(
        self,
        listen: str,
        store: GroupCommitStore,
        *,
        token: str | None = None,
        tls: TlsFiles | None = None,
        clock: Callable[[], float] = time.time,
        health_probe_s: float = PROBE_INTERVAL_S,
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
        self._health = StoreHealth(
            store,
            (EDGE_LINK_SERVICE, COLLECTOR_SERVICE),
            probe_interval_s=health_probe_s,
            clock_ms=self.now_ms,
        )

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
        interceptors = [BearerTokenInterceptor(self.token)] if self.token else []
        server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
        _add_edge_link_servicer(EdgeLinkServicer(self), server)
        _add_collector_servicer(CollectorServicer(self), server)
        self._health.add_to(server)
        add_reflection(server, (EDGE_LINK_SERVICE, COLLECTOR_SERVICE))
        try:
            if self.tls is None:
                self.port = server.add_insecure_port(self.listen)
            else:
                self.port = server.add_secure_port(self.listen, await self._server_credentials())
        except RuntimeError as exc:  # grpc: "Failed to bind to address ..."
            raise CollectorError(f"cannot listen on {self.listen}: {exc}") from exc
        await self._health.start()
        try:
            await server.start()
        except BaseException:
            await self._health.stop()
            raise
        self._server = server
        self.health_served = self.reflection_served = True
        log.info(
            "collector listening",
            extra={"address": self.address, "db": self.store.location, "tls": bool(self.tls)},
        )

    async def _server_credentials(self) -> Any:
        assert self.tls is not None
        tls = self.tls
        try:
            cert = await asyncio.to_thread(read_bytes, tls.cert_file)
            key = await asyncio.to_thread(read_bytes, tls.key_file)
            ca = (
                await asyncio.to_thread(read_bytes, tls.client_ca_file)
                if tls.client_ca_file
                else None
            )
        except OSError as exc:
            raise CollectorError(f"cannot read the TLS files: {exc}") from exc
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )

    async def stop(self, grace_s: float = 2.0) -> None:
        if self._server is None:
            return
        await self._health.stop()
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
        if not 0 <= hello.acked_through <= MAX_SEQ:
            raise ProtocolError("hello.acked_through", f"must be 0..{MAX_SEQ}")
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
        args_json = check_command(node_id, cmd, args_json, command_id, timeout_s)
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
            future.add_done_callback(retrieve_exception)
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


def check_command(node_id: str, cmd: str, args_json: str, command_id: str, timeout_s: float) -> str:
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
        json_object(args_json, "args_json")
    except ValueError as exc:
        raise ProtocolError("args_json", str(exc).removeprefix("args_json: ")) from None
    return args_json


def open_store(
    db: str | Path,
    *,
    synchronous: str = "FULL",
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    commit_delay_s: float = COMMIT_DELAY_S,
) -> GroupCommitStore:
    """The store for ``db`` (not opened yet): PostgreSQL for a ``postgresql://`` or
    ``postgres://`` DSN (psycopg 3, the ``collector-pg`` extra), else the SQLite file
    ``db`` (``synchronous`` and ``busy_timeout_ms`` are SQLite's). A DSN that does not
    parse, or psycopg missing, is a CollectorError that never shows the password."""
    if not is_dsn(db):
        return CollectorStore(
            db,
            synchronous=synchronous,
            busy_timeout_ms=busy_timeout_ms,
            commit_delay_s=commit_delay_s,
        )
    try:
        from edge_node.cloud.collector_store_pg import PgCollectorStore
    except ImportError as exc:
        raise CollectorError(
            f"storing in PostgreSQL needs psycopg 3 ({exc}): pip install 'edge-node[collector-pg]'"
        ) from None
    try:
        return PgCollectorStore(str(db), commit_delay_s=commit_delay_s)
    except ValueError as exc:
        raise CollectorError(str(exc)) from None


async def serve(
    listen: str,
    db: str | Path,
    token: str | None = None,
    tls: TlsFiles | None = None,
    *,
    synchronous: str = "FULL",
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    commit_delay_s: float = COMMIT_DELAY_S,
    health_probe_s: float = PROBE_INTERVAL_S,
) -> Collector:
    """Start a collector on ``listen`` (HOST:PORT, port 0 = any free port) storing in
    ``db``: a SQLite file, or PostgreSQL given a ``postgresql://`` DSN (``open_store``);
    returns it started. ``await collector.stop()`` ends it."""
    store = open_store(
        db,
        synchronous=synchronous,
        busy_timeout_ms=busy_timeout_ms,
        commit_delay_s=commit_delay_s,
    )
    collector = Collector(listen, store, token=token, tls=tls, health_probe_s=health_probe_s)
    await collector.start()
    return collector
