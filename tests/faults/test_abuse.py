"""Abuse (issue 10): connection and message floods, slowloris, oversize bodies and
frames, expired tokens replayed, operator commands from a viewer: a real node on
loopback refuses each, counts it in /metrics, and its other clients do not notice.

Clients come from several loopback addresses (127.0.0.2, .3, ...: all of 127/8 is
loopback on Linux) so the per-address and the overall connection caps can be told
apart. Every flood is bounded in count and time. Figures print with ``-s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from edge_node.interaction.auth import load_or_create_secret, mint
from edge_node.server.http import HEADER_TIMEOUT_S
from tests.conftest import NodeProcess, start_node

pytestmark = pytest.mark.timeout(120)

PER_IP = 4
OVERALL = 10
IP_BURST = 40
IP_RATE = 20


@pytest.fixture(scope="module")
def abuse_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A demo node with small caps, so floods beyond them stay small."""
    n = start_node(
        tmp_path_factory.mktemp("abuse"),
        env={
            "EDGE_NODE_INTERACTION__MAX_CONNECTIONS_PER_IP": str(PER_IP),
            "EDGE_NODE_INTERACTION__MAX_CONNECTIONS": str(OVERALL),
            "EDGE_NODE_INTERACTION__IP_RATE_PER_S": str(IP_RATE),
            "EDGE_NODE_INTERACTION__IP_BURST": str(IP_BURST),
            # The per-user limits above the per-address one: the address is what floods.
            "EDGE_NODE_INTERACTION__LIKE_RATE_PER_S": "10000",
            "EDGE_NODE_INTERACTION__LIKE_BURST": "10000",
        },
    )
    yield n
    n.stop()


# --- helpers ---------------------------------------------------------------------------


def sample(node: NodeProcess, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in node.get("/metrics")[1].decode().splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def http_errors(node: NodeProcess, route: str, status: int) -> float:
    return sample(node, "edge_node_http_errors_total", route=route, status=str(status))


def events(node: NodeProcess, type_: str, outcome: str) -> float:
    return sample(node, "edge_node_interaction_events_total", type=type_, outcome=outcome)


def token(node: NodeProcess, user: str, role: str, ttl_s: int = 600) -> str:
    return mint(load_or_create_secret(node.data_dir), user, role, ttl_s, time.time())


def ws_url(node: NodeProcess, tok: str | None = None) -> str:
    return node.url.replace("http://", "ws://") + "/ws" + (f"?token={tok}" if tok else "")


@contextlib.asynccontextmanager
async def session_from(address: str) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client whose connections come from ``address`` (a loopback alias)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        yield http


async def reply_to(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next ack/err (pushed state skipped)."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
        reply: dict[str, Any] = json.loads(msg.data)
        if reply.get("t") != "state":
            return reply


async def call(ws: aiohttp.ClientWebSocketResponse, msg: dict[str, Any]) -> dict[str, Any]:
    await ws.send_str(json.dumps(msg))
    return await reply_to(ws)


async def like(ws: aiohttp.ClientWebSocketResponse, mid: str) -> float:
    """A bystander's like, acked; its round trip in seconds."""
    start = time.perf_counter()
    assert await call(ws, {"t": "like", "id": mid, "n": 1}) == {"t": "ack", "id": mid}
    return time.perf_counter() - start


async def try_connect(
    http: aiohttp.ClientSession, url: str
) -> aiohttp.ClientWebSocketResponse | tuple[int, dict[str, Any]]:
    """An open WebSocket, or the (status, JSON error) it was refused with."""
    try:
        return await http.ws_connect(url)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status, {}


# --- connection floods ---------------------------------------------------------------------


async def test_connection_flood_is_refused_counted_and_others_unaffected(
    abuse_node: NodeProcess,
) -> None:
    refused_before = http_errors(abuse_node, "/ws", 503)
    kept: list[aiohttp.ClientWebSocketResponse] = []
    async with (
        session_from("127.0.0.9") as calm,
        calm.ws_connect(ws_url(abuse_node)) as bystander,
        session_from("127.0.0.2") as flood_a,
        session_from("127.0.0.3") as flood_b,
        session_from("127.0.0.4") as flood_c,
        session_from("127.0.0.5") as flood_d,
    ):
        try:
            # 60 at once from one address: the per-address cap lets PER_IP in.
            start = time.perf_counter()
            first = await asyncio.gather(
                *(try_connect(flood_a, ws_url(abuse_node)) for _ in range(60))
            )
            wave_s = time.perf_counter() - start
            kept += [r for r in first if isinstance(r, aiohttp.ClientWebSocketResponse)]
            refused_a = [r for r in first if isinstance(r, tuple)]
            assert len(kept) == PER_IP and all(r[0] == 503 for r in refused_a), first
            rtt_during = await like(bystander, "during-1")
            # Fill the overall cap from two more addresses (the bystander holds one).
            for http, n in ((flood_b, PER_IP), (flood_c, OVERALL - 1 - 2 * PER_IP)):
                for _ in range(n):
                    kept.append(await http.ws_connect(ws_url(abuse_node)))
            assert len(kept) == OVERALL - 1
            # Now anyone new is refused, from a fresh address too.
            second = await asyncio.gather(
                *(try_connect(flood_d, ws_url(abuse_node)) for _ in range(30))
            )
            assert all(isinstance(r, tuple) and r[0] == 503 for r in second), second
            async with flood_d.get(ws_url(abuse_node).replace("ws://", "http://")) as resp:
                assert resp.status == 503
                body = await resp.json()
                assert body["field"] == "connections" and "limit" in body["error"], body
            rtt_after = await like(bystander, "during-2")
            # Every connection that got in still works.
            for i, ws in enumerate(kept):
                assert (await call(ws, {"t": "like", "id": f"k{i}", "n": 1}))["t"] == "ack"
        finally:
            for ws in kept:
                await ws.close()
        refused = len(refused_a) + len(second) + 1
        assert http_errors(abuse_node, "/ws", 503) == refused_before + refused
        # The caps are released as connections close: the flooding address may connect.
        deadline = time.monotonic() + 5
        while sample(abuse_node, "edge_node_interaction_clients") > 1:
            assert time.monotonic() < deadline, "closed connections still counted"
            await asyncio.sleep(0.05)
        async with flood_a.ws_connect(ws_url(abuse_node)) as again:
            assert await like(again, "again") < 5
    print(
        f"\nconnection flood: 60 at once from one address in {wave_s * 1000:.0f} ms, "
        f"{PER_IP} admitted, {len(refused_a)} refused (per address); {len(second) + 1} refused "
        f"at the overall cap of {OVERALL}; counted {refused}; bystander's like "
        f"{rtt_during * 1000:.1f} / {rtt_after * 1000:.1f} ms during the flood"
    )


async def test_a_message_flood_is_rate_limited_per_address_and_counted(
    abuse_node: NodeProcess,
) -> None:
    limited_before = events(abuse_node, "unknown", "rate_limited")
    sent = 300
    async with (
        session_from("127.0.0.9") as calm,
        calm.ws_connect(ws_url(abuse_node)) as bystander,
        session_from("127.0.0.6") as noisy,
        noisy.ws_connect(ws_url(abuse_node)) as flooder,
    ):
        start = time.perf_counter()
        for i in range(sent):
            await flooder.send_str(json.dumps({"t": "like", "id": f"f{i}", "n": 1}))
        replies = [await reply_to(flooder) for _ in range(sent)]
        took = time.perf_counter() - start
        acked = sum(r["t"] == "ack" for r in replies)
        limited = [r for r in replies if r.get("code") == "rate_limited"]
        assert acked + len(limited) == sent, replies
        assert all(r["id"] is None and "address" in r["msg"] for r in limited), limited[:3]
        # The burst, plus what the rate refilled while the flood lasted (and a margin).
        assert IP_BURST <= acked <= IP_BURST + IP_RATE * took + 5, (acked, took)
        rtt = await like(bystander, "calm")
    assert events(abuse_node, "unknown", "rate_limited") == limited_before + len(limited)
    print(
        f"\nmessage flood: {sent} likes in {took * 1000:.0f} ms from one address: {acked} "
        f"acked, {len(limited)} rate_limited (counted); bystander {rtt * 1000:.1f} ms"
    )


# --- slowloris ---------------------------------------------------------------------------------


def slow_sockets(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.7", 0))
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: edge\r\nX-Slow: ")
        s.setblocking(False)
        socks.append(s)
    return socks


def closed_by_peer(s: socket.socket) -> bool:
    """True once the node has closed ``s`` (EOF or reset); sends one more header byte."""
    try:
        if s.recv(4096) == b"":
            return True
    except BlockingIOError:
        pass
    except OSError:
        return True
    try:
        s.send(b"a")
    except (BlockingIOError, InterruptedError):
        pass
    except OSError:
        return True
    return False


async def test_slowloris_is_closed_within_the_header_timeout_and_starves_nobody(
    abuse_node: NodeProcess,
) -> None:
    port = int(abuse_node.url.rsplit(":", 1)[1])
    n = 50
    socks = slow_sockets(port, n)
    opened = time.monotonic()
    closed_at: dict[int, float] = {}
    worst_rtt = 0.0
    try:
        async with (
            session_from("127.0.0.9") as calm,
            calm.ws_connect(ws_url(abuse_node)) as bystander,
        ):
            tick = 0
            while len(closed_at) < n and time.monotonic() - opened < HEADER_TIMEOUT_S + 10:
                tick += 1
                for i, s in enumerate(socks):  # one header byte a second each
                    if i not in closed_at and closed_by_peer(s):
                        closed_at[i] = time.monotonic() - opened
                worst_rtt = max(worst_rtt, await like(bystander, f"slow-{tick}"))
                async with calm.get(abuse_node.url + "/metrics") as resp:
                    assert resp.status == 200
                await asyncio.sleep(1.0)
    finally:
        for s in socks:
            s.close()
    first = min(closed_at.values(), default=float("nan"))
    last = max(closed_at.values(), default=float("nan"))
    print(
        f"\nslowloris: {n} sockets sending a header byte a second; closed by the node "
        f"after {first:.1f} .. {last:.1f} s (header timeout {HEADER_TIMEOUT_S:g} s); "
        f"bystander's worst like {worst_rtt * 1000:.1f} ms"
    )
    assert len(closed_at) == n, f"{n - len(closed_at)} slow sockets still open"
    assert last <= HEADER_TIMEOUT_S + 3, last
    assert worst_rtt < 1.0, worst_rtt


# --- oversize bodies, headers and frames ------------------------------------------------------


async def test_oversize_bodies_headers_and_frames_are_refused_and_counted(
    abuse_node: NodeProcess,
) -> None:
    big = b"v=0\r\nm=video " + b"a" * (1024 * 1024)

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    before = {p: http_errors(abuse_node, p, 413) for p in ("/whep", "/whip")}
    frames_before = events(abuse_node, "unknown", "bad_message")
    async with aiohttp.ClientSession() as http:
        for path in ("/whep", "/whip"):
            headers = {"Content-Type": "application/sdp", "Authorization": "Bearer demo"}
            if path == "/whep":
                headers.pop("Authorization")
            for body in (big, chunked()):  # with a Content-Length, and chunked without
                async with http.post(abuse_node.url + path, data=body, headers=headers) as resp:
                    assert resp.status == 413, await resp.text()
                    error = await resp.json()
                    assert error["field"] == "body" and "larger than" in error["error"], error
        # Headers beyond aiohttp's limits (8190 bytes a line, 128 fields): a plain 400.
        for headers in ({"X-Big": "a" * 20000}, {f"X-H{i}": "v" for i in range(200)}):
            async with http.get(abuse_node.url + "/metrics", headers=headers) as resp:
                assert resp.status in (400, 431), resp.status
        async with http.ws_connect(ws_url(abuse_node), max_msg_size=0) as ws:
            # Over the message cap (64 KiB) but under the frame cap (4x): a clear err.
            reply = await call(ws, {"t": "comment", "id": "big", "text": "x" * 100_000})
            assert reply["code"] == "bad_message" and reply["id"] is None, reply
            assert "larger than 65536" in reply["msg"], reply
            # Over the frame cap: closed with 1009 before the frame is buffered.
            await ws.send_bytes(b"\0" * (300 * 1024))
            msg = await asyncio.wait_for(ws.receive(), 5)
            while msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                msg = await asyncio.wait_for(ws.receive(), 5)
            assert ws.close_code == 1009, (msg, ws.close_code)
    for path in ("/whep", "/whip"):
        assert http_errors(abuse_node, path, 413) == before[path] + 2
    assert events(abuse_node, "unknown", "bad_message") == frames_before + 2
    assert abuse_node.health()["status"] == "ok"


# --- tokens ---------------------------------------------------------------------------------------


async def test_an_expired_token_is_refused_everywhere_and_ends_an_open_connection(
    abuse_node: NodeProcess,
) -> None:
    secret = load_or_create_secret(abuse_node.data_dir)
    now = time.time()
    short = mint(secret, "op-short", "operator", 2, now)
    expires = int(now) + 2
    before = {
        "ws": http_errors(abuse_node, "/ws", 401),
        "stats": http_errors(abuse_node, "/api/stats", 401),
        "whep": http_errors(abuse_node, "/whep", 401),
        "open": events(abuse_node, "unknown", "unauthorized"),
    }
    bearer = {"Authorization": f"Bearer {short}"}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(abuse_node, short)) as ws:
            reply = await call(ws, {"t": "command", "id": "c1", "cmd": "review.list"})
            assert reply["t"] == "ack", reply
            async with http.get(abuse_node.url + "/api/stats", headers=bearer) as resp:
                assert resp.status == 200
            # The open connection is told, then closed, when the token runs out.
            msg = await asyncio.wait_for(ws.receive(), expires - time.time() + 3)
            assert json.loads(msg.data) == {
                "t": "err",
                "id": None,
                "code": "unauthorized",
                "msg": "token: expired; reconnect with a new token",
            }, msg
            closing = await asyncio.wait_for(ws.receive(), 3)
            assert closing.type is aiohttp.WSMsgType.CLOSE, closing
            assert (closing.data, closing.extra) == (1008, "token expired"), closing
            late = time.time() - expires
        # Replayed after expiry: 401 on every door, naming the token.
        async with http.get(ws_url(abuse_node, short).replace("ws://", "http://")) as resp:
            assert resp.status == 401
            assert await resp.json() == {"error": "token: expired", "field": "token"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url(abuse_node, short))
        assert refused.value.status == 401
        async with http.get(abuse_node.url + "/api/stats", headers=bearer) as resp:
            assert resp.status == 401 and (await resp.json())["field"] == "token"
        sdp = {"Content-Type": "application/sdp", **bearer}
        async with http.post(abuse_node.url + "/whep", data="v=0\r\nm=video", headers=sdp) as resp:
            assert resp.status == 401 and "expired" in (await resp.json())["error"]
        # A token whose payload was edited (a later expiry, say) is not a token at all.
        payload, _, signature = token(abuse_node, "op", "operator").partition(".")
        forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
        forged_bearer = {"Authorization": f"Bearer {forged}"}
        async with http.get(abuse_node.url + "/api/stats", headers=forged_bearer) as resp:
            assert resp.status == 401 and "signature" in (await resp.json())["error"]
    assert http_errors(abuse_node, "/ws", 401) == before["ws"] + 2
    assert http_errors(abuse_node, "/api/stats", 401) == before["stats"] + 2
    assert http_errors(abuse_node, "/whep", 401) == before["whep"] + 1
    assert events(abuse_node, "unknown", "unauthorized") == before["open"] + 1
    print(f"\nexpired token: the open connection was closed {late:.2f} s after expiry")


async def test_operator_commands_from_a_viewer_token_are_forbidden_and_counted(
    abuse_node: NodeProcess,
) -> None:
    commands = [
        ("announce", {"text": "free money"}),
        ("mute", {"user": "victim"}),
        ("poll.open", {"poll": "p", "question": "q", "options": ["a", "b"]}),
        ("overlay.style", {"lanes": 50}),
        ("words.set", {"words": []}),
        ("lottery.draw", {"lottery": "l"}),
        ("no.such.command", {}),
    ]
    before = events(abuse_node, "command", "forbidden")
    gifts_before = events(abuse_node, "gift", "forbidden")
    probes_before = events(abuse_node, "probe", "forbidden")
    stats_before = http_errors(abuse_node, "/api/stats", 403)
    async with aiohttp.ClientSession() as http:
        for role in ("viewer", "bench"):
            async with http.ws_connect(
                ws_url(abuse_node, token(abuse_node, f"{role}-1", role))
            ) as ws:
                for i, (cmd, args) in enumerate(commands):
                    mid = f"{role}-{i}"
                    reply = await call(ws, {"t": "command", "id": mid, "cmd": cmd, "args": args})
                    assert reply["t"] == "err" and reply["id"] == mid, reply
                    assert reply["code"] == "forbidden" and role in reply["msg"], reply
                reply = await call(ws, {"t": "gift", "id": f"{role}-g", "gift": "rocket", "n": 9})
                assert reply["code"] == "forbidden", reply
            headers = {"Authorization": f"Bearer {token(abuse_node, f'{role}-1', role)}"}
            async with http.get(abuse_node.url + "/api/stats", headers=headers) as resp:
                assert resp.status == 403 and (await resp.json())["field"] == "token"
        async with http.ws_connect(
            ws_url(abuse_node, token(abuse_node, "viewer-2", "viewer"))
        ) as ws:
            reply = await call(ws, {"t": "probe", "id": "p", "seq": 1})
            assert reply["code"] == "forbidden", reply
            # The refused announce never reached the picture's state: nothing to see.
            reply = await call(ws, {"t": "like", "id": "still-fine", "n": 1})
            assert reply == {"t": "ack", "id": "still-fine"}
    assert events(abuse_node, "command", "forbidden") == before + 2 * len(commands)
    assert events(abuse_node, "gift", "forbidden") == gifts_before + 2
    assert events(abuse_node, "probe", "forbidden") == probes_before + 1
    assert http_errors(abuse_node, "/api/stats", 403) == stats_before + 2
