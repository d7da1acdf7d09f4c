"""RTMP push: the asyncio adapter over ``rtmp_client.RtmpClientConnection``.

Sends the node's one encoded stream to a platform or CDN (``rtmp://`` or
``rtmps://``), as FLV video tags built from the hub's Annex-B packets; nothing here
encodes. It subscribes to the fan-out hub like a viewer. When the far end refuses,
drops, or stops reading (a write that cannot drain in ``DRAIN_TIMEOUT_S``), the push
counts it, closes, waits the backoff and reconnects; meanwhile it keeps draining its
queue (the packets are thrown away and counted) and each new connection starts at a
keyframe with a fresh sequence header and timestamps from 0.

Never blocks the event loop; never logs or shows the stream key (``***`` instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Coroutine
from typing import Any

from edge_node.backoff import Backoff
from edge_node.errors import EdgeNodeError, ProtocolError
from edge_node.media import flv
from edge_node.media.fanout import (
    AudioSubscription,
    EncodedAudio,
    EncodedPacket,
    PacketHub,
    Subscription,
)
from edge_node.media.rtmp_client import (
    ClientState,
    PublishRefused,
    RtmpClientConnection,
    StatusReceived,
    parse_push_url,
)
from edge_node.metrics import Registry

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0  # TCP (and TLS) connect
SETUP_TIMEOUT_S = 10.0  # handshake through the publish answer
DRAIN_TIMEOUT_S = 2.0  # a write that cannot drain by then means the far end is gone
STABLE_AFTER_S = 5.0  # published this long: the next failure backs off from the start
READ_SIZE = 65536
PTS_PER_MS = 90  # the hub's pts are in 1/90000 s
FLV_AAC_HEADER = 0xAF  # AAC, 44 kHz flag (ignored for AAC), 16 bit, stereo
_SKIPPED_NALS = frozenset({flv.NAL_AUD, flv.NAL_SPS, flv.NAL_PPS})  # SPS/PPS go in the header


class _Refused(EdgeNodeError):
    """The far end answered, and said no (bad key, unknown app, ...)."""


class _FarEndError(EdgeNodeError):
    """The far end ended the session (EOF, an error status) after accepting it."""


class RtmpPush:
    def __init__(
        self,
        url: str,
        hub: PacketHub,
        registry: Registry,
        backoff: Backoff,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.target = parse_push_url(url)
        self.url = self.target.redacted
        self._hub = hub
        self._backoff = backoff
        # rtmps: the system's trust store unless the caller brings its own context.
        self._ssl: ssl.SSLContext | None = None
        if self.target.tls:
            self._ssl = ssl_context or ssl.create_default_context()
        self._sub: Subscription | None = None
        self._audio: AudioSubscription | None = None
        self._audio_config_sent = False
        self._last_audio_ms = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.connected = False
        self.reconnects = 0
        self.last_error: str | None = None
        # Per connection: timestamps from its first packet, its own sequence header.
        self._first_pts: int | None = None
        self._last_ts_ms = 0
        self._params: tuple[bytes, bytes] | None = None
        self._published_at: float | None = None  # loop time the current publish began

        registry.gauge(
            "edge_node_rtmp_push_connected",
            "1 while the RTMP push is publishing to its target, else 0.",
            read=lambda: 1.0 if self.connected else 0.0,
        )
        self.c_connects = registry.counter(
            "edge_node_rtmp_push_connects_total",
            "RTMP push connection attempts, by outcome (ok, refused, error).",
        )
        self.c_bytes = registry.counter(
            "edge_node_rtmp_push_bytes_total", "Bytes written to the RTMP push target."
        )
        self.c_packets = registry.counter(
            "edge_node_rtmp_push_packets_total", "Video packets sent to the RTMP push target."
        )

    # ---- public API ---------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        self._sub = self._hub.subscribe("rtmp_push")
        self._audio = self._hub.subscribe_audio("rtmp_push", "aac")
        self._task = asyncio.get_running_loop().create_task(self._run(self._sub))

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._sub is not None:
            self._hub.unsubscribe(self._sub)
            self._sub = None
        if self._audio is not None:
            self._hub.unsubscribe_audio(self._audio)
            self._audio = None
        self.connected = False

    def status(self) -> dict[str, Any]:
        """For /healthz: never the key."""
        return {
            "url": self.url,
            "connected": self.connected,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
        }

    # ---- connection loop ----------------------------------------------------------

    async def _run(self, sub: Subscription) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._published_at = None
            try:
                await self._session(sub)
            except _Refused as exc:
                self._failed("refused", str(exc))
            except (OSError, ProtocolError, _FarEndError) as exc:
                # OSError covers resets, refusals, DNS, TLS and our own timeouts.
                self._failed("error", _describe(exc))
            except Exception as exc:  # a bug of ours: say so loudly, keep the push alive
                log.exception("rtmp push: unexpected error", extra={"url": self.url})
                self._failed("error", _describe(exc))
            self.connected = False
            if self._stopping:
                return
            published_at = self._published_at
            if published_at is not None and loop.time() - published_at >= STABLE_AFTER_S:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            log.warning(
                "rtmp push down (%s); reconnecting in %.2f s",
                self.last_error,
                delay,
                extra={"url": self.url},
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._discard(sub)
            self.reconnects += 1

    def _failed(self, outcome: str, reason: str) -> None:
        # A session that had published was counted as "ok" when it began; its end is
        # a drop, seen in status() and in the next attempt's outcome.
        if self._published_at is None:
            self.c_connects.inc(outcome=outcome)
        self.last_error = self._redact(reason)

    async def _session(self, sub: Subscription) -> None:
        """One connection's life. Returns never: it raises why the session ended."""
        t = self.target
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(t.host, t.port, ssl=self._ssl)
        except TimeoutError:
            raise TimeoutError(f"connect timed out after {CONNECT_TIMEOUT_S:g} s") from None
        conn = RtmpClientConnection(t.app, t.stream_key, t.tc_url)
        try:
            conn.initiate()
            discarding = asyncio.get_running_loop().create_task(self._discard(sub))
            try:
                async with asyncio.timeout(SETUP_TIMEOUT_S):
                    await self._write(writer, conn.data_to_send())
                    while conn.state is not ClientState.PUBLISHING:
                        await self._read(conn, reader, writer)
            except TimeoutError:
                raise TimeoutError(f"no publish answer in {SETUP_TIMEOUT_S:g} s") from None
            finally:
                discarding.cancel()
            self._on_published(conn, sub)
            await self._write(writer, conn.data_to_send())
            await _until_one_fails(
                self._receive_forever(conn, reader, writer),
                self._send_forever(conn, writer, sub),
                self._send_audio_forever(conn, writer),
            )
        except asyncio.CancelledError:
            # stop(): say goodbye (FCUnpublish, deleteStream) if the far end listens.
            conn.close()
            writer.write(conn.data_to_send())
            raise
        finally:
            self.connected = False
            conn.connection_lost()
            writer.close()

    def _on_published(self, conn: RtmpClientConnection, sub: Subscription) -> None:
        self.connected = True
        self._published_at = asyncio.get_running_loop().time()
        self.last_error = None
        self.c_connects.inc(outcome="ok")
        log.info("rtmp push live", extra={"url": self.url})
        self._first_pts, self._last_ts_ms, self._params = None, 0, None
        self._audio_config_sent, self._last_audio_ms = False, 0
        if self._audio is not None:
            while not self._audio.queue.empty():  # audio from before this connection
                self._audio.queue.get_nowait()
        conn.send_metadata({"videocodecid": float(flv.CODEC_AVC), "encoder": "edge-node"})
        # Start this connection at a keyframe: drop what queued, ask for a fresh one.
        self._drop_queued(sub)
        sub.waiting_keyframe = True
        self._hub.request_keyframe()

    # ---- reading ------------------------------------------------------------------

    async def _receive_forever(
        self,
        conn: RtmpClientConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        while True:
            await self._read(conn, reader, writer)

    async def _read(
        self,
        conn: RtmpClientConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        data = await reader.read(READ_SIZE)
        if not data:
            raise _FarEndError("connection closed by the far end")
        conn.receive_data(data)
        while (event := conn.next_event()) is not None:
            if isinstance(event, PublishRefused):
                raise _Refused(f"{event.code}: {event.description}")
            if isinstance(event, StatusReceived):
                if event.level == "error":
                    raise _FarEndError(f"{event.code}: {event.description}")
                log.info(
                    "rtmp push status %s",
                    event.code,
                    extra={"url": self.url, "description": self._redact(event.description)},
                )
        await self._write(writer, conn.data_to_send())

    # ---- sending ------------------------------------------------------------------

    async def _send_forever(
        self, conn: RtmpClientConnection, writer: asyncio.StreamWriter, sub: Subscription
    ) -> None:
        while True:
            packet = await sub.queue.get()
            if self._queue_video(conn, packet):
                await self._write(writer, conn.data_to_send())
                self.c_packets.inc()

    async def _send_audio_forever(
        self, conn: RtmpClientConnection, writer: asyncio.StreamWriter
    ) -> None:
        if self._audio is None:
            return await asyncio.Future()  # no audio subscription: nothing to do, ever
        while True:
            packet = await self._audio.queue.get()
            if self._queue_audio(conn, packet):
                await self._write(writer, conn.data_to_send())

    def _queue_audio(self, conn: RtmpClientConnection, packet: EncodedAudio) -> bool:
        """AAC as FLV audio tags, on the video's timeline; waits for the first video."""
        config = self._hub.audio_config.get("aac")
        if self._first_pts is None or config is None:
            return False
        ts = (packet.pts * PTS_PER_MS * 1000 // 48000 - self._first_pts) // PTS_PER_MS
        if ts < 0:
            return False  # from before this connection's first picture
        ts = max(ts, self._last_audio_ms)
        self._last_audio_ms = ts
        if not self._audio_config_sent:
            conn.send_audio(ts, bytes([FLV_AAC_HEADER, 0]) + config)
            self._audio_config_sent = True
        conn.send_audio(ts, bytes([FLV_AAC_HEADER, 1]) + packet.data)
        return True

    def _queue_video(self, conn: RtmpClientConnection, packet: EncodedPacket) -> bool:
        """Queue ``packet`` as FLV tags on ``conn``; False when it cannot be sent (yet)."""
        nalus = flv.split_annexb(packet.data)
        if packet.keyframe:
            params = flv.parameter_sets(nalus)
            if params is not None and params != self._params:
                first = self._params is None
                self._params = params
                if first:
                    self._first_pts = packet.pts
                conn.send_video(self._timestamp_ms(packet.pts), flv.avc_sequence_header(*params))
        if self._params is None:
            # Nothing decodable before the first SPS/PPS: wait for a keyframe with them.
            self._hub.c_dropped.inc(stage="rtmp_push")
            return False
        body = [n for n in nalus if flv.nal_type(n) not in _SKIPPED_NALS]
        if not body:
            return packet.keyframe  # a lone header update still has to go out
        conn.send_video(self._timestamp_ms(packet.pts), flv.avc_video_tag(body, packet.keyframe))
        return True

    def _timestamp_ms(self, pts: int) -> int:
        assert self._first_pts is not None
        ts = max(self._last_ts_ms, (pts - self._first_pts) // PTS_PER_MS)
        self._last_ts_ms = ts
        return ts

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if not data:
            return
        writer.write(data)
        self.c_bytes.inc(len(data))
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await writer.drain()
        except TimeoutError:
            raise TimeoutError(f"write stalled for {DRAIN_TIMEOUT_S:g} s") from None

    # ---- while not publishing -----------------------------------------------------

    async def _discard(self, sub: Subscription) -> None:
        """Throw packets away as they come (until cancelled), so the queue never backs up."""
        while True:
            await sub.queue.get()
            self._hub.c_dropped.inc(stage="rtmp_push")

    def _drop_queued(self, sub: Subscription) -> None:
        dropped = 0
        while not sub.queue.empty():
            sub.queue.get_nowait()
            dropped += 1
        if dropped:
            self._hub.c_dropped.inc(dropped, stage="rtmp_push")

    def _redact(self, text: str) -> str:
        key = self.target.stream_key
        for secret in (key, key.split("?", 1)[0]):
            if secret:
                text = text.replace(secret, "***")
        return text


async def _until_one_fails(*coroutines: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutines`` (loops that only end by raising) until one raises; cancel the
    others and raise that. A cancellation of the caller cancels them all.

    Not asyncio.TaskGroup: on 3.11 a child failing while the group waits in __aexit__
    leaves a cancel request on the parent task that is never withdrawn, which turns
    the next asyncio.timeout() expiry into a CancelledError and a stop() into nothing.
    """
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    failures = [t.exception() for t in tasks if t.done() and not t.cancelled()]
    first = next(iter(done))
    exc = first.exception() if not first.cancelled() else None
    if exc is None:
        exc = next((f for f in failures if f is not None), None)
    raise exc if exc is not None else _FarEndError("session ended")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
