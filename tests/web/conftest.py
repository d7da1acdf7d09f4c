"""Headless Chromium for the web page tests, driven by Playwright's Python API.

Debian's ``chromium`` (installed by .ci/run) is used as it is: Playwright's own browser
downloads are never needed. Without a chromium binary (a developer machine), the
browser tests skip with the reason; under CI (``CI`` set) they fail instead, so a
missing install step cannot turn the suite green by skipping.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from edge_node.clients.whep import luma
from edge_node.interaction.auth import load_or_create_secret, mint
from tests.conftest import NodeProcess

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Chromium's built-in fake camera (a moving test card) and microphone (a beep), granted
# without a prompt: the publisher page's getUserMedia works headless.
FAKE_MEDIA_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]

ARTIFACTS = (
    Path(
        os.environ.get(
            "EDGE_NODE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"
        )
    )
    / "web"
)


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs it: see .ci/run)")
    pytest.skip(reason)


class PageErrors:
    """Uncaught exceptions and console errors of the pages a test opened: a page that
    throws fails its test even when the assertion it waits for happens to pass."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Any, name: str) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"{name}: {exc}"))
        page.on(
            "console",
            lambda msg: msg.type == "error" and self.errors.append(f"{name}: console: {msg.text}"),
        )


class Browser:
    """One Chromium for a test; pages are opened in their own contexts (one person each:
    separate sessionStorage, separate WebRTC peers)."""

    def __init__(self, browser: Any, errors: PageErrors) -> None:
        self.browser = browser
        self.errors = errors

    async def page(
        self, url: str, name: str, viewport: dict[str, int] | None = None, **context: Any
    ) -> Any:
        ctx = await self.browser.new_context(
            viewport=viewport or {"width": 1280, "height": 800}, **context
        )
        # Every wait in these tests is for something that takes well under a second on
        # a quiet machine; 15 s leaves room for a loaded CI box, not for a hang.
        ctx.set_default_timeout(30000)  # a loaded 2-core CI box is slow to render
        page = await ctx.new_page()
        self.errors.watch(page, name)
        await page.goto(url)
        return page


async def _launch(extra_args: list[str]) -> AsyncIterator[Browser]:
    path = chromium_path()
    if path is None:
        _unavailable("no chromium on PATH (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    errors = PageErrors()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS + extra_args)
        try:
            yield Browser(browser, errors)
        finally:
            await browser.close()
    # Expected refusals (a wrong token, a wrong stream key) log a failed request; those
    # are what the tests provoke, anything else is a page bug.
    unexpected = [e for e in errors.errors if "Failed to load resource" not in e]
    assert not unexpected, unexpected


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    async for b in _launch([]):
        yield b


@pytest_asyncio.fixture
async def media_browser() -> AsyncIterator[Browser]:
    async for b in _launch(FAKE_MEDIA_ARGS):
        yield b


@pytest.fixture(scope="session")
def artifacts() -> Iterator[Path]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield ARTIFACTS
    print(f"\nweb test screenshots: {ARTIFACTS}")


def token(node: NodeProcess, user: str, role: str, ttl: int = 600) -> str:
    return mint(load_or_create_secret(node.data_dir), user, role, ttl, time.time())


def lane_brightness(frame: Any, top: int = 16, height: int = 40) -> int:
    """Near-white pixels in danmaku lane 0 of a decoded frame: the test pattern has none
    there, a comment's text has hundreds."""
    return int((luma(frame)[top : top + height] > 215).sum())


async def text_is(page: Any, selector: str, expected: str, timeout_ms: int = 10000) -> None:
    """Wait until ``selector``'s text is ``expected`` (for text that changes over time)."""
    await page.wait_for_function(
        "([sel, want]) => { const e = document.querySelector(sel);"
        " return e !== null && e.textContent.trim() === want; }",
        arg=[selector, expected],
        timeout=timeout_ms,
    )


async def result_of(page: Any, selector: str, click: str) -> str:
    """Click ``click`` and return the text the command's result line then shows (ack
    or error, whichever comes: a refusal fails the caller's assertion at once, with the
    node's words, instead of timing out)."""
    await page.eval_on_selector(selector, "e => { e.textContent = ''; }")
    await page.click(click)
    await page.wait_for_function(
        "sel => document.querySelector(sel).textContent.trim() !== ''", arg=selector
    )
    return ((await page.text_content(selector)) or "").strip()


async def console_page(browser: Browser, node: NodeProcess) -> Any:
    """A console page signed in through its form, with the command link up."""
    page = await browser.page(
        node.url + "/console", "console", viewport={"width": 1400, "height": 1100}
    )
    await page.fill("#token", token(node, "web-op", "operator"))
    await page.click("#login-form button[type=submit]")
    await page.wait_for_selector("#console:not([hidden])")
    await text_is(page, "#link-state", "Command link: connected")
    return page


async def viewer_page(browser: Browser, node: NodeProcess, **query: str) -> Any:
    """A viewer page playing, its interactions on the data channel."""
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    page = await browser.page(f"{node.url}/?{qs}", "viewer")
    await page.wait_for_function(
        "() => document.getElementById('via').textContent.includes('data channel')"
    )
    return page
