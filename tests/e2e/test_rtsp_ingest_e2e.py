"""RTSP pull end to end: the node pulls a camera (tests/rtsp_camera.py, a minimal RTSP
server speaking to FFmpeg's real RTSP client), the camera drops and comes back."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_node.clients.whep import WhepViewer, frame_counter
from tests.conftest import free_port, start_node

pytestmark = pytest.mark.timeout(120)


def camera(port: int, seconds: float, start: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.rtsp_camera",
            "--port",
            str(port),
            "--seconds",
            str(seconds),
            "--start",
            str(start),
        ]
    )


async def see(viewer: WhepViewer, low: int, high: int, seconds: float) -> None:
    end = time.monotonic() + seconds
    hits = 0
    seen: list[int] = []
    while time.monotonic() < end:
        c = frame_counter(await viewer.frame(timeout=5))
        seen.append(c)
        hits += low <= c < high
        if hits >= 15:
            return
    raise AssertionError(f"no counters in [{low}, {high}): {seen[-30:]}")


async def test_rtsp_camera_drops_and_comes_back(tmp_path: Path) -> None:
    port = free_port()
    cam = camera(port, 2.5, 60000)
    time.sleep(0.5)
    node = start_node(
        tmp_path,
        env={
            "EDGE_NODE_INGEST__RTSP_URL": f"rtsp://user:cam-pw-7f3a@127.0.0.1:{port}/cam",
        },
    )
    viewer = WhepViewer(node.url)
    try:
        await viewer.connect()
        await see(viewer, 60000, 61000, 10)
        cam.wait(10)  # the camera is gone: the fallback shows
        await see(viewer, 0, 50000, 10)
        cam = camera(port, 3.0, 62000)
        await see(viewer, 62000, 63000, 20)  # reconnected by itself
        deadline = time.monotonic() + 5  # worker stats arrive once a second
        while (rtsp := node.health()["ingest"]["rtsp"])["connects"] < 2:
            assert time.monotonic() < deadline, rtsp
            time.sleep(0.2)
        assert rtsp["failures"] >= 1
        assert "cam-pw-7f3a" not in rtsp["url"]
        assert "cam-pw-7f3a" not in (tmp_path / "node.log").read_text()
        # While the node pulls a camera, publishers are refused.
        pub = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_node.clients.rtmp_publish",
                "--url",
                node.rtmp_url + "/demo",
                "--seconds",
                "0.5",
                "--size",
                "320x240",
            ],
            capture_output=True,
            timeout=30,
        )
        assert pub.returncode != 0
    finally:
        await viewer.close()
        node.stop()
        cam.kill()
        cam.wait()
