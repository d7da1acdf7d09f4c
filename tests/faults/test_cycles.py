"""Cycle (leak) tests of issue 10's fault suite, against a real node on loopback.

Four things come and go a hundred times (``EDGE_NODE_FAULT_CYCLES``, default 100):

- an RTMP publisher (the project's own RTMP client sending a short pre-encoded H.264
  stream), dropped in turns cleanly (FCUnpublish + deleteStream), by a bare FIN, by a
  reset (RST), and torn mid-message; once, stalled with its socket left open (only the
  listener's idle timeout can end that one);
- a WHIP publisher (aiortc), ended by DELETE or by closing its peer connection
  without one (and once, with the WHEP viewers below, by vanishing);
- the RTMP push target, behind the fault proxy: its connection reset, or the far end
  restarted (its listener gone for a moment, connections refused meanwhile);
- WHEP viewers that vanish without DELETE: half close their peer connection (DTLS
  close_notify reaches the node), half just lose their sockets, as a killed process
  does (the node can only learn it from ICE consent freshness, ~30 s).

Each cycle checks that the node noticed (the ingest fields of ``/healthz`` and the
worker's "output now shows ..." switches, the push state, the viewer count); after
the cycles the file descriptors, threads and resident memory of both processes (the
control process, and the media worker whose pid ``/healthz`` gives) must be back near
the baseline taken after a few warm-up cycles (for WHEP, after the node has once held
as many vanished viewers as it will during the test). The figures are printed (``-s``).

The node runs at 320x240 here: leaks are per session, not per pixel, and the small
picture keeps a hundred cycles affordable on a shared 2-core box.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection

from edge_node.clients.whep import WhepViewer
from edge_node.clients.whip import CounterTrack, WhipPublisher
from edge_node.media import flv, rtmp
from edge_node.media.ingest_rtmp import IDLE_TIMEOUT_S, RtmpListener
from edge_node.media.rtmp_client import PublishAccepted, PublishRefused, RtmpClientConnection
from edge_node.metrics import Registry
from tests.conftest import NodeProcess, free_port, start_node
from tests.faults.faultproxy import FaultProxy
from tests.faults.procinfo import ProcFigures, fd_kinds, figures
from tests.faults.test_corrupt_media import good_tags

CYCLES = int(os.environ.get("EDGE_NODE_FAULT_CYCLES", "100"))
WARMUP = 5  # first-time allocations (codec tables, pools, caches) before the baseline
SMALL_OUTPUT = {
    "EDGE_NODE_VIDEO__WIDTH": "320",
    "EDGE_NODE_VIDEO__HEIGHT": "240",
    "EDGE_NODE_VIDEO__BITRATE_KBPS": "300",
}
LIVE = "output now shows the live input"
FALLBACK = "output now shows the fallback input"
STEP_TIMEOUT_S = 15.0  # one cycle's step, on a loaded box

# After the cycles: a leaked session keeps at least its socket (control) or its pipe,
# so a few descriptors of slack allow for a late keep-alive or a pool's lazy socket,
# and a leak of one per cycle is still 25 times over it.
FD_MARGIN = 4
THREAD_MARGIN = 3  # executors start threads lazily, up to their maximum
# Resident memory does not fall back when Python frees objects (pymalloc arenas and
# glibc heaps are kept), so each test bounds the growth over a warmed-up baseline.
# Publishers and the push (one session at a time): 100 cycles of a per-session leak of
# 200 KiB exceed 20 MiB; an RTMP session's buffers, an H.264 decoder context with its
# frame pool or an aiortc peer connection (~430 KiB measured) each weigh more.
RSS_BOUND_MIB = 20.0
# WHEP viewers: up to ZOMBIES_MAX vanished sessions are held at once, and aiortc's
# peer connections are reference cycles that wait for a full collection, which Python
# runs only when such garbage reaches a quarter of the long-lived objects: measured
# up to ~16 MiB here with no leak at all (seen by forcing gc.collect() in the node).
# A whole leaked session (~430 KiB) per cycle still exceeds 32 MiB.
WHEP_RSS_BOUND_MIB = 32.0

# aioice checks consent every 4-6 s and gives up after 6 failed checks: a peer that
# vanishes (no DTLS close_notify, no DELETE) is noticed after ~30-36 s.
CONSENT_DETECTION_S = 45.0


def drop_sockets(pc: RTCPeerConnection) -> None:
    """Close the peer connection's UDP sockets under it and send nothing: what the node
    sees when the peer's process is killed or its network goes away."""
    connections = {t.sender.transport.transport._connection for t in pc.getTransceivers()}
    if pc.sctp is not None:
        connections.add(pc.sctp.transport.transport._connection)
    for connection in connections:
        for protocol in connection._protocols:
            protocol.transport.close()


def recovery(took: dict[str, list[float]]) -> str:
    """``kind: median/max s`` per kind of drop: how long the node took to notice."""
    return ", ".join(
        f"{kind} {statistics.median(t):.2f}/{max(t):.2f} s" for kind, t in took.items() if t
    )


# --- the node's processes and log ------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    control: ProcFigures
    worker: ProcFigures


class NodeLog:
    """The node's JSON log lines, read incrementally: counts by message, WHEP ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.counts: Counter[str] = Counter()
        self.whep_ended: dict[str, float] = {}  # session id -> wall time of its end
        self.errors: list[dict[str, Any]] = []

    def poll(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if not line.startswith(b"{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            msg = str(record.get("msg"))
            self.counts[msg] += 1
            if msg == "whep session ended":
                self.whep_ended[str(record["session"])] = float(record["ts"])
            if record.get("level") in ("error", "critical"):
                self.errors.append(record)

    def count(self, msg: str) -> int:
        self.poll()
        return self.counts[msg]


class Watch:
    """A node under test: its health, both processes' figures, its log."""

    def __init__(self, node: NodeProcess, log: Path) -> None:
        self.node = node
        self.log = NodeLog(log)
        h = node.health()
        self.worker_pid = int(h["worker"]["pid"])
        self.restarts = int(h["worker"]["restarts"])

    async def health(self) -> dict[str, Any]:
        # Off the loop: the test's own peers (receiver, viewers) live on it.
        h: dict[str, Any] = await asyncio.to_thread(self.node.health)
        return h

    def usage(self) -> Usage:
        return Usage(figures(self.node.proc.pid), figures(self.worker_pid))

    async def baseline(self) -> Usage:
        await asyncio.sleep(1.0)  # let the warm-up's last sessions finish closing
        return self.usage()

    async def settled(self, before: Usage, seconds: float = 15.0) -> Usage:
        """Figures once the descriptors are back within the margin (or ``seconds`` pass)."""
        end = time.monotonic() + seconds
        while True:
            now = self.usage()
            back = (
                now.control.fds <= before.control.fds + FD_MARGIN
                and now.worker.fds <= before.worker.fds + FD_MARGIN
            )
            if back or time.monotonic() > end:
                await asyncio.sleep(0.5)
                return self.usage()
            await asyncio.sleep(0.2)

    async def same_worker(self) -> None:
        """A restarted worker would start its figures afresh and hide a leak."""
        h = await self.health()
        assert h["worker"]["pid"] == self.worker_pid, h["worker"]
        assert h["worker"]["restarts"] == self.restarts, h["worker"]


async def wait_until(
    check: Callable[[], Awaitable[bool]], seconds: float, what: Callable[[], Awaitable[str]]
) -> float:
    """Seconds until ``check()`` holds; fails with ``what()`` after ``seconds``."""
    t0 = time.monotonic()
    while not await check():
        if time.monotonic() - t0 > seconds:
            raise AssertionError(f"not within {seconds:g} s: {await what()}")
        # Quick at first (cycles take half a second), gentler on the node in long waits.
        await asyncio.sleep(0.02 if time.monotonic() - t0 < 2 else 0.25)
    return time.monotonic() - t0


# --- figures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    test: str
    cycles: int
    before: Usage
    after: Usage
    seconds: float
    note: str = ""


ROWS: list[Row] = []


@pytest.fixture(scope="module", autouse=True)
def _figures_table() -> Iterator[None]:
    yield
    if not ROWS:
        return
    print(
        "\ncycle test | cycles | control fds | worker fds | control RSS MiB | "
        "worker RSS MiB | control threads | s/cycle | notes"
    )
    for r in ROWS:
        b, a = r.before, r.after
        print(
            f"{r.test} | {r.cycles} | {b.control.fds} -> {a.control.fds} | "
            f"{b.worker.fds} -> {a.worker.fds} | "
            f"{b.control.rss_kib / 1024:.1f} -> {a.control.rss_kib / 1024:.1f} | "
            f"{b.worker.rss_kib / 1024:.1f} -> {a.worker.rss_kib / 1024:.1f} | "
            f"{b.control.threads} -> {a.control.threads} | "
            f"{r.seconds / max(1, r.cycles):.2f} | {r.note}"
        )


def check_no_leak(watch: Watch, row: Row, rss_bound_mib: float = RSS_BOUND_MIB) -> None:
    ROWS.append(row)
    b, a = row.before, row.after
    kinds = fd_kinds(a.control.pid)
    assert a.control.fds <= b.control.fds + FD_MARGIN, (row.test, b.control, a.control, kinds)
    assert a.worker.fds <= b.worker.fds + FD_MARGIN, (row.test, b.worker, a.worker)
    assert a.control.threads <= b.control.threads + THREAD_MARGIN, (row.test, b, a)
    assert a.worker.threads <= b.worker.threads + THREAD_MARGIN, (row.test, b, a)
    for name, before, after in (("control", b.control, a.control), ("worker", b.worker, a.worker)):
        growth_mib = (after.rss_kib - before.rss_kib) / 1024
        assert growth_mib < rss_bound_mib, (row.test, name, growth_mib, before, after)
    # Nothing went wrong loudly along the way (a handler's exception, a lost task).
    assert not watch.log.errors, watch.log.errors[:5]


def small_node(tmp: Path, **env: str) -> tuple[NodeProcess, Watch]:
    node = start_node(tmp, env={**SMALL_OUTPUT, **env})
    return node, Watch(node, tmp / "node.log")


# --- RTMP publisher --------------------------------------------------------------------

# In turns; plus one "stall" in the middle: the publisher stops sending and keeps its
# socket open (a pulled cable), which only the listener's idle timeout can end.
RTMP_DROPS = ("clean", "fin", "rst", "torn")


def rtmp_drop(i: int) -> str:
    return "stall" if i == CYCLES // 2 else RTMP_DROPS[i % len(RTMP_DROPS)]


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a crashed host's kernel or a middlebox does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def rtmp_cycle(
    watch: Watch, port: int, header: bytes, tags: list[tuple[bytes, bool]], drop: str
) -> float:
    """Publish until the output shows the live input, then drop the way ``drop`` says;
    returns the seconds from the drop until the node is back on the fallback."""
    log = watch.log
    live_seen, fallback_seen = log.count(LIVE), log.count(FALLBACK)

    async def back_on_fallback() -> bool:
        h = await watch.health()
        return h["ingest"]["live"] is None and log.count(FALLBACK) > fallback_seen

    async def state() -> str:
        return f"{drop}: {(await watch.health())['ingest']}, {log.counts[FALLBACK]}"

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        conn = RtmpClientConnection("live", "demo", f"rtmp://127.0.0.1:{port}/live")
        conn.initiate()
        writer.write(conn.data_to_send())
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while True:
                data = await reader.read(65536)
                assert data, "the node closed a good publisher's connection"
                conn.receive_data(data)
                writer.write(conn.data_to_send())
                event = conn.next_event()
                assert not isinstance(event, PublishRefused), event
                if isinstance(event, PublishAccepted):
                    break
        conn.send_video(0, header)
        # Real-time pacing: the output stays live only while pictures keep coming.
        deadline = time.monotonic() + STEP_TIMEOUT_S
        i = 0
        while log.count(LIVE) == live_seen:
            assert time.monotonic() < deadline, f"never live; {await watch.health()}"
            conn.send_video(i * 33, tags[i % len(tags)][0])
            writer.write(conn.data_to_send())
            await writer.drain()
            i += 1
            await asyncio.sleep(1 / 30)
        assert (await watch.health())["ingest"]["live"] == "rtmp"
        dropped_at = time.monotonic()
        if drop == "clean":
            conn.close()  # FCUnpublish + deleteStream
            writer.write(conn.data_to_send())
            await writer.drain()
            writer.close()
        elif drop == "fin":
            writer.close()
        elif drop == "rst":
            _reset(writer)
        elif drop == "torn":  # half a video message, then gone
            conn.send_video(i * 33, tags[i % len(tags)][0])
            data = conn.data_to_send()
            writer.write(data[: len(data) // 2])
            await writer.drain()
            _reset(writer)
        limit = IDLE_TIMEOUT_S + STEP_TIMEOUT_S if drop == "stall" else STEP_TIMEOUT_S
        await wait_until(back_on_fallback, limit, state)
        return time.monotonic() - dropped_at
    finally:
        if not writer.is_closing():
            writer.close()


@pytest.mark.timeout(300)
async def test_rtmp_publisher_drops_and_returns_without_leaking(tmp_path: Path) -> None:
    node, watch = small_node(tmp_path)
    try:
        port = int(node.rtmp_url.rsplit(":", 1)[1].split("/")[0])
        header, tags = good_tags()
        for i in range(WARMUP):
            await rtmp_cycle(watch, port, header, tags, RTMP_DROPS[i % len(RTMP_DROPS)])
        before = await watch.baseline()
        decoded_before = (await watch.health())["ingest"]["decoded_frames"]
        took: dict[str, list[float]] = {d: [] for d in (*RTMP_DROPS, "stall")}
        t0 = time.monotonic()
        for i in range(CYCLES):
            drop = rtmp_drop(i)
            took[drop].append(await rtmp_cycle(watch, port, header, tags, drop))
        seconds = time.monotonic() - t0
        after = await watch.settled(before)
        await watch.same_worker()
        # Every cycle went live and came back (the worker says so, switch by switch).
        assert watch.log.count(LIVE) == watch.log.count(FALLBACK) >= WARMUP + CYCLES
        assert node.metric("edge_node_ingest_publishers_total") == WARMUP + CYCLES
        if took["stall"]:
            assert took["stall"][0] >= IDLE_TIMEOUT_S - 1, took["stall"]  # the timeout did it

        async def settled_on_fallback() -> bool:
            ingest = (await watch.health())["ingest"]
            return bool(ingest["output"] == "fallback" and ingest["decoded_frames"] > 0)

        async def ingest() -> str:
            return str((await watch.health())["ingest"])

        await wait_until(settled_on_fallback, 5, ingest)
        assert (await watch.health())["ingest"]["decoded_frames"] >= decoded_before + CYCLES
        row = Row(
            "rtmp publisher",
            CYCLES,
            before,
            after,
            seconds,
            "back on fallback after " + recovery(took),
        )
        check_no_leak(watch, row)
    finally:
        node.stop()


# --- WHIP publisher --------------------------------------------------------------------

WHIP_DROPS = ("delete", "close")


async def whip_cycle(watch: Watch, drop: str, start: int) -> float:
    """Publish over WHIP until the output is live, then end by DELETE, by closing the
    peer connection without one (its DTLS close_notify reaches the node), or by losing
    the sockets (``vanish``: only ICE consent can tell the node). Returns the seconds
    from the drop to the node's fallback."""
    log = watch.log
    live_seen, fallback_seen = log.count(LIVE), log.count(FALLBACK)
    pub = WhipPublisher(watch.node.url, "demo", start)
    pub.track = CounterTrack(start, 320, 240)

    async def ingest() -> str:
        return f"{drop}: {(await watch.health())['ingest']}"

    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            status = await pub.connect()
        assert status == 201, (status, await watch.health())

        async def live() -> bool:
            return log.count(LIVE) > live_seen

        await wait_until(live, STEP_TIMEOUT_S, ingest)
        assert (await watch.health())["ingest"]["live"] == "whip"
        dropped_at = time.monotonic()
        if drop == "delete":
            await pub.close()
            assert pub.delete_status == 200
        elif drop == "close":
            pub.location = None
            await pub.pc.close()
        else:
            pub.location = None
            drop_sockets(pub.pc)

        async def back_on_fallback() -> bool:
            h = await watch.health()
            return h["ingest"]["live"] is None and log.count(FALLBACK) > fallback_seen

        limit = CONSENT_DETECTION_S if drop == "vanish" else STEP_TIMEOUT_S
        await wait_until(back_on_fallback, limit, ingest)
        return time.monotonic() - dropped_at
    finally:
        pub.location = None
        await pub.pc.close()


@pytest.mark.timeout(300)
async def test_whip_publisher_drops_and_returns_without_leaking(tmp_path: Path) -> None:
    node, watch = small_node(tmp_path)
    try:
        for i in range(WARMUP):
            await whip_cycle(watch, WHIP_DROPS[i % len(WHIP_DROPS)], 50000 + i * 100)
        before = await watch.baseline()
        took: dict[str, list[float]] = {d: [] for d in WHIP_DROPS}
        t0 = time.monotonic()
        for i in range(CYCLES):
            drop = WHIP_DROPS[i % len(WHIP_DROPS)]
            took[drop].append(await whip_cycle(watch, drop, 50000 + i * 100))
        seconds = time.monotonic() - t0
        after = await watch.settled(before)
        await watch.same_worker()
        assert watch.log.count(LIVE) == watch.log.count(FALLBACK) >= WARMUP + CYCLES
        metrics = node.get("/metrics")[1].decode()
        for outcome in ("live", "ended"):
            line = f'edge_node_whip_sessions_total{{outcome="{outcome}"}} {WARMUP + CYCLES}'
            assert line in metrics, (outcome, metrics)
        row = Row(
            "whip publisher",
            CYCLES,
            before,
            after,
            seconds,
            "back on fallback after " + recovery(took),
        )
        check_no_leak(watch, row)
    finally:
        node.stop()


# --- RTMP push target ------------------------------------------------------------------


class PushReceiver:
    """The platform end of the push: counts publishes and the video tags of each;
    ``restart()`` takes it down for a moment, as a platform's ingest restart does."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.publishes = 0
        self.first_tags: list[int] = []  # packet type of each publish's first video tag
        self.video_tags: list[int] = []  # video tags per publish
        self.listener = self._listener()

    def _listener(self) -> RtmpListener:
        return RtmpListener(
            "127.0.0.1",
            self.port,
            "live",
            Registry(),
            check_publish=lambda key: None,
            on_start=self._on_start,
            on_media=self._on_media,
            on_end=lambda conn: None,
        )

    def _on_start(self, conn: int, key: str) -> None:
        self.publishes += 1
        self.video_tags.append(0)

    def _on_media(self, conn: int, msg: rtmp.MediaMessage) -> None:
        if msg.kind != "video":
            return
        if self.video_tags[-1] == 0:
            self.first_tags.append(flv.parse_video_tag(msg.payload).packet_type)
        self.video_tags[-1] += 1

    async def restart(self, gap_s: float) -> None:
        await self.listener.stop()
        await asyncio.sleep(gap_s)
        self.listener = self._listener()
        await self.listener.start()


PUSH_DROPS = ("reset", "reset", "reset", "reset", "restart")
RESTART_GAP_S = 0.3


async def push_cycle(watch: Watch, rx: PushReceiver, proxy: FaultProxy, drop: str) -> float:
    """Break the push's connection (``reset``: RST both ways at the proxy; ``restart``:
    the far end goes away, refusing connections for a moment, and comes back), then wait
    for the push to publish again from a sequence header. Returns the seconds it took."""
    push = (await watch.health())["push"]
    assert push["connected"], push
    publishes, resets = rx.publishes, proxy.counts.resets
    t0 = time.monotonic()
    if drop == "reset":
        proxy.reset_all()
    else:
        await rx.restart(RESTART_GAP_S)

    async def pushing_again() -> bool:
        if rx.publishes <= publishes or rx.video_tags[-1] < 5:
            return False
        now = (await watch.health())["push"]
        return bool(now["connected"] and now["reconnects"] > push["reconnects"])

    async def state() -> str:
        return f"{drop}: push {(await watch.health())['push']}, rx {rx.video_tags[-3:]}"

    await wait_until(pushing_again, STEP_TIMEOUT_S, state)
    took = time.monotonic() - t0
    if drop == "reset":
        # The fault was real (both halves of the one connection reset), and one
        # reconnection was enough.
        assert proxy.counts.resets == resets + 2, proxy.counts
        assert rx.publishes == publishes + 1
    # Each new connection starts with a sequence header (then a keyframe).
    assert rx.first_tags[-1] == flv.AVC_SEQUENCE_HEADER, rx.first_tags[-5:]
    return took


@pytest.mark.timeout(300)
async def test_push_target_drops_and_returns_without_leaking(tmp_path: Path) -> None:
    rx = PushReceiver(free_port())
    await rx.listener.start()
    proxy = FaultProxy(rx.port).start()
    node: NodeProcess | None = None
    try:
        node, watch = small_node(
            tmp_path,
            EDGE_NODE_PUSH__URL=f"rtmp://{proxy.address}/live/platform-key",
            EDGE_NODE_PUSH__BACKOFF_INITIAL_S="0.05",
            EDGE_NODE_PUSH__BACKOFF_MAX_S="0.2",
        )

        async def first_publish() -> bool:
            return bool(rx.video_tags and rx.video_tags[-1] >= 5)

        async def push() -> str:
            return str((await watch.health())["push"])

        await wait_until(first_publish, STEP_TIMEOUT_S, push)
        for i in range(WARMUP):
            await push_cycle(watch, rx, proxy, PUSH_DROPS[i % len(PUSH_DROPS)])
        before = await watch.baseline()
        reconnects = (await watch.health())["push"]["reconnects"]
        took: dict[str, list[float]] = {"reset": [], "restart": []}
        t0 = time.monotonic()
        for i in range(CYCLES):
            drop = PUSH_DROPS[i % len(PUSH_DROPS)]
            took[drop].append(await push_cycle(watch, rx, proxy, drop))
        seconds = time.monotonic() - t0
        after = await watch.settled(before)
        await watch.same_worker()
        assert proxy.counts.open == 1, proxy.counts  # the live push, nothing left behind
        reconnects = (await watch.health())["push"]["reconnects"] - reconnects
        note = (
            f"{len(took['reset'])} resets, {len(took['restart'])} far-end restarts, "
            f"{reconnects} reconnects; pushing again after {recovery(took)}"
        )
        check_no_leak(watch, Row("rtmp push target", CYCLES, before, after, seconds, note))
    finally:
        if node is not None:
            node.stop()
        proxy.stop()
        await rx.listener.stop()


# --- WHEP viewers ----------------------------------------------------------------------

ZOMBIES_MAX = 40  # vanished viewers the node may hold at once (it still sends to each)
WHEP_DROPS = ("sockets", "pc.close")


async def whep_viewer_vanishes(url: str, how: str) -> tuple[str, float, RTCPeerConnection]:
    """A viewer plays, then vanishes without DELETE; (session id, wall time, its pc)."""
    viewer = WhepViewer(url)
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await viewer.connect()
        assert viewer.location is not None
        sid = viewer.location.rsplit("/", 1)[1]
        await viewer.frame(timeout=STEP_TIMEOUT_S)  # it really plays
    except BaseException:
        await viewer.close()
        raise
    viewer.location = None  # so no DELETE is ever sent
    at = time.time()  # the node's log stamps are wall-clock
    if how == "sockets":
        drop_sockets(viewer.pc)
    else:
        await viewer.pc.close()  # DTLS close_notify: the node hears this one
    return sid, at, viewer.pc


@pytest.mark.timeout(300)
async def test_whep_viewers_vanish_without_closing_and_nothing_leaks(tmp_path: Path) -> None:
    node, watch = small_node(tmp_path, EDGE_NODE_WEBRTC__MAX_VIEWERS=str(2 * ZOMBIES_MAX))
    pcs: list[RTCPeerConnection] = []
    vanished: dict[str, tuple[str, float]] = {}  # session id -> (how, wall time)
    publisher: asyncio.Task[float] | None = None

    async def one(how: str) -> None:
        sid, at, pc = await whep_viewer_vanishes(node.url, how)
        pcs.append(pc)
        vanished[sid] = (how, at)

    async def viewers() -> int:
        return int((await watch.health())["viewers"])

    async def none_left() -> bool:
        return await viewers() == 0

    async def left() -> str:
        return f"{await viewers()} viewers; the log has {len(watch.log.whep_ended)} ends"

    try:
        # Warm-up to the peak: the node holds ZOMBIES_MAX vanished sessions once, so the
        # baseline already has the memory that many sessions take (never given back).
        # A WHIP publisher vanishes with them: the same ICE consent must free its slot
        # (a returning publisher gets 409 until then), so it shares this wait.
        publisher = asyncio.create_task(whip_cycle(watch, "vanish", 60000))
        for _ in range(ZOMBIES_MAX):
            await one("sockets")
        await wait_until(none_left, CONSENT_DETECTION_S + STEP_TIMEOUT_S, left)
        publisher_gone_s = await publisher
        await whip_cycle(watch, "delete", 61000)  # the slot is free again
        before = await watch.baseline()
        vanished.clear()
        peak = 0
        t0 = time.monotonic()
        for i in range(CYCLES):
            # Bounded zombies: the node sends to each until it notices.
            while (n := await viewers()) >= ZOMBIES_MAX:
                peak = max(peak, n)
                await asyncio.sleep(0.5)
            peak = max(peak, n)
            await one(WHEP_DROPS[i % len(WHEP_DROPS)])
        await wait_until(none_left, CONSENT_DETECTION_S + STEP_TIMEOUT_S, left)
        seconds = time.monotonic() - t0
        after = await watch.settled(before)
        await watch.same_worker()
        assert node.metric("edge_node_whep_sessions") == 0
        watch.log.poll()
        took: dict[str, list[float]] = {how: [] for how in WHEP_DROPS}
        for sid, (how, at) in vanished.items():
            assert sid in watch.log.whep_ended, f"session {sid} ({how}) never ended"
            took[how].append(max(0.0, watch.log.whep_ended[sid] - at))
        assert max(took["pc.close"]) < 5, took["pc.close"]
        assert max(took["sockets"]) < CONSENT_DETECTION_S, took["sockets"]
        note = (
            f"noticed after {recovery(took)}; up to {peak} vanished viewers at once; "
            f"a vanished WHIP publisher's slot freed after {publisher_gone_s:.1f} s"
        )
        row = Row("whep viewers vanish", CYCLES, before, after, seconds, note)
        check_no_leak(watch, row, WHEP_RSS_BOUND_MIB)
    finally:
        if publisher is not None and not publisher.done():
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
        node.stop()
        for pc in pcs:
            with contextlib.suppress(Exception):
                await pc.close()
