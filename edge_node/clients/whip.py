"""A WHIP publisher on aiortc (tests, bench): sends a synthetic 30 fps picture with the
contract's frame-counter barcode at the bottom-left, encoded as H.264 by aiortc."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import aiohttp
import av
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack, VideoStreamTrack

from edge_node import barcode


class CounterTrack(VideoStreamTrack):
    """Frames numbered from ``start``, the number drawn as the barcode."""

    def __init__(self, start: int, width: int = 1280, height: int = 720, fps: int = 30) -> None:
        super().__init__()
        self.counter = start
        self.width, self.height, self.fps = width, height, fps
        self._buf = np.full((height * 3 // 2, width), 128, np.uint8)
        self._buf[:height] = 70
        self._t0: float | None = None
        self._index = 0

    async def recv(self) -> av.VideoFrame:
        if self._t0 is None:
            self._t0 = time.monotonic()
        delay = self._t0 + self._index / self.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        barcode.draw(self._buf[: self.height], self.counter, *barcode.bottom_left(self.height))
        frame = av.VideoFrame.from_ndarray(self._buf, format="yuv420p")
        frame.pts = self._index * (90000 // self.fps)
        frame.time_base = Fraction(1, 90000)
        self._index += 1
        self.counter += 1
        return frame


class ToneTrack(MediaStreamTrack):
    """A 440 Hz tone, 20 ms frames of 48 kHz stereo, paced in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._samples = 0
        self._t0: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._t0 is None:
            self._t0 = time.monotonic()
        delay = self._t0 + self._samples / 48000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        t = (np.arange(960) + self._samples) / 48000
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = 48000
        frame.pts = self._samples
        frame.time_base = Fraction(1, 48000)
        self._samples += 960
        return frame


class WhipPublisher:
    def __init__(
        self, base_url: str, stream_key: str, start: int = 50000, audio: bool = False
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.stream_key = stream_key
        self.pc = RTCPeerConnection()
        self.track = CounterTrack(start)
        self.location: str | None = None
        self.delete_status: int | None = None
        self.status: int | None = None
        self.audio = ToneTrack() if audio else None

    async def connect(self) -> int:
        """Publish; returns the HTTP status (201 when live)."""
        transceiver = self.pc.addTransceiver(self.track, direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video")
        transceiver.setCodecPreferences(
            [c for c in caps.codecs if c.mimeType.lower() in ("video/h264", "video/rtx")]
        )
        if self.audio is not None:
            self.pc.addTransceiver(self.audio, direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        if self.stream_key:
            headers["Authorization"] = f"Bearer {self.stream_key}"
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.base_url}/whip", data=self.pc.localDescription.sdp, headers=headers
            ) as resp,
        ):
            self.status = resp.status
            body = await resp.text()
            if resp.status == 201:
                self.location = resp.headers["Location"]
                await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        return resp.status

    async def close(self) -> None:
        if self.location is not None:
            async with (
                aiohttp.ClientSession() as http,
                http.delete(f"{self.base_url}{self.location}") as resp,
            ):
                self.delete_status = resp.status  # 200, or 404 when already gone
            self.location = None
        await self.pc.close()
