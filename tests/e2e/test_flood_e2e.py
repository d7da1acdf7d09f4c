"""Flood isolation (issue 5): one client at 20x its comment limit while 50 others chat
normally. The others get no errors and their ack latency stays flat; the flooder gets
``rate_limited``.

A real node on loopback, real WebSocket clients with tokens signed by the node's own
secret. The test measures the 50 clients' send -> ack latency twice in the same test:
first without the flooder (the baseline), then with it, and bounds the second by the
first. The bound is generous on purpose (a noisy 2-core box runs the node's encoder,
the node's event loop and these clients at once): this is a correctness property
(isolation), not a speed goal.

Every client connects from 127.0.0.1, so the per-address limits (messages per second
and connections per address) would pool all 51 clients into one bucket; the test
raises them so that what it exercises is the per-user limiter of the engine.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass, field

import aiohttp
import pytest

from edge_node.interaction.auth import load_or_create_secret, mint
from tests.conftest import NodeProcess, start_node

pytestmark = pytest.mark.timeout(90)

NORMAL_CLIENTS = 50
COMMENT_RATE_PER_S = 4.0  # the per-user limit under test (env override below)
COMMENT_BURST = 4
NORMAL_PERIOD_S = 0.5  # each normal client: 2 comments/s, half its limit
FLOOD_FACTOR = 20  # the flooder sends 20x its limit: 80 comments/s
BASELINE_S = 4.0
FLOOD_S = 5.0
WARMUP_S = 0.5  # latencies of each phase's first half second are left out
REPLY_TIMEOUT_S = 5.0


@dataclass
class Chatter:
    """One well-behaved client: a comment every period, each awaited before the next."""

    user: str
    ws: aiohttp.ClientWebSocketResponse
    samples: list[tuple[float, float]] = field(default_factory=list)  # (sent at, latency s)
    errors: list[dict] = field(default_factory=list)  # type: ignore[type-arg]
    sent: int = 0

    async def comment(self) -> None:
        self.sent += 1
        msg_id = f"{self.user}-{self.sent}"
        sent_at = time.monotonic()
        await self.ws.send_str(
            json.dumps({"t": "comment", "id": msg_id, "text": f"hi {self.sent}"})
        )
        while True:
            frame = await asyncio.wait_for(self.ws.receive(), REPLY_TIMEOUT_S)
            assert frame.type == aiohttp.WSMsgType.TEXT, frame
            reply = json.loads(frame.data)
            if reply.get("t") == "state":
                continue
            break
        latency = time.monotonic() - sent_at
        if reply != {"t": "ack", "id": msg_id}:
            self.errors.append(reply)
        else:
            self.samples.append((sent_at, latency))

    async def chat_until(self, stop_at: float, rng: random.Random) -> None:
        await asyncio.sleep(rng.uniform(0, NORMAL_PERIOD_S))  # spread the clients out
        next_at = time.monotonic()
        while next_at < stop_at:
            await self.comment()
            next_at = max(next_at + NORMAL_PERIOD_S, time.monotonic())
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


@dataclass
class Flooder:
    ws: aiohttp.ClientWebSocketResponse
    sent: int = 0
    replies: dict[str, int] = field(default_factory=dict)  # "ack" or the err code
    foreign_ids: int = 0  # replies whose id is not one of ours (e.g. the IP limiter's null)

    async def flood(self, seconds: float, per_s: float) -> None:
        batch, step = 4, 4 / per_s  # 4 comments every 50 ms
        start = time.monotonic()
        while (now := time.monotonic()) - start < seconds:
            for _ in range(batch):
                self.sent += 1
                await self.ws.send_str(
                    json.dumps({"t": "comment", "id": f"flood-{self.sent}", "text": "SPAM"})
                )
            next_at = start + step * (self.sent // batch)
            await asyncio.sleep(max(0.0, next_at - now))

    async def read(self) -> None:
        async for frame in self.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            reply = json.loads(frame.data)
            kind = reply.get("t")
            if kind == "state":
                continue
            key = "ack" if kind == "ack" else str(reply.get("code"))
            self.replies[key] = self.replies.get(key, 0) + 1
            if not str(reply.get("id", "")).startswith("flood-"):
                self.foreign_ids += 1

    def answered(self) -> int:
        return sum(self.replies.values())


def _latencies(chatters: list[Chatter], start: float, end: float) -> list[float]:
    return sorted(lat for c in chatters for t, lat in c.samples if start <= t < end)


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def _rate_limited_on_node(node: NodeProcess) -> float:
    text = node.get("/metrics")[1].decode()
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("edge_node_interaction_events_total{")
            and 'type="comment"' in line
            and 'outcome="rate_limited"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_flooder_is_limited_and_the_others_do_not_notice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    node = start_node(
        tmp_path,
        "--audience",
        "0",
        env={
            "EDGE_NODE_INTERACTION__COMMENT_RATE_PER_S": str(COMMENT_RATE_PER_S),
            "EDGE_NODE_INTERACTION__COMMENT_BURST": str(COMMENT_BURST),
            # All clients share 127.0.0.1: keep the per-address limits out of the way.
            "EDGE_NODE_INTERACTION__IP_RATE_PER_S": "100000",
            "EDGE_NODE_INTERACTION__IP_BURST": "100000",
            "EDGE_NODE_INTERACTION__MAX_CONNECTIONS_PER_IP": "200",
        },
    )
    try:
        await _scenario(node)
    finally:
        node.stop()


async def _scenario(node: NodeProcess) -> None:
    secret = load_or_create_secret(node.data_dir)
    ws_base = node.url.replace("http://", "ws://") + "/ws?token="
    rng = random.Random(5)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def connect(user: str) -> aiohttp.ClientWebSocketResponse:
            return await http.ws_connect(ws_base + mint(secret, user, "viewer", 600, time.time()))

        sockets = await asyncio.gather(*(connect(f"fan{i}") for i in range(NORMAL_CLIENTS)))
        chatters = [Chatter(f"fan{i}", ws) for i, ws in enumerate(sockets)]
        flooder = Flooder(await connect("flooder"))
        assert len(chatters) + 1 <= 60  # bounded connection count

        # Phase 1: the baseline, everyone within their limit.
        t0 = time.monotonic()
        await asyncio.gather(*(c.chat_until(t0 + BASELINE_S, rng) for c in chatters))
        # Phase 2: the same chat while one client floods at 20x its limit.
        t1 = time.monotonic()
        reader = asyncio.create_task(flooder.read())
        await asyncio.gather(
            flooder.flood(FLOOD_S, FLOOD_FACTOR * COMMENT_RATE_PER_S),
            *(c.chat_until(t1 + FLOOD_S, rng) for c in chatters),
        )
        flood_end = time.monotonic()
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while flooder.answered() < flooder.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        reader.cancel()
        for ws in (*sockets, flooder.ws):
            await ws.close()

    # The others: only acks, every comment answered.
    errors = [e for c in chatters for e in c.errors]
    assert errors == [], errors[:5]
    assert all(len(c.samples) == c.sent for c in chatters)

    # The flooder: rate limited by the per-user limiter (replies carry its ids), and
    # never admitted beyond its budget (burst + rate x time, with 1 s of slack).
    assert flooder.answered() == flooder.sent, flooder.replies
    assert flooder.foreign_ids == 0, flooder.replies
    assert flooder.sent >= FLOOD_FACTOR * COMMENT_RATE_PER_S * FLOOD_S * 0.8
    assert flooder.replies.get("rate_limited", 0) > flooder.sent // 2, flooder.replies
    assert set(flooder.replies) <= {"ack", "rate_limited"}, flooder.replies
    budget = COMMENT_BURST + COMMENT_RATE_PER_S * (flood_end - t1 + 1.0)
    assert flooder.replies.get("ack", 0) <= budget, flooder.replies
    # The node counted exactly the flooder's refusals as rate_limited comments.
    assert _rate_limited_on_node(node) == flooder.replies["rate_limited"]

    # Flat ack latency: the flood phase within a generous bound of the baseline.
    base = _latencies(chatters, t0 + WARMUP_S, t1)
    flood = _latencies(chatters, t1 + WARMUP_S, flood_end)
    assert len(base) >= 200 and len(flood) >= 300, (len(base), len(flood))
    base_p50, flood_p50 = statistics.median(base), statistics.median(flood)
    base_p95, flood_p95 = _p95(base), _p95(flood)
    summary = (
        f"ack latency baseline p50 {base_p50 * 1e3:.1f} ms p95 {base_p95 * 1e3:.1f} ms "
        f"({len(base)}), flood p50 {flood_p50 * 1e3:.1f} ms p95 {flood_p95 * 1e3:.1f} ms "
        f"({len(flood)}); flooder {flooder.replies}"
    )
    print(summary)
    assert flood_p95 < max(3 * base_p95, 0.050), summary
    assert flood_p50 < max(3 * base_p50, 0.025), summary
