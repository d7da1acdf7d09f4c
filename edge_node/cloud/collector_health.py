"""The collector's gRPC health checking (``grpc.health.v1``) and server reflection.

Health follows the store: SERVING while it works, NOT_SERVING from the moment a
database call fails until a write commits again. The store says so itself after
every call; this module adds a probe (one tiny committed write every
``probe_interval_s`` when nothing else wrote meanwhile), so that an idle collector
whose disk filled up, or whose database another process locked, turns NOT_SERVING
too, and comes back without traffic once it works again.

The overall status ("") and both of our services follow the store; the health
service itself is exempt from the bearer token (load balancers ask without one).
Reflection lists our services, health and reflection itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edge_node.cloud.collector_errors import StorageError
from edge_node.cloud.collector_store import GroupCommitStore

log = logging.getLogger(__name__)

HEALTH_SERVICE: str = grpc_health.SERVICE_NAME
REFLECTION_SERVICE: str = reflection.SERVICE_NAME
PROBE_INTERVAL_S = 5.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class StoreHealth:
    """Serves ``grpc.health.v1.Health`` for ``services`` from the store's state."""

    def __init__(
        self,
        store: GroupCommitStore,
        services: Sequence[str],
        *,
        probe_interval_s: float = PROBE_INTERVAL_S,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        if probe_interval_s <= 0:
            raise ValueError(f"probe_interval_s must be > 0, got {probe_interval_s}")
        self.store = store
        self.services = ("", *services)
        self.probe_interval_s = probe_interval_s
        self._clock_ms = clock_ms
        self._servicer = grpc_health.aio.HealthServicer()
        self._changed_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def add_to(self, server: Any) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    async def start(self) -> None:
        """Publish the store's current status; start the publisher and the probe."""
        await self._publish(self.store.healthy)
        self.store.on_health_change = self._changed
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="collector-health"),
            asyncio.create_task(self._probe_loop(), name="collector-health-probe"),
        ]

    async def stop(self) -> None:
        """Every service NOT_SERVING for good (the server is going down)."""
        self.store.on_health_change = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._servicer.enter_graceful_shutdown()

    def _changed(self, healthy: bool, reason: str) -> None:
        # Called synchronously by the store; the publisher always sends the latest
        # state, so quick flips never arrive out of order.
        self._changed_event.set()

    async def _publish_loop(self) -> None:
        while True:
            await self._changed_event.wait()
            self._changed_event.clear()
            await self._publish(self.store.healthy)

    async def _publish(self, healthy: bool) -> None:
        status = SERVING if healthy else NOT_SERVING
        for name in self.services:
            await self._servicer.set(name, status)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            recent = time.monotonic() - self.store.last_write_ok < self.probe_interval_s
            if self.store.healthy and recent:
                continue  # summaries are being committed: that says enough
            # A failure is already logged and published by the store.
            with contextlib.suppress(StorageError):
                await self.store.probe(self._clock_ms())


def add_reflection(server: Any, services: Sequence[str]) -> None:
    """Server reflection for ``services``, the health service and reflection itself."""
    reflection.enable_server_reflection((*services, HEALTH_SERVICE, REFLECTION_SERVICE), server)
