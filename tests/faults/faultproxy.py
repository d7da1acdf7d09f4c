"""A fault-injecting TCP proxy for tests (this kind of machine has no netem or veth).

``FaultProxy(target_port)`` listens on 127.0.0.1 and relays every connection to the
target, in both directions, through one ``Faults`` setting that a test changes while
traffic flows:

- ``latency_s`` / ``jitter_s``: each chunk is held that long (plus uniform jitter)
  before it is forwarded; order is kept;
- ``bandwidth_bps``: bytes per second per direction (token bucket);
- ``slice_bytes``: chunks are cut into pieces this small, each written separately;
- ``blackhole``: connections are accepted and bytes read, but nothing is forwarded
  (a stalled peer: TCP stays up, nothing comes back);
- ``refuse``: new connections are closed at once;
- ``reset_after_bytes``: a connection is reset (RST, via SO_LINGER 0) after this many
  bytes have passed it; ``close_after_bytes``: closed cleanly instead.

It runs its own event loop on a thread so that the test (and the processes under
test) stay independent of it. Counters say what it did, so a test can check that a
fault was really injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Faults:
    latency_s: float = 0.0
    jitter_s: float = 0.0
    bandwidth_bps: float = 0.0  # 0: unlimited
    slice_bytes: int = 0  # 0: forward chunks whole
    blackhole: bool = False
    refuse: bool = False
    reset_after_bytes: int = 0  # 0: never
    close_after_bytes: int = 0  # 0: never


@dataclass
class Counts:
    accepted: int = 0
    refused: int = 0
    resets: int = 0
    closes: int = 0
    bytes_forwarded: int = 0
    bytes_swallowed: int = 0
    open: int = 0
    slices: int = 0
    delays: list[float] = field(default_factory=list)


class FaultProxy:
    def __init__(self, target_port: int, seed: int = 0) -> None:
        self.target_port = target_port
        self.faults = Faults()
        self.counts = Counts()
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self.port = 0

    # --- control, from the test's thread ---------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, **changes: object) -> None:
        """Replace the faults (unnamed ones go back to none) for new and open connections."""
        faults = Faults(**changes)  # type: ignore[arg-type]
        self._loop.call_soon_threadsafe(setattr, self, "faults", faults)

    def reset_all(self) -> None:
        """Reset every open connection now."""
        self._loop.call_soon_threadsafe(self._reset_all)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._reset_all)
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # --- the loop --------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    def _reset_all(self) -> None:
        for w in list(self._writers):
            _reset(w)
            self.counts.resets += 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.faults.refuse:
            self.counts.refused += 1
            _reset(writer)
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            self.counts.refused += 1
            _reset(writer)
            return
        self.counts.accepted += 1
        self.counts.open += 1
        self._writers |= {writer, up_w}
        passed = [0]  # bytes through this connection, both directions
        try:
            await asyncio.gather(
                self._pipe(reader, up_w, passed, (writer, up_w)),
                self._pipe(up_r, writer, passed, (writer, up_w)),
                return_exceptions=True,
            )
        finally:
            self.counts.open -= 1
            for w in (writer, up_w):
                self._writers.discard(w)
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        passed: list[int],
        both: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        allowance, last = 0.0, time.monotonic()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                f = self.faults
                if f.blackhole:
                    self.counts.bytes_swallowed += len(data)
                    continue
                passed[0] += len(data)
                if f.reset_after_bytes and passed[0] >= f.reset_after_bytes:
                    self.counts.resets += 1
                    for w in both:
                        _reset(w)
                    return
                if f.close_after_bytes and passed[0] >= f.close_after_bytes:
                    self.counts.closes += 1
                    for w in both:
                        w.close()
                    return
                if f.latency_s or f.jitter_s:
                    delay = f.latency_s + self._rng.uniform(0, f.jitter_s)
                    self.counts.delays.append(delay)
                    await asyncio.sleep(delay)
                step = f.slice_bytes or len(data)
                for i in range(0, len(data), step):
                    piece = data[i : i + step]
                    if f.bandwidth_bps:
                        now = time.monotonic()
                        allowance = min(f.bandwidth_bps, allowance + (now - last) * f.bandwidth_bps)
                        last = now
                        allowance -= len(piece)
                        if allowance < 0:
                            await asyncio.sleep(-allowance / f.bandwidth_bps)
                    writer.write(piece)
                    if f.slice_bytes:
                        self.counts.slices += 1
                        await writer.drain()
                    self.counts.bytes_forwarded += len(piece)
                await writer.drain()
        except (ConnectionError, OSError):
            for w in both:
                _reset(w)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN (SO_LINGER with a zero timeout)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
