"""Issue 6 end to end: a real node, real WebSocket clients with signed tokens.

Moderation before pixels (a held comment approved from an operator connection reaches
the picture), the audit log on disk surviving a restart with the held item, a word
list reloaded from its file without a restart, and a verifiable lottery draw.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge_node.clients.whep import WhepViewer
from edge_node.interaction.lottery import recompute_winners
from tests.conftest import NodeProcess, start_node
from tests.e2e.test_interaction_e2e import bright, call, token, ws_url

pytestmark = pytest.mark.timeout(150)


async def op(ws: aiohttp.ClientWebSocketResponse, cmd: str, **args: Any) -> dict[str, Any]:
    reply = await call(
        ws, {"t": "command", "id": f"{cmd}-{time.monotonic_ns()}", "cmd": cmd, "args": args}
    )
    assert reply["t"] == "ack", reply
    return reply["result"]  # type: ignore[no-any-return]


async def test_a_held_comment_is_approved_by_the_operator_and_reaches_the_picture(
    tmp_path: Path,
) -> None:
    words = tmp_path / "words.txt"
    words.write_text("# the room's list\nhold\t加微信\nblock\t傻逼\n", encoding="utf-8")
    node = start_node(tmp_path, env={"EDGE_NODE_MODERATION__WORDS_FILE": str(words)})
    viewer = WhepViewer(node.url)
    try:
        await viewer.connect()
        frame = await viewer.frame(timeout=15)
        assert bright(frame, 16, 40) == 0  # lane 0 is empty
        async with aiohttp.ClientSession() as http:
            operator = await http.ws_connect(ws_url(node, token(node, "boss", "operator")))
            fan = await http.ws_connect(ws_url(node, token(node, "fan", "viewer")))
            r = await call(fan, {"t": "comment", "id": "b1", "text": "傻 逼"})
            assert r["code"] == "blocked", r
            r = await call(fan, {"t": "comment", "id": "h1", "text": "加 微 信 HELLO"})
            assert r["code"] == "held", r
            await asyncio.sleep(1.0)
            frame = await viewer.frame(timeout=5)
            assert bright(frame, 16, 40) == 0  # neither reached the picture
            items = (await op(operator, "review.list"))["items"]
            assert [i["text"] for i in items] == ["加 微 信 HELLO"]
            await op(operator, "review.approve", item=items[0]["item"])
            deadline = time.monotonic() + 10
            seen = False
            while time.monotonic() < deadline and not seen:
                seen = bright(await viewer.frame(timeout=5), 16, 40) > 50
            assert seen, "the approved comment never reached lane 0"

            # The list reloads from its file without a restart.
            words.write_text("block\tHELLO\n", encoding="utf-8")
            deadline = time.monotonic() + 10
            code = ""
            while time.monotonic() < deadline and code != "blocked":
                r = await call(
                    fan, {"t": "comment", "id": f"x{time.monotonic_ns()}", "text": "hello"}
                )
                code = r.get("code", "")
                await asyncio.sleep(0.3)
            assert code == "blocked"
            await operator.close()
            await fan.close()
    finally:
        await viewer.close()
        assert node.stop() == 0
    lines = (node.data_dir / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    audit = [json.loads(line) for line in lines]
    decisions = [(a["kind"], a["action"]) for a in audit]
    assert ("moderation", "block") in decisions and ("moderation", "hold") in decisions
    assert ("review", "approve") in decisions and ("words", "set") in decisions


async def test_a_lottery_over_the_websocket_is_verifiable(node: NodeProcess) -> None:
    async with aiohttp.ClientSession() as http:
        operator = await http.ws_connect(ws_url(node, token(node, "boss", "operator")))
        opened = await op(operator, "lottery.open", lottery="L1", keyword="抽奖", winners=2)
        assert len(opened["commit"]) == 64
        fans = [
            await http.ws_connect(ws_url(node, token(node, f"fan{i}", "viewer"))) for i in range(5)
        ]
        for i, fan in enumerate(fans):
            msg = (
                {"t": "join", "id": f"j{i}", "lottery": "L1"}
                if i % 2
                else {"t": "comment", "id": f"j{i}", "text": "抽奖"}
            )
            assert (await call(fan, msg))["t"] == "ack"
        drawn = await op(operator, "lottery.draw", lottery="L1")
        assert sorted(drawn["entrants"]) == [f"fan{i}" for i in range(5)]
        assert recompute_winners(drawn["seed"], drawn["entrants"], 2) == drawn["winners"]
        assert hashlib.sha256(bytes.fromhex(drawn["seed"])).hexdigest() == opened["commit"]
        for ws in (operator, *fans):
            await ws.close()
