"""The operator console's word list, auto-reply and coupon panels in headless Chromium
against a real node, with viewer pages on the other end: the editor shows the list in
force, a coupon drop hands out each code once, and an auto-reply reaches the asker."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import NodeProcess
from tests.web.conftest import Browser, console_page, result_of, text_is, token, viewer_page

pytestmark = pytest.mark.timeout(90)

_ids = itertools.count(1)


async def operator_command(node: NodeProcess, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
    """One command over a plain /ws operator connection (not the console): its reply."""
    msg_id = f"ws-cmd-{next(_ids)}"
    url = f"{node.url}/ws?token={token(node, 'ws-op', 'operator')}"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_json({"t": "command", "id": msg_id, "cmd": cmd, "args": args})
        while True:  # pushed state (what is open) may come first
            reply: dict[str, Any] = await ws.receive_json(timeout=10)
            if reply.get("id") == msg_id:
                return reply


async def word_rows(page: Any) -> list[list[str]]:
    rows: list[list[str]] = await page.eval_on_selector_all(
        "#words-body tr",
        "rows => rows.map(r => [r.querySelector('.word-pattern').value,"
        " r.querySelector('.word-action').value])",
    )
    return rows


async def test_console_edits_the_word_list_in_force(
    node: NodeProcess, browser: Browser, artifacts: Path
) -> None:
    in_force = [
        {"pattern": "spam", "action": "block"},
        {"pattern": "坏词", "action": "mask"},
        {"pattern": "hold me", "action": "hold"},
    ]
    reply = await operator_command(node, "words.set", {"words": in_force})
    assert reply == {"t": "ack", "id": reply["id"], "result": {"count": 3}}
    op = await console_page(browser, node)
    # Signed in, the editor holds the list the node applies, not an empty row.
    await text_is(op, "#words-loaded", "3 entries in force")
    assert await word_rows(op) == [["spam", "block"], ["坏词", "mask"], ["hold me", "hold"]]
    await op.screenshot(path=str(artifacts / "console-words.png"), full_page=True)
    # Edit: drop the second entry, change the third's action, add one and a blank row.
    await op.get_by_role("button", name="Remove 2", exact=True).click()
    await op.select_option("#words-body tr:nth-child(2) .word-action", "block")
    await op.click("#word-add")
    await op.fill("#words-body tr:last-child .word-pattern", "刷单")
    await op.click("#word-add")
    assert await result_of(op, "#words-result", "#words-save") == '✓ words.set {"count":3}'
    # After the save the editor is read back from the node: the blank row is gone.
    expected = [["spam", "block"], ["hold me", "block"], ["刷单", "block"]]
    await op.wait_for_function("() => document.querySelectorAll('#words-body tr').length === 3")
    assert await word_rows(op) == expected
    listed = await operator_command(node, "words.list", {})
    assert [[w["pattern"], w["action"]] for w in listed["result"]["words"]] == expected


async def test_coupon_drop_from_the_console_gives_each_code_once(
    node: NodeProcess, browser: Browser, artifacts: Path
) -> None:
    op = await console_page(browser, node)
    fans = await asyncio.gather(
        *(
            viewer_page(browser, node, token=token(node, f"shopper-{n}", "viewer"))
            for n in (1, 2, 3)
        )
    )
    # A pool with the same code twice is refused, the node's words next to the form.
    await op.fill("#coupon-id", "web-drop")
    await op.fill("#coupon-kw", "领券")
    await op.fill("#coupon-codes", "SAVE-10A\nSAVE-10A\n")
    refused = await result_of(op, "#coupon-result", "#coupon-open")
    assert refused == (
        "✗ coupon.open: bad_message: args.codes[1]: the same code as args.codes[0]"
    ), refused
    # Two codes (blank lines are not codes), given to the first two who comment the keyword.
    await op.fill("#coupon-codes", "SAVE-10A\n\n  SAVE-10B  \n")
    await text_is(op, "#coupon-count", "2 codes")
    assert await result_of(op, "#coupon-result", "#coupon-open") == (
        '✓ coupon.open {"drop":"web-drop"}'
    )
    await text_is(op, "#coupon-live", "web-drop: open")
    for fan in fans:
        await text_is(fan, '#coupon-list li[data-drop="web-drop"]', "Comment “领券” to get a code")
    for fan, code in zip(fans[:2], ("SAVE-10A", "SAVE-10B"), strict=True):
        await fan.fill("#comment", "领 券!")  # spaces and punctuation do not matter
        await fan.click("#send")
        await text_is(fan, '.coupon-code[data-drop="web-drop"]', code)
    await fans[0].screenshot(path=str(artifacts / "viewer-coupon.png"))
    # Copy: to the clipboard where the browser allows it, else the code is selected.
    await fans[0].get_by_role("button", name="Copy code: SAVE-10A").click()
    await fans[0].wait_for_function("() => document.getElementById('coupon-copied').textContent")
    copied = await fans[0].text_content("#coupon-copied")
    assert copied in ("Copied", "Select the code to copy it"), copied
    if copied != "Copied":
        assert await fans[0].evaluate("() => getSelection().toString()") == "SAVE-10A"
    # The pool ran dry: the drop closed and everyone is told; the third gets no code.
    await text_is(op, "#coupon-live", "web-drop: closed, 2 given out")
    late = fans[2]
    await text_is(late, '#coupon-list li[data-drop="web-drop"]', "This coupon drop has ended")
    await late.fill("#comment", "领券")
    await late.click("#send")
    await text_is(late, "#ack", "Comment sent")
    # A later reply on the same ordered channel: anything the comment caused has arrived.
    await late.click("#like")
    await text_is(late, "#ack", "Like sent")
    assert await late.locator(".coupon-code").count() == 0
    # Asking again after the pool is gone changes nothing for the winners either.
    assert await fans[1].locator(".coupon-code").count() == 1
    # A winner who reloads the page is sent the same code again, never a new one.
    await fans[0].reload()
    await fans[0].wait_for_function(
        "() => document.getElementById('via').textContent.includes('data channel')"
    )
    await text_is(fans[0], '.coupon-code[data-drop="web-drop"]', "SAVE-10A")
    closed = await result_of(op, "#coupon-result", "#coupon-close")
    assert closed == '✓ coupon.close {"drop":"web-drop","issued":2,"left":0}', closed
    await op.screenshot(path=str(artifacts / "console-coupons.png"), full_page=True)


async def test_auto_reply_set_in_the_console_answers_the_asker(
    node: NodeProcess, browser: Browser, artifacts: Path
) -> None:
    op = await console_page(browser, node)
    asker = await viewer_page(browser, node, token=token(node, "asker", "viewer"))
    # A template reaching beyond {user} and {text} is refused, the field named.
    await op.fill("#autoreply-body tr:first-child .rule-pattern", "price|多少钱")
    await op.fill("#autoreply-body tr:first-child .rule-reply", "hi {user.__class__}")
    refused = await result_of(op, "#autoreply-result", "#autoreply-save")
    assert refused.startswith("✗ autoreply.set: bad_message: args.rules[0].reply: "), refused
    assert await op.get_attribute("#alert", "role") == "alert"
    await op.fill("#autoreply-body tr:first-child .rule-reply", "@{user} 99 元 ({text})")
    assert await result_of(op, "#autoreply-result", "#autoreply-save") == (
        '✓ autoreply.set {"count":1}'
    )
    assert await op.text_content("#alert") == ""
    # A comment with no keyword gets no reply; one asking the price does.
    await asker.fill("#comment", "hello")
    await asker.click("#send")
    await text_is(asker, "#ack", "Comment sent")
    assert await asker.is_hidden("#autoreply")
    await asker.fill("#comment", "这个多少钱？")
    await asker.click("#send")
    await text_is(asker, "#autoreply", "Reply: @asker 99 元 (这个多少钱？)")
    assert await asker.get_attribute("#autoreply", "role") == "status"
    await asker.screenshot(path=str(artifacts / "viewer-autoreply.png"))
