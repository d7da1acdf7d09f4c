"""A WHEP viewer that logs every frame's counter and arrival time, for glass-to-glass timing:
``python -m bench.glass_viewer --url http://127.0.0.1:8080 --log FILE``.

Plays the node's stream with ``edge_node.clients.whep.WhepViewer`` and writes
``counter monotonic_s`` for each decoded picture (bottom-left barcode; the time is
taken when aiortc hands the decoded frame over). Runs in its own process, like
``bench.viewer``, so that decoding shares neither a GIL nor CPU accounting with the
bench or the node.

aiortc's video jitter buffer hands a frame to the decoder only when the first packet
of the *next* frame arrives (it completes frames on a timestamp change), which adds
one frame interval (33 ms at 30 fps) that no browser adds: browsers complete a frame
at the RTP marker bit of its last packet. This viewer therefore installs a jitter
buffer that completes a frame at its marker bit (falling back to the timestamp rule
for a frame whose marker was lost), so that it times the node, not aiortc;
``--stock-jitter-buffer`` keeps aiortc's.

With ``--json``: ``{"event": "connected", ...}``, ``{"event": "playing", ...}`` at the
first decoded frame, ``{"event": "first_frame", ...}`` at
the first frame whose counter is in ``--expect START:COUNT`` (or the first frame at
all), then ``{"event": "result", ...}`` after the session was DELETEd. It stops at
end of standard input (``--stdin``), on SIGTERM/SIGINT, or after ``--max-seconds``.
Exit status 0 when frames arrived, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

COUNTER_MODULO = 1 << 16


def marker_jitter_buffer_class() -> type[Any]:
    """aiortc's ``JitterBuffer`` with video frames completed at their marker bit."""
    from aiortc.jitterbuffer import JitterBuffer, JitterFrame

    class MarkerJitterBuffer(JitterBuffer):
        def _remove_frame(self, sequence_number: int) -> Any:
            if not self._is_video:
                return super()._remove_frame(sequence_number)
            packets: list[Any] = []
            timestamp = None
            origin = self._origin
            if origin is None:
                return None
            for count in range(self.capacity):
                packet = self._packets[(origin + count) % self._capacity]
                if packet is None:
                    return None  # a gap: wait for it (NACK) or for the buffer to move on
                if timestamp is None:
                    timestamp = packet.timestamp
                elif packet.timestamp != timestamp:
                    # The frame before ended without a marker (lost): aiortc's rule.
                    self.remove(count)
                    return JitterFrame(b"".join(p._data for p in packets), timestamp)
                packets.append(packet)
                if packet.marker:
                    self.remove(count + 1)
                    return JitterFrame(b"".join(p._data for p in packets), timestamp)
            return None

    return MarkerJitterBuffer


def install_marker_jitter_buffer() -> None:
    """Make this process's aiortc RTP receivers complete a video frame at its marker bit
    (the receiver looks the class up in its module when it is created)."""
    import aiortc.rtcrtpreceiver as receiver_mod

    setattr(receiver_mod, "JitterBuffer", marker_jitter_buffer_class())  # noqa: B010


@dataclass
class GlassViewerResult:
    url: str
    location: str | None = None
    connect_ms: float | None = None
    frames: int = 0
    expected_frames: int = 0
    width: int | None = None
    height: int | None = None
    first_expected_at: float | None = None
    delete_status: int | None = None
    error: str | None = None


def _emit(enabled: bool, event: str, **data: Any) -> None:
    if enabled:
        print(json.dumps({"event": event, **data}), flush=True)


def _watch_stdin(loop: asyncio.AbstractEventLoop, done: asyncio.Event) -> None:
    def wait_eof() -> None:
        with contextlib.suppress(OSError, ValueError):
            while sys.stdin.buffer.read(4096):
                pass
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=wait_eof, name="stdin-eof", daemon=True).start()


async def watch(
    url: str,
    log_path: str,
    events: bool,
    expect: tuple[int, int] | None,
    max_seconds: float | None,
    stop_on_stdin_eof: bool,
    first_frame_timeout_s: float = 15.0,
    marker_jitter_buffer: bool = True,
) -> GlassViewerResult:
    import aiohttp

    from bench.rtmp_receiver import frame_counter, in_range
    from edge_node.clients.whep import WhepViewer
    from edge_node.media.egress_whep import restrict_ice_host_addresses

    restrict_ice_host_addresses(["127.0.0.1"])
    if marker_jitter_buffer:
        install_marker_jitter_buffer()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    if stop_on_stdin_eof:
        _watch_stdin(loop, done)
    base_url = url.rstrip("/")
    result = GlassViewerResult(url=base_url)
    viewer = WhepViewer(base_url)
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        try:
            await viewer.connect()
            result.location = viewer.location
            result.connect_ms = (time.monotonic() - t0) * 1000
            _emit(events, "connected", location=viewer.location, connect_ms=result.connect_ms)
            timeout = first_frame_timeout_s
            while not done.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                frame_task = asyncio.ensure_future(viewer.frame(timeout=timeout))
                done_task = asyncio.ensure_future(done.wait())
                finished, _ = await asyncio.wait(
                    {frame_task, done_task}, return_when=asyncio.FIRST_COMPLETED
                )
                for task in (frame_task, done_task):
                    if task not in finished:
                        task.cancel()
                if frame_task not in finished:
                    break
                frame = frame_task.result()  # raises TimeoutError when the stream stopped
                t = time.monotonic()
                timeout = 5.0
                counter = frame_counter(frame)
                log.write(f"{counter} {t:.6f}\n")
                if result.frames == 0:
                    _emit(events, "playing", counter=counter, at=t)
                result.frames += 1
                result.width, result.height = frame.width, frame.height
                if expect is None or in_range(counter, *expect):
                    result.expected_frames += 1
                    if result.first_expected_at is None:
                        result.first_expected_at = t
                        _emit(events, "first_frame", counter=counter, at=t)
        except TimeoutError:
            result.error = "no frame within the timeout"
        except (RuntimeError, OSError, ValueError, KeyError, aiohttp.ClientError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            if viewer.location is not None:
                location, viewer.location = viewer.location, None
                try:
                    async with (
                        aiohttp.ClientSession() as http,
                        http.delete(f"{base_url}{location}") as resp,
                    ):
                        result.delete_status = resp.status
                except (OSError, aiohttp.ClientError) as exc:
                    result.error = result.error or f"DELETE failed: {exc}"
            await viewer.close()
    return result


def _expect(text: str) -> tuple[int, int]:
    start, _, count = text.partition(":")
    try:
        return int(start) % COUNTER_MODULO, int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:COUNT, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(prog="python -m bench.glass_viewer", description=doc.split("\n")[0])
    p.add_argument("--url", required=True, help="the node's base URL")
    p.add_argument("--log", required=True, help="write 'counter monotonic_s' per decoded frame")
    p.add_argument("--expect", type=_expect, default=None, metavar="START:COUNT")
    p.add_argument("--json", action="store_true", help="JSON lines for the bench")
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument(
        "--stock-jitter-buffer",
        action="store_true",
        help="keep aiortc's jitter buffer (adds one frame interval; see above)",
    )
    p.add_argument(
        "--stdin", action="store_true", help="stop when standard input reaches end of file"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = asyncio.run(
        watch(
            args.url,
            args.log,
            args.json,
            args.expect,
            args.max_seconds,
            args.stdin,
            marker_jitter_buffer=not args.stock_jitter_buffer,
        )
    )
    if args.json:
        _emit(True, "result", **asdict(result))
    else:
        for key, value in asdict(result).items():
            print(f"{key:20} {value}")
    return 0 if result.frames > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
