"""A WHEP viewer on aiortc, used by the tests and the bench: it plays a node's stream
and reads the contract's barcode strips from the decoded pictures."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import av
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from edge_node import barcode


class WhepViewer:
    def __init__(self, base_url: str, audio: bool = False) -> None:
        self.base_url = base_url.rstrip("/")
        self.audio = audio
        self._audio_track: asyncio.Future[MediaStreamTrack] = (
            asyncio.get_running_loop().create_future()
        )
        self.pc = RTCPeerConnection()
        self.location: str | None = None
        self.delete_status: int | None = None
        self.events = self.pc.createDataChannel("events")
        self.event_messages: asyncio.Queue[Any] = asyncio.Queue()
        self._track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and not self._track.done():
                self._track.set_result(track)
            if track.kind == "audio" and not self._audio_track.done():
                self._audio_track.set_result(track)

        @self.events.on("message")
        def on_message(message: str | bytes) -> None:
            self.event_messages.put_nowait(
                json.loads(message) if isinstance(message, str) else message
            )

    async def connect(self) -> None:
        self.pc.addTransceiver("video", direction="recvonly")
        if self.audio:
            self.pc.addTransceiver("audio", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.base_url}/whep",
                data=self.pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
            ) as resp,
        ):
            body = await resp.text()
            if resp.status != 201:
                raise RuntimeError(f"WHEP POST answered {resp.status}: {body}")
            self.location = resp.headers["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))

    async def frame(self, timeout: float = 5.0) -> av.VideoFrame:
        track = await asyncio.wait_for(asyncio.shield(self._track), timeout)
        frame = await asyncio.wait_for(track.recv(), timeout)
        assert isinstance(frame, av.VideoFrame)
        return frame

    async def audio_frame(self, timeout: float = 5.0) -> av.AudioFrame:
        track = await asyncio.wait_for(asyncio.shield(self._audio_track), timeout)
        frame = await asyncio.wait_for(track.recv(), timeout)
        assert isinstance(frame, av.AudioFrame)
        return frame

    async def close(self) -> None:
        if self.location is not None:
            async with (
                aiohttp.ClientSession() as http,
                http.delete(f"{self.base_url}{self.location}") as resp,
            ):
                self.delete_status = resp.status  # 200, or 404 when already gone
            self.location = None
        await self.pc.close()


def luma(frame: av.VideoFrame) -> Any:
    return frame.to_ndarray(format="yuv420p")[: frame.height]


def frame_counter(frame: av.VideoFrame) -> int:
    """The test pattern's frame counter (bottom-left strip)."""
    return barcode.read(luma(frame), *barcode.bottom_left(frame.height))


def probe_seq(frame: av.VideoFrame) -> int:
    """A probe event's ``seq`` (top-left strip)."""
    return barcode.read(luma(frame), *barcode.TOP_LEFT)
