"""Corrupt media and garbage on the RTMP port (issue 10), against a real node.

A good H.264 stream is made with PyAV, wrapped in FLV tags, then mutated (bit flips,
truncations, insertions, absurd NAL lengths, a damaged decoder configuration,
timestamps going backwards, tags of random bytes) and published over RTMP, session
after session. The media worker may die on them; the supervisor must bring it back
within 2 s, the control process must never fall over, and a good publisher
afterwards must go live. Then random bytes and broken handshakes on the RTMP port.
The counts (inputs tried, worker restarts, longest outage) are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import struct
import time
from typing import Any

import pytest

from edge_node.media import flv
from edge_node.media.rtmp_client import PublishAccepted, PublishRefused, RtmpClientConnection
from tests.bench.test_glass import encoded_frames
from tests.conftest import NodeProcess

pytestmark = pytest.mark.timeout(300)

SESSIONS = 60
TAGS_PER_SESSION = 50  # 3,000 mutated inputs in all


def good_tags() -> tuple[bytes, list[tuple[bytes, bool]]]:
    """(sequence header, [(tag body, keyframe)]) of a short 320x240 stream."""
    header = b""
    tags: list[tuple[bytes, bool]] = []
    for packet in encoded_frames(list(range(40))):
        nalus = flv.split_annexb(bytes(packet))
        sets = flv.parameter_sets(nalus)
        if sets is not None and not header:
            header = flv.avc_sequence_header(*sets)
        pictures = [n for n in nalus if flv.nal_type(n) in (1, 5)]
        if pictures:
            tags.append((flv.avc_video_tag(pictures, packet.is_keyframe), packet.is_keyframe))
    assert header and tags[0][1]
    return header, tags


def mutate(body: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(7)
    data = bytearray(body)
    if kind == 0 and data:  # flip a few bits
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncate
        del data[rng.randrange(len(data) + 1) :]
    elif kind == 2:  # insert random bytes
        at = rng.randrange(len(data) + 1)
        data[at:at] = os.urandom(rng.randint(1, 64))
    elif kind == 3 and len(data) >= 9:  # an absurd NAL length
        data[5:9] = struct.pack(">I", rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, len(data) * 3]))
    elif kind == 4:  # random bytes after a valid tag head
        data = data[:5] + bytearray(os.urandom(rng.randint(0, 300)))
    elif kind == 5:  # garbage tag
        data = bytearray(os.urandom(rng.randint(0, 200)))
    else:  # zero a run
        at = rng.randrange(len(data) + 1)
        data[at : at + rng.randint(1, 32)] = bytes(min(32, len(data) - at))
    return bytes(data)


async def publish(
    port: int, header: bytes, tags: list[tuple[bytes, int]], key: str = "demo"
) -> bool:
    """One RTMP publishing session; False when the node refused or dropped it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = RtmpClientConnection("live", key, f"rtmp://127.0.0.1:{port}/live")
    try:
        conn.initiate()
        writer.write(conn.data_to_send())
        while True:
            data = await asyncio.wait_for(reader.read(65536), 10)
            if not data:
                return False
            conn.receive_data(data)
            writer.write(conn.data_to_send())
            event = conn.next_event()
            if isinstance(event, PublishRefused):
                return False
            if isinstance(event, PublishAccepted):
                break
        conn.send_video(0, header)
        for body, ts in tags:
            conn.send_video(ts, body)
            writer.write(conn.data_to_send())
            await writer.drain()
        return True
    except (ConnectionError, TimeoutError):
        return False
    finally:
        writer.close()


def health(node: NodeProcess) -> dict[str, Any]:
    h: dict[str, Any] = node.health()
    return h


async def wait_worker(node: NodeProcess, timeout_s: float) -> float:
    """Seconds until /healthz shows a live worker (the control process answering)."""
    t0 = time.monotonic()
    while True:
        assert node.proc.poll() is None, "the control process died"
        h = health(node)
        if h["worker"]["alive"]:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"worker not back after {timeout_s} s: {h['worker']}")
        await asyncio.sleep(0.05)


async def test_mutated_flv_and_h264_never_take_the_node_down(node: NodeProcess) -> None:
    port = int(node.rtmp_url.rsplit(":", 1)[1].split("/")[0])
    rng = random.Random(20261125)
    header, tags = good_tags()
    tried = 0
    longest = 0.0
    for session in range(SESSIONS):
        head = mutate(header, rng) if session % 5 == 0 else header
        body: list[tuple[bytes, int]] = []
        ts = 0
        for i in range(TAGS_PER_SESSION):
            tag, _ = tags[i % len(tags)]
            ts = max(0, ts + rng.choice([33, 33, 33, 0, -500, 100000]))
            body.append((mutate(tag, rng) if rng.random() < 0.8 else tag, ts))
        tried += TAGS_PER_SESSION + (head != header)
        await publish(port, head, body)
        longest = max(longest, await wait_worker(node, 2.0))
    restarts = health(node)["worker"]["restarts"]
    # A good publisher afterwards goes live and its pictures are decoded.
    before = health(node)["ingest"]["decoded_frames"]
    good = [(t, i * 33) for i, (t, _) in enumerate(tags)]
    assert await publish(port, header, good)
    deadline = time.monotonic() + 10
    while health(node)["ingest"]["decoded_frames"] < before + 10:
        assert time.monotonic() < deadline, health(node)["ingest"]
        await asyncio.sleep(0.1)
    print(
        f"\nmutated inputs: {tried} in {SESSIONS} sessions; worker restarts: {restarts}; "
        f"longest wait for a live worker: {longest:.2f} s"
    )


async def test_garbage_on_the_rtmp_port_is_refused_and_counted(node: NodeProcess) -> None:
    port = int(node.rtmp_url.rsplit(":", 1)[1].split("/")[0])

    def outcomes() -> dict[str, float]:
        counts: dict[str, float] = {}
        for line in node.get("/metrics")[1].decode().splitlines():
            if m := re.match(r'edge_node_rtmp_connections_total\{outcome="(\w+)"\} (\S+)', line):
                counts[m[1]] = float(m[2])
        return counts

    def since(before: dict[str, float]) -> dict[str, float]:
        now = outcomes()
        return {k: v - before.get(k, 0.0) for k, v in now.items() if v != before.get(k, 0.0)}

    before = outcomes()  # the node is shared by this module's tests
    rng = random.Random(7)
    not_a_handshake = 0  # payloads whose first byte is not RTMP version 3
    for i in range(200):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        if i % 4 == 0:
            payload = b"\x03" + rng.randbytes(rng.randint(0, 3000))  # a handshake gone wrong
        elif i % 4 == 1:
            payload = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        else:
            payload = rng.randbytes(rng.randint(1, 5000))
        not_a_handshake += payload[0] != 3
        writer.write(payload)
        await writer.drain()
        writer.close()
    assert node.proc.poll() is None

    # Every connection is counted once it ends: all that is not a handshake as a
    # protocol error; a handshake cut short as "closed" (or "reset").
    deadline = time.monotonic() + 10
    while sum(since(before).values()) < 200:
        assert time.monotonic() < deadline, since(before)
        await asyncio.sleep(0.1)
    counts = since(before)
    assert counts.get("protocol_error", 0) >= not_a_handshake, (counts, not_a_handshake)
    header, tags = good_tags()
    assert await publish(port, header, [(t, i * 33) for i, (t, _) in enumerate(tags)])
    assert health(node)["status"] in ("ok", "degraded")
