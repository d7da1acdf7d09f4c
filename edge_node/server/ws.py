"""``GET /ws``: the interaction WebSocket. Thin: authenticate, admit, pump frames into
``Interactions.receive``. Caps: Origin, connections per IP and in all, message size
(enforced by aiohttp before a frame is buffered whole), messages per second per IP,
and an idle timeout."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

from aiohttp import WSMsgType, web

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
        if (
            per_ip[ip] >= ic.max_connections_per_ip
            or len(interactions.clients) >= ic.max_connections
        ):
            return web.json_response(
                {"error": "too many connections", "field": "connections"}, status=503
            )
        # aiohttp closes a connection over its cap (1009); up to 4x the message cap we
        # read the frame and answer bad_message instead, which tells a client why.
        ws = web.WebSocketResponse(
            max_msg_size=4 * ic.max_message_bytes, heartbeat=30.0, receive_timeout=ic.idle_timeout_s
        )
        await ws.prepare(request)
        open_sockets.add(ws)

        def send(data: bytes | str) -> None:
            if ws.closed:
                return
            coro = ws.send_bytes(data) if isinstance(data, bytes) else ws.send_str(data)
            task = asyncio.ensure_future(coro)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

        client = Client(claims, send, "ws", ip)
        per_ip[ip] += 1
        interactions.connect(client)
        try:
            async for frame in ws:
                if frame.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    if not ip_rate.allow(ip, time.monotonic()):
                        binary = frame.type is WSMsgType.BINARY
                        send(
                            messages.encode_reply(
                                messages.err(
                                    None, "rate_limited", "too many messages from your address"
                                ),
                                binary=binary,
                            )
                        )
                        continue
                    interactions.receive(client, frame.data)
                elif frame.type is WSMsgType.ERROR:
                    log.info("websocket closed with error: %s", ws.exception())
        except TimeoutError:
            # Idle: the client sent nothing for interaction.idle_timeout_s.
            log.debug("closing an idle websocket", extra={"ip": ip})
        finally:
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
