"""``GET /ws``: the interaction WebSocket. Thin: authenticate, admit, pump frames into
``Interactions.receive``. Caps: Origin, connections per IP and in all, message size
(enforced by aiohttp before a frame is buffered whole, and after permessage-deflate
inflation), messages per second per IP, an idle timeout, and the token's expiry (a
connection does not outlive its token). Every frame refused here is counted with the
engine's events (``edge_node_interaction_events_total{type="unknown"}``)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from edge_node.config import Config
from edge_node.interaction import messages
from edge_node.interaction.auth import AuthError, Claims
from edge_node.interaction.ratelimit import KeyedLimiter
from edge_node.server.realtime import Client, Interactions

log = logging.getLogger(__name__)

# Who a request is: a token (query or header) or, where allowed, an anonymous viewer.
Authenticate = Callable[[str | None], Claims]


def token_of(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.query.get("token") or None


def ws_handler(
    cfg: Config, interactions: Interactions, authenticate: Authenticate
) -> Callable[[web.Request], asyncio.Future[web.StreamResponse]]:
    ic = cfg.interaction
    per_ip: collections.Counter[str] = collections.Counter()
    open_sockets: set[web.WebSocketResponse] = set()
    ip_rate: KeyedLimiter[str] = KeyedLimiter(ic.ip_rate_per_s, ic.ip_burst, 100_000)

    async def handle(request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if ic.allowed_origins and origin is not None and origin not in ic.allowed_origins:
            return web.json_response(
                {"error": f"origin {origin} is not allowed", "field": "origin"}, status=403
            )
        try:
            claims = authenticate(token_of(request))
        except AuthError as exc:
            return web.json_response({"error": exc.msg, "field": "token"}, status=401)
        ip = request.remote or "?"
        if per_ip[ip] >= ic.max_connections_per_ip:
            return web.json_response(
                {
                    "error": f"too many connections from your address "
                    f"(at most {ic.max_connections_per_ip})",
                    "field": "connections",
                },
                status=503,
            )
        if len(interactions.clients) >= ic.max_connections:
            return web.json_response(
                {
                    "error": "the node is at its connection limit; retry later",
                    "field": "connections",
                },
                status=503,
            )
        # aiohttp closes a connection over its cap (1009); up to 4x the message cap we
        # read the frame and answer bad_message instead, which tells a client why.
        # The idle timeout is a watchdog timer (below), not aiohttp's receive_timeout:
        # that one arms and disarms a timeout around every single frame.
        ws = web.WebSocketResponse(max_msg_size=4 * ic.max_message_bytes, heartbeat=30.0)
        await ws.prepare(request)
        open_sockets.add(ws)

        def send(data: bytes | str) -> None:
            if ws.closed:
                return
            coro = ws.send_bytes(data) if isinstance(data, bytes) else ws.send_str(data)
            task = asyncio.ensure_future(coro)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

        def count_refused(code: messages.ErrorCode) -> None:
            interactions.c_events.inc(type="unknown", outcome=code)
            interactions.record_rejected(code)

        expired = False

        async def expire() -> None:
            """The token ran out: say so, then close (1008); a new token reconnects."""
            nonlocal expired
            if expired or ws.closed:
                return
            expired = True
            count_refused("unauthorized")
            reply = messages.err(None, "unauthorized", "token: expired; reconnect with a new token")
            data = messages.encode_reply(reply, binary=bool(client.extra.get("binary")))
            with contextlib.suppress(ConnectionError, RuntimeError):  # the peer went first
                await (ws.send_bytes(data) if isinstance(data, bytes) else ws.send_str(data))
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"token expired")

        expiring: list[asyncio.Task[None]] = []  # a reference keeps the task alive

        def on_expiry() -> None:
            expiring.append(asyncio.ensure_future(expire()))

        loop = asyncio.get_running_loop()
        expiry: asyncio.TimerHandle | None = None
        if claims.exp is not None:
            delay = max(0.0, claims.exp - time.time())
            expiry = loop.call_later(delay, on_expiry)

        # Idle: the client sent nothing for interaction.idle_timeout_s. The watchdog
        # wakes once per timeout and re-arms for what is left since the last frame.
        last_frame = time.monotonic()
        idle: asyncio.TimerHandle

        async def close_idle() -> None:
            log.debug("closing an idle websocket", extra={"ip": ip})
            await ws.close()

        def check_idle() -> None:
            nonlocal idle
            quiet = time.monotonic() - last_frame
            if quiet < ic.idle_timeout_s:
                idle = loop.call_later(ic.idle_timeout_s - quiet, check_idle)
                return
            expiring.append(asyncio.ensure_future(close_idle()))

        idle = loop.call_later(ic.idle_timeout_s, check_idle)
        client = Client(claims, send, "ws", ip)
        per_ip[ip] += 1
        interactions.connect(client)
        try:
            async for frame in ws:
                if frame.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    last_frame = now = time.monotonic()
                    binary = frame.type is WSMsgType.BINARY
                    if claims.exp is not None and time.time() >= claims.exp:
                        await expire()
                        break
                    if not ip_rate.allow(ip, now):
                        count_refused("rate_limited")
                        reply = messages.err(
                            None, "rate_limited", "too many messages from your address"
                        )
                        send(messages.encode_reply(reply, binary=binary))
                        continue
                    interactions.receive(client, frame.data)
                elif frame.type is WSMsgType.ERROR:
                    # aiohttp has closed the connection: 1009 (a frame over the size cap,
                    # inflated or not), 1007 (text that is not UTF-8), 1002 (bad framing).
                    if isinstance(frame.data, WebSocketError):
                        count_refused("bad_message")
                    log.info("websocket closed with error: %s", ws.exception() or frame.data)
        finally:
            idle.cancel()
            if expiry is not None:
                expiry.cancel()
            # Let an expiry's close handshake finish (bounded by aiohttp's close timeout)
            # before the request ends and the transport goes.
            await asyncio.gather(*expiring, return_exceptions=True)
            open_sockets.discard(ws)
            interactions.disconnect(client)
            per_ip[ip] -= 1
            if per_ip[ip] <= 0:
                del per_ip[ip]
            await ws.close()
        return ws

    async def close_all(app: web.Application) -> None:
        """On shutdown: close every WebSocket (going away) so the server stops at once."""
        for ws in list(open_sockets):
            await ws.close(code=1001, message=b"node shutting down")

    handle.close_all = close_all  # type: ignore[attr-defined]
    return handle  # type: ignore[return-value]
