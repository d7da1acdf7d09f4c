"""One connected node's Sync stream, as the collector sees it.

What goes out to the node (acks, commands, platform events) queues here, and the
summaries of this stream wait here for their commit, in arrival order. Both are
bounded: a full ``in_flight`` makes the stream's reader wait (gRPC flow control then
pushes back on the node), and a full command queue refuses with ``NodeBusy``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from edge_node.cloud.collector_errors import NodeBusy, NodeNotConnected, StorageError
from edge_node.cloud.collector_records import Ack, Command, Hello, PlatformEvent
from edge_node.errors import EdgeNodeError

MAX_IN_FLIGHT_SUMMARIES = 256  # per stream, received but not yet committed
MAX_QUEUED_COMMANDS = 256  # per stream, not yet written to the node

Outgoing = Ack | Command | PlatformEvent


class NodeSession:
    """One open Sync stream: what goes out to the node, and the summaries of this
    stream awaiting their commit."""

    def __init__(self, hello: Hello) -> None:
        self.hello = hello
        self.node_id = hello.node_id
        self.in_flight: asyncio.Queue[asyncio.Future[int]] = asyncio.Queue(MAX_IN_FLIGHT_SUMMARIES)
        self.error: EdgeNodeError | None = None
        self._ack: int | None = None
        self._acked = -1
        self._queued: deque[Command | PlatformEvent] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self.acker: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def set_ack(self, highest: int) -> None:
        # Always resend, even when unchanged: a retransmitting node learns from it.
        self._ack = max(highest, self._acked)
        self._wake.set()

    def push(self, item: Command | PlatformEvent) -> None:
        if self._closed:
            raise NodeNotConnected(self.node_id, "disconnected")
        if len(self._queued) >= MAX_QUEUED_COMMANDS:
            raise NodeBusy(f"node {self.node_id!r} has {len(self._queued)} commands queued")
        self._queued.append(item)
        self._wake.set()

    def close(self, error: EdgeNodeError | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self.error = error
        self._wake.set()

    async def outgoing(self) -> AsyncIterator[Outgoing]:
        """What to write to the node, until the session closes. An error closes it
        at once; a clean close (the node half-closed) first sends what is left."""
        while True:
            if self._closed and self.error is not None:
                return
            if self._queued:
                yield self._queued.popleft()
                continue
            if self._ack is not None:
                self._acked, self._ack = self._ack, None
                yield Ack(self._acked)
                continue
            if self._closed:
                return
            self._wake.clear()
            await self._wake.wait()

    async def ack_loop(self) -> None:
        """Turn committed summaries into acks, in the order they arrived."""
        while True:
            fut = await self.in_flight.get()
            try:
                highest = await fut
            except StorageError as exc:
                self.close(exc)
                return
            finally:
                self.in_flight.task_done()
            self.set_ack(highest)
