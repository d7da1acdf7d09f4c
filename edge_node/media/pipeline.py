"""The worker's frame pipeline: source -> compositor -> encode once -> emit.

The source is the live publisher while one sends pictures, and the fallback source
(slate, test pattern or file) otherwise: a live picture goes on as soon as it is
decoded; after ``ingest.slate_after_s`` without one the fallback takes over, so the
output never stops. Two threads: the source thread produces frames into a bounded queue; the
encode thread composites and encodes (PyAV and numpy release the GIL). When the
encode thread falls behind, the oldest queued frame is dropped and counted: live
video prefers fresh over complete. Timestamps are stamped at capture from the
monotonic clock, in 1/90000 s, and are strictly increasing.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import av

from edge_node.backoff import Backoff
from edge_node.config import Config
from edge_node.media.audio import AudioPath
from edge_node.media.encode import H264Encoder
from edge_node.media.ingest_rtsp import RtspPull, redact
from edge_node.media.live_input import LiveInput
from edge_node.media.sources import Source
from edge_node.overlay.compositor import Compositor

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]


class DropOldestQueue:
    """A bounded FIFO whose ``put`` never blocks: when full, the oldest item goes."""

    def __init__(self, maxsize: int) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: Any) -> None:
        with self._cond:
            if len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float) -> Any | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        return len(self._items)


class PtsClock:
    """Capture time -> strictly increasing pts in 1/90000 s."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self._last = -1

    def pts(self, t_capture: float) -> int:
        pts = max(round((t_capture - self.t0) * 90000), self._last + 1)
        self._last = pts
        return pts


class Pipeline:
    def __init__(
        self,
        cfg: Config,
        source_factory: Callable[[threading.Event], Source],
        emit: Emit,
        compositor: Compositor | None = None,
    ) -> None:
        self.cfg = cfg
        self._source_factory = source_factory
        self._emit = emit
        self.compositor = compositor or Compositor()
        self.encoder = H264Encoder(cfg.video)
        self.queue = DropOldestQueue(cfg.worker.frame_queue)
        self.live_frames = DropOldestQueue(cfg.worker.frame_queue)
        # One clock origin for video pts (1/90000) and audio pts (1/48000).
        self.t0 = time.monotonic()
        self.audio = AudioPath(
            self.t0, emit, video_clock=lambda ts: self.live.input_to_monotonic(ts)
        )
        self.live = LiveInput(
            cfg.video.width,
            cfg.video.height,
            self._on_live_frame,
            on_need_keyframe=lambda: emit({"t": "need_keyframe"}),
        )
        self.last_live_at = -1e9
        self.input = "fallback"
        self.input_switches = 0
        self._reported_version = 0
        self.stop_event = threading.Event()
        self._keyframe = threading.Event()
        self.frames_in = 0
        self.frames_out = 0
        self.source_name = ""
        self.error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self.rtsp: RtspPull | None = None
        if cfg.ingest.rtsp_url:
            self.rtsp = RtspPull(
                cfg.ingest.rtsp_url,
                cfg.ingest.rtsp_transport,
                cfg.video.width,
                cfg.video.height,
                self._on_live_frame,
                self.stop_event,
                Backoff(0.5, 10.0),
            )

    def request_keyframe(self) -> None:
        self._keyframe.set()

    def start(self) -> None:
        for target, name in ((self._run_source, "source"), (self._run_encode, "encode")):
            t = threading.Thread(target=self._guard(target), name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if self.rtsp is not None:
            self._threads.append(self.rtsp.start())

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # the worker exits; the supervisor restarts it
                log.exception("pipeline thread %s failed", threading.current_thread().name)
                self.error = exc
                self.stop_event.set()

        return run

    def stop(self, timeout: float = 2.0) -> None:
        self.stop_event.set()
        for t in self._threads:
            t.join(timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "t": "stats",
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": self.queue.dropped,
            "encoders": 1,
            "keyframes_forced": self.encoder.keyframes_forced,
            "source": self.source_name,
            "input": self.input,
            "input_switches": self.input_switches,
            "live_proto": self.live.proto,
            "live_frames": self.live.frames_decoded,
            "live_decode_errors": self.live.decode_errors,
            "live_dropped": self.live_frames.dropped,
            "live_skipped_before_keyframe": self.live.skipped_before_keyframe,
            "audio_frames": self.audio.frames_decoded,
            "audio_decode_errors": self.audio.decode_errors,
            "audio_unsupported": self.audio.unsupported,
            "rtsp": None
            if self.rtsp is None
            else {
                "url": redact(self.rtsp.url),
                "connected": self.rtsp.connected,
                "connects": self.rtsp.connects,
                "failures": self.rtsp.failures,
                "frames": self.rtsp.frames,
                "last_error": self.rtsp.last_error,
            },
        }

    def start_live(self, proto: str) -> None:
        self.live.start(proto)
        self.audio.start(proto)

    def end_live(self) -> None:
        """The publisher left cleanly: show the fallback now, not after the slate delay."""
        self.live.end()
        self.audio.end()
        self.last_live_at = -1e9

    def _on_live_frame(self, frame: av.VideoFrame) -> None:
        self.live_frames.put((frame, time.monotonic()))
        self.last_live_at = time.monotonic()

    def _set_input(self, which: str) -> None:
        if which != self.input:
            self.input = which
            self.input_switches += 1
            log.info("output now shows the %s input", which)

    def _run_source(self) -> None:
        fallback = self._source_factory(self.stop_event)
        self.source_name = fallback.name
        slate_after_s = self.cfg.ingest.slate_after_s
        try:
            while not self.stop_event.is_set():
                if time.monotonic() - self.last_live_at < slate_after_s:
                    item = self.live_frames.get(timeout=slate_after_s)
                    if item is not None:
                        self._set_input("live")
                        self.frames_in += 1
                        self.queue.put(item)
                    continue
                frame = fallback.read()
                if self.stop_event.is_set():
                    break
                if len(self.live_frames):
                    continue  # a live picture arrived meanwhile: it wins
                self._set_input("fallback")
                self.frames_in += 1
                self.queue.put((frame, time.monotonic()))
        finally:
            fallback.close()

    def _run_encode(self) -> None:
        clock = PtsClock(self.t0)
        while not self.stop_event.is_set():
            item = self.queue.get(timeout=0.1)
            if item is None:
                continue
            frame, t_capture = item
            t_start = time.monotonic()
            pts = clock.pts(t_capture)
            frame.pts = pts
            frame = self.compositor.composite(frame, t_capture)
            t_composited = time.monotonic()
            force = self._keyframe.is_set()
            if force:
                self._keyframe.clear()
            packets = self.encoder.encode(frame, force_keyframe=force)
            t_encoded = time.monotonic()
            self.frames_out += 1
            # Latency accounting: the first frame showing a new scene reports how long
            # ago the event behind it arrived in the control process.
            drawn = self.compositor.last_drawn
            event_s = None
            if drawn.version != self._reported_version:
                self._reported_version = drawn.version
                if drawn.changed_at is not None:
                    event_s = t_encoded - drawn.changed_at
            for packet in packets:
                self._emit_packet(packet, t_capture, t_start, t_composited, t_encoded, event_s)
                event_s = None

    def _emit_packet(
        self,
        packet: av.Packet[Any],
        t_capture: float,
        t_start: float,
        t_comp: float,
        t_enc: float,
        event_s: float | None = None,
    ) -> None:
        msg: dict[str, Any] = {
            "t": "pkt",
            "data": bytes(packet),
            "pts": int(packet.pts or 0),
            "key": bool(packet.is_keyframe),
            "capture": t_capture,
            "queue_s": t_start - t_capture,
            "composite_s": t_comp - t_start,
            "encode_s": t_enc - t_comp,
        }
        if event_s is not None:
            msg["event_s"] = event_s
        self._emit(msg)
