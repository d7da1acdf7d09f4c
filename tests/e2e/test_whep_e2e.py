"""WHEP end to end: a real node process, real aiortc viewers, over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from edge_node.clients.whep import WhepViewer, frame_counter
from tests.conftest import NodeProcess

pytestmark = pytest.mark.timeout(90)


async def read_counters(viewer: WhepViewer, n: int) -> tuple[list[int], float]:
    first = await viewer.frame(timeout=10)
    t0 = time.monotonic()
    counters = [frame_counter(first)]
    for _ in range(n - 1):
        counters.append(frame_counter(await viewer.frame(timeout=5)))
    return counters, time.monotonic() - t0


async def test_viewer_receives_the_demo_stream_at_about_30_fps(node: NodeProcess) -> None:
    viewer = WhepViewer(node.url)
    await viewer.connect()
    try:
        frame = await viewer.frame(timeout=10)
        assert (frame.width, frame.height) == (1280, 720)
        counters, elapsed = await read_counters(viewer, 60)
    finally:
        await viewer.close()
    steps = [b - a for a, b in itertools.pairwise(counters)]
    # The counter is the source's frame number: it only moves forward, mostly by one.
    assert all(s >= 1 for s in steps), counters
    assert sum(1 for s in steps if s == 1) >= 0.8 * len(steps), counters
    # Source-paced at 30 fps: counter advance per wall second is ~30 (loose bounds;
    # performance figures live in bench/, this checks pacing is right, not fast).
    rate = (counters[-1] - counters[0]) / elapsed
    assert 20 < rate < 40, rate


async def test_two_viewers_share_one_encoder(node: NodeProcess) -> None:
    a, b = WhepViewer(node.url), WhepViewer(node.url)
    await a.connect()
    await b.connect()
    try:
        ca, _ = await read_counters(a, 20)
        cb, _ = await read_counters(b, 20)
        health = node.health()
        assert health["viewers"] == 2
        assert node.metric("edge_node_video_encoders") == 1
        assert node.metric("edge_node_whep_sessions") == 2
        # Both decode the same encoded stream: their counters come from one sequence.
        assert max(ca) >= min(cb) - 60 and max(cb) >= min(ca) - 60
    finally:
        await a.close()
        await b.close()
    deadline = time.monotonic() + 5
    while node.health()["viewers"] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert node.health()["viewers"] == 0


async def test_events_channel_answers_every_message(node: NodeProcess) -> None:
    viewer = WhepViewer(node.url)
    await viewer.connect()
    try:
        await viewer.frame(timeout=10)
        deadline = time.monotonic() + 5
        while viewer.events.readyState != "open" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        viewer.events.send(json.dumps({"t": "comment", "id": "c1", "text": "hi"}))
        reply = await asyncio.wait_for(viewer.event_messages.get(), 5)
        assert reply == {"t": "ack", "id": "c1"}  # the demo takes anonymous comments
        viewer.events.send("not json")
        reply = await asyncio.wait_for(viewer.event_messages.get(), 5)
        assert reply["t"] == "err" and reply["id"] is None and reply["code"] == "bad_message"
    finally:
        await viewer.close()


async def test_killed_worker_is_back_within_2s_and_the_viewer_resumes(
    node: NodeProcess,
) -> None:
    viewer = WhepViewer(node.url)
    await viewer.connect()
    try:
        await read_counters(viewer, 10)
        before = node.health()["worker"]
        restarts_before = node.metric("edge_node_worker_restarts_total")
        os.kill(before["pid"], signal.SIGKILL)
        t_kill = time.monotonic()
        while True:
            w = node.health()["worker"]
            if w["alive"] and w["pid"] != before["pid"]:
                break
            assert time.monotonic() - t_kill < 5, "worker not restarted"
            await asyncio.sleep(0.05)
        restart_s = time.monotonic() - t_kill
        assert restart_s < 2.0, restart_s
        assert node.metric("edge_node_worker_restarts_total") == restarts_before + 1, node.get(
            "/metrics"
        )[1].decode()
        # The same peer connection keeps playing: the new worker's counter (from 0)
        # shows up and advances.
        deadline = time.monotonic() + 10
        seen_new: list[int] = []
        while time.monotonic() < deadline and len(seen_new) < 10:
            c = frame_counter(await viewer.frame(timeout=5))
            if c < 300 and (not seen_new or c > seen_new[-1]):
                seen_new.append(c)
        assert len(seen_new) >= 10, seen_new
    finally:
        await viewer.close()


@pytest.mark.parametrize(
    ("body", "ctype", "status", "field"),
    [
        ("v=0\r\n", "text/plain", 415, "content-type"),
        ("", "application/sdp", 400, "body"),
        ("this is not sdp", "application/sdp", 400, "sdp"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "application/sdp", 400, "sdp"),
    ],
)
async def test_bad_whep_offers_get_a_clear_error(
    node: NodeProcess, body: str, ctype: str, status: int, field: str
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(node.url + "/whep", data=body, headers={"Content-Type": ctype}) as resp,
    ):
        assert resp.status == status
        err = await resp.json()
        assert err["field"] == field and err["error"]


async def test_whep_delete(node: NodeProcess) -> None:
    viewer = WhepViewer(node.url)
    await viewer.connect()
    location = viewer.location
    assert location and location.startswith("/whep/")
    async with aiohttp.ClientSession() as http:
        async with http.delete(node.url + location) as resp:
            assert resp.status == 200
        async with http.delete(node.url + location) as resp:
            assert resp.status == 404
    viewer.location = None
    await viewer.close()


async def test_a_silent_worker_is_taken_for_stalled_and_replaced(tmp_path: Path) -> None:
    from tests.conftest import start_node

    node = start_node(tmp_path, env={"EDGE_NODE_WORKER__STALL_TIMEOUT_S": "1"})
    try:
        deadline = time.monotonic() + 30
        while not node.health()["worker"]["alive"] or node.health()["video"]["encoders"] < 1:
            assert time.monotonic() < deadline, node.health()
            await asyncio.sleep(0.1)
        before = node.health()["worker"]
        os.kill(before["pid"], signal.SIGSTOP)  # alive, but says nothing
        t_stop = time.monotonic()
        try:
            while node.health()["worker"]["pid"] == before["pid"]:
                assert time.monotonic() - t_stop < 10, "a silent worker was not replaced"
                await asyncio.sleep(0.05)
        finally:
            with contextlib.suppress(ProcessLookupError):  # killed by the node, as it should be
                os.kill(before["pid"], signal.SIGCONT)
        assert 1.0 <= time.monotonic() - t_stop < 10
        text = node.get("/metrics")[1].decode()
        assert 'edge_node_worker_restarts_total{reason="stall"} 1' in text, text
        deadline = time.monotonic() + 30
        while not node.health()["worker"]["alive"]:
            assert time.monotonic() < deadline, node.health()
            await asyncio.sleep(0.1)
    finally:
        node.stop()
