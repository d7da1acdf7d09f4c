"""Interactions end to end: real WebSocket and data channel clients, a real node,
tokens signed with the node's own secret; the effects decoded at a WHEP viewer."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import msgpack
import pytest

from edge_node.clients.whep import WhepViewer, luma, probe_seq
from edge_node.interaction.auth import load_or_create_secret, mint
from tests.conftest import NodeProcess

pytestmark = pytest.mark.timeout(120)


def token(node: NodeProcess, user: str, role: str, ttl: int = 600, now: float | None = None) -> str:
    secret = load_or_create_secret(node.data_dir)
    return mint(secret, user, role, ttl, time.time() if now is None else now)


def ws_url(node: NodeProcess, tok: str | None) -> str:
    base = node.url.replace("http://", "ws://") + "/ws"
    return base + (f"?token={tok}" if tok else "")


async def call(ws: aiohttp.ClientWebSocketResponse, msg: dict | str | bytes) -> dict:  # type: ignore[type-arg]
    """Send one frame and return the reply to it (skipping pushed state)."""
    if isinstance(msg, dict):
        await ws.send_str(json.dumps(msg))
    elif isinstance(msg, str):
        await ws.send_str(msg)
    else:
        await ws.send_bytes(msg)
    while True:
        frame = await asyncio.wait_for(ws.receive(), 5)
        reply = (
            json.loads(frame.data)
            if frame.type == aiohttp.WSMsgType.TEXT
            else (msgpack.unpackb(frame.data))
        )
        if reply.get("t") != "state":
            return reply  # type: ignore[no-any-return]


def bright(frame, top: int, height: int) -> int:  # type: ignore[no-untyped-def]
    return int((luma(frame)[top : top + height] > 215).sum())


async def test_ws_comment_and_probe_reach_the_picture(node: NodeProcess) -> None:
    viewer = WhepViewer(node.url)
    await viewer.connect()
    try:
        frame = await viewer.frame(timeout=15)
        assert bright(frame, 16, 40) == 0  # lane 0 is empty
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(ws_url(node, token(node, "alice", "viewer"))) as ws:
                assert await call(ws, {"t": "comment", "id": "c1", "text": "弹幕 HELLO 666"}) == {
                    "t": "ack",
                    "id": "c1",
                }
            async with http.ws_connect(ws_url(node, token(node, "bencher", "bench"))) as ws:
                assert (await call(ws, {"t": "probe", "id": "p1", "seq": 31337}))["t"] == "ack"
        seen_text = seen_probe = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (seen_text and seen_probe):
            frame = await viewer.frame(timeout=5)
            seen_text = seen_text or bright(frame, 16, 40) > 50
            seen_probe = seen_probe or probe_seq(frame) == 31337
        assert seen_text and seen_probe
        assert node.metric("edge_node_event_to_frame_seconds_count") >= 1
    finally:
        await viewer.close()


async def test_every_error_code_over_the_websocket(node: NodeProcess) -> None:
    async with aiohttp.ClientSession() as http:
        # Tokens are checked before the upgrade.
        for bad in (
            token(node, "bob", "viewer", now=time.time() - 7200, ttl=60),
            token(node, "bob", "viewer")[:-4] + "AAAA",
        ):
            async with http.get(ws_url(node, bad)) as resp:
                assert resp.status == 401
        async with http.ws_connect(ws_url(node, token(node, "bob", "viewer"))) as ws:
            r = await call(ws, "{not json")
            assert r["t"] == "err" and r["id"] is None and r["code"] == "bad_message"
            r = await call(ws, b"\xc1\xc1garbage")
            assert r["code"] == "bad_message"  # a binary request gets a msgpack reply
            r = await call(ws, msgpack.packb({"t": "like", "id": "l1", "n": 1}))
            assert r == {"t": "ack", "id": "l1"}
            r = await call(ws, {"t": "comment", "id": "big", "text": "x" * 100_000})
            assert r["code"] == "bad_message"
            r = await call(ws, {"t": "teleport", "id": "t1"})
            assert r["code"] == "bad_message" and r["id"] == "t1"
            r = await call(ws, {"t": "like", "id": "l2", "n": True})
            assert r["code"] == "bad_message" and "n" in r["msg"]
            r = await call(ws, {"t": "command", "id": "c1", "cmd": "mute", "args": {"user": "x"}})
            assert r["code"] == "forbidden"
            r = await call(ws, {"t": "gift", "id": "g1", "gift": "rose", "n": 1})
            assert r["code"] == "forbidden"
            r = await call(ws, {"t": "vote", "id": "v1", "poll": "nope", "option": 0})
            assert r["code"] == "unknown_target"
            codes = [
                (await call(ws, {"t": "comment", "id": f"f{i}", "text": "spam"}))["t"]
                for i in range(10)
            ]
            assert "err" in codes  # beyond the burst: rate_limited
            r = await call(ws, {"t": "comment", "id": "f99", "text": "spam"})
            assert r["code"] == "rate_limited"


async def test_operator_poll_and_pushed_tallies(node: NodeProcess) -> None:
    async with aiohttp.ClientSession() as http:
        op = await http.ws_connect(ws_url(node, token(node, "op", "operator")))
        fan = await http.ws_connect(ws_url(node, token(node, "carol", "viewer")))
        args = {"poll": "best", "question": "Which?", "options": ["red", "blue"]}
        r = await call(op, {"t": "command", "id": "o1", "cmd": "poll.open", "args": args})
        assert r == {"t": "ack", "id": "o1", "result": {"poll": "best"}}
        assert (await call(fan, {"t": "vote", "id": "v1", "poll": "best", "option": 1}))[
            "t"
        ] == "ack"
        # The fan is told the tallies without asking.
        deadline = time.monotonic() + 5
        while True:
            frame = await asyncio.wait_for(fan.receive(), 5)
            pushed = json.loads(frame.data)
            if pushed.get("t") == "state" and pushed.get("poll") == "best":
                break
            assert time.monotonic() < deadline
        assert pushed["totals"] == [0, 1]
        r = await call(
            op, {"t": "command", "id": "o2", "cmd": "poll.close", "args": {"poll": "best"}}
        )
        assert r["result"] == {"poll": "best", "totals": [0, 1]}
        await op.close()
        await fan.close()


async def test_data_channel_carries_interactions(node: NodeProcess) -> None:
    viewer = WhepViewer(node.url)  # no token: the demo allows anonymous viewers
    await viewer.connect()
    try:
        await viewer.frame(timeout=15)
        deadline = time.monotonic() + 5
        while viewer.events.readyState != "open":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

        async def reply() -> dict:  # type: ignore[type-arg]
            """The next reply, past the pushed state (a new client is sent what is open)."""
            while True:
                msg = await asyncio.wait_for(viewer.event_messages.get(), 5)
                if msg.get("t") != "state":
                    return msg  # type: ignore[no-any-return]

        viewer.events.send(json.dumps({"t": "like", "id": "dc1", "n": 3}))
        assert await reply() == {"t": "ack", "id": "dc1"}
        viewer.events.send(json.dumps({"t": "probe", "id": "dc2", "seq": 1}))
        r = await reply()
        assert r["code"] == "forbidden"
        viewer.events.send("nonsense")
        r = await reply()
        assert r["code"] == "bad_message" and r["id"] is None
    finally:
        await viewer.close()


async def test_busy_when_the_node_is_saturated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import start_node

    node = start_node(tmp_path, env={"EDGE_NODE_INTERACTION__MAX_EVENTS_PER_S": "1"})
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(ws_url(node, token(node, "dora", "viewer"))) as ws,
        ):
            replies = [await call(ws, {"t": "like", "id": f"l{i}", "n": 1}) for i in range(5)]
        assert replies[0]["t"] == "ack"
        assert any(r.get("code") == "busy" for r in replies), replies
    finally:
        node.stop()


async def test_data_channel_without_a_token_is_unauthorized_when_anonymous_is_off(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    from tests.conftest import start_node

    node = start_node(tmp_path, env={"EDGE_NODE_INTERACTION__ALLOW_ANONYMOUS": "false"})
    viewer = WhepViewer(node.url)
    try:
        await viewer.connect()
        await viewer.frame(timeout=15)
        deadline = time.monotonic() + 5
        while viewer.events.readyState != "open":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        viewer.events.send(json.dumps({"t": "like", "id": "x1", "n": 1}))
        r = await asyncio.wait_for(viewer.event_messages.get(), 5)
        assert r["t"] == "err" and r["code"] == "unauthorized"
        async with aiohttp.ClientSession() as http, http.get(ws_url(node, None)) as resp:
            assert resp.status == 401  # and the WebSocket refuses a missing token
    finally:
        await viewer.close()
        node.stop()


async def test_an_idle_websocket_is_closed_and_a_talking_one_is_not(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import start_node

    node = start_node(tmp_path, env={"EDGE_NODE_INTERACTION__IDLE_TIMEOUT_S": "5"})
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(ws_url(node, token(node, "quiet", "viewer")), autoping=True) as quiet,
            http.ws_connect(ws_url(node, token(node, "chatty", "viewer"))) as chatty,
        ):
            start = time.monotonic()

            async def closed_at() -> float:
                async for _ in quiet:  # the welcome states, then the close
                    pass
                return time.monotonic() - start

            waiting = asyncio.ensure_future(closed_at())
            # The chatty one speaks every 2 s, past the quiet one's timeout and beyond.
            for i in range(5):
                reply = await call(chatty, {"t": "like", "id": f"l{i}", "n": 1})
                assert reply["t"] == "ack", reply
                await asyncio.sleep(2)
            assert waiting.done()
            assert 4.5 <= waiting.result() <= 9, waiting.result()
            assert quiet.closed and not chatty.closed
    finally:
        node.stop()
