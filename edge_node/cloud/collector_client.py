"""A client of the collector's ``Collector`` API, for cloud services and the CLI.

``CollectorClient`` wraps ListNodes, QuerySummaries and SendCommand on grpc.aio with
a deadline on every call and turns failed calls into ``CollectorCallError`` (the
status code's name and the collector's explanation). The JSON views are what
``edge-node summaries --json`` and ``edge-node command`` print (the contract in
ARCHITECTURE.md).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import msgpack

from edge_node.cloud._proto import edge_pb2 as pb
from edge_node.cloud._proto import edge_pb2_grpc as pb_grpc
from edge_node.cloud.collector_records import (
    DEFAULT_COMMAND_TIMEOUT_S,
    MAX_MESSAGE_BYTES,
    CommandResult,
    NodeInfo,
    StoredSummary,
    TlsFiles,
    read_bytes,
)
from edge_node.cloud.collector_wire import node_from_pb, result_record_from_pb, stored_from_pb
from edge_node.errors import EdgeNodeError, ProtocolError

UNARY_DEADLINE_S = 10.0  # ListNodes
QUERY_DEADLINE_S = 60.0  # a whole QuerySummaries stream

# What clients of the collector (nodes, the CLI) should use: pings every 20 s, well
# above the server's 10 s minimum (collector_service.SERVER_OPTIONS).
CLIENT_KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)

_collector_stub: Callable[[Any], Any] = pb_grpc.CollectorStub  # the generated code is untyped


class CollectorCallError(EdgeNodeError):
    """A call to the collector failed; ``code`` is the gRPC status code's name."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{details} ({code})")
        self.code = code
        self.details = details


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    """Client credentials from ``tls``: the collector's CA, and our own certificate
    and key for mTLS when given."""
    return grpc.ssl_channel_credentials(
        root_certificates=read_bytes(tls.client_ca_file) if tls.client_ca_file else None,
        private_key=read_bytes(tls.key_file) if tls.key_file else None,
        certificate_chain=read_bytes(tls.cert_file) if tls.cert_file else None,
    )


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
            self._channel = grpc.aio.secure_channel(
                target, channel_credentials(tls), options=CLIENT_KEEPALIVE_OPTIONS
            )
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
            raise call_error(exc) from None
        return [node_from_pb(n) for n in resp.nodes]

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
                yield stored_from_pb(record)
        except grpc.aio.AioRpcError as exc:
            raise call_error(exc) from None
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
            raise call_error(exc) from None
        return result_record_from_pb(resp)


def call_error(exc: Any) -> CollectorCallError:
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
