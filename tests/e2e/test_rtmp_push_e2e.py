"""RTMP push end to end: the node pushes to a real RTMP listener on loopback, through
publisher switches and a restart of the far end."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from edge_node import barcode
from edge_node.media import flv, rtmp
from edge_node.media.ingest_rtmp import RtmpListener
from edge_node.metrics import Registry
from tests.conftest import free_port, start_node

pytestmark = pytest.mark.timeout(120)


class Receiver:
    """The platform: an RTMP server that decodes what it gets and reads the counters."""

    def __init__(self, port: int) -> None:
        self.frames: list[tuple[float, int, int]] = []  # (arrival, rtmp ts, counter)
        self.publishes = 0
        self.keys: list[str] = []
        self.first_tags: list[int] = []
        self._ctx: av.CodecContext | None = None
        self.listener = RtmpListener(
            "127.0.0.1",
            port,
            "live",
            Registry(),
            check_publish=self._check,
            on_start=self._on_start,
            on_media=self._on_media,
            on_end=lambda c: None,
        )

    def _check(self, key: str) -> str | None:
        self.keys.append(key)
        return None

    def _on_start(self, conn: int, key: str) -> None:
        self.publishes += 1
        self._ctx = None

    def _on_media(self, conn: int, msg: rtmp.MediaMessage) -> None:
        if msg.kind != "video":
            return
        tag = flv.parse_video_tag(msg.payload)
        if len(self.first_tags) < self.publishes:
            self.first_tags.append(tag.packet_type)
        if tag.packet_type == flv.AVC_SEQUENCE_HEADER:
            self._ctx = av.CodecContext.create("h264", "r")
            self._ctx.extradata = tag.data
            return
        assert self._ctx is not None, "video before the sequence header"
        for frame in self._ctx.decode(av.Packet(tag.data)):
            y = frame.to_ndarray(format="yuv420p")[: frame.height]
            counter = barcode.read(y, *barcode.bottom_left(frame.height))
            self.frames.append((time.monotonic(), msg.timestamp_ms, counter))


async def wait_until(cond, seconds: float) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end
        await asyncio.sleep(0.05)


async def test_push_is_unbroken_across_publishers_and_survives_the_far_end_restarting(
    tmp_path: Path,
) -> None:
    port = free_port()
    rx = Receiver(port)
    await rx.listener.start()
    node = start_node(
        tmp_path,
        env={
            "EDGE_NODE_PUSH__URL": f"rtmp://127.0.0.1:{port}/live/platform-secret",
            "EDGE_NODE_PUSH__BACKOFF_INITIAL_S": "0.1",
            "EDGE_NODE_PUSH__BACKOFF_MAX_S": "0.5",
        },
    )
    try:
        await wait_until(lambda: len(rx.frames) >= 30, 15)
        assert rx.keys == ["platform-secret"] and rx.first_tags[0] == flv.AVC_SEQUENCE_HEADER
        # A publisher comes and goes three times: the push carries on, one connection.
        for round_ in range(3):
            start = 40000 + round_ * 1000
            pub = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge_node.clients.rtmp_publish",
                    "--url",
                    node.rtmp_url + "/demo",
                    "--seconds",
                    "1.5",
                    "--start",
                    str(start),
                ]
            )
            assert await asyncio.to_thread(pub.wait, 20) == 0
            await asyncio.sleep(0.7)
        assert rx.publishes == 1
        live = {c for _, _, c in rx.frames if 40000 <= c < 43000}
        assert all(any(s <= c < s + 1000 for c in live) for s in (40000, 41000, 42000)), live
        arrivals = [t for t, _, _ in rx.frames]
        assert max(b - a for a, b in itertools.pairwise(arrivals)) < 1.0
        stamps = [ts for _, ts, _ in rx.frames]
        assert stamps == sorted(stamps)
        # The platform restarts: the push reconnects and starts with a sequence header.
        await rx.listener.stop()
        await asyncio.sleep(1.0)
        rx2 = Receiver(port)
        await rx2.listener.start()
        try:
            await wait_until(lambda: len(rx2.frames) >= 30, 15)
            assert rx2.first_tags[0] == flv.AVC_SEQUENCE_HEADER
            assert node.health()["push"]["connected"] is True
            assert "platform-secret" not in str(node.health())
        finally:
            await rx2.listener.stop()
    finally:
        node.stop()
        await rx.listener.stop()
    assert "platform-secret" not in (tmp_path / "node.log").read_text()
