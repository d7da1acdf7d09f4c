"""The aiohttp front: pages, WHEP, metrics and health. Thin: it moves bytes and status
codes; sessions, metrics and health come from the objects handed to it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from edge_node.errors import ProtocolError
from edge_node.interaction.auth import AuthError, Claims
from edge_node.media.egress_whep import WhepEndpoint
from edge_node.media.ingest_whip import WhipEndpoint, WhipRefused
from edge_node.metrics import Registry
from edge_node.server.ws import token_of

SDP = "application/sdp"


def build_app(
    whep: WhepEndpoint,
    whip: WhipEndpoint,
    registry: Registry,
    health: Callable[[], dict[str, Any]],
    ws: Callable[[web.Request], Awaitable[web.StreamResponse]],
    authenticate: Callable[[str | None], Claims],
) -> web.Application:
    app = web.Application(client_max_size=256 * 1024)
    web_dir = resources.files("edge_node") / "web"

    async def index(_: web.Request) -> web.Response:
        return web.Response(
            text=(web_dir / "index.html").read_text("utf-8"), content_type="text/html"
        )

    async def whep_options(_: web.Request) -> web.Response:
        return web.Response(status=204, headers={"Accept-Post": SDP})

    async def whep_post(request: web.Request) -> web.Response:
        if request.content_type != SDP:
            return _error(415, "content-type", f"expected {SDP}, got {request.content_type}")
        offer = await request.text()
        if not offer.strip():
            return _error(400, "body", "empty SDP offer")
        if whep.full:
            return _error(503, "viewers", f"at the limit of {whep.cfg.webrtc.max_viewers}")
        # Watching needs no token; the events channel acts as the token's user (or an
        # anonymous viewer where allowed, or refuses interactions).
        token = token_of(request)
        try:
            claims: Claims | None = authenticate(token)
        except AuthError as exc:
            if token is not None:
                return _error(401, "token", exc.msg)
            claims = None
        try:
            sid, answer = await whep.create(offer, claims)
        except ProtocolError as exc:
            return _error(400, exc.field, exc.reason)
        location = f"/whep/{sid}"
        return web.Response(
            status=201, text=answer, content_type=SDP, headers={"Location": location}
        )

    async def whip_post(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if request.content_type != SDP:
            return _error(415, "content-type", f"expected {SDP}, got {request.content_type}")
        offer = await request.text()
        if not offer.strip():
            return _error(400, "body", "empty SDP offer")
        try:
            sid, answer = await whip.create(bearer, offer)
        except WhipRefused as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
            return _error(exc.status, exc.field, exc.reason, headers)
        except ProtocolError as exc:
            return _error(400, exc.field, exc.reason)
        return web.Response(
            status=201, text=answer, content_type=SDP, headers={"Location": f"/whip/{sid}"}
        )

    async def whip_delete(request: web.Request) -> web.Response:
        if await whip.delete(request.match_info["sid"]):
            return web.Response(status=200)
        return _error(404, "session", "no such WHIP session")

    async def whep_delete(request: web.Request) -> web.Response:
        if await whep.delete(request.match_info["sid"]):
            return web.Response(status=200)
        return _error(404, "session", "no such WHEP session")

    async def whep_patch(_: web.Request) -> web.Response:
        # Trickle ICE is not used: the answer carries every candidate.
        return _error(405, "method", "trickle ICE is not supported; candidates are in the SDP")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            text=registry.render(),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Prometheus-Format": "0.0.4"},
        )

    async def healthz(_: web.Request) -> web.Response:
        body = health()
        return web.Response(
            status=200 if body["status"] == "ok" else 503,
            text=json.dumps(body),
            content_type="application/json",
        )

    app.router.add_get("/", index)
    app.router.add_route("OPTIONS", "/whep", whep_options)
    app.router.add_route("OPTIONS", "/whip", whep_options)
    app.router.add_post("/whip", whip_post)
    app.router.add_delete("/whip/{sid}", whip_delete)
    app.router.add_patch("/whip/{sid}", whep_patch)
    app.router.add_post("/whep", whep_post)
    app.router.add_delete("/whep/{sid}", whep_delete)
    app.router.add_patch("/whep/{sid}", whep_patch)
    app.router.add_get("/ws", ws)
    close_all = getattr(ws, "close_all", None)
    if close_all is not None:
        app.on_shutdown.append(close_all)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


def _error(
    status: int, field: str, reason: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": reason, "field": field}),
        content_type="application/json",
        headers=headers,
    )
