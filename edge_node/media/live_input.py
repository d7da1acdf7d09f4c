"""Live input of the media worker: decodes a publisher's compressed video.

The control process forwards the publisher's FLV video tags (RTMP) over the channel;
this decodes them with FFmpeg (here, in the worker, so that a corrupt stream that
crashes FFmpeg takes only the worker down) and hands each picture, scaled to the
output size, to the pipeline. It starts decoding at the first keyframe after a
sequence header, and after any decode error waits for the next keyframe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from fractions import Fraction

import av

from edge_node.errors import ProtocolError
from edge_node.media import flv

log = logging.getLogger(__name__)

MS = Fraction(1, 1000)


class LiveInput:
    def __init__(self, width: int, height: int, on_frame: Callable[[av.VideoFrame], None]) -> None:
        self.width, self.height = width, height
        self._on_frame = on_frame
        self._ctx: av.VideoCodecContext | None = None
        self._waiting_keyframe = True
        self._lock = threading.Lock()
        self.proto = ""
        self.frames_decoded = 0
        self.decode_errors = 0
        self.skipped_before_keyframe = 0

    @property
    def active(self) -> bool:
        return bool(self.proto)

    def start(self, proto: str) -> None:
        with self._lock:
            self.proto = proto
            self._ctx = None
            self._waiting_keyframe = True

    def end(self) -> None:
        with self._lock:
            self.proto = ""
            self._ctx = None

    def flv_video(self, timestamp_ms: int, body: bytes) -> None:
        """One FLV video tag body from RTMP."""
        with self._lock:
            try:
                tag = flv.parse_video_tag(body)
            except ProtocolError as exc:
                self._error(f"bad video tag: {exc}")
                return
            if tag.packet_type == flv.AVC_SEQUENCE_HEADER:
                ctx = av.CodecContext.create("h264", "r")
                ctx.extradata = tag.data
                # Slice threads add no delay; frame threads would hold frames back.
                ctx.thread_type = "SLICE"
                self._ctx = ctx
                self._waiting_keyframe = True
                return
            if tag.packet_type != flv.AVC_NALU:
                return
            if self._ctx is None:
                self.skipped_before_keyframe += 1
                return
            if self._waiting_keyframe and not tag.keyframe:
                self.skipped_before_keyframe += 1
                return
            self._waiting_keyframe = False
            packet = av.Packet(tag.data)
            packet.dts = timestamp_ms
            packet.pts = timestamp_ms + tag.composition_ms
            packet.time_base = MS
            try:
                frames = self._ctx.decode(packet)
            except av.FFmpegError as exc:
                self._error(f"decode failed: {exc}")
                return
        for frame in frames:
            self.frames_decoded += 1
            self._on_frame(frame.reformat(self.width, self.height, "yuv420p"))

    def _error(self, reason: str) -> None:
        self.decode_errors += 1
        self._waiting_keyframe = True
        log.warning(
            "live input: %s; waiting for the next keyframe", reason, extra={"proto": self.proto}
        )
