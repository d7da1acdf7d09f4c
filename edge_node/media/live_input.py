"""Live input of the media worker: decodes a publisher's compressed video.

The control process forwards the publisher's FLV video tags (RTMP) or Annex-B access
units (WHIP) over the channel;
this decodes them with FFmpeg (here, in the worker, so that a corrupt stream that
crashes FFmpeg takes only the worker down) and hands each picture, scaled to the
output size, to the pipeline. It starts decoding at the first keyframe after a
sequence header, and after any decode error waits for the next keyframe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av

from edge_node.errors import ProtocolError
from edge_node.media import flv, h264

log = logging.getLogger(__name__)

MS = Fraction(1, 1000)
JITTER_S = 0.2  # arrival jitter tolerated before the input clock is re-anchored


class LiveInput:
    def __init__(
        self,
        width: int,
        height: int,
        on_frame: Callable[[av.VideoFrame], None],
        on_need_keyframe: Callable[[], None] = lambda: None,
    ) -> None:
        self.width, self.height = width, height
        self._on_frame = on_frame
        self._on_need_keyframe = on_need_keyframe
        self._ctx: av.VideoCodecContext | None = None
        self._waiting_keyframe = True
        self._lock = threading.Lock()
        self._parameter_sets: bytes | None = None
        self._clock_offset: float | None = None
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
            self._parameter_sets = None
            self._clock_offset = None
            # RTMP announces its decoder configuration in a sequence header; WHIP's
            # Annex-B stream carries it in band.
            self._ctx = _h264_decoder() if proto == "whip" else None
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
                self._ctx = _h264_decoder(tag.data)
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
            packet = av.Packet(tag.data)
            packet.dts = timestamp_ms
            packet.pts = timestamp_ms + tag.composition_ms
            packet.time_base = MS
            frames = self._decode(packet)
        self._emit(frames)

    def h264_annexb(self, data: bytes) -> None:
        """One Annex-B access unit (WHIP); parameter sets alone are taken as they come."""
        with self._lock:
            if self._ctx is None:
                return
            nalus = flv.split_annexb(data)
            sets = h264.parameter_sets_annexb(nalus)
            if sets is not None:
                self._parameter_sets = sets
            if self._waiting_keyframe:
                if not h264.is_random_access(nalus):
                    self.skipped_before_keyframe += int(sets is None)
                    return
                if sets is None and self._parameter_sets is not None:
                    # An intra picture without its SPS/PPS (sent earlier, or replayed
                    # to this new worker): put them in front.
                    data = self._parameter_sets + data
            frames = self._decode(av.Packet(data))
        self._emit(frames)

    def _decode(self, packet: av.Packet[Any]) -> list[av.VideoFrame]:
        assert self._ctx is not None
        self._waiting_keyframe = False
        try:
            return list(self._ctx.decode(packet))
        except av.FFmpegError as exc:
            self._error(f"decode failed: {exc}")
            return []

    def input_to_monotonic(self, input_ts: float) -> float | None:
        """When the video of input time ``input_ts`` (seconds) arrived, if known."""
        offset = self._clock_offset
        return None if offset is None else input_ts + offset

    def _emit(self, frames: list[av.VideoFrame]) -> None:
        now = time.monotonic()
        for frame in frames:
            if frame.time is not None and self.proto == "rtmp":
                offset = now - float(frame.time)
                # Keep the earliest-arrival offset (least delayed); re-anchor on jumps.
                if self._clock_offset is None or not (
                    -JITTER_S < offset - self._clock_offset < JITTER_S
                ):
                    self._clock_offset = offset
                else:
                    self._clock_offset = min(self._clock_offset, offset)
            self.frames_decoded += 1
            self._on_frame(frame.reformat(self.width, self.height, "yuv420p"))

    def _error(self, reason: str) -> None:
        self.decode_errors += 1
        self._waiting_keyframe = True
        self._on_need_keyframe()
        log.warning(
            "live input: %s; waiting for the next keyframe", reason, extra={"proto": self.proto}
        )


def _h264_decoder(extradata: bytes | None = None) -> av.VideoCodecContext:
    ctx = av.CodecContext.create("h264", "r")
    assert isinstance(ctx, av.VideoCodecContext)
    if extradata:
        ctx.extradata = extradata
    # Slice threads add no delay; frame threads would hold frames back.
    ctx.thread_type = "SLICE"
    return ctx
