"""The node's link to the cloud: one bidirectional gRPC stream, dialled out.

Sends Hello, then every stored summary in seq order (a bounded window in flight),
and the results of commands; receives acks (the collector's highest contiguous seq
stored, which lets the spool forget), commands (applied through the same engine API
as the operator's, answered once per command id) and platform events (comments and
gifts the platform relays, entered as the `platform` role).

Reconnects with the project's jittered backoff; a watchdog rebuilds the channel when
acks stop while summaries wait (grpcio has had reconnect bugs); keepalive pings at a
rate the collector accepts; a deadline on every call; TLS, mTLS and a bearer token
as configured. Protobuf stays at this module's edge: the rest of the node sees
dicts and our own records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import msgpack

from edge_node import __version__
from edge_node.backoff import Backoff
from edge_node.cloud._proto import edge_pb2, edge_pb2_grpc
from edge_node.cloud.spool_state import Record, SpoolStats
from edge_node.config import CloudConfig
from edge_node.errors import ProtocolError
from edge_node.interaction.messages import json_object
from edge_node.metrics import Registry

log = logging.getLogger(__name__)

PROTO_VERSION = 1
IN_FLIGHT = 256  # summaries sent and not yet acked, at most
ACK_WATCHDOG_S = 15.0  # summaries waiting and no ack for this long: rebuild the channel
COMMANDS_REMEMBERED = 1000  # command ids answered, for idempotent retries
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's connection backoff, capped low for a live show.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    # A rebuilt channel must open a new connection: with gRPC's global subchannel
    # pool it would reuse the old one, which is exactly what the watchdog gave up on
    # (found by the fault proxy: a black-holed connection was never replaced).
    ("grpc.use_local_subchannel_pool", 1),
]


class SpoolLike(Protocol):
    def next_batch(self, limit: int) -> list[Record]: ...
    async def wait_sendable(self) -> None: ...
    def ack(self, highest_contiguous_seq: int) -> None: ...
    def on_reconnect(self) -> None: ...
    def stats(self) -> SpoolStats: ...


# Applies a command: (cmd, args) -> result map, raising an exception with `.code`
# and `.msg` (CommandError) for a refusal.
ApplyCommand = Callable[[str, dict[str, Any]], dict[str, Any]]
# Enters a platform event: (type, user, payload) -> None.
PlatformEventSink = Callable[[str, str, dict[str, Any]], None]


def _credentials(cfg: CloudConfig) -> grpc.ChannelCredentials | None:
    if not cfg.tls:
        return None
    root = Path(cfg.tls_ca).read_bytes() if cfg.tls_ca else None
    key = Path(cfg.tls_key).read_bytes() if cfg.tls_key else None
    cert = Path(cfg.tls_cert).read_bytes() if cfg.tls_cert else None
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=key, certificate_chain=cert
    )


class CloudLink:
    def __init__(
        self,
        cfg: CloudConfig,
        node_id: str,
        spool: SpoolLike,
        registry: Registry,
        apply_command: ApplyCommand,
        platform_event: PlatformEventSink,
        backoff: Backoff,
    ) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self.boot_id = uuid.uuid4().hex
        self._spool = spool
        self._apply = apply_command
        self._platform = platform_event
        self._backoff = backoff
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._answered: OrderedDict[str, edge_pb2.CommandResult] = OrderedDict()
        self._results: asyncio.Queue[edge_pb2.CommandResult] = asyncio.Queue(1000)
        # Numbers the streams: a stream's request generator stops taking results and
        # summaries once its stream is over (grpc.aio keeps iterating it after the call
        # ended until a write fails, which would lose what it took).
        self._stream_no = 0
        self.connected = False
        self.last_ack_at = 0.0
        self.acked_seq = 0
        self.sent_seq = 0
        self.last_error: str | None = None
        self.problem: str | None = None  # FailureKind of the last failure, None when up
        registry.gauge(
            "edge_node_cloud_connected",
            "1 while the cloud stream is up.",
            read=lambda: 1.0 if self.connected else 0.0,
        )
        registry.gauge(
            "edge_node_cloud_unacked",
            "Summaries sent and not yet acked.",
            read=lambda: float(max(0, self.sent_seq - self.acked_seq)),
        )
        registry.gauge(
            "edge_node_cloud_ack_age_seconds",
            "Seconds since the last ack.",
            read=lambda: time.monotonic() - self.last_ack_at if self.last_ack_at else 0.0,
        )
        self.c_connects = registry.counter(
            "edge_node_cloud_connects_total",
            "Cloud stream attempts, by outcome: ok, or what went wrong (unreachable, "
            "tls_verify_failed, tls_refused, tls_handshake_failed, unauthenticated, ...).",
        )
        self.c_commands = registry.counter(
            "edge_node_cloud_commands_total", "Commands from the cloud, by outcome."
        )

    def status(self) -> dict[str, Any]:
        return {
            "target": self.cfg.target,
            "connected": self.connected,
            "acked_seq": self.acked_seq,
            "sent_seq": self.sent_seq,
            "spool_depth": self._spool.stats().depth,
            "last_error": self.last_error,
            "problem": self.problem,
        }

    def wake(self) -> None:
        """New summaries are stored: send them."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cloud-link")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (grpc.aio.AioRpcError, OSError, TimeoutError, ProtocolError) as exc:
                # ProtocolError: the collector sent nonsense (an absurd ack): reconnect.
                self._failed(exc)
            except Exception as exc:  # our own bug: say so loudly, keep the link alive
                log.exception("cloud link failed unexpectedly")
                self._failed(exc)
            finally:
                self.connected = False
            if time.monotonic() - started > 30:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            log.warning(
                "cloud link down (%s); retrying in %.1f s",
                self.last_error,
                delay,
                extra={"target": self.cfg.target, "problem": self.problem},
            )
            await asyncio.sleep(delay)

    def _failed(self, exc: BaseException) -> None:
        problem = explain_failure(exc, self.cfg)
        self.problem = problem.kind
        self.last_error = f"{problem.reason} ({_describe(exc)})"
        self.c_connects.inc(outcome=problem.kind)

    async def _session(self) -> None:
        options = KEEPALIVE_OPTIONS
        creds = _credentials(self.cfg)
        channel = (
            grpc.aio.secure_channel(self.cfg.target, creds, options=options)
            if creds is not None
            else grpc.aio.insecure_channel(self.cfg.target, options=options)
        )
        metadata = (("authorization", f"Bearer {self.cfg.token}"),) if self.cfg.token else ()
        async with channel:
            stub = edge_pb2_grpc.EdgeLinkStub(channel)  # type: ignore[no-untyped-call]
            self._spool.on_reconnect()
            self.sent_seq = self.acked_seq
            self._stream_no += 1
            # No channel_ready() first: a connection or handshake that fails makes the
            # call itself fail at once, with gRPC's reason (a certificate that does not
            # verify, a refused client certificate, ...), where channel_ready() only
            # ever times out. Connected means the collector answered the Hello.
            call = stub.Sync(self._outgoing(self._stream_no), metadata=metadata)
            watchdog: asyncio.Task[None] | None = None
            try:
                messages = aiter(call)
                try:
                    first = await asyncio.wait_for(anext(messages), self.cfg.connect_timeout_s)
                except StopAsyncIteration:
                    raise ProtocolError("hello", "unanswered: the stream ended") from None
                except TimeoutError:
                    call.cancel()
                    raise
                self.connected = True
                self.last_error = None
                self.problem = None
                self.c_connects.inc(outcome="ok")
                self.last_ack_at = time.monotonic()
                log.info("cloud link up", extra={"target": self.cfg.target})
                watchdog = asyncio.create_task(self._watchdog(call))
                self._on_cloud_message(first)
                async for msg in messages:
                    self._on_cloud_message(msg)
            except asyncio.CancelledError:
                # grpc.aio raises CancelledError in the reader when the call is
                # cancelled; when the watchdog did it, that is a failed stream to
                # rebuild, not the link being stopped.
                if watchdog is None or not watchdog.done() or watchdog.cancelled():
                    raise
                raise ProtocolError(
                    "acks", f"none for {ACK_WATCHDOG_S:.0f} s while summaries waited"
                ) from None
            finally:
                if watchdog is not None:
                    watchdog.cancel()
                self._stream_no += 1  # this stream's generator takes nothing more

    async def _watchdog(self, call: Any) -> None:
        while True:
            await asyncio.sleep(1.0)
            waiting = self.sent_seq > self.acked_seq
            if waiting and time.monotonic() - self.last_ack_at > ACK_WATCHDOG_S:
                log.warning("no ack for %.0f s: rebuilding the cloud channel", ACK_WATCHDOG_S)
                call.cancel()
                return

    async def _outgoing(self, stream_no: int) -> AsyncIterator[edge_pb2.NodeMessage]:
        # acked_through: everything below what the spool still holds was acked by
        # some collector; one that lost its database starts counting from here
        # instead of waiting forever for seqs this node can no longer send.
        yield edge_pb2.NodeMessage(
            hello=edge_pb2.Hello(
                node_id=self.node_id,
                boot_id=self.boot_id,
                version=__version__,
                proto_version=PROTO_VERSION,
                acked_through=self._spool.stats().acked_through,
            )
        )
        while stream_no == self._stream_no:
            while stream_no == self._stream_no and not self._results.empty():
                yield edge_pb2.NodeMessage(command_result=self._results.get_nowait())
            if stream_no != self._stream_no:
                return
            room = IN_FLIGHT - (self.sent_seq - self.acked_seq)
            batch = self._spool.next_batch(room) if room > 0 else []
            for rec in batch:
                self.sent_seq = max(self.sent_seq, rec.seq)
                yield edge_pb2.NodeMessage(summary=_summary_of(rec))
            if not batch and self._results.empty():
                # Sleep until a summary is stored, a result is due, or an ack frees room.
                self._wake.clear()
                sendable = asyncio.ensure_future(self._spool.wait_sendable())
                woken = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait(
                    {sendable, woken}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                )
                sendable.cancel()
                woken.cancel()

    def _on_cloud_message(self, msg: edge_pb2.CloudMessage) -> None:
        kind = msg.WhichOneof("kind")
        if kind == "ack":
            seq = int(msg.ack.highest_contiguous_seq)
            # Every ack goes to the spool, an unchanged one too: the connection's first
            # ack (sent right after the Hello) is what lets the spool transmit again.
            self._spool.ack(seq)
            if seq > self.acked_seq or self.sent_seq <= self.acked_seq:
                # Progress (or nothing outstanding) feeds the watchdog; a repeated ack
                # while summaries wait does not: a stream that lost messages in transit
                # keeps acking the same seq forever and must be rebuilt.
                self.last_ack_at = time.monotonic()
            self.acked_seq = max(self.acked_seq, seq)
            self._wake.set()
        elif kind == "command":
            self._put_result(self._command(msg.command))
        elif kind == "platform_event":
            ev = msg.platform_event
            try:
                payload = json_object(ev.payload_json, "payload_json")
                self._platform(ev.type, ev.user, payload)
            except (ValueError, KeyError) as exc:
                log.warning("platform event %s refused: %s", ev.event_id, exc)

    def _command(self, cmd: edge_pb2.Command) -> edge_pb2.CommandResult:
        known = self._answered.get(cmd.command_id)
        if known is not None:  # a retry: the same answer, not a second application
            self.c_commands.inc(outcome="duplicate")
            return known
        try:
            args = json_object(cmd.args_json, "args_json")
            result = self._apply(cmd.cmd, args)
            answer = edge_pb2.CommandResult(
                command_id=cmd.command_id, ok=True, result_json=json.dumps(result)
            )
            self.c_commands.inc(outcome="ok")
        except ValueError as exc:
            answer = edge_pb2.CommandResult(
                command_id=cmd.command_id, ok=False, error_code="bad_message", error=str(exc)
            )
            self.c_commands.inc(outcome="bad_message")
        except Exception as exc:  # the engine's CommandError (code, msg) or our bug
            code = str(getattr(exc, "code", "internal"))
            answer = edge_pb2.CommandResult(
                command_id=cmd.command_id, ok=False, error_code=code, error=str(exc)
            )
            self.c_commands.inc(outcome=code)
            if code == "internal":
                log.exception("command %s failed", cmd.cmd)
        self._answered[cmd.command_id] = answer
        while len(self._answered) > COMMANDS_REMEMBERED:
            self._answered.popitem(last=False)
        return answer

    def _put_result(self, result: edge_pb2.CommandResult) -> None:
        try:
            self._results.put_nowait(result)
        except asyncio.QueueFull:
            log.error("command result queue full; result for %s not sent", result.command_id)
        self._wake.set()


def _summary_of(rec: Record) -> edge_pb2.Summary:
    """A spool record on the wire; placeholders (merged, lost) go with their own payload
    and no window, so the collector still gets every seq."""
    meta: dict[str, Any] = {}
    if not rec.is_placeholder:
        try:
            decoded = msgpack.unpackb(rec.payload)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            decoded = None
        meta = decoded if isinstance(decoded, dict) else {}
    return edge_pb2.Summary(
        seq=rec.seq,
        window_start_unix_ms=int(meta.get("start", 0)) * 1000,
        window_s=int(meta.get("window_s", 1)),
        payload=rec.payload,
        empty=bool(meta.get("empty", False)),
    )


@dataclass(frozen=True, slots=True)
class LinkFailure:
    """Why the link is down, for people: ``kind`` is one of ``FAILURE_KINDS`` (also
    the ``outcome`` label of edge_node_cloud_connects_total), ``reason`` says what
    happened and which setting to check."""

    kind: str
    reason: str


FAILURE_KINDS = (
    "tls_verify_failed",  # the collector's certificate did not verify (wrong CA, name)
    "tls_refused",  # the collector hung up in the handshake (client certificate?)
    "tls_handshake_failed",  # any other TLS failure (e.g. TLS to a plaintext port)
    "tls_files",  # our own TLS files cannot be read
    "unauthenticated",  # the bearer token was refused
    "permission_denied",
    "unreachable",  # nothing listening, no route, DNS
    "unavailable",  # the collector answered UNAVAILABLE itself (stopping, storage failed)
    "timeout",  # no answer to the Hello within cloud.connect_timeout_s
    "stalled",  # acks stopped while summaries waited: the watchdog rebuilt the stream
    "refused",  # the collector refused the stream (another status code)
    "protocol",  # the collector said something that makes no sense
    "internal",  # a bug of ours
)

# gRPC puts the handshake's failure into the UNAVAILABLE status' details, e.g.
# "... Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL
# routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer
# certificate: OK".
_VERIFY_FAILED = re.compile(r"CERTIFICATE_VERIFY_FAILED:?\s*([^:]*)")
_PEER_NAME = re.compile(r"Peer name (\S+) is not in peer certificate")
_SSL_ERROR = re.compile(r"OPENSSL_internal:([A-Z_]+)")
# What gRPC says when it got no connection at all (nothing listening, no route, DNS).
_CONNECT_FAILED = ("failed to connect", "Connection refused", "DNS resolution", "unreachable")


def explain_failure(exc: BaseException, cfg: CloudConfig) -> LinkFailure:
    """What a failed attempt means, from the exception grpc (or we) raised. Pure."""
    if isinstance(exc, TimeoutError):
        return LinkFailure(
            "timeout",
            f"the collector did not answer the Hello within {cfg.connect_timeout_s:g} s "
            "(cloud.connect_timeout_s)",
        )
    if isinstance(exc, ProtocolError) and exc.field == "acks":
        return LinkFailure(
            "stalled",
            f"the stream stalled ({exc.reason}): the collector, or the path to it, stopped "
            "answering; rebuilt",
        )
    if isinstance(exc, ProtocolError):
        return LinkFailure("protocol", f"the collector broke the protocol: {exc}")
    if isinstance(exc, OSError) and exc.filename:
        return LinkFailure("tls_files", f"cannot read a TLS file of the cloud section: {exc}")
    if isinstance(exc, OSError):
        return LinkFailure("unreachable", f"cannot reach the collector at {cfg.target}: {exc}")
    if not isinstance(exc, grpc.aio.AioRpcError):
        return LinkFailure("internal", f"the link failed unexpectedly: {exc!r}")
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.UNAUTHENTICATED:
        token = "cloud.token is empty" if not cfg.token else "check cloud.token"
        return LinkFailure("unauthenticated", f"the collector refused our bearer token ({token})")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return LinkFailure("permission_denied", f"the collector denied this node: {details}")
    if code != grpc.StatusCode.UNAVAILABLE:
        return LinkFailure("refused", f"the collector ended the stream with {code.name}")
    verify = _VERIFY_FAILED.search(details)
    if verify is not None:
        why = verify.group(1).strip() or "no detail"
        ca = cfg.tls_ca or "the system's roots (cloud.tls_ca is empty)"
        return LinkFailure(
            "tls_verify_failed",
            f"certificate verify failed: the collector's certificate is not signed by a CA "
            f"we trust ({why}); we trust {ca}",
        )
    name = _PEER_NAME.search(details)
    if name is not None:
        return LinkFailure(
            "tls_verify_failed",
            f"certificate verify failed: the collector's certificate does not name "
            f"{name.group(1)} (cloud.target)",
        )
    ssl = _SSL_ERROR.search(details)
    if ssl is not None or "handshake failed" in details.lower():
        what = ssl.group(1) if ssl is not None else "handshake failed"
        return LinkFailure(
            "tls_handshake_failed",
            f"the TLS handshake failed ({what}): does the collector serve TLS on {cfg.target}?",
        )
    if "Socket closed" in details or "Connection reset" in details:
        if cfg.tls:
            cert = cfg.tls_cert or "none: cloud.tls_cert is empty"
            return LinkFailure(
                "tls_refused",
                "the collector closed the connection in the TLS handshake: it probably "
                f"refused our client certificate (mTLS; ours: {cert})",
            )
        return LinkFailure(
            "refused",
            "the collector closed the connection at once: does it expect TLS (cloud.tls)?",
        )
    if any(marker in details for marker in _CONNECT_FAILED):
        return LinkFailure("unreachable", f"cannot reach the collector at {cfg.target}")
    # The collector itself said UNAVAILABLE (shutting down, its database failed, ...).
    return LinkFailure("unavailable", f"the collector is unavailable: {details or 'no detail'}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"
