"""Recording: the encoded stream written to Matroska files, rotated by time or size.

A fan-out subscriber in the control process; the muxing and the disk writes happen in
a writer thread, never on the event loop. Matroska is written progressively and every
cluster (at most half a second) is flushed to the OS when it closes, so a crash
(kill -9 included) leaves a file that plays up to its last half second. A file always
starts at a keyframe, and the recorder asks the encoder for one when a rotation is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

import av

from edge_node.config import Config
from edge_node.media import flv
from edge_node.media.audio import RATE as AUDIO_RATE
from edge_node.media.audio import TIME_BASE as AUDIO_TIME_BASE
from edge_node.media.encode import TIME_BASE
from edge_node.media.fanout import EncodedAudio, EncodedPacket, PacketHub
from edge_node.metrics import Registry

log = logging.getLogger(__name__)

WRITE_QUEUE = 300  # ~10 s of video at 30 fps
CLUSTER_MS = 500


class _Segment:
    def __init__(
        self,
        path: Path,
        cfg: Config,
        sps: bytes,
        pps: bytes,
        first_pts: int,
        aac_config: bytes | None,
    ) -> None:
        self.path = path
        self.opened_at = time.monotonic()
        self.first_pts = first_pts
        self.frames = 0
        # The muxer keeps the open cluster in memory; short clusters bound what a
        # crash can lose to CLUSTER_MS of video.
        self._out = av.open(
            str(path),
            "w",
            format="matroska",
            options={"cluster_time_limit": str(CLUSTER_MS)},
            container_options={"flush_packets": "1"},
        )
        stream = self._out.add_stream("h264", rate=cfg.video.fps)
        stream.width, stream.height = cfg.video.width, cfg.video.height
        stream.time_base = TIME_BASE
        stream.codec_context.extradata = b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps
        self._stream = stream
        self._audio = None
        if aac_config is not None:
            audio = self._out.add_stream("aac", rate=AUDIO_RATE)
            audio.codec_context.layout = "stereo"
            audio.time_base = AUDIO_TIME_BASE
            audio.codec_context.extradata = aac_config
            self._audio = audio

    @property
    def has_audio(self) -> bool:
        return self._audio is not None

    def write_audio(self, pkt: EncodedAudio) -> None:
        pts = pkt.pts - self.first_pts * AUDIO_RATE // 90000
        if self._audio is None or pts < 0:
            return
        packet = av.Packet(pkt.data)
        packet.pts = packet.dts = pts
        packet.time_base = AUDIO_TIME_BASE
        packet.stream = self._audio
        self._out.mux(packet)

    def write(self, pkt: EncodedPacket) -> None:
        packet = av.Packet(pkt.data)
        packet.pts = packet.dts = pkt.pts - self.first_pts
        packet.time_base = TIME_BASE
        packet.stream = self._stream
        packet.is_keyframe = pkt.keyframe
        self._out.mux(packet)
        self.frames += 1

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def close(self) -> None:
        self._out.close()


class Recorder:
    def __init__(self, cfg: Config, hub: PacketHub, registry: Registry) -> None:
        self.cfg = cfg
        self.dir = Path(cfg.record.dir or Path(cfg.node.data_dir) / "recordings")
        self._hub = hub
        self._queue: queue.Queue[EncodedPacket | EncodedAudio | None] = queue.Queue(WRITE_QUEUE)
        self._thread: threading.Thread | None = None
        self._pump_tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._segment: _Segment | None = None
        self._rotate_requested = False
        self.current: Path | None = None
        self.last_error: str | None = None
        self.c_files = registry.counter("edge_node_record_files_total", "Recording files opened.")
        self.c_frames = registry.counter("edge_node_record_frames_total", "Frames recorded.")
        self.c_dropped = registry.counter(
            "edge_node_record_dropped_total", "Frames not recorded (writer behind or failing)."
        )

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run_writer, name="recorder", daemon=True)
        self._thread.start()
        video = self._hub.subscribe("record").queue
        audio = self._hub.subscribe_audio("record", "aac").queue
        self._pump_tasks = [
            asyncio.create_task(self._pump(video), name="recorder-video"),
            asyncio.create_task(self._pump(audio), name="recorder-audio"),
        ]

    async def _pump(self, packets: asyncio.Queue[Any]) -> None:
        while True:
            pkt = await packets.get()
            try:
                self._queue.put_nowait(pkt)
            except queue.Full:
                self.c_dropped.inc()

    async def stop(self) -> None:
        for task in self._pump_tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._thread is not None:
            await asyncio.to_thread(self._queue.put, None)
            await asyncio.to_thread(self._thread.join, 5.0)

    def status(self) -> dict[str, Any]:
        return {"file": str(self.current) if self.current else None, "error": self.last_error}

    def _run_writer(self) -> None:
        while True:
            pkt = self._queue.get()
            if pkt is None:
                break
            try:
                self._write(pkt)
                self.last_error = None
            except (av.FFmpegError, OSError) as exc:
                self.last_error = str(exc)
                self.c_dropped.inc()
                log.error("recording failed: %s; starting a new file at the next keyframe", exc)
                self._close_segment()
        self._close_segment()

    def _write(self, pkt: EncodedPacket | EncodedAudio) -> None:
        if isinstance(pkt, EncodedAudio):
            self._write_audio(pkt)
            return
        seg = self._segment
        if seg is not None and not self._rotate_requested and self._rotation_due(seg):
            self._rotate_requested = True
            self._ask_keyframe()
        if pkt.keyframe and (seg is None or self._rotate_requested):
            nalus = flv.split_annexb(pkt.data)
            sets = flv.parameter_sets(nalus)
            if sets is not None:
                self._close_segment()
                seg = self._open_segment(
                    sets[0], sets[1], pkt.pts, self._hub.audio_config.get("aac")
                )
        if seg is None:
            self.c_dropped.inc()  # before the first keyframe: nothing decodable yet
            return
        seg.write(pkt)
        self.c_frames.inc()

    def _write_audio(self, pkt: EncodedAudio) -> None:
        seg = self._segment
        if seg is None:
            return
        if not seg.has_audio:
            # The input's audio started after this file began: a Matroska file declares
            # its tracks up front, so the next file (from the next keyframe) carries it.
            if not self._rotate_requested and "aac" in self._hub.audio_config:
                self._rotate_requested = True
                self._ask_keyframe()
            return
        seg.write_audio(pkt)

    def _rotation_due(self, seg: _Segment) -> bool:
        rec = self.cfg.record
        too_old = time.monotonic() - seg.opened_at >= rec.segment_s
        return too_old or seg.size >= rec.segment_mb * 1024 * 1024

    def _ask_keyframe(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._hub.request_keyframe)

    def _open_segment(
        self, sps: bytes, pps: bytes, first_pts: int, aac_config: bytes | None
    ) -> _Segment:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        path = self.dir / f"{self.cfg.node.id}-{stamp}.mkv"
        n = 1
        while path.exists():
            n += 1
            path = self.dir / f"{self.cfg.node.id}-{stamp}-{n}.mkv"
        self._segment = _Segment(path, self.cfg, sps, pps, first_pts, aac_config)
        self._rotate_requested = False
        self.current = path
        self.c_files.inc()
        log.info("recording to %s", path)
        return self._segment

    def _close_segment(self) -> None:
        if self._segment is not None:
            with contextlib.suppress(av.FFmpegError, OSError):
                self._segment.close()
            self._segment = None
