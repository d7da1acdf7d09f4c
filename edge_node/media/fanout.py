"""Fan-out of the one encoded stream to every consumer in the control process.

The hub receives the worker's packets, keeps timestamps monotonic across worker
restarts, records per-stage timings, and hands each packet to every subscriber's
bounded queue. A subscriber starts at a keyframe (one is requested when it joins);
one that falls behind is flushed, waits for the next keyframe, and the drop is
counted. Runs on the control loop; never blocks.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge_node.metrics import RateMeter, Registry

log = logging.getLogger(__name__)

# A keyframe request is merged into one still outstanding (no keyframe has gone out
# since it was sent: PLI storms, viewers joining together), unless that one is older
# than this, when it is taken as lost (e.g. the worker restarted) and sent again.
KEYFRAME_RETRY_S = 1.0
SUBSCRIBER_QUEUE = 60
EVENT_LATENCY_WARN_S = 0.2  # the product's promise: on screen in under 200 ms
LATENCY_CHECK_S = 10.0


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    data: bytes
    pts: int  # 1/90000 s, monotonic across worker restarts
    keyframe: bool
    capture: float  # time.monotonic() at capture (the clock is shared by both processes)


@dataclass(frozen=True, slots=True)
class EncodedAudio:
    codec: str  # "opus" | "aac"
    data: bytes
    pts: int  # 1/48000 s, on the video's timeline


@dataclass(eq=False)
class AudioSubscription:
    name: str
    codec: str
    queue: asyncio.Queue[EncodedAudio] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE * 2)
    )


@dataclass(eq=False)
class Subscription:
    name: str
    queue: asyncio.Queue[EncodedPacket] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE)
    )
    waiting_keyframe: bool = True
    packets: int = 0


class PacketHub:
    def __init__(
        self,
        registry: Registry,
        request_keyframe: Callable[[], None],
        frame_duration_pts: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._request_keyframe_cb = request_keyframe
        self._frame_duration = frame_duration_pts
        self._clock = clock
        self._subs: set[Subscription] = set()
        self._audio_subs: set[AudioSubscription] = set()
        self._last_audio_pts: dict[str, int] = {}
        self.audio_config: dict[str, bytes] = {}  # e.g. AAC's AudioSpecificConfig
        self._gen = 0
        self._offset = 0
        self._last_pts = -1
        self._keyframe_pending_since: float | None = None
        self._last_stats: dict[str, Any] = {}
        self._fps_out = RateMeter()
        self._bits = RateMeter()
        self._fps_in = 0.0
        self.encoders = 0
        self.last_packet_at = 0.0
        self.source = ""

        r = registry
        self.h_queue = r.histogram(
            "edge_node_queue_wait_seconds", "Time a frame waited between source and encoder."
        )
        self.h_composite = r.histogram(
            "edge_node_composite_seconds", "Time to composite the overlays onto a frame."
        )
        self.h_encode = r.histogram("edge_node_encode_seconds", "Time to encode a frame.")
        self.h_event = r.histogram(
            "edge_node_event_to_frame_seconds",
            "From an interaction event's arrival to the first encoded frame showing it.",
        )
        self._recent_event_s: collections.deque[float] = collections.deque(maxlen=1000)
        # Told every event-to-frame latency (the summaries' per-window histogram).
        self.on_event_latency: Callable[[float], None] | None = None
        self._last_latency_check = 0.0
        self.h_fanout = r.histogram(
            "edge_node_capture_to_fanout_seconds",
            "From frame capture in the worker to its packet reaching the fan-out.",
        )
        self.c_packets = r.counter("edge_node_packets_total", "Encoded video packets fanned out.")
        self.c_audio = r.counter(
            "edge_node_audio_packets_total", "Encoded audio packets fanned out, by codec."
        )
        self.c_dropped = r.counter(
            "edge_node_frames_dropped_total", "Frames or packets dropped, by stage."
        )
        self.c_keyframe_requests = r.counter(
            "edge_node_keyframe_requests_total", "Keyframe requests sent to the encoder."
        )
        r.gauge(
            "edge_node_frames_in_per_second",
            "Frames produced by the source per second.",
            read=lambda: self.fps_in,
        )
        r.gauge(
            "edge_node_frames_out_per_second",
            "Encoded frames fanned out per second.",
            read=lambda: self._fps_out.rate(self._clock()),
        )
        r.gauge(
            "edge_node_bitrate_bits_per_second",
            "Encoded video bitrate.",
            read=lambda: self._bits.rate(self._clock()),
        )
        r.gauge(
            "edge_node_video_encoders",
            "Video encoders running (one, whatever the viewers).",
            read=lambda: float(self.encoders),
        )
        r.gauge(
            "edge_node_viewers",
            "Subscribers to the encoded stream (WHEP viewers, ...).",
            read=lambda: float(len(self._subs)),
        )

    @property
    def fps_in(self) -> float:
        """Frames per second the source produced, from the worker's last stats."""
        return self._fps_in

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def subscribe(self, name: str) -> Subscription:
        sub = Subscription(name)
        self._subs.add(sub)
        self.request_keyframe()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def subscribe_audio(self, name: str, codec: str) -> AudioSubscription:
        sub = AudioSubscription(name, codec)
        self._audio_subs.add(sub)
        return sub

    def unsubscribe_audio(self, sub: AudioSubscription) -> None:
        self._audio_subs.discard(sub)

    def request_keyframe(self) -> None:
        now = self._clock()
        pending = self._keyframe_pending_since
        if pending is not None and now - pending < KEYFRAME_RETRY_S:
            return
        self._keyframe_pending_since = now
        self.c_keyframe_requests.inc()
        self._request_keyframe_cb()

    def on_worker_message(self, msg: dict[str, Any], gen: int) -> None:
        kind = msg["t"]
        if kind == "pkt":
            self._on_packet(msg, gen)
        elif kind == "apkt":
            self._on_audio(msg)
        elif kind == "stats":
            self._on_stats(msg, gen)

    def _on_stats(self, msg: dict[str, Any], gen: int) -> None:
        prev = self._last_stats if self._last_stats.get("gen") == gen else {}
        self.c_dropped.inc(max(0, msg["dropped"] - prev.get("dropped", 0)), stage="source_queue")
        now = self._clock()
        if prev:
            dt = now - prev["at"]
            if dt > 0:
                self._fps_in = (msg["frames_in"] - prev["frames_in"]) / dt
        self.encoders = int(msg["encoders"])
        self.source = str(msg["source"])
        self._last_stats = {**msg, "gen": gen, "at": now}

    def _on_packet(self, msg: dict[str, Any], gen: int) -> None:
        now = self._clock()
        if gen != self._gen:
            # A new worker counts from zero again: continue one frame after the last pts.
            self._gen = gen
            self._offset = self._last_pts + self._frame_duration - int(msg["pts"])
        pts = max(int(msg["pts"]) + self._offset, self._last_pts + 1)
        self._last_pts = pts
        data: bytes = msg["data"]
        packet = EncodedPacket(data, pts, bool(msg["key"]), float(msg["capture"]))
        if packet.keyframe:
            self._keyframe_pending_since = None
        self.last_packet_at = now
        self.h_queue.observe(msg["queue_s"])
        self.h_composite.observe(msg["composite_s"])
        self.h_encode.observe(msg["encode_s"])
        self.h_fanout.observe(max(0.0, now - packet.capture))
        if "event_s" in msg:
            self._observe_event_latency(float(msg["event_s"]), now)
        self.c_packets.inc()
        self._fps_out.add(now)
        self._bits.add(now, len(data) * 8)
        for sub in self._subs:
            self._deliver(sub, packet)

    def _on_audio(self, msg: dict[str, Any]) -> None:
        codec = str(msg["codec"])
        if "config" in msg:
            self.audio_config[codec] = msg["config"]
        # Same shift as the video's (after a worker restart), in audio units.
        pts = int(msg["pts"]) + self._offset * 48000 // 90000
        pts = max(pts, self._last_audio_pts.get(codec, -1) + 1)
        self._last_audio_pts[codec] = pts
        self.c_audio.inc(codec=codec)
        packet = EncodedAudio(codec, msg["data"], pts)
        for sub in self._audio_subs:
            if sub.codec != codec:
                continue
            try:
                sub.queue.put_nowait(packet)
            except asyncio.QueueFull:
                self.c_dropped.inc(stage="audio_subscriber")

    def _observe_event_latency(self, seconds: float, now: float) -> None:
        self.h_event.observe(seconds)
        if self.on_event_latency is not None:
            self.on_event_latency(seconds)
        self._recent_event_s.append(seconds)
        if now - self._last_latency_check >= LATENCY_CHECK_S and len(self._recent_event_s) >= 20:
            self._last_latency_check = now
            recent = sorted(self._recent_event_s)
            p99 = recent[min(len(recent) - 1, int(0.99 * len(recent)))]
            if p99 > EVENT_LATENCY_WARN_S:
                log.warning(
                    "event-to-frame p99 %.0f ms is over %.0f ms (last %d events)",
                    p99 * 1000,
                    EVENT_LATENCY_WARN_S * 1000,
                    len(recent),
                )

    def _deliver(self, sub: Subscription, packet: EncodedPacket) -> None:
        if sub.waiting_keyframe:
            if not packet.keyframe:
                return
            sub.waiting_keyframe = False
        try:
            sub.queue.put_nowait(packet)
            sub.packets += 1
        except asyncio.QueueFull:
            # Behind by a whole queue: flush, restart from the next keyframe.
            dropped = sub.queue.qsize() + 1
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.waiting_keyframe = True
            self.c_dropped.inc(dropped, stage="subscriber")
            self.request_keyframe()
