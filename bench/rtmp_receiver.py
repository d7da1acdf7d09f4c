"""An RTMP receiver for glass-to-glass timing: ``python -m bench.rtmp_receiver``.

``python -m bench.rtmp_receiver --port P --log FILE`` listens for RTMP publishers (any
stream key, application ``--app``), decodes their H.264 with PyAV, reads the frame
counter from the bottom-left barcode of every decoded picture and writes
``counter monotonic_s`` per frame, the time taken right after the decoder returned
it. The publisher can be ``edge_node.clients.rtmp_publish`` (the floor), the node's
RTMP push, or the ffmpeg CLI as a middle box.

Runs in its own process, as an asyncio server (``edge_node.media.ingest_rtmp``):
never in a process that also runs a PyAV RTMP *client* (PyAV holds the GIL while
its RTMP output waits for the server, which would deadlock the server).

With ``--json`` it prints one JSON object per line: ``{"event": "listening", "port":
P}``, ``{"event": "publisher", ...}`` per connection, ``{"event": "playing", ...}`` at
the first decoded frame, ``{"event": "first_frame", ...}`` at the first frame whose
counter is in ``--expect START:COUNT`` (or the first frame at all without it), and
``{"event": "result", ...}`` when it stops: at end of standard input (``--stdin``), on
SIGTERM/SIGINT, or after ``--max-seconds``. Exit status 0 when it decoded a frame, 1
otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import av
import numpy as np
import numpy.typing as npt

from edge_node import barcode
from edge_node.errors import ProtocolError
from edge_node.media import flv, rtmp
from edge_node.media.ingest_rtmp import RtmpListener
from edge_node.metrics import Registry

COUNTER_MODULO = 1 << 16


def _emit(enabled: bool, event: str, **data: Any) -> None:
    if enabled:
        print(json.dumps({"event": event, **data}), flush=True)


def luma(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    """The Y plane as rows x width, without converting the picture."""
    plane = frame.planes[0]
    rows: npt.NDArray[np.uint8] = np.frombuffer(plane, np.uint8)  # type: ignore[call-overload]
    return rows.reshape(-1, plane.line_size)[: frame.height, : frame.width]


def frame_counter(frame: av.VideoFrame) -> int:
    return barcode.read(luma(frame), *barcode.bottom_left(frame.height))


def in_range(counter: int, start: int, count: int) -> bool:
    """``counter`` is one of ``count`` values from ``start`` (modulo 2**16)."""
    return (counter - start) % COUNTER_MODULO < count


@dataclass
class ReceiverStats:
    port: int = 0
    connections: int = 0
    frames: int = 0
    expected_frames: int = 0
    video_tags: int = 0
    decode_errors: int = 0
    bad_tags: int = 0
    width: int | None = None
    height: int | None = None
    first_expected_at: float | None = None
    last_frame_at: float | None = None
    error: str | None = None


class Receiver:
    """Decodes each connection's video tags and logs the counters (sans sockets)."""

    def __init__(
        self,
        log: TextIO,
        events: bool,
        expect: tuple[int, int] | None = None,
        stats: ReceiverStats | None = None,
    ) -> None:
        self.log = log
        self.events = events
        self.expect = expect
        self.stats = stats or ReceiverStats()
        self._decoders: dict[int, av.VideoCodecContext] = {}

    def check_publish(self, key: str) -> str | None:
        return None  # any key

    def on_start(self, conn_id: int, key: str) -> None:
        self.stats.connections += 1
        _emit(self.events, "publisher", conn=conn_id, at=time.monotonic())

    def on_end(self, conn_id: int) -> None:
        self._decoders.pop(conn_id, None)

    def on_media(self, conn_id: int, message: rtmp.MediaMessage) -> None:
        if message.kind != "video":
            return
        self.stats.video_tags += 1
        try:
            tag = flv.parse_video_tag(message.payload)
        except ProtocolError:
            self.stats.bad_tags += 1
            return
        if tag.packet_type == flv.AVC_SEQUENCE_HEADER:
            ctx = av.CodecContext.create("h264", "r")
            assert isinstance(ctx, av.VideoCodecContext)
            ctx.extradata = tag.data
            ctx.thread_type = "SLICE"  # frame threads would hold frames back
            self._decoders[conn_id] = ctx
            return
        if tag.packet_type != flv.AVC_NALU:
            return
        ctx_or_none = self._decoders.get(conn_id)
        if ctx_or_none is None:
            return  # nothing decodable before the sequence header
        try:
            frames = ctx_or_none.decode(av.Packet(tag.data))
        except av.FFmpegError:
            self.stats.decode_errors += 1
            return
        for frame in frames:
            self.frame(frame, time.monotonic())

    def frame(self, frame: av.VideoFrame, t: float) -> None:
        counter = frame_counter(frame)
        self.log.write(f"{counter} {t:.6f}\n")
        s = self.stats
        if s.frames == 0:
            _emit(self.events, "playing", counter=counter, at=t)
        s.frames += 1
        s.width, s.height = frame.width, frame.height
        s.last_frame_at = t
        if self.expect is None or in_range(counter, *self.expect):
            s.expected_frames += 1
            if s.first_expected_at is None:
                s.first_expected_at = t
                _emit(self.events, "first_frame", counter=counter, at=t)


def _stdin_closed(loop: asyncio.AbstractEventLoop, done: asyncio.Event) -> None:
    def wait_eof() -> None:
        with contextlib.suppress(OSError, ValueError):
            while sys.stdin.buffer.read(4096):
                pass
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=wait_eof, name="stdin-eof", daemon=True).start()


async def serve(
    host: str,
    port: int,
    app: str,
    log_path: str,
    events: bool,
    expect: tuple[int, int] | None,
    max_seconds: float | None,
    stop_on_stdin_eof: bool,
) -> ReceiverStats:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    if stop_on_stdin_eof:
        _stdin_closed(loop, done)
    stats = ReceiverStats()
    with open(log_path, "w") as log:
        receiver = Receiver(log, events, expect, stats)
        listener = RtmpListener(
            host,
            port,
            app,
            Registry(),
            receiver.check_publish,
            receiver.on_start,
            receiver.on_media,
            receiver.on_end,
            metric_prefix="bench_rtmp_receiver",
        )
        try:
            await listener.start()
        except OSError as exc:
            stats.error = f"cannot listen on {host}:{port}: {exc}"
            return stats
        stats.port = listener.port
        _emit(events, "listening", port=listener.port, pid=os.getpid())
        try:
            if max_seconds is None:
                await done.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), max_seconds)
        finally:
            await listener.stop()
    return stats


def _expect(text: str) -> tuple[int, int]:
    start, _, count = text.partition(":")
    try:
        return int(start) % COUNTER_MODULO, int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:COUNT, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        prog="python -m bench.rtmp_receiver", description=doc.split("\n")[0]
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="0: any free port (see --json)")
    p.add_argument("--app", default="live", help="RTMP application name")
    p.add_argument("--log", required=True, help="write 'counter monotonic_s' per decoded frame")
    p.add_argument("--expect", type=_expect, default=None, metavar="START:COUNT")
    p.add_argument("--json", action="store_true", help="JSON lines for the bench")
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument(
        "--stdin", action="store_true", help="stop when standard input reaches end of file"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stats = asyncio.run(
        serve(
            args.host,
            args.port,
            args.app,
            args.log,
            args.json,
            args.expect,
            args.max_seconds,
            args.stdin,
        )
    )
    if args.json:
        _emit(True, "result", **asdict(stats))
    else:
        for key, value in asdict(stats).items():
            print(f"{key:20} {value}")
    return 0 if stats.frames > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
