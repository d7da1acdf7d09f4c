"""The live input's audio in the media worker: decode, put on the output clock, encode.

The publisher's audio (AAC from RTMP, Opus from WebRTC) is decoded here, in the worker,
re-stamped on the same monotonic timeline as the video frames (so both stay in sync
whatever the input's own timestamps do), and encoded once per output family: Opus
for WebRTC viewers, AAC for RTMP push and recordings. Packets go up the channel as
``apkt`` messages with pts in 1/48000 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av

log = logging.getLogger(__name__)

RATE = 48000
TIME_BASE = Fraction(1, RATE)
FLV_AAC = 10
# Re-anchor the running sample clock on the wall clock when they drift this far apart.
RESYNC_S = 0.1
SYNCED_RESYNC_S = 0.03

Emit = Callable[[dict[str, Any]], None]


class _Encoder:
    def __init__(self, codec: str, frame_size: int, bit_rate: int) -> None:
        ctx = av.CodecContext.create(codec, "w")
        assert isinstance(ctx, av.AudioCodecContext)
        ctx.sample_rate = RATE
        ctx.layout = "stereo"
        ctx.format = "fltp" if codec == "aac" else "s16"
        ctx.bit_rate = bit_rate
        ctx.time_base = TIME_BASE
        ctx.open()
        self.ctx = ctx
        self.codec = "opus" if codec == "libopus" else codec
        self.resampler = av.AudioResampler(
            format=ctx.format.name, layout="stereo", rate=RATE, frame_size=frame_size
        )
        self.config_sent = False
        self.pts: int | None = None  # next output sample, on the output clock
        self.synced = False  # anchored on the video's clock (lip sync), not on arrival


class AudioPath:
    def __init__(
        self,
        t0: float,
        emit: Emit,
        clock: Callable[[], float] = time.monotonic,
        video_clock: Callable[[float], float | None] = lambda ts: None,
    ) -> None:
        self._t0 = t0
        # Maps the input's own timestamp (seconds) to when the video of that moment
        # arrived (monotonic), when the input's audio and video share a clock (RTMP).
        self._video_clock = video_clock
        self._emit = emit
        self._clock = clock
        self._lock = threading.Lock()
        self._decoder: av.AudioCodecContext | None = None
        self._encoders: list[_Encoder] = []
        self.proto = ""
        self.frames_decoded = 0
        self.decode_errors = 0
        self.unsupported = 0

    def start(self, proto: str) -> None:
        with self._lock:
            self.proto = proto
            self._decoder = _decoder("opus") if proto == "whip" else None
            self._encoders = []

    def end(self) -> None:
        with self._lock:
            self.proto = ""
            self._decoder = None
            self._encoders = []

    def flv_audio(self, body: bytes, timestamp_ms: int | None = None) -> None:
        """One FLV audio tag body (RTMP): AAC only. ``timestamp_ms`` is the tag's
        RTMP timestamp, on the same clock as the video's: it keeps lip sync."""
        with self._lock:
            if len(body) < 2 or body[0] >> 4 != FLV_AAC:
                self.unsupported += 1
                return
            if body[1] == 0:  # AudioSpecificConfig
                self._decoder = _decoder("aac", body[2:])
                return
            if self._decoder is None:
                return
            self._decode(body[2:], None if timestamp_ms is None else timestamp_ms / 1000)

    def opus(self, data: bytes) -> None:
        """One Opus packet (WHIP)."""
        with self._lock:
            if self._decoder is not None:
                self._decode(data)

    def _decode(self, data: bytes, input_ts: float | None = None) -> None:
        assert self._decoder is not None
        try:
            frames = self._decoder.decode(av.Packet(data))
        except av.FFmpegError as exc:
            self.decode_errors += 1
            log.warning("audio decode failed: %s", exc)
            return
        for frame in frames:
            self.frames_decoded += 1
            self._on_pcm(frame, input_ts)

    def _on_pcm(self, frame: av.AudioFrame, input_ts: float | None = None) -> None:
        if not self._encoders:
            self._encoders = [_Encoder("libopus", 960, 96000), _Encoder("aac", 1024, 128000)]
        # Output clock: where this audio belongs on the video's timeline: when the
        # video of the same input moment arrived (lip sync), or else when this audio
        # arrived. Samples run on from there; a drift beyond RESYNC_S re-anchors.
        at = self._video_clock(input_ts) if input_ts is not None else None
        wall = round(((at if at is not None else self._clock()) - self._t0) * RATE)
        frame.pts = None  # the input's own timestamps are not ours
        for enc in self._encoders:
            # Re-anchor on a drift, and once the video clock becomes known (audio that
            # arrived before the first picture was placed by its arrival time).
            synced = at is not None
            # On the video clock the anchor is exact (jitter is in the clock's offset,
            # which only ever improves), so a smaller drift already re-anchors.
            limit = (SYNCED_RESYNC_S if synced else RESYNC_S) * RATE
            if enc.pts is None or abs(wall - enc.pts) > limit or (synced and not enc.synced):
                enc.pts = wall
                enc.synced = synced
            for out in enc.resampler.resample(frame):
                self._encode(enc, out)

    def _encode(self, enc: _Encoder, frame: av.AudioFrame) -> None:
        assert enc.pts is not None
        frame.pts = enc.pts
        frame.time_base = TIME_BASE
        enc.pts += frame.samples
        for packet in enc.ctx.encode(frame):
            msg: dict[str, Any] = {
                "t": "apkt",
                "codec": enc.codec,
                "data": bytes(packet),
                "pts": int(packet.pts if packet.pts is not None else frame.pts),
            }
            if not enc.config_sent and enc.ctx.extradata:
                msg["config"] = bytes(enc.ctx.extradata)
                enc.config_sent = True
            self._emit(msg)


def _decoder(codec: str, extradata: bytes | None = None) -> av.AudioCodecContext:
    ctx = av.CodecContext.create(codec, "r")
    assert isinstance(ctx, av.AudioCodecContext)
    if extradata:
        ctx.extradata = extradata
    return ctx
