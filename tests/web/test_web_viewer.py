"""The viewer page in headless Chromium against a real node: it plays over WHEP, a
comment typed into it reaches the encoded picture, and acks and errors are shown."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from edge_node.clients.whep import WhepViewer
from tests.conftest import NodeProcess
from tests.web.conftest import Browser, console_page, lane_brightness, result_of, token

pytestmark = pytest.mark.timeout(90)

PHONE = {"width": 390, "height": 844}


async def test_viewer_plays_and_a_typed_comment_reaches_the_picture(
    node: NodeProcess, browser: Browser, artifacts: Path
) -> None:
    probe = WhepViewer(node.url)
    await probe.connect()
    try:
        assert lane_brightness(await probe.frame(timeout=15)) == 0
        page = await browser.page(node.url + "/", "viewer")
        # The video element advances: frames are decoded and played.
        await page.wait_for_function(
            "() => document.getElementById('video').currentTime > 1", timeout=15000
        )
        first_frame_ms = int(await page.get_attribute("#video", "data-first-frame-ms") or -1)
        print(f"viewer page: first frame {first_frame_ms} ms after the offer")
        assert first_frame_ms > 0
        await page.wait_for_function(
            "() => document.getElementById('via').textContent.includes('data channel')"
        )
        await page.fill("#comment", "网页弹幕 WEB 666")
        await page.press("#comment", "Enter")  # the keyboard sends, as the button does
        await page.wait_for_function(
            "() => document.getElementById('ack').textContent === 'Comment sent'"
        )
        assert await page.input_value("#comment") == ""
        deadline = time.monotonic() + 10
        bright = 0
        while time.monotonic() < deadline and bright <= 50:
            bright = lane_brightness(await probe.frame(timeout=5))
        assert bright > 50, "the comment never showed in lane 0 of the encoded output"
        await page.screenshot(path=str(artifacts / "viewer.png"))
    finally:
        await probe.close()


async def test_viewer_shows_muted_and_rate_limited_plainly(
    node: NodeProcess, browser: Browser, artifacts: Path
) -> None:
    viewer_token = token(node, "web-fan", "viewer")
    page = await browser.page(f"{node.url}/?token={viewer_token}", "viewer")
    # The token left the address bar at once (history, screen shares, bookmarks).
    assert "token" not in page.url
    await page.wait_for_function(
        "() => document.getElementById('via').textContent.includes('data channel')"
    )
    # The operator mutes the viewer from the console; the page says so at once.
    op = await console_page(browser, node)
    await op.fill("#mute-user", "web-fan")
    await op.fill("#mute-seconds", "600")
    assert await result_of(op, "#mute-result", "#mute") == "✓ mute"
    await page.wait_for_selector("#muted-banner:not([hidden])")
    assert await page.text_content("#muted-banner") == "You are muted for 600 s"
    assert await page.is_disabled("#send")
    await page.screenshot(path=str(artifacts / "viewer-muted.png"))
    assert await result_of(op, "#mute-result", "#unmute") == "✓ unmute"
    await page.wait_for_selector("#muted-banner", state="hidden")
    assert await page.is_enabled("#send")
    # The announcement is set a moment after the banner hides (a screen reader hears a
    # repeated text only when it was cleared first).
    await page.wait_for_function(
        "() => document.getElementById('ack').textContent === 'You may comment again'"
    )
    assert await page.text_content("#ack") == "You may comment again"
    # Past the per-user burst the node says rate_limited, and the page says so.
    # Twelve sends within one task of the page: at Playwright's pace (a round trip per
    # fill and click) a loaded box refills the bucket between them and nothing is limited.
    await page.evaluate(
        """() => {
            for (let i = 0; i < 12; i++) {
                document.getElementById("comment").value = "spam " + i;
                document.getElementById("send").click();
            }
        }"""
    )
    await page.wait_for_function(
        "() => document.getElementById('error').textContent === 'Too fast: please slow down'"
    )
    assert await page.get_attribute("#error", "role") == "alert"


async def test_viewer_over_websocket_on_a_phone_in_chinese(
    node: NodeProcess, browser: Browser, artifacts: Path
) -> None:
    # ?via=ws: where the data channel cannot open (UDP blocked), the WebSocket carries
    # interactions; here it is forced so the fallback path is exercised.
    page = await browser.page(
        node.url + "/?via=ws", "viewer-phone", viewport=PHONE, is_mobile=True, has_touch=True
    )
    await page.wait_for_function(
        "() => document.getElementById('via').textContent.includes('WebSocket')"
    )
    await page.click("#lang")
    assert (await page.inner_text("#like")).strip() == "♥ 点赞"
    assert await page.get_attribute("html", "lang") == "zh-CN"
    await page.click("#like")
    await page.click("#like")
    await page.wait_for_function("() => document.getElementById('ack').textContent === '已点赞'")
    assert await page.text_content("#like-count") == "已点赞 2 次"
    await page.wait_for_function(
        "() => document.getElementById('video').currentTime > 0.5", timeout=15000
    )
    # Nothing wider than the phone's screen: no sideways scrolling.
    assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    # A new visit remembers the language.
    await page.reload()
    await page.wait_for_function("() => document.getElementById('send').textContent === '发送'")
    await asyncio.sleep(0.2)
    await page.screenshot(path=str(artifacts / "viewer-phone-zh.png"))
