"""WHIP ingest end to end: an aiortc publisher, a real node, a WHEP viewer; loopback."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from edge_node.clients.whep import WhepViewer, frame_counter
from edge_node.clients.whip import WhipPublisher
from tests.conftest import NodeProcess

pytestmark = pytest.mark.timeout(120)

START = 50000


async def wait_for_counter(viewer: WhepViewer, low: int, high: int, seconds: float) -> list[int]:
    seen: list[int] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        c = frame_counter(await viewer.frame(timeout=5))
        seen.append(c)
        if sum(1 for s in seen if low <= s < high) >= 20:
            return seen
    raise AssertionError(f"no run of counters in [{low}, {high}): {seen[-40:]}")


async def test_whip_publisher_replaces_the_pattern_and_delete_ends_it(node: NodeProcess) -> None:
    viewer = WhepViewer(node.url)
    await viewer.connect()
    pub = WhipPublisher(node.url, "demo", START)
    try:
        await viewer.frame(timeout=10)
        assert await pub.connect() == 201
        assert pub.location and pub.location.startswith("/whip/")
        await wait_for_counter(viewer, START, START + 5000, 15)
        assert node.health()["ingest"]["live"] == "whip"
        # A second publisher while one is live: 409.
        second = WhipPublisher(node.url, "demo")
        assert await second.connect() == 409
        await second.close()
        # DELETE ends it: the test pattern comes back.
        await pub.close()
        seen = await wait_for_counter(viewer, 0, START - 100, 10)
        assert seen[-1] < START - 100
        assert node.health()["ingest"]["live"] is None
    finally:
        await pub.close()
        await viewer.close()


@pytest.mark.parametrize(
    ("headers", "body", "status", "field"),
    [
        ({}, "v=0\r\n", 401, "authorization"),
        ({"Authorization": "Bearer nope"}, "v=0\r\n", 401, "authorization"),
        ({"Authorization": "Bearer demo"}, "garbage", 400, "sdp"),
        ({"Authorization": "Bearer demo", "Content-Type": "text/plain"}, "x", 415, "content-type"),
    ],
)
async def test_whip_refusals(
    node: NodeProcess, headers: dict[str, str], body: str, status: int, field: str
) -> None:
    headers = {"Content-Type": "application/sdp", **headers}
    async with (
        aiohttp.ClientSession() as http,
        http.post(node.url + "/whip", data=body, headers=headers) as resp,
    ):
        assert resp.status == status
        assert (await resp.json())["field"] == field
        if status == 401:
            assert resp.headers["WWW-Authenticate"] == "Bearer"


async def test_whip_survives_a_worker_restart(node: NodeProcess) -> None:
    import os
    import signal

    viewer = WhepViewer(node.url)
    await viewer.connect()
    pub = WhipPublisher(node.url, "demo", START)
    try:
        assert await pub.connect() == 201
        await wait_for_counter(viewer, START, START + 9000, 15)
        os.kill(node.health()["worker"]["pid"], signal.SIGKILL)
        await asyncio.sleep(0.5)
        # The same publisher session feeds the new worker (after a PLI-driven keyframe).
        seen = await wait_for_counter(viewer, START, START + 9000, 15)
        assert seen
        assert node.metric("edge_node_whip_plis_total") >= 1
    finally:
        await pub.close()
        await viewer.close()


async def test_whip_opus_audio_reaches_the_viewer(node: NodeProcess) -> None:
    import numpy as np

    viewer = WhepViewer(node.url, audio=True)
    await viewer.connect()
    pub = WhipPublisher(node.url, "demo", START, audio=True)
    try:
        assert await pub.connect() == 201
        await wait_for_counter(viewer, START, START + 9000, 15)
        frames = [await viewer.audio_frame(timeout=10) for _ in range(50)]
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
        assert np.abs(pcm.astype(np.float64)).max() > 1000
    finally:
        await pub.close()
        await viewer.close()
