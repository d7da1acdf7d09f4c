"""Many WHEP viewers in one process, counting what arrives instead of decoding it:
``python -m bench.fanout_viewer --url URL --count 50 [--decode 1] --seconds 10``.

One process holding ``--count`` aiortc peer connections, each a real WHEP session
(POST, ICE, DTLS, SRTP, RTCP receiver reports and NACKs, the ``events`` data channel
the viewer page opens), so that the node does for each exactly what it does for a
browser. Decoding 720p30 H.264 costs a viewer far more CPU than receiving it, and on
the 2-core box the viewers share the cores with the node: so every connection's
jitter buffer (marker-bit completion, as ``bench.glass_viewer``) counts packets,
bytes, sequence gaps and completed frames, and then drops the frame before aiortc's
decoder; only the first ``--decode`` connections decode, reading the frame counter
(bottom-left barcode) to check that the frames are whole and in order.

Protocol with the bench (``--json``, one JSON object per line): ``connected``
(sessions set up, failures), ``playing`` (every session has a frame, or the first-frame
timeout passed; how many play). A line ``start`` on standard input opens a window of
``--seconds`` (a line ``stop`` closes it sooner); at its end the process prints
``window`` with every connection's figures over it. End of standard input (or
SIGTERM) DELETEs every session and prints ``result``. Exit status 0 when every
connection received frames.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

SEQ_MODULO = 1 << 16
# A jump of more than this many sequence numbers is a new stream (sender restart),
# not packets lost.
MAX_SEQ_GAP = 3000


@dataclass
class PeerStats:
    """What one connection's jitter buffer saw (sans-I/O: times are passed in)."""

    decode: bool = False
    packets: int = 0
    bytes: int = 0
    frames: int = 0
    gaps: int = 0  # sequence numbers skipped on arrival
    recovered: int = 0  # of those, arrived later (retransmitted or reordered)
    resets: int = 0  # jumps larger than MAX_SEQ_GAP
    first_frame_at: float | None = None
    last_frame_at: float | None = None
    max_interval_s: float = 0.0  # longest wait between two completed frames
    _highest: int | None = None

    def packet(self, seq: int, size: int) -> None:
        self.packets += 1
        self.bytes += size
        seq %= SEQ_MODULO
        if self._highest is None:
            self._highest = seq
            return
        step = (seq - self._highest) % SEQ_MODULO
        if step == 0:
            return  # a duplicate
        if step <= MAX_SEQ_GAP:
            self.gaps += step - 1
            self._highest = seq
        elif SEQ_MODULO - step <= MAX_SEQ_GAP:
            self.recovered += 1  # behind the highest: a late packet filling a gap
        else:
            self.resets += 1
            self._highest = seq

    def frame(self, t: float) -> None:
        if self.first_frame_at is None:
            self.first_frame_at = t
        elif self.last_frame_at is not None:
            self.max_interval_s = max(self.max_interval_s, t - self.last_frame_at)
        self.frames += 1
        self.last_frame_at = t

    @property
    def lost(self) -> int:
        return max(0, self.gaps - self.recovered)

    def mark(self, t: float) -> Mark:
        """A snapshot at a window's edge; the longest interval restarts there."""
        self.max_interval_s = 0.0
        return Mark(t, self.packets, self.bytes, self.frames, self.lost)


@dataclass(frozen=True, slots=True)
class Mark:
    t: float
    packets: int
    bytes: int
    frames: int
    lost: int


def window_figures(start: Mark, end: Mark, max_interval_s: float) -> dict[str, float | None]:
    """One connection over a window: frames and kbit per second, packets lost."""
    wall = end.t - start.t
    if wall <= 0:
        return {"fps": None, "kbps": None, "lost": None, "max_interval_ms": None}
    return {
        "fps": (end.frames - start.frames) / wall,
        "kbps": (end.bytes - start.bytes) * 8 / 1000 / wall,
        "packets_per_s": (end.packets - start.packets) / wall,
        "lost": end.lost - start.lost,
        "max_interval_ms": max_interval_s * 1000,
    }


def counting_jitter_buffer_class() -> type[Any]:
    """The marker-bit jitter buffer, feeding a ``PeerStats`` and, unless that connection
    decodes, dropping each completed frame before aiortc's decoder."""
    from edge_node.media.jitter import MarkerJitterBuffer

    class CountingJitterBuffer(MarkerJitterBuffer):
        # Set just before a connection's (synchronous) addTransceiver creates the
        # receiver, and so this buffer: how each buffer finds its connection's stats.
        next_stats: ClassVar[PeerStats | None] = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.stats = CountingJitterBuffer.next_stats if self._is_video else None

        def add(self, packet: Any) -> Any:
            pli, frame = super().add(packet)
            stats = self.stats
            if stats is not None:
                stats.packet(packet.sequence_number, len(packet.payload))
                if frame is not None:
                    stats.frame(time.monotonic())
                    if not stats.decode:
                        frame = None
            return pli, frame

    return CountingJitterBuffer


@dataclass
class Connection:
    index: int
    stats: PeerStats
    pc: Any = None
    location: str | None = None
    error: str | None = None
    track: Any = None
    decoded: int = 0
    tracker: Any = None  # bench.viewer.CounterTracker of the window (decoding only)
    window_start: Mark | None = None


@dataclass
class FanoutResult:
    url: str
    count: int
    connected: int = 0
    playing: int = 0
    deleted: int = 0
    errors: list[str] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)


def _emit(enabled: bool, event: str, **data: Any) -> None:
    if enabled:
        print(json.dumps({"event": event, **data}), flush=True)


def _stdin_lines(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    """Standard input's lines into ``lines``; None at end of file."""

    def read() -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, name="stdin-lines", daemon=True).start()


async def _connect(http: Any, base_url: str, conn: Connection, jb_class: Any) -> None:
    from aiortc import RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection()
    conn.pc = pc
    pc.createDataChannel("events")  # what the viewer page opens

    @pc.on("track")
    def on_track(track: Any) -> None:
        if track.kind == "video":
            conn.track = track

    jb_class.next_stats = conn.stats
    try:
        pc.addTransceiver("video", direction="recvonly")
    finally:
        jb_class.next_stats = None
    await pc.setLocalDescription(await pc.createOffer())
    async with http.post(
        f"{base_url}/whep",
        data=pc.localDescription.sdp,
        headers={"Content-Type": "application/sdp"},
    ) as resp:
        body = await resp.text()
        if resp.status != 201:
            raise RuntimeError(f"WHEP POST answered {resp.status}: {body.strip()[:200]}")
        conn.location = resp.headers["Location"]
    await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))


async def _decode(conn: Connection) -> None:
    """Pull decoded frames of a decoding connection; read each frame counter."""
    from bench.rtmp_receiver import frame_counter

    while conn.track is None:
        await asyncio.sleep(0.02)
    while True:
        frame = await conn.track.recv()
        conn.decoded += 1
        if conn.tracker is not None:
            conn.tracker.add(frame_counter(frame))


async def _close(http: Any, base_url: str, conn: Connection) -> bool:
    deleted = False
    if conn.location is not None:
        with contextlib.suppress(OSError, RuntimeError, asyncio.TimeoutError):
            async with http.delete(f"{base_url}{conn.location}") as resp:
                deleted = resp.status == 200
        conn.location = None
    if conn.pc is not None:
        with contextlib.suppress(OSError, RuntimeError):
            await conn.pc.close()
    return deleted


def _window(conns: Sequence[Connection], t: float) -> dict[str, Any]:
    per: list[dict[str, Any]] = []
    for c in conns:
        if c.window_start is None:
            continue
        max_interval = c.stats.max_interval_s
        row: dict[str, Any] = {"index": c.index, "playing": c.stats.first_frame_at is not None}
        row.update(window_figures(c.window_start, c.stats.mark(t), max_interval))
        if c.stats.decode and c.tracker is not None:
            wall = t - c.window_start.t
            row["decoded_fps"] = max(c.tracker.frames - 1, 0) / wall if wall > 0 else None
            row["decoded_missed"] = c.tracker.missed
            row["decoded_duplicates"] = c.tracker.duplicates
            row["decoded_discontinuities"] = c.tracker.discontinuities
        per.append(row)
    fps = [r["fps"] for r in per if r.get("fps") is not None]
    return {
        "viewers": per,
        "fps_min": min(fps) if fps else None,
        "fps_median": statistics.median(fps) if fps else None,
    }


async def run(
    url: str,
    count: int,
    decode: int,
    seconds: float,
    concurrency: int,
    first_frame_timeout_s: float,
    events: bool,
) -> FanoutResult:
    import aiohttp

    from bench.viewer import CounterTracker
    from edge_node.media.egress_whep import restrict_ice_host_addresses
    from edge_node.media.jitter import install_jitter_buffer

    restrict_ice_host_addresses(["127.0.0.1"])
    jb_class = counting_jitter_buffer_class()
    install_jitter_buffer(jb_class)
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lines.put_nowait, None)
    _stdin_lines(loop, lines)
    base_url = url.rstrip("/")
    result = FanoutResult(url=base_url, count=count)
    conns = [Connection(i, PeerStats(decode=i < decode)) for i in range(count)]
    gate = asyncio.Semaphore(concurrency)
    decoders: list[asyncio.Task[None]] = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def connect(conn: Connection) -> None:
            async with gate:
                try:
                    await _connect(http, base_url, conn, jb_class)
                except (OSError, RuntimeError, KeyError, ValueError, aiohttp.ClientError) as exc:
                    conn.error = f"{type(exc).__name__}: {exc}"
                except TimeoutError:
                    conn.error = "TimeoutError: WHEP POST"

        try:
            await asyncio.gather(*(connect(c) for c in conns))
            result.errors = sorted({c.error for c in conns if c.error})[:5]
            result.connected = sum(1 for c in conns if c.error is None)
            _emit(events, "connected", connected=result.connected, errors=result.errors)
            decoders = [asyncio.create_task(_decode(c)) for c in conns if c.stats.decode]
            deadline = time.monotonic() + first_frame_timeout_s
            while time.monotonic() < deadline:
                result.playing = sum(1 for c in conns if c.stats.first_frame_at is not None)
                if result.playing >= result.connected:
                    break
                await asyncio.sleep(0.05)
            _emit(events, "playing", playing=result.playing, connected=result.connected)
            while (line := await lines.get()) is not None:
                if line != "start":
                    continue
                t0 = time.monotonic()
                for c in conns:
                    c.window_start = c.stats.mark(t0)
                    c.tracker = CounterTracker() if c.stats.decode else None
                _emit(events, "window_start", at=t0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_window_closed(lines), seconds)
                _emit(events, "window", at=time.monotonic(), **_window(conns, time.monotonic()))
        finally:
            for task in decoders:
                task.cancel()
            deleted = await asyncio.gather(*(_close(http, base_url, c) for c in conns))
            result.deleted = sum(deleted)
    result.totals = {
        "packets": sum(c.stats.packets for c in conns),
        "frames": sum(c.stats.frames for c in conns),
        "lost": sum(c.stats.lost for c in conns),
        "decoded": sum(c.decoded for c in conns),
    }
    return result


async def _window_closed(lines: asyncio.Queue[str | None]) -> None:
    """Wait for a ``stop`` line or end of file (kept queued: the process then ends)."""
    while True:
        line = await lines.get()
        if line is None:
            lines.put_nowait(None)
            return
        if line == "stop":
            return


def _parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        prog="python -m bench.fanout_viewer", description=doc.split("\n")[0]
    )
    p.add_argument("--url", required=True, help="the node's base URL")
    p.add_argument("--count", type=int, required=True, help="WHEP sessions to hold")
    p.add_argument("--decode", type=int, default=0, help="of those, how many decode (first N)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of a window")
    p.add_argument("--concurrency", type=int, default=8, help="sessions set up at once")
    p.add_argument("--first-frame-timeout", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--json", action="store_true", help="JSON lines for the bench")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.count < 1 or not 0 <= args.decode <= args.count or args.seconds <= 0:
        parser.error("--count >= 1, 0 <= --decode <= --count, --seconds > 0")
    if args.concurrency < 1:
        parser.error("--concurrency >= 1")
    result = asyncio.run(
        run(
            args.url,
            args.count,
            args.decode,
            args.seconds,
            args.concurrency,
            args.first_frame_timeout,
            args.json,
        )
    )
    data = {
        "url": result.url,
        "count": result.count,
        "connected": result.connected,
        "playing": result.playing,
        "deleted": result.deleted,
        "errors": result.errors,
        "totals": result.totals,
    }
    if args.json:
        _emit(True, "result", **data)
    else:
        print(json.dumps(data, indent=2))
    return 0 if result.playing == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
