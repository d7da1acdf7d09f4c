"""RTMP ingest end to end: real publishers (PyAV/FFmpeg, ffmpeg CLI) in their own
processes, a real node, a real WHEP viewer; loopback only."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import subprocess
import sys
import time

import pytest

from edge_node.clients.whep import WhepViewer, frame_counter
from tests.conftest import NodeProcess

pytestmark = pytest.mark.timeout(120)

LIVE_START = 40000  # the test publisher's counters start here; the test pattern's near 0


def publisher(url: str, seconds: float, start: int = LIVE_START) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_node.clients.rtmp_publish",
            "--url",
            url,
            "--seconds",
            str(seconds),
            "--start",
            str(start),
            "--size",
            "1280x720",
        ],
        stderr=subprocess.PIPE,
    )


async def watch(viewer: WhepViewer, seconds: float) -> list[tuple[float, int]]:
    """(arrival time, frame counter) of every frame for ``seconds``."""
    seen: list[tuple[float, int]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        frame = await viewer.frame(timeout=5)
        seen.append((time.monotonic(), frame_counter(frame)))
    return seen


def is_live(counter: int) -> bool:
    return LIVE_START - 100 <= counter < LIVE_START + 10000


async def test_publish_replace_and_reconnect_three_times(node: NodeProcess) -> None:
    viewer = WhepViewer(node.url)
    await viewer.connect()
    try:
        await viewer.frame(timeout=10)
        for round_ in range(3):
            start = LIVE_START + round_ * 1000
            pub = publisher(f"{node.rtmp_url}/demo", 2.0, start)
            seen = await watch(viewer, 3.5)
            assert await asyncio.to_thread(pub.wait, 20) == 0, pub.stderr
            live = [c for _, c in seen if start <= c < start + 1000]
            fallback = [c for _, c in seen if c < LIVE_START - 100]
            # The publisher's pictures replaced the test pattern, then the pattern came back.
            assert len(live) >= 30, (round_, [c for _, c in seen])
            assert fallback and seen[-1][1] < LIVE_START, [c for _, c in seen]
            # The viewer never stopped receiving: no gap of a second between frames.
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(seen)]
            assert max(gaps) < 1.0, max(gaps)
        assert node.metric("edge_node_ingest_publishers_total") >= 3
    finally:
        await viewer.close()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="Debian's ffmpeg CLI not installed")
async def test_ffmpeg_cli_publisher_goes_live(node: NodeProcess) -> None:
    before = node.metric("edge_node_ingest_publishers_total")
    proc = subprocess.Popen(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-t",
            "6",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-f",
            "flv",
            f"{node.rtmp_url}/demo",
        ],
        stderr=subprocess.PIPE,
    )
    try:
        # One reading for both: the worker's "output" is reported a moment after the
        # publisher goes live (and may still say "live" for an earlier publisher).
        deadline = time.monotonic() + 10
        while (ingest := node.health()["ingest"])["live"] != "rtmp" or ingest["output"] != "live":
            assert time.monotonic() < deadline, ingest
            await asyncio.sleep(0.1)
    finally:
        assert await asyncio.to_thread(proc.wait, 20) == 0, proc.stderr
    assert node.metric("edge_node_ingest_publishers_total") == before + 1


async def test_refusals_then_a_correct_publisher_works(node: NodeProcess) -> None:
    host, port = node.rtmp_url.removeprefix("rtmp://").split("/")[0].split(":")
    # Garbage bytes: refused and logged, the listener carries on.
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        assert s.recv(100) == b""  # closed by the node
    # A wrong stream key: the publisher is told no.
    wrong = publisher(f"{node.rtmp_url}/not-the-key", 1.0)
    assert await asyncio.to_thread(wrong.wait, 20) != 0
    # A client that connects and goes away mid-handshake.
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"\x03" + b"\x00" * 100)
    outcomes = node.get("/metrics")[1].decode()
    assert 'edge_node_rtmp_connections_total{outcome="protocol_error"}' in outcomes
    assert 'edge_node_rtmp_connections_total{outcome="refused"}' in outcomes
    # And a correct publisher works right after.
    ok = publisher(f"{node.rtmp_url}/demo", 1.5)
    deadline = time.monotonic() + 10
    while node.health()["ingest"]["output"] != "live":
        assert time.monotonic() < deadline, node.health()
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(ok.wait, 20) == 0


async def test_second_publisher_is_refused_while_one_is_live(node: NodeProcess) -> None:
    first = publisher(f"{node.rtmp_url}/demo", 4.0)
    try:
        deadline = time.monotonic() + 10
        while node.health()["ingest"]["live"] != "rtmp":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        second = publisher(f"{node.rtmp_url}/demo", 1.0)
        assert await asyncio.to_thread(second.wait, 20) != 0
    finally:
        assert await asyncio.to_thread(first.wait, 20) == 0
