"""Overlays end to end: a scene set on a real node (in this process, through its
composition root) is drawn by the worker, encoded, and decoded at a WHEP viewer."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from edge_node import config
from edge_node.app import Node
from edge_node.clients.whep import WhepViewer, luma, probe_seq
from edge_node.overlay.lanes import lane_y
from edge_node.overlay.scene import Danmaku, Scene, VoteBar

pytestmark = pytest.mark.timeout(90)

LANE = 4


def demo_node(tmp_path: Path) -> Node:
    cfg = config.demo_config()
    cfg = dataclasses.replace(
        cfg,
        node=dataclasses.replace(cfg.node, data_dir=str(tmp_path)),
        http=dataclasses.replace(cfg.http, host="127.0.0.1", port=0),
        ingest=dataclasses.replace(cfg.ingest, rtmp_host="127.0.0.1", rtmp_port=0),
        webrtc=dataclasses.replace(cfg.webrtc, host_addresses=["127.0.0.1"]),
    )
    return Node(cfg)


def bright_pixels(y: np.ndarray, top: int, height: int) -> int:
    """Near-white luma in a band: the test pattern's bars stay below 181 there."""
    return int((y[top : top + height] > 215).sum())


async def test_danmaku_and_probe_reach_the_viewer(tmp_path: Path) -> None:
    node = demo_node(tmp_path)
    await node.start()
    viewer = WhepViewer(f"http://127.0.0.1:{node.http_port}")
    try:
        await viewer.connect()
        frame = await viewer.frame(timeout=15)
        style = node.supervisor.scene.style
        top = lane_y(style, frame.height, LANE)
        assert bright_pixels(luma(frame), top, style.font_size_px + 8) == 0
        now = time.monotonic()
        scene = Scene(
            version=1,
            danmaku=(Danmaku("c1", "弹幕 TEST 666", LANE, now, 60.0, 400),),
            vote=VoteBar("p1", "Best?", ("A", "B"), (3, 1)),
            probe=12345,
        )
        node.supervisor.set_scene(scene)
        deadline = time.monotonic() + 10
        seen_text = seen_probe = False
        while time.monotonic() < deadline and not (seen_text and seen_probe):
            frame = await viewer.frame(timeout=5)
            y = luma(frame)
            seen_probe = seen_probe or probe_seq(frame) == 12345
            seen_text = seen_text or bright_pixels(y, top, style.font_size_px + 8) > 50
        assert seen_probe, probe_seq(frame)
        assert seen_text
        # Clearing the scene clears the picture.
        node.supervisor.set_scene(Scene(version=2))
        await asyncio.sleep(0.5)
        for _ in range(10):
            frame = await viewer.frame(timeout=5)
        assert bright_pixels(luma(frame), top, style.font_size_px + 8) == 0
    finally:
        await viewer.close()
        await node.stop()
