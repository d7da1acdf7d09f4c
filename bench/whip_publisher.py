"""The bench's WHIP publisher, in its own process:
``python -m bench.whip_publisher --url NODE_BASE_URL --stream-key KEY --seconds S
--start N --size WxH --fps F --frames-log FILE [--json]``.

Publishes to the node's ``POST /whip`` (``Authorization: Bearer <stream key>``, the
contract's WHIP) with ``edge_node.clients.whip.WhipPublisher``: a synthetic picture at
``--fps`` with the contract's frame-counter barcode at the bottom-left (counters from
``--start``) and, like ``edge_node.clients.rtmp_publish``'s picture, a box moving
across the middle, H.264 encoded by aiortc (libx264, its defaults: preset medium,
tune zerolatency, baseline profile).

The frames log has exactly the RTMP publisher's format (``rtmp_publish --log``): one
``counter monotonic_s`` line per frame, the counter modulo 2**16, the seconds of
CLOCK_MONOTONIC with six decimals, so ``bench.glass.join`` reads both alike.

When a frame is "sent": the time is taken when the track's ``recv()`` returns the
frame to aiortc's sender, that is just before aiortc encodes it (in a worker thread)
and packetizes it; the RTMP publisher likewise takes its time just before the frame
goes to its encoder. A frame's glass-to-glass latency therefore includes the
publisher's encode, as it does on the RTMP paths.

It stops by itself: after the ``int(S * F)`` logged frames it sends ``--tail-seconds``
more (counters continuing, not logged: the node's WHIP ingest, aiortc's jitter
buffer, completes a frame only when the next frame's first packet arrives, so
without a tail the last logged frame would never reach the node), then ends the
session with ``DELETE <Location>``. SIGTERM or SIGINT ends it early the same way.

Exit status: 0 when every frame was sent; 1 when the node refused the offer (a wrong
stream key, no WHIP endpoint, another publisher live past ``--busy-wait``), could not
be reached, the session never carried media, or it was stopped early; 2 for a bad
command line. With ``--json``: ``{"event": "connected", ...}`` once the node
answered 201, ``{"event": "first_frame", ...}`` at the first frame sent, and
``{"event": "result", ...}`` at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp
import av

from edge_node.clients.whip import CounterTrack, WhipPublisher

COUNTER_MODULO = 1 << 16
TAIL_S = 0.5
CONNECTED_TIMEOUT_S = 10.0  # from the node's 201 to the first frame (ICE + DTLS)
BUSY_RETRY_S = 0.2
BOX_PX = 64  # the moving box, as rtmp_publish draws it
BOX_STEP_PX = 8
Y_BACKGROUND, Y_BOX = 90, 200

# What the node's refusal means, by status (the body's reason is not kept by
# ``WhipPublisher.connect``).
REFUSALS = {
    400: "the node refused the offer (bad SDP, no video, or no H.264)",
    401: "the node refused the stream key (wrong or missing key, or publishing is off)",
    404: "the node has no WHIP endpoint at this URL",
    405: "the node has no WHIP endpoint at this URL (POST not allowed)",
    409: "another publisher is live on the node",
}


def frames_log_line(counter: int, t: float) -> str:
    """One frames-log line, exactly as ``edge_node.clients.rtmp_publish --log`` writes it."""
    return f"{counter % COUNTER_MODULO} {t:.6f}\n"


def refusal_message(status: int, url: str) -> str:
    what = REFUSALS.get(status, "the node did not accept the WHIP offer")
    return f"POST {url}: HTTP {status}: {what}"


def is_loopback(url: str) -> bool:
    """The URL's host is this machine's loopback (then only loopback ICE candidates are
    offered, as the node the bench starts offers only those)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT``, both even (4:2:0) and at least the barcode's 256x16."""
    w, sep, h = text.lower().partition("x")
    try:
        width, height = int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if not sep or width < 256 or height < 16 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError(
            f"{text!r}: width and height must be even, at least 256x16 (the barcode)"
        )
    return width, height


def _positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0: {text!r}")
        return value

    return parse


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


@dataclass(frozen=True)
class Options:
    url: str
    stream_key: str
    seconds: float
    start: int
    width: int
    height: int
    fps: int
    frames_log: str
    json: bool = False
    tail_s: float = TAIL_S
    busy_wait_s: float = 0.0

    @property
    def frames(self) -> int:
        """The logged frames."""
        return int(self.seconds * self.fps)

    @property
    def tail_frames(self) -> int:
        """Frames sent after the logged ones (at least one: see the module doc)."""
        return max(1, round(self.tail_s * self.fps))


def parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        prog="python -m bench.whip_publisher", description=doc.split("\n")[0]
    )
    p.add_argument("--url", required=True, help="the node's base URL (it serves POST /whip)")
    p.add_argument("--stream-key", required=True, help="sent as 'Authorization: Bearer KEY'")
    p.add_argument("--seconds", type=_positive(float), required=True)
    p.add_argument("--start", type=int, default=50000, help="first frame counter value")
    p.add_argument("--size", type=parse_size, default=(1280, 720), metavar="WxH")
    p.add_argument("--fps", type=_positive(int), default=30)
    p.add_argument("--frames-log", required=True, help="write 'counter monotonic_s' per frame")
    p.add_argument("--json", action="store_true", help="JSON lines for the bench")
    p.add_argument(
        "--tail-seconds",
        type=_non_negative,
        default=TAIL_S,
        help="frames sent after the logged ones, not logged (see above)",
    )
    p.add_argument(
        "--busy-wait",
        type=_non_negative,
        default=0.0,
        metavar="SECONDS",
        help="retry this long while the node answers 409 (another publisher is live)",
    )
    return p


def parse_args(argv: Sequence[str] | None = None) -> Options:
    a = parser().parse_args(argv)
    width, height = a.size
    return Options(
        url=a.url.rstrip("/"),
        stream_key=a.stream_key,
        seconds=a.seconds,
        start=a.start,
        width=width,
        height=height,
        fps=a.fps,
        frames_log=a.frames_log,
        json=a.json,
        tail_s=a.tail_seconds,
        busy_wait_s=a.busy_wait,
    )


class FramesLog:
    """Writes the logged frames' lines; after ``frames`` of them it writes no more."""

    def __init__(self, out: TextIO, frames: int) -> None:
        self.out = out
        self.frames = frames
        self.written = 0
        self.first_at: float | None = None

    def frame(self, counter: int, t: float) -> bool:
        """Log one frame sent at ``t``; False for a frame past the logged ones."""
        if self.written >= self.frames:
            return False
        self.out.write(frames_log_line(counter, t))
        self.written += 1
        if self.first_at is None:
            self.first_at = t
        return True


class LoggedCounterTrack(CounterTrack):
    """``CounterTrack`` that draws the RTMP publisher's moving box, calls ``on_frame``
    with each frame's counter and the time ``recv()`` returns it, and after ``total``
    frames sets ``finished`` and sends nothing more. aiortc's sender encodes and sends
    one frame before it asks for the next, so ``finished`` means every frame left."""

    def __init__(
        self,
        start: int,
        width: int,
        height: int,
        fps: int,
        total: int,
        on_frame: Callable[[int, float], Any],
    ) -> None:
        super().__init__(start, width, height, fps)
        self.total = total
        self.on_frame = on_frame
        self.sent = 0
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self._buf[:height] = Y_BACKGROUND

    def _draw_box(self, index: int) -> None:
        # CounterTrack has no hook for the picture: its buffer is drawn on directly.
        top, bottom = self.height // 2 - BOX_PX // 2, self.height // 2 + BOX_PX // 2
        x = (index * BOX_STEP_PX) % (self.width - BOX_PX)
        self._buf[top:bottom, :] = Y_BACKGROUND
        self._buf[top:bottom, x : x + BOX_PX] = Y_BOX

    async def recv(self) -> av.VideoFrame:
        if self.sent >= self.total:
            self.finished.set()
            # Nothing more to send: wait until the sender is stopped (it cancels this).
            await asyncio.get_running_loop().create_future()
        self._draw_box(self.sent)
        counter = self.counter
        frame = await super().recv()
        t = time.monotonic()
        self.sent += 1
        self.on_frame(counter % COUNTER_MODULO, t)
        self.started.set()
        return frame


@dataclass
class PublishResult:
    url: str
    status: int | None = None
    location: str | None = None
    connect_ms: float | None = None
    frames: int = 0  # to log
    frames_sent: int = 0  # logged
    tail_frames_sent: int = 0
    busy_retries: int = 0
    delete_status: int | None = None
    delete_error: str | None = None  # reported, not an error: the frames had gone out
    error: str | None = None


def _emit(enabled: bool, event: str, **data: Any) -> None:
    if enabled:
        print(json.dumps({"event": event, **data}), flush=True)


async def _until(flag: asyncio.Event, stop: asyncio.Event, timeout_s: float) -> bool:
    """True once ``flag`` is set; False on ``stop`` or timeout."""
    waiters = [asyncio.ensure_future(flag.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    return flag.is_set()


async def _connect(
    opts: Options, log: FramesLog, result: PublishResult, stop: asyncio.Event
) -> tuple[WhipPublisher, LoggedCounterTrack] | None:
    """A live session (201), or None with ``result.error`` set; retries a 409 for
    ``busy_wait_s``."""
    whip_url = f"{opts.url}/whip"
    deadline = time.monotonic() + opts.busy_wait_s
    while True:
        pub = WhipPublisher(opts.url, opts.stream_key, start=opts.start)
        track = LoggedCounterTrack(
            opts.start,
            opts.width,
            opts.height,
            opts.fps,
            opts.frames + opts.tail_frames,
            log.frame,
        )
        pub.track = track  # connect() sends whatever track is there
        t0 = time.monotonic()
        try:
            status = await pub.connect()
        except (OSError, aiohttp.ClientError, KeyError, ValueError) as exc:
            await pub.close()
            result.error = f"POST {whip_url}: {type(exc).__name__}: {exc}"
            return None
        result.status = status
        if status == 201:
            result.location = pub.location
            result.connect_ms = (time.monotonic() - t0) * 1000
            return pub, track
        await pub.close()
        if status == 409 and time.monotonic() < deadline and not stop.is_set():
            result.busy_retries += 1
            await asyncio.sleep(BUSY_RETRY_S)
            continue
        result.error = refusal_message(status, whip_url)
        return None


async def publish(opts: Options) -> PublishResult:
    """Publish ``opts.frames`` logged frames and the tail, then end the session."""
    if is_loopback(opts.url):
        from edge_node.media.egress_whep import restrict_ice_host_addresses

        restrict_ice_host_addresses(["127.0.0.1"])
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    result = PublishResult(url=opts.url, frames=opts.frames)
    # Line-buffered: a publisher killed mid-run still leaves the frames it sent.
    with open(opts.frames_log, "w", buffering=1) as out:
        log = FramesLog(out, opts.frames)
        session = await _connect(opts, log, result, stop)
        if session is None:
            return result
        pub, track = session
        try:
            _emit(
                opts.json,
                "connected",
                status=result.status,
                location=result.location,
                connect_ms=result.connect_ms,
            )
            if not await _until(track.started, stop, CONNECTED_TIMEOUT_S):
                if not stop.is_set():
                    result.error = (
                        f"no frame went out within {CONNECTED_TIMEOUT_S:g} s of the node's "
                        f"answer (peer connection {pub.pc.connectionState})"
                    )
            else:
                _emit(opts.json, "first_frame", at=log.first_at)
                budget = (opts.frames + opts.tail_frames) / opts.fps + CONNECTED_TIMEOUT_S
                if not await _until(track.finished, stop, budget) and not stop.is_set():
                    result.error = (
                        f"the frames did not go out within {budget:g} s "
                        f"(peer connection {pub.pc.connectionState})"
                    )
            if stop.is_set() and not track.finished.is_set():
                result.error = result.error or "stopped by a signal"
        finally:
            result.frames_sent = log.written
            result.tail_frames_sent = track.sent - log.written
            await _close(pub, result)
    if result.error is None and result.frames_sent < result.frames:
        result.error = f"{result.frames_sent} of {result.frames} frames sent"
    return result


async def _close(pub: WhipPublisher, result: PublishResult) -> None:
    """End the session (DELETE, then the peer connection), even when the node is gone."""
    try:
        await pub.close()
        result.delete_status = pub.delete_status
    except (OSError, aiohttp.ClientError) as exc:
        result.delete_error = f"DELETE {pub.base_url}{pub.location}: {exc}"
        await pub.pc.close()


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    result = asyncio.run(publish(opts))
    if opts.json:
        _emit(True, "result", **asdict(result))
    if result.error is not None:
        print(f"whip_publisher: {result.error}", file=sys.stderr)
        return 1
    if not opts.json:
        print(
            f"whip_publisher: {result.frames_sent} frames (+{result.tail_frames_sent} tail) "
            f"to {opts.url}/whip, connected in {result.connect_ms or 0:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
