"""The collector's gRPC servicers: translate, delegate to ``Collector``, map errors.

``EdgeLinkServicer.Sync`` reads a node's messages in one task and writes what the
node's session has for it (acks, commands, platform events); ``CollectorServicer``
is the API for other cloud services; ``BearerTokenInterceptor`` refuses calls
without the token. Nothing here holds state of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from edge_node.cloud._proto import edge_pb2 as pb
from edge_node.cloud._proto import edge_pb2_grpc as pb_grpc
from edge_node.cloud.collector_errors import CollectorError, Unauthenticated, status_of
from edge_node.cloud.collector_records import DEFAULT_COMMAND_TIMEOUT_S, MAX_COMMAND_TIMEOUT_S
from edge_node.cloud.collector_session import NodeSession
from edge_node.cloud.collector_wire import (
    hello_from_pb,
    node_to_pb,
    outgoing_to_pb,
    result_from_pb,
    result_to_pb,
    stored_to_pb,
    summary_from_pb,
)
from edge_node.errors import EdgeNodeError, ProtocolError

if TYPE_CHECKING:
    from edge_node.cloud.collector_service import Collector

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0  # a stream that says nothing for this long is dropped
REFUSE_READ_TIMEOUT_S = 1.0  # how long a refused stream may take to send its first message


async def abort(context: Any, exc: EdgeNodeError) -> None:
    await context.abort(status_of(exc), str(exc))


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
            await abort(context, ProtocolError("hello", f"none within {HELLO_TIMEOUT_S:g} s"))
            return
        if first is None or first.WhichOneof("kind") != "hello":
            await abort(context, ProtocolError("hello", "the first message must be Hello"))
            return
        try:
            session = await self._collector.open_session(hello_from_pb(first.hello))
        except EdgeNodeError as exc:
            await abort(context, exc)
            return
        reader = asyncio.create_task(self._read(session, requests), name="sync-reader")
        reader.add_done_callback(functools.partial(_reader_done, session, context))
        try:
            async for item in session.outgoing():
                yield outgoing_to_pb(item)
            if session.error is not None:
                await abort(context, session.error)
        finally:
            reader.cancel()
            self._collector.close_session(session)

    async def _read(self, session: NodeSession, requests: AsyncIterator[pb.NodeMessage]) -> None:
        collector = self._collector
        try:
            async for msg in requests:
                kind = msg.WhichOneof("kind")
                if kind == "summary":
                    await collector.summary_received(session, summary_from_pb(msg.summary))
                elif kind == "command_result":
                    result = result_from_pb(session.node_id, msg.command_result)
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
            await abort(context, exc)
            raise AssertionError("unreachable: abort raises") from exc
        return pb.ListNodesResponse(nodes=[node_to_pb(n) for n in nodes])

    async def QuerySummaries(
        self, request: pb.QuerySummariesRequest, context: Any
    ) -> AsyncIterator[pb.SummaryRecord]:
        if request.until_unix_ms and request.until_unix_ms <= request.since_unix_ms:
            await abort(context, ProtocolError("until_unix_ms", "must be after since_unix_ms"))
            return
        rows = self._collector.store.query_summaries(
            request.node_id, request.since_unix_ms, request.until_unix_ms, request.limit
        )
        try:
            async for s in rows:
                yield stored_to_pb(s)
        except EdgeNodeError as exc:
            await abort(context, exc)

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
            await abort(context, exc)
            raise AssertionError("unreachable: abort raises") from exc
        return result_to_pb(result)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
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
        await abort(context, exc)

    async def refuse_stream(requests: AsyncIterator[Any], context: Any) -> None:
        # Let the client's first message (a node's Hello) land first: a grpc.aio client
        # whose write races with the end of the call reports INTERNAL ("Failed
        # execute_batch") instead of the status we send.
        with contextlib.suppress(StopAsyncIteration, TimeoutError):
            await asyncio.wait_for(anext(aiter(requests)), REFUSE_READ_TIMEOUT_S)
        await abort(context, exc)

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
