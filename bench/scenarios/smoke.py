"""``smoke``: every path the node has today, in well under a minute.

/healthz, /metrics (every metric the bench reads), the viewer page, WHEP OPTIONS,
WHEP refusals (wrong content type, an offer without video), a short WHEP run with a
real viewer (frames arrive, one encoder), the DELETE of its session (200, the session
gauge back to 0, a second DELETE 404). Each is a check in the report; the figures of
the WHEP run come along.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bench import prom, whep_run
from bench.scenarios import Check, RunContext, RunResult, Scenario

# What the bench reads from /metrics; a rename in the node shows up here first.
EXPECTED_METRICS = (
    "edge_node_queue_wait_seconds",
    "edge_node_composite_seconds",
    "edge_node_encode_seconds",
    "edge_node_capture_to_fanout_seconds",
    "edge_node_frames_in_per_second",
    "edge_node_frames_out_per_second",
    "edge_node_bitrate_bits_per_second",
    "edge_node_video_encoders",
    "edge_node_viewers",
    "edge_node_frames_dropped_total",
)
NO_VIDEO_OFFER = (
    "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
)


async def _status(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: object
) -> tuple[int, str, dict[str, str]]:
    async with http.request(method, url, **kwargs) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.text(), dict(resp.headers)


async def _http_checks(ctx: RunContext) -> list[Check]:
    base, http = ctx.node.base_url, ctx.http
    checks: list[Check] = []

    status, body = await ctx.node.health(http)
    worker = (body or {}).get("worker") or {}
    checks.append(
        Check(
            "GET /healthz answers 200 with a live worker",
            status == 200 and (body or {}).get("status") == "ok" and bool(worker.get("alive")),
            f"{status}: status={(body or {}).get('status')}, worker={worker}",
        )
    )

    status, text, _ = await _status(http, "GET", f"{base}/metrics")
    names = {name for name, _ in prom.parse(text)} if status == 200 else set()
    missing = [
        m for m in EXPECTED_METRICS if not any(n == m or n.startswith(m + "_") for n in names)
    ]
    checks.append(
        Check(
            "GET /metrics has every metric the bench reads",
            status == 200 and not missing,
            f"{status}; missing: {', '.join(missing) or 'none'}",
        )
    )

    status, text, headers = await _status(http, "GET", f"{base}/")
    checks.append(
        Check(
            "GET / serves the viewer page",
            status == 200 and "html" in headers.get("Content-Type", ""),
            f"{status} {headers.get('Content-Type')}, {len(text)} bytes",
        )
    )

    status, _, headers = await _status(http, "OPTIONS", f"{base}/whep")
    checks.append(
        Check(
            "OPTIONS /whep answers with Accept-Post",
            status in (200, 204) and "application/sdp" in headers.get("Accept-Post", ""),
            f"{status} Accept-Post={headers.get('Accept-Post')}",
        )
    )

    status, text, _ = await _status(
        http, "POST", f"{base}/whep", data="x", headers={"Content-Type": "text/plain"}
    )
    checks.append(Check("POST /whep refuses a non-SDP body (415)", status == 415, text[:200]))

    status, text, _ = await _status(
        http,
        "POST",
        f"{base}/whep",
        data=NO_VIDEO_OFFER,
        headers={"Content-Type": "application/sdp"},
    )
    checks.append(
        Check("POST /whep refuses an offer without video (400)", status == 400, text[:200])
    )
    return checks


async def _sessions_back_to_zero(ctx: RunContext, timeout_s: float = 3.0) -> Check:
    url = f"{ctx.node.base_url}/metrics"
    deadline = time.monotonic() + timeout_s
    sessions: float | None = None
    while True:
        status, text, _ = await _status(ctx.http, "GET", url)
        if status == 200:
            samples = prom.parse(text)
            sessions = prom.value(samples, "edge_node_whep_sessions")
            if sessions is None:
                sessions = prom.value(samples, "edge_node_viewers")
            if sessions == 0:
                break
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    return Check(
        "no WHEP session left after the DELETE", sessions == 0, f"sessions gauge {sessions}"
    )


class Smoke(Scenario):
    name = "smoke"
    description = (
        "every path in under a minute: healthz, metrics, page, WHEP refusals, "
        "a 5 s WHEP run, DELETE of the session"
    )
    default_seconds = 5.0
    default_runs = 1

    async def run_once(self, ctx: RunContext) -> RunResult:
        checks = await _http_checks(ctx)
        run = await whep_run.measure(ctx, viewers=1)
        checks.extend(run.checks)
        viewer = run.raw["viewers"][0]
        location = viewer.get("location")
        checks.append(
            Check(
                "DELETE of the WHEP session answers 200",
                viewer.get("delete_status") == 200,
                f"DELETE {location} -> {viewer.get('delete_status')}",
            )
        )
        checks.append(await _sessions_back_to_zero(ctx))
        if location:
            status, _, _ = await _status(ctx.http, "DELETE", f"{ctx.node.base_url}{location}")
            checks.append(
                Check("a second DELETE of the session answers 404", status == 404, str(status))
            )
        run.checks = checks
        return run


SCENARIO = Smoke()
