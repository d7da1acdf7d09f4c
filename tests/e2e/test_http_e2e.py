"""/metrics, /healthz, the viewer page and clean shutdown, on a real node process."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import NodeProcess, start_node

pytestmark = pytest.mark.timeout(60)

DOCUMENTED_METRICS = [
    "edge_node_queue_wait_seconds_bucket",
    "edge_node_composite_seconds_bucket",
    "edge_node_encode_seconds_bucket",
    "edge_node_capture_to_fanout_seconds_bucket",
    "edge_node_frames_in_per_second",
    "edge_node_frames_out_per_second",
    "edge_node_frames_dropped_total",
    "edge_node_viewers",
    "edge_node_bitrate_bits_per_second",
    "edge_node_worker_restarts_total",
    "edge_node_video_encoders",
    "edge_node_keyframe_requests_total",
]


def test_metrics_has_the_documented_series(node: NodeProcess) -> None:
    time.sleep(1.5)  # at least one stats message from the worker
    status, body = node.get("/metrics")
    assert status == 200
    text = body.decode()
    for name in DOCUMENTED_METRICS:
        assert any(line.startswith(name) for line in text.splitlines()), name
    assert node.metric("edge_node_frames_out_per_second") > 0
    assert node.metric("edge_node_encode_seconds_count") > 0
    assert node.metric("edge_node_bitrate_bits_per_second") > 0


def test_healthz_fields(node: NodeProcess) -> None:
    status, body = node.get("/healthz")
    assert status == 200
    h = json.loads(body)
    assert h["status"] == "ok"
    assert h["node"] == "demo"
    assert h["worker"]["alive"] is True and isinstance(h["worker"]["pid"], int)
    assert h["video"]["source"] == "test_pattern"
    assert h["video"]["encoders"] == 1
    assert h["video"]["last_packet_age_s"] < 2


def test_viewer_page_plays_whep(node: NodeProcess) -> None:
    status, body = node.get("/")
    assert status == 200 and b'src="/static/viewer.js"' in body
    status, js = node.get("/static/common.js")
    assert status == 200
    assert b'"/whep"' in js and b"RTCPeerConnection" in js and b'createDataChannel("events")' in js


def test_sigterm_stops_node_and_worker(tmp_path: Path) -> None:
    n = start_node(tmp_path)
    worker_pid = n.health()["worker"]["pid"]
    n.proc.send_signal(signal.SIGTERM)
    try:
        assert n.proc.wait(15) == 0
    except subprocess.TimeoutExpired:
        n.proc.kill()
        raise
    assert (
        not Path(f"/proc/{worker_pid}").exists()
        or "zombie" in Path(f"/proc/{worker_pid}/status").read_text().lower()
    )


async def test_sigint_with_open_websockets_stops_promptly(tmp_path: Path) -> None:
    import asyncio

    import aiohttp

    n = start_node(tmp_path)
    async with aiohttp.ClientSession() as http:
        sockets = [await http.ws_connect(n.url.replace("http", "ws") + "/ws") for _ in range(3)]
        started = time.monotonic()
        n.proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(n.proc.wait, 20) == 0
        # Open interaction sockets are closed (1001) instead of holding shutdown up.
        assert time.monotonic() - started < 10
        for ws in sockets:
            await ws.close()
