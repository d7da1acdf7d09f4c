"""The collector's gRPC health checking and reflection, with real grpc clients on loopback.

Health follows the database: SERVING while it works, NOT_SERVING once a call fails
(here: another process holds the write lock, so every write ends in "database is
locked" after the store's busy timeout), SERVING again when a write commits: the
store's own probe when idle, or a node's summary.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from edge_node.cloud import collector as col
from tests.cloud.test_collector import FakeNode, until

pytestmark = pytest.mark.timeout(30)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
OUR_SERVICES = ("", col.EDGE_LINK_SERVICE, col.COLLECTOR_SERVICE)


async def check(address: str, service: str = "") -> Any:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=3)
        return resp.status


class Watcher:
    """A Health.Watch stream, recording every status the collector pushes."""

    def __init__(self, address: str, service: str = "") -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.call = health_pb2_grpc.HealthStub(self.channel).Watch(
            health_pb2.HealthCheckRequest(service=service)
        )
        self.seen: list[Any] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for resp in self.call:
            self.seen.append(resp.status)

    async def wait_for(self, status: Any, timeout_s: float = 10.0) -> None:
        await until(lambda: bool(self.seen) and self.seen[-1] == status, timeout_s)

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.channel.close()


@pytest.fixture
def lock_holder() -> Iterator[Any]:
    """Takes the database's write lock from another connection (as another process
    would), and lets go of it on demand or at the end."""
    held: list[sqlite3.Connection] = []

    def take(db: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(db, isolation_level=None, timeout=5)
        conn.execute("BEGIN EXCLUSIVE")
        held.append(conn)
        return conn

    yield take
    for conn in held:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


@pytest.fixture
async def failing_db_collector(tmp_path: Path) -> AsyncIterator[col.Collector]:
    """A collector whose writes give up on a lock after 100 ms, probing every 0.2 s."""
    c = await col.serve(
        "127.0.0.1:0", tmp_path / "health.db", busy_timeout_ms=100, health_probe_s=0.2
    )
    yield c
    await c.stop(grace_s=0.5)


async def test_every_service_is_serving_and_health_needs_no_token(tmp_path: Path) -> None:
    c = await col.serve("127.0.0.1:0", tmp_path / "token.db", token="s3cret")
    try:
        assert c.health_served and c.reflection_served
        for service in OUR_SERVICES:
            assert await check(c.address, service) == SERVING, service
        # An unknown service is NOT_FOUND, as the health protocol says.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await check(c.address, "edge_node.v1.NoSuchService")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await c.stop(grace_s=0.5)


async def test_reflection_lists_our_services(tmp_path: Path) -> None:
    c = await col.serve("127.0.0.1:0", tmp_path / "reflect.db")
    try:
        async with grpc.aio.insecure_channel(c.address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            call = stub.ServerReflectionInfo(timeout=5)
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            listed = await call.read()
            await call.write(
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=col.EDGE_LINK_SERVICE)
            )
            described = await call.read()
            await call.done_writing()
        names = {s.name for s in listed.list_services_response.service}
        assert {
            col.EDGE_LINK_SERVICE,
            col.COLLECTOR_SERVICE,
            col.HEALTH_SERVICE,
            col.REFLECTION_SERVICE,
        } <= names
        # The descriptor of the proto file comes back, so grpcurl & co can call us.
        assert described.file_descriptor_response.file_descriptor_proto
    finally:
        await c.stop(grace_s=0.5)


async def test_an_idle_collector_turns_not_serving_when_its_database_fails(
    failing_db_collector: col.Collector, lock_holder: Any
) -> None:
    c = failing_db_collector
    watcher = Watcher(c.address)
    try:
        await watcher.wait_for(SERVING)
        conn = lock_holder(c.store.path)
        await watcher.wait_for(NOT_SERVING)  # found by the probe: nothing else ran
        for service in OUR_SERVICES:
            assert await check(c.address, service) == NOT_SERVING, service
        assert c.store.last_error and "locked" in c.store.last_error
        conn.execute("ROLLBACK")
        await watcher.wait_for(SERVING)
        assert await check(c.address) == SERVING
        assert watcher.seen[:3] == [SERVING, NOT_SERVING, SERVING], watcher.seen
    finally:
        await watcher.close()


async def test_a_failed_summary_write_turns_not_serving_and_a_stored_one_back(
    tmp_path: Path, lock_holder: Any
) -> None:
    # No probe within the test: only the summaries move the status.
    c = await col.serve(
        "127.0.0.1:0", tmp_path / "writes.db", busy_timeout_ms=100, health_probe_s=60
    )
    watcher = Watcher(c.address, col.EDGE_LINK_SERVICE)
    node = await FakeNode(c.address, "venue-1").connect()
    try:
        await node.welcomed()
        await node.summary(1)
        await node.wait_ack(1)
        await watcher.wait_for(SERVING)

        conn = lock_holder(c.store.path)
        await node.summary(2)
        # The write fails: no ack for 2, the stream ends UNAVAILABLE, health follows.
        assert await node.wait_ended() == grpc.StatusCode.UNAVAILABLE
        assert node.error is not None and "locked" in (node.error.details() or "")
        await watcher.wait_for(NOT_SERVING)
        assert max(node.acks) == 1
        assert c.store.failures >= 1 and not c.store.healthy
        await node.close()

        conn.execute("ROLLBACK")
        # The node comes back and retransmits: stored, acked, and SERVING again.
        node = await FakeNode(c.address, "venue-1").connect()
        await node.summary(2)
        await node.wait_ack(2)
        await watcher.wait_for(SERVING)
        assert c.store.healthy
        assert [s.seq async for s in c.store.query_summaries("venue-1")] == [1, 2]
    finally:
        await node.close()
        await watcher.close()
        await c.stop(grace_s=0.5)


async def test_a_stopping_collector_says_not_serving(tmp_path: Path) -> None:
    c = await col.serve("127.0.0.1:0", tmp_path / "stop.db")
    watcher = Watcher(c.address)
    try:
        await watcher.wait_for(SERVING)
        stopping = asyncio.create_task(c.stop(grace_s=1.0))
        await watcher.wait_for(NOT_SERVING, timeout_s=5)
        await stopping
    finally:
        await watcher.close()
        await c.stop(grace_s=0.5)
