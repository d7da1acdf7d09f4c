"""The bench's measuring WHEP viewer: it logs a barcode strip of every decoded picture:
``python -m bench.glass_viewer --url URL --log FILE [--strip counter|probe|both]``.

Plays the node's stream with ``edge_node.clients.whep.WhepViewer`` and writes one
``value monotonic_s`` line per decoded picture, the time taken when aiortc hands the
decoded picture over (before any strip is read). ``--strip`` says which of the
contract's strips:

- ``counter`` (default): the frame counter at the bottom-left, for video
  glass-to-glass timing against the publisher's log (``glass``, ``show-*``);
- ``probe``: a probe event's ``seq`` at the top-left, for event -> pixels timing
  against the prober's log (``interaction``, ``ramp``);
- ``both``: one decode, both strips: the counters to ``--log``, the probe values to
  ``--probe-log`` (``show-*``: video and interaction latency from the same viewer).

Runs in its own process so that decoding shares neither a GIL nor CPU accounting with
the bench, the other clients or the node.

aiortc's video jitter buffer hands a frame to the decoder only when the first packet
of the *next* frame arrives (it completes frames on a timestamp change), which adds
one frame interval (33 ms at 30 fps) that no browser adds: browsers complete a frame
at the RTP marker bit of its last packet. This viewer therefore installs the node's
own (``edge_node.media.jitter``), which completes a frame at its marker bit (falling
back to the timestamp rule for a frame whose marker was lost), so that it times the
node, not aiortc; ``--stock-jitter-buffer`` keeps aiortc's.

A wait of ``STALL_S`` without a picture after the first one is counted
(``stalls``) and waited out, unless the peer connection failed.

With ``--json``: ``{"event": "connected", ...}``, ``{"event": "playing", ...}`` at the
first decoded picture, ``{"event": "first_frame", ...}`` at the first picture whose
counter is in ``--expect START:COUNT`` (or the first picture at all without it, or
with ``--strip probe``), then ``{"event": "result", ...}`` after the session was
DELETEd. It stops at end of standard input (``--stdin``), on SIGTERM/SIGINT, or after
``--max-seconds``. Exit status 0 when pictures arrived, 1 otherwise.
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
from typing import Any, TextIO

from edge_node import barcode

COUNTER_MODULO = 1 << 16
STRIPS = ("counter", "probe", "both")
# After the first picture: how long a wait counts as a stall. The viewer then keeps
# waiting (a busy box can hold the node's frames back for seconds, and a ramp's later
# steps still need the viewer) unless the connection itself failed.
STALL_S = 5.0


@dataclass
class GlassViewerResult:
    url: str
    strip: str = "counter"
    location: str | None = None
    connect_ms: float | None = None
    frames: int = 0
    expected_frames: int = 0  # pictures whose counter is in --expect (all without it)
    width: int | None = None
    height: int | None = None
    first_expected_at: float | None = None
    jitter_buffer: str = "marker"
    stalls: int = 0  # waits of STALL_S without a picture, after the first one
    delete_status: int | None = None
    error: str | None = None


class StripLogger:
    """Reads the strips ``strip`` names from each picture and writes the log lines;
    keeps the counts the result reports (no I/O beyond the two files it is given)."""

    def __init__(
        self,
        strip: str,
        log: TextIO,
        probe_log: TextIO | None,
        result: GlassViewerResult,
        expect: tuple[int, int] | None = None,
    ) -> None:
        if strip not in STRIPS:
            raise ValueError(f"strip: {strip!r} is not one of {', '.join(STRIPS)}")
        if strip == "both" and probe_log is None:
            raise ValueError("strip: 'both' needs a probe log (--probe-log)")
        self.strip = strip
        self.log = log
        self.probe_log = probe_log
        self.result = result
        self.expect = expect

    def picture(self, y_plane: Any, height: int, width: int, t: float) -> dict[str, Any]:
        """Log one decoded picture's strips (``y_plane``: its luma rows); the events it
        makes the viewer emit (``playing``, ``first_frame``), by name."""
        emitted: dict[str, Any] = {}
        counter: int | None = None
        values: dict[str, int] = {}
        if self.strip in ("counter", "both"):
            counter = barcode.read(y_plane, *barcode.bottom_left(height))
            self.log.write(f"{counter} {t:.6f}\n")
            values["counter"] = counter
        if self.strip in ("probe", "both"):
            seq = barcode.read(y_plane, *barcode.TOP_LEFT)
            out = self.log if self.strip == "probe" else self.probe_log
            assert out is not None
            out.write(f"{seq} {t:.6f}\n")
            values["seq"] = seq
        r = self.result
        if r.frames == 0:
            r.width, r.height = width, height
            emitted["playing"] = {**values, "at": t, "width": width}
        r.frames += 1
        if counter is None or self.expect is None or in_range(counter, *self.expect):
            r.expected_frames += 1
            if r.first_expected_at is None:
                r.first_expected_at = t
                emitted["first_frame"] = {**values, "at": t}
        return emitted


def in_range(counter: int, start: int, count: int) -> bool:
    """``counter`` is one of ``count`` values from ``start`` (modulo 2**16)."""
    return (counter - start) % COUNTER_MODULO < count


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
    strip: str = "counter",
    probe_log_path: str | None = None,
) -> GlassViewerResult:
    import aiohttp

    from bench.rtmp_receiver import luma
    from edge_node.clients.whep import WhepViewer
    from edge_node.media.egress_whep import restrict_ice_host_addresses

    restrict_ice_host_addresses(["127.0.0.1"])
    if marker_jitter_buffer:
        from edge_node.media.jitter import install_marker_jitter_buffer

        install_marker_jitter_buffer()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    if stop_on_stdin_eof:
        _watch_stdin(loop, done)
    base_url = url.rstrip("/")
    result = GlassViewerResult(
        url=base_url, strip=strip, jitter_buffer="marker" if marker_jitter_buffer else "stock"
    )
    viewer = WhepViewer(base_url)
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    t0 = time.monotonic()
    with contextlib.ExitStack() as files:
        # Line-buffered: a bench that keeps this viewer for several steps (ramp) joins
        # the log while it is still being written.
        log = files.enter_context(open(log_path, "w", buffering=1))
        probe_log = (
            files.enter_context(open(probe_log_path, "w", buffering=1)) if probe_log_path else None
        )
        strips = StripLogger(strip, log, probe_log, result, expect)
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
                try:
                    frame = frame_task.result()
                except TimeoutError:
                    if result.frames == 0 or viewer.pc.connectionState in ("failed", "closed"):
                        raise
                    result.stalls += 1
                    continue
                t = time.monotonic()
                timeout = STALL_S
                emitted = strips.picture(luma(frame), frame.height, frame.width, t)
                for event, data in emitted.items():
                    _emit(events, event, **data)
        except TimeoutError:
            result.error = "no picture within the timeout"
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
    p.add_argument("--log", required=True, help="write 'value monotonic_s' per decoded picture")
    p.add_argument(
        "--strip",
        choices=STRIPS,
        default="counter",
        help="counter: bottom-left frame counter; probe: top-left probe seq; both: counters "
        "to --log and probe values to --probe-log",
    )
    p.add_argument("--probe-log", default=None, help="the probe log of --strip both")
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
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.strip == "both") != (args.probe_log is not None):
        parser.error("--probe-log goes with --strip both, and only with it")
    result = asyncio.run(
        watch(
            args.url,
            args.log,
            args.json,
            args.expect,
            args.max_seconds,
            args.stdin,
            marker_jitter_buffer=not args.stock_jitter_buffer,
            strip=args.strip,
            probe_log_path=args.probe_log,
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
