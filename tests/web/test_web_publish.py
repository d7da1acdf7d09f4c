"""The publisher page in headless Chromium (its fake camera and microphone) publishes
to a real node over WHIP; a WHEP viewer receives the browser's picture."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from edge_node.clients.whep import WhepViewer, luma
from tests.conftest import NodeProcess
from tests.web.conftest import Browser

pytestmark = pytest.mark.timeout(90)


async def wait_health(node: NodeProcess, key: str, want: object, seconds: float = 15) -> None:
    import asyncio

    deadline = time.monotonic() + seconds
    while node.health()["ingest"][key] != want:
        assert time.monotonic() < deadline, f"ingest.{key} never became {want!r}"
        await asyncio.sleep(0.2)


async def test_publisher_page_publishes_over_whip_and_a_viewer_receives_it(
    node: NodeProcess, media_browser: Browser, artifacts: Path
) -> None:
    viewer = WhepViewer(node.url)
    await viewer.connect()
    try:
        pattern = luma(await viewer.frame(timeout=15))
        page = await media_browser.page(node.url + "/publish", "publisher")
        # A wrong key: the node's refusal is shown, nothing goes live.
        await page.fill("#key", "not-the-key")
        await page.click("#start")
        await page.wait_for_function(
            "() => document.getElementById('pub-error').textContent.startsWith("
            "'The node refused: 401')"
        )
        assert node.health()["ingest"]["live"] is None
        await page.fill("#key", "demo")
        await page.click("#start")
        await page.wait_for_function(
            "() => document.getElementById('pub-status').textContent === 'Live: connected'",
            timeout=15000,
        )
        await wait_health(node, "live", "whip")
        await wait_health(node, "output", "live")
        # The viewer now gets the browser's camera, not the test pattern (frames queued
        # at the viewer while the page started are read through first).
        deadline = time.monotonic() + 15
        difference = 0.0
        while difference <= 20:
            assert time.monotonic() < deadline, f"still the test pattern ({difference:.1f})"
            camera = luma(await viewer.frame(timeout=5))
            assert camera.shape == pattern.shape  # the node's output size either way
            difference = float(np.abs(camera.astype(int) - pattern.astype(int)).mean())
        await page.wait_for_function(
            "() => /^[1-9][0-9]* kbit\\/s/.test(document.getElementById('pub-stats').textContent)"
        )
        await page.screenshot(path=str(artifacts / "publish.png"))
        await page.click("#stop")
        await page.wait_for_function(
            "() => document.getElementById('pub-status').textContent === 'Stopped'"
        )
        await wait_health(node, "live", None)
        assert await page.is_enabled("#start")
    finally:
        await viewer.close()
