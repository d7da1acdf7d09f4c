"""The operator console in headless Chromium against a real node: sign-in, live
figures, a vote run from the console and voted in a viewer page, errors shown plainly,
and the moderation and lottery flows of the contract."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import aiohttp
import pytest

from edge_node.clients.whep import WhepViewer
from tests.conftest import NodeProcess
from tests.web.conftest import (
    Browser,
    console_page,
    lane_brightness,
    result_of,
    text_is,
    token,
    viewer_page,
)

pytestmark = pytest.mark.timeout(90)


async def test_stats_endpoint_is_for_operators_only(node: NodeProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(node.url + "/api/stats") as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == "Bearer"
        viewer_auth = {"Authorization": f"Bearer {token(node, 'v', 'viewer')}"}
        async with http.get(node.url + "/api/stats", headers=viewer_auth) as resp:
            assert resp.status == 403
            assert (await resp.json())["field"] == "token"
        async with http.get(node.url + "/api/stats?token=forged.token") as resp:
            assert resp.status == 401
        op_auth = {"Authorization": f"Bearer {token(node, 'op', 'operator')}"}
        async with http.get(node.url + "/api/stats", headers=op_auth) as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["fps_out"] > 0 and body["viewers"] is not None
    assert set(body["latency_ms"]) == {"p50", "p99", "window_s"}
    assert body["cloud"]["target"] and body["spool_depth"] is not None


async def test_console_sign_in_keeps_the_token_out_of_the_url(
    node: NodeProcess, browser: Browser
) -> None:
    bad = await browser.page(node.url + "/console", "console-bad-token")
    await bad.fill("#token", token(node, "v", "viewer"))
    await bad.press("#token", "Enter")
    await bad.wait_for_function(
        "() => document.getElementById('login-error').textContent.includes('refused')"
    )
    assert await bad.is_hidden("#console")
    # A link with ?token= signs in, and the token leaves the address bar at once.
    page = await browser.page(
        f"{node.url}/console?token={token(node, 'web-op', 'operator')}", "console-link"
    )
    await page.wait_for_selector("#console:not([hidden])")
    assert "token" not in page.url
    assert await page.evaluate("() => sessionStorage.getItem('edge-node.operator-token') !== null")
    # Live figures arrive and are charted: the encoder runs at the demo's 30 fps.
    await page.wait_for_function(
        "() => /^[0-9.]+ \\/ [0-9.]+$/.test(document.getElementById('fig-fps').textContent)"
    )
    fps_label = await page.get_attribute("#chart-fps", "aria-label")
    assert fps_label and fps_label.startswith("fps in / out: ")
    await page.wait_for_function(
        "() => document.getElementById('preview').currentTime > 0.5", timeout=15000
    )
    await page.click("#logout")
    await page.wait_for_selector("#login:not([hidden])")
    assert await page.evaluate("() => sessionStorage.getItem('edge-node.operator-token') === null")


async def test_console_vote_viewer_votes_console_shows_the_tally(
    node: NodeProcess, browser: Browser, artifacts: Path
) -> None:
    op = await console_page(browser, node)
    fan = await viewer_page(browser, node)
    await op.fill("#poll-id", "web-poll")
    await op.fill("#poll-question", "Which colour? 哪个颜色？")
    await op.fill("#poll-options", "红 red\nblue 蓝")
    assert await result_of(op, "#poll-result", "#poll-open") == '✓ poll.open {"poll":"web-poll"}'
    await text_is(op, '#poll-tally li[data-option="1"] .count', "0 (0%)")
    # The viewer's panel appears from the pushed state; the viewer votes for option 2.
    await fan.wait_for_selector('#poll-options button[data-option="1"]')
    await fan.click('#poll-options button[data-option="1"]')
    await text_is(fan, "#ack", "Vote counted")
    assert (
        await fan.get_attribute('#poll-options button[data-option="1"]', "aria-pressed") == "true"
    )
    # The console shows the tally, pushed by the node.
    await text_is(op, '#poll-tally li[data-option="1"] .count', "1 (100%)")
    await text_is(op, '#poll-tally li[data-option="0"] .count', "0 (0%)")
    # The vote changed the picture: the event-to-frame figure now has a value.
    await op.wait_for_function(
        "() => /^[0-9.]+ \\/ [0-9.]+$/.test(document.getElementById('fig-latency').textContent)",
        timeout=10000,
    )
    await op.screenshot(path=str(artifacts / "console.png"), full_page=True)
    assert (
        await result_of(op, "#poll-result", "#poll-close")
        == '✓ poll.close {"poll":"web-poll","totals":[0,1]}'
    )
    await fan.wait_for_selector("#poll-closed:not([hidden])")
    assert await fan.is_disabled('#poll-options button[data-option="0"]')
    await fan.screenshot(path=str(artifacts / "viewer-vote.png"))


async def test_console_shows_a_refused_command_plainly(node: NodeProcess, browser: Browser) -> None:
    op = await console_page(browser, node)
    await op.fill("#poll-id", "no-such-poll")
    await op.click("#poll-close")
    expected = "✗ poll.close: unknown_target: no poll 'no-such-poll'"
    await text_is(op, "#alert", expected)
    assert await op.get_attribute("#alert", "role") == "alert"
    first = (await op.text_content("#log li")) or ""
    assert first.endswith(expected)
    # Bad arguments come back with the node's own words, naming the field.
    await op.fill("#st-opacity", "3")
    await op.evaluate("() => document.getElementById('st-opacity').removeAttribute('max')")
    refused = await result_of(op, "#style-result", "#style-apply")
    assert refused.startswith("✗ overlay.style: bad_message: "), refused


async def test_held_comment_is_approved_from_the_console_and_appears(
    node: NodeProcess, browser: Browser, artifacts: Path
) -> None:
    op = await console_page(browser, node)
    fan = await viewer_page(browser, node)
    probe = WhepViewer(node.url)
    await probe.connect()
    try:
        # The word list is edited in the console: one word held for review.
        await op.fill("#words-body tr:first-child .word-pattern", "HOLDME")
        await op.select_option("#words-body tr:first-child .word-action", "hold")
        assert await result_of(op, "#words-result", "#words-save") == '✓ words.set {"count":1}'
        await probe.frame(timeout=15)
        await fan.fill("#comment", "please HOLDME now")
        await fan.click("#send")
        await text_is(fan, "#error", "Your comment is held for review")
        # Held means not on screen.
        for _ in range(15):
            assert lane_brightness(await probe.frame(timeout=5)) == 0
        # It waits in the console's queue; approved, it goes on screen.
        await op.click("#review-refresh")
        item = op.locator(".review-item", has_text="please HOLDME now")
        await item.wait_for()
        await op.screenshot(path=str(artifacts / "console-review.png"), full_page=True)
        await op.eval_on_selector("#review-result", "e => { e.textContent = ''; }")
        await item.get_by_role("button", name="Approve").first.click()
        await op.wait_for_function(
            "() => document.getElementById('review-result').textContent !== ''"
        )
        approved = (await op.text_content("#review-result")) or ""
        assert approved.startswith("✓ review.approve"), approved
        deadline = time.monotonic() + 10
        bright = 0
        while time.monotonic() < deadline and bright <= 50:
            bright = lane_brightness(await probe.frame(timeout=5))
        assert bright > 50, "the approved comment never showed"
    finally:
        await probe.close()


async def test_lottery_commit_at_open_and_seed_and_winner_at_draw(
    node: NodeProcess, browser: Browser
) -> None:
    op = await console_page(browser, node)
    fan = await viewer_page(browser, node, token=token(node, "lucky", "viewer"))
    await op.fill("#lottery-id", "web-lottery")
    await op.fill("#lottery-kw", "抽奖")
    await op.fill("#lottery-n", "1")
    opened = await result_of(op, "#lottery-status", "#lottery-open")
    assert opened.startswith("✓ lottery.open"), opened
    commit_text = (await op.text_content('#lottery-result [data-field="commit"]')) or ""
    commit = commit_text.rsplit(" ", 1)[-1].rsplit("：", 1)[-1]
    assert len(commit) == 64
    # The viewer's panel shows the commitment too, and the viewer enters by commenting
    # the keyword (the contract's other way is the panel's Join, a `join` message).
    await fan.wait_for_selector("#lottery-panel:not([hidden])")
    assert commit in ((await fan.text_content("#lottery-commit")) or "")
    await fan.fill("#comment", "抽奖")
    await fan.click("#send")
    await text_is(fan, "#ack", "Comment sent")
    await text_is(fan, "#lottery-me", "You are in the draw")
    drawn = await result_of(op, "#lottery-status", "#lottery-draw")
    assert drawn.startswith("✓ lottery.draw"), drawn
    seed = ((await op.text_content('#lottery-result [data-field="seed"]')) or "").rsplit(" ", 1)[-1]
    assert hashlib.sha256(bytes.fromhex(seed)).hexdigest() == commit
    assert (await op.text_content('#lottery-result [data-field="winners"]')) == "Winners: lucky"
    await text_is(fan, "#lottery-me", "You won!")
    assert seed in ((await fan.text_content("#lottery-seed")) or "")


async def test_pk_from_the_console_a_viewer_picks_a_side_and_sees_the_winner(
    node: NodeProcess, browser: Browser, artifacts: Path
) -> None:
    op = await console_page(browser, node)
    fan = await viewer_page(browser, node)
    await op.fill("#pk-id", "web-pk")
    await op.fill("#pk-a", "红队")
    await op.fill("#pk-b", "Blue")
    await op.fill("#pk-seconds", "60")
    await op.select_option("#pk-scoring", "votes")
    assert await result_of(op, "#pk-result", "#pk-open") == '✓ pk.open {"pk":"web-pk"}'
    # The viewer's panel comes from the pushed state; a side is picked with a tap.
    side_b = '#pk-scores button[data-side="1"]'
    await fan.wait_for_selector(side_b)
    await fan.click(side_b)
    await text_is(fan, "#ack", "You joined this side")
    assert await fan.get_attribute(side_b, "aria-pressed") == "true"
    await text_is(fan, side_b, "Blue: 1")
    await text_is(op, "#pk-live", "红队: 0 · Blue: 1")
    await fan.screenshot(path=str(artifacts / "viewer-pk.png"))
    closed = await result_of(op, "#pk-result", "#pk-close")
    assert closed == '✓ pk.close {"pk":"web-pk","scores":[0,1],"winner":"Blue"}'
    await text_is(fan, "#pk-winner", "Winner: Blue")
    assert await fan.is_disabled(side_b)
