"""The one H.264 encoder of the node: libx264, zero latency, no B-frames.

Every viewer, push and recording gets the packets this produces; nothing downstream
encodes again. Keyframes come at least every ``keyframe_interval_s`` and on demand.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
from av.video.frame import PictureType

from edge_node.config import VideoConfig

TIME_BASE = Fraction(1, 90000)  # RTP's video clock, so packets need no rescaling


class H264Encoder:
    def __init__(self, video: VideoConfig) -> None:
        gop = max(1, round(video.keyframe_interval_s * video.fps))
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = video.width, video.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = TIME_BASE
        ctx.framerate = Fraction(video.fps, 1)
        ctx.bit_rate = video.bitrate_kbps * 1000
        ctx.options = {
            "preset": video.x264_preset,
            "tune": "zerolatency",
            "profile": "baseline",
            # A forced keyframe is an IDR, so a viewer can start decoding from it.
            "forced-idr": "1",
            "x264-params": (
                f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:repeat-headers=1"
                f":vbv-maxrate={video.bitrate_kbps}:vbv-bufsize={video.bitrate_kbps // 2}"
            ),
        }
        self._ctx = ctx
        self.frames_encoded = 0
        self.keyframes_forced = 0

    def encode(self, frame: av.VideoFrame, force_keyframe: bool = False) -> list[av.Packet[Any]]:
        """Encode one frame (``frame.pts`` in 1/90000 s); returns the packets it completes."""
        frame.time_base = TIME_BASE
        if force_keyframe:
            frame.pict_type = PictureType.I
            self.keyframes_forced += 1
        else:
            frame.pict_type = PictureType.NONE
        packets: list[av.Packet[Any]] = self._ctx.encode(frame)
        self.frames_encoded += 1
        return packets
