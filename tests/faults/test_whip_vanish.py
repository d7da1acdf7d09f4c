"""A WHIP publisher that vanishes (its process or network gone: nothing more arrives,
not even a DTLS close) frees the stream within the idle timeout, as an RTMP publisher
does, instead of holding it for the ~30 s of ICE consent: a returning publisher is
accepted, not refused with 409."""

from __future__ import annotations

import asyncio
import time

import pytest

from edge_node.clients.whip import CounterTrack, WhipPublisher
from edge_node.media.ingest_whip import IDLE_TIMEOUT_S
from tests.conftest import NodeProcess
from tests.faults.test_cycles import drop_sockets

pytestmark = pytest.mark.timeout(90)


async def test_a_vanished_whip_publisher_frees_the_stream_within_the_idle_timeout(
    node: NodeProcess,
) -> None:
    first = WhipPublisher(node.url, "demo", 1000)
    first.track = CounterTrack(1000, 320, 240)
    assert await first.connect() == 201
    deadline = time.monotonic() + 20
    while node.health()["ingest"]["live"] != "whip":
        assert time.monotonic() < deadline, node.health()["ingest"]
        await asyncio.sleep(0.1)
    first.location = None  # no DELETE will come
    drop_sockets(first.pc)
    gone_at = time.monotonic()
    while node.health()["ingest"]["live"] is not None:
        took = time.monotonic() - gone_at
        assert took < IDLE_TIMEOUT_S + 5, f"still live {took:.1f} s after the publisher vanished"
        await asyncio.sleep(0.2)
    second = WhipPublisher(node.url, "demo", 2000)
    second.track = CounterTrack(2000, 320, 240)
    try:
        assert await second.connect() == 201
    finally:
        await second.close()
        await first.pc.close()
