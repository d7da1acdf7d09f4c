"""The aiohttp front: pages, WHEP, metrics and health. Thin: it moves bytes and status
codes; sessions, metrics and health come from the objects handed to it.

The pages (viewer ``/``, operator console ``/console``, publisher ``/publish``) and
their assets (``/static/NAME``) are plain files from ``edge_node/web``, read once at
start-up so a page view never touches the disk on the event loop. The console's live
figures (``GET /api/stats``, operator token) are computed here from the metrics
registry's own text, so they always agree with ``/metrics``.
"""

from __future__ import annotations

import bisect
import json
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from edge_node.errors import ProtocolError
from edge_node.interaction.auth import AuthError, Claims
from edge_node.media.egress_whep import WhepEndpoint
from edge_node.media.ingest_whip import WhipEndpoint, WhipRefused
from edge_node.metrics import Counter, Registry
from edge_node.server.ws import token_of

SDP = "application/sdp"
MAX_BODY_BYTES: Final = 256 * 1024
"""Largest request body (an SDP offer is a few KB): 413 beyond it."""
HEADER_TIMEOUT_S: Final = 15.0
"""Longest a connection may take to deliver its first complete request, and stay idle
between requests. aiohttp's own default (``keepalive_timeout``) is 3630 s, which lets a
slowloris client hold a socket for an hour by sending a header byte now and then."""
SERVER_ARGS: Final[Mapping[str, float | bool]] = {
    "keepalive_timeout": HEADER_TIMEOUT_S,
    # Bodies are never inflated: WHIP and WHEP offers are sent uncompressed, and a
    # compressed one is refused (415) unread. With aiohttp's default, it inflated what
    # it drained after answering: a 200 KB gzip bomb cost 0.5 s of the loop's CPU.
    "auto_decompress": False,
}
"""Per-connection settings of aiohttp's request handler (``Application(handler_args=)``)."""

# Pages by path, and the asset names /static/ serves (flat, no traversal possible).
PAGES: Mapping[str, str] = {
    "/": "index.html",
    "/console": "console.html",
    "/publish": "publish.html",
}
ASSET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(js|css|svg)$")
ASSET_TYPES: Mapping[str, str] = {
    "js": "text/javascript",
    "css": "text/css",
    "svg": "image/svg+xml",
}
# Everything a page loads comes from the node itself: no CDN, no inline script.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'"
)
# The console and the publisher act with a credential: never inside someone's frame.
NO_FRAMING = "; frame-ancestors 'none'"


def build_app(
    whep: WhepEndpoint,
    whip: WhipEndpoint,
    registry: Registry,
    health: Callable[[], dict[str, Any]],
    ws: Callable[[web.Request], Awaitable[web.StreamResponse]],
    authenticate: Callable[[str | None], Claims],
) -> web.Application:
    errors = registry.counter(
        "edge_node_http_errors_total",
        "HTTP requests answered with an error status (refusals included), by route and status.",
    )
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[_count_errors(errors)],
        handler_args=SERVER_ARGS,
    )
    files = load_web_files()
    figures = LiveFigures()

    def page(name: str, framable: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
        body = files[name]
        policy = PAGE_POLICY if framable else PAGE_POLICY + NO_FRAMING
        headers = {
            "Content-Security-Policy": policy,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            # A viewer link may carry ?token=: never hand it to another site.
            "Referrer-Policy": "no-referrer",
        }

        async def serve(_: web.Request) -> web.Response:
            return web.Response(
                body=body, content_type="text/html", charset="utf-8", headers=headers
            )

        return serve

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = files.get(name) if ASSET_NAME.match(name) else None
        if body is None:
            return _error(404, "path", f"no asset {name!r}")
        return web.Response(
            body=body,
            content_type=ASSET_TYPES[name.rsplit(".", 1)[1]],
            charset="utf-8",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    async def stats(request: web.Request) -> web.Response:
        # Operators only: the figures say who is watching and how the box is doing.
        token = token_of(request)
        if token is None:
            return _error(401, "token", "an operator token is required", _BEARER)
        try:
            claims = authenticate(token)
        except AuthError as exc:
            return _error(401, "token", exc.msg, _BEARER)
        if claims.role != "operator":
            return _error(403, "token", f"role '{claims.role}' may not read the live figures")
        now = time.monotonic()
        if figures.due(now):
            figures.observe(now, registry.render())
        body = {**figures.figures(now), **health_figures(health())}
        return web.Response(
            text=json.dumps(body),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def whep_options(_: web.Request) -> web.Response:
        return web.Response(status=204, headers={"Accept-Post": SDP})

    async def whep_post(request: web.Request) -> web.Response:
        if request.content_type != SDP:
            return _error(415, "content-type", f"expected {SDP}, got {request.content_type}")
        offer = await _read_offer(request)
        if isinstance(offer, web.Response):
            return offer
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
        offer = await _read_offer(request)
        if isinstance(offer, web.Response):
            return offer
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

    for path, name in PAGES.items():
        app.router.add_get(path, page(name, framable=path == "/"))
    app.router.add_get("/static/{name}", asset)
    app.router.add_get("/api/stats", stats)
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


_BEARER = {"WWW-Authenticate": "Bearer"}


async def _read_offer(request: web.Request) -> str | web.Response:
    """The SDP offer of a WHEP/WHIP POST, or the error response saying what is wrong.

    SDP is UTF-8 (RFC 8866), whatever charset the client names, and uncompressed (see
    ``SERVER_ARGS``); a body too big, compressed or not UTF-8 is the client's fault and
    gets a JSON 4xx like every other refusal, never a 500.
    """
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        return _error(415, "content-encoding", f"send the offer uncompressed, not {encoding!r}")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "body", f"larger than {MAX_BODY_BYTES} bytes")
    except web.RequestPayloadError as exc:  # the body ended early, or its chunking is bad
        detail = " ".join(str(exc).split())
        return _error(400, "body", f"the body could not be read: {detail}")
    try:
        offer = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _error(400, "body", f"SDP must be UTF-8 (invalid byte at {exc.start})")
    if not offer.strip():
        return _error(400, "body", "empty SDP offer")
    return offer


def _route(request: web.Request) -> str:
    """The route's pattern (``/whep/{sid}``), never the raw path: bounded label values."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _count_errors(counter: Counter) -> Middleware:
    """A middleware counting every 4xx/5xx answer, raised or returned (an unhandled
    exception as the 500 aiohttp makes of it), by route and status: refusals (401, 403,
    413, 415, 503 at the connection caps) and our own failures show in /metrics."""

    @web.middleware
    async def count_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                counter.inc(route=_route(request), status=str(exc.status))
            raise
        except Exception:  # our bug: aiohttp answers 500 and logs it
            counter.inc(route=_route(request), status="500")
            raise
        if response.status >= 400:
            counter.inc(route=_route(request), status=str(response.status))
        return response

    return count_errors


def load_web_files() -> dict[str, bytes]:
    """Every file of ``edge_node/web``, by name (pages and assets; a few tens of KB)."""
    web_dir = resources.files("edge_node") / "web"
    return {f.name: f.read_bytes() for f in web_dir.iterdir() if f.is_file()}


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {series: value}, summed over every label but a bucket's
    ``le`` (a bucket's series is ``NAME_bucket|LE``). Enough for the console's figures,
    which never split by label; lines that are not samples are skipped."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, raw = line.rpartition(" ")
        try:
            value = float(raw)
        except ValueError:
            continue
        name = head.split("{", 1)[0]
        if name.endswith("_bucket"):
            le = re.search(r'le="([^"]*)"', head)
            if le is None:
                continue
            name = f"{name}|{le.group(1)}"
        values[name] = values.get(name, 0.0) + value
    return values


def bucket_quantile(q: float, bounds: list[float], counts: list[float]) -> float | None:
    """The ``q`` quantile of cumulative bucket ``counts`` (ascending ``bounds``, the last
    +Inf), interpolated linearly inside its bucket as Prometheus' histogram_quantile
    does; None without observations. Above the last finite bound: that bound."""
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    rank = q * total
    i = bisect.bisect_left(counts, rank)
    i = min(i, len(counts) - 1)
    if math.isinf(bounds[i]):
        finite = [b for b in bounds if not math.isinf(b)]
        return finite[-1] if finite else None
    lower = bounds[i - 1] if i > 0 else 0.0
    below = counts[i - 1] if i > 0 else 0.0
    inside = counts[i] - below
    if inside <= 0:
        return bounds[i]
    return lower + (bounds[i] - lower) * (rank - below) / inside


@dataclass(frozen=True, slots=True)
class _Snapshot:
    at: float
    values: dict[str, float]


class LiveFigures:
    """Rates and recent latency quantiles from successive snapshots of the cumulative
    metrics. Sans-I/O: ``observe(now, text)`` stores a snapshot (at most one per
    ``min_interval_s``, so many consoles cost as much as one), ``figures(now)`` reads
    rates over the last ``rate_window_s`` and quantiles over ``quantile_window_s``."""

    EVENTS = "edge_node_interaction_events_total"
    DROPPED = "edge_node_frames_dropped_total"
    LATENCY = "edge_node_event_to_frame_seconds"

    def __init__(
        self,
        rate_window_s: float = 2.0,
        quantile_window_s: float = 10.0,
        min_interval_s: float = 0.25,
    ) -> None:
        self.rate_window_s = rate_window_s
        self.quantile_window_s = quantile_window_s
        self.min_interval_s = min_interval_s
        self._snapshots: deque[_Snapshot] = deque()

    def due(self, now: float) -> bool:
        """Whether ``observe`` would keep a snapshot now (else skip rendering one)."""
        return not self._snapshots or now - self._snapshots[-1].at >= self.min_interval_s

    def observe(self, now: float, metrics_text: str) -> None:
        if not self.due(now):
            return
        self._snapshots.append(_Snapshot(now, parse_metrics(metrics_text)))
        # Keep one snapshot older than the longest window, so it is always covered.
        horizon = now - max(self.rate_window_s, self.quantile_window_s)
        while len(self._snapshots) > 2 and self._snapshots[1].at <= horizon:
            self._snapshots.popleft()

    def _since(self, now: float, window_s: float) -> tuple[_Snapshot, _Snapshot] | None:
        """(oldest snapshot inside the window, or the newest before it; the newest)."""
        if len(self._snapshots) < 2:
            return None
        newest = self._snapshots[-1]
        start = self._snapshots[0]
        for snap in self._snapshots:
            if snap.at >= now - window_s:
                break
            start = snap
        if start is newest:
            start = self._snapshots[-2]
        return start, newest

    def rate(self, now: float, name: str) -> float | None:
        pair = self._since(now, self.rate_window_s)
        if pair is None:
            return None
        old, new = pair
        delta = new.values.get(name, 0.0) - old.values.get(name, 0.0)
        return max(0.0, delta) / (new.at - old.at)

    def quantiles(self, now: float, name: str, qs: tuple[float, ...]) -> list[float | None]:
        pair = self._since(now, self.quantile_window_s)
        if pair is None:
            return [None for _ in qs]
        old, new = pair
        prefix = f"{name}_bucket|"
        bounds_counts = sorted(
            (float(key[len(prefix) :]), value - old.values.get(key, 0.0))
            for key, value in new.values.items()
            if key.startswith(prefix)
        )
        bounds = [b for b, _ in bounds_counts]
        counts = [c for _, c in bounds_counts]
        return [bucket_quantile(q, bounds, counts) for q in qs]

    def figures(self, now: float) -> dict[str, Any]:
        """What the console charts: rates per second, gauges, latency in ms (None
        where there is nothing to say yet: one snapshot, or no event in the window)."""
        latest = self._snapshots[-1].values if self._snapshots else {}
        p50, p99 = self.quantiles(now, self.LATENCY, (0.5, 0.99))
        return {
            "events_per_s": self.rate(now, self.EVENTS),
            "latency_ms": {
                "p50": None if p50 is None else round(p50 * 1000, 2),
                "p99": None if p99 is None else round(p99 * 1000, 2),
                "window_s": self.quantile_window_s,
            },
            "fps_in": latest.get("edge_node_frames_in_per_second"),
            "fps_out": latest.get("edge_node_frames_out_per_second"),
            "dropped_per_s": self.rate(now, self.DROPPED),
            "dropped_total": latest.get(self.DROPPED),
            "viewers": latest.get("edge_node_viewers"),
            "clients": latest.get("edge_node_interaction_clients"),
        }


def health_figures(health: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of /healthz the console shows beside the rates."""
    cloud = health.get("cloud")
    spool = health.get("spool")
    ingest = health.get("ingest") or {}
    return {
        "status": health.get("status"),
        "ingest": ingest.get("live"),
        "cloud": None
        if cloud is None
        else {
            "target": cloud.get("target"),
            "connected": bool(cloud.get("connected")),
            "last_error": cloud.get("last_error"),
        },
        "spool_depth": None if spool is None else spool.get("depth"),
    }


def _error(
    status: int, field: str, reason: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": reason, "field": field}),
        content_type="application/json",
        headers=headers,
    )
