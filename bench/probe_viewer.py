"""A WHEP viewer that logs the probe strip of every decoded picture:
``python -m bench.probe_viewer --url http://127.0.0.1:8080 --log FILE``.

Plays the node's stream with ``edge_node.clients.whep.WhepViewer`` and writes
``seq monotonic_s`` for each decoded picture, ``seq`` being the contract's top-left
probe strip (``probe_seq``) and the time taken when aiortc hands the decoded picture
over (before the strip is read). Runs in its own process so that decoding shares
neither a GIL nor CPU accounting with the bench, the prober or the node.

Like ``bench.glass_viewer`` it installs a jitter buffer that completes a video frame
at its RTP marker bit (what browsers do) instead of aiortc's stock rule (complete a
frame when the next one starts, +1 frame interval); ``--stock-jitter-buffer`` keeps
aiortc's.

With ``--json``: ``{"event": "connected"}``, ``{"event": "playing"}`` at the first
decoded picture, then ``{"event": "result", ...}`` after the session was DELETEd. It
stops at end of standard input (``--stdin``), on SIGTERM/SIGINT, or after
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
from typing import Any


@dataclass
class ProbeViewerResult:
    url: str
    location: str | None = None
    connect_ms: float | None = None
    frames: int = 0
    width: int | None = None
    height: int | None = None
    jitter_buffer: str = "marker"
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
    max_seconds: float | None,
    stop_on_stdin_eof: bool,
    marker_jitter_buffer: bool = True,
    first_frame_timeout_s: float = 15.0,
) -> ProbeViewerResult:
    import aiohttp

    from bench.glass_viewer import install_marker_jitter_buffer
    from edge_node.clients.whep import WhepViewer, probe_seq
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
    result = ProbeViewerResult(
        url=base_url, jitter_buffer="marker" if marker_jitter_buffer else "stock"
    )
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
                seq = probe_seq(frame)
                log.write(f"{seq} {t:.6f}\n")
                if result.frames == 0:
                    result.width, result.height = frame.width, frame.height
                    _emit(events, "playing", seq=seq, at=t, width=frame.width)
                result.frames += 1
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


def _parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(prog="python -m bench.probe_viewer", description=doc.split("\n")[0])
    p.add_argument("--url", required=True, help="the node's base URL")
    p.add_argument("--log", required=True, help="write 'seq monotonic_s' per decoded picture")
    p.add_argument("--json", action="store_true", help="JSON lines for the bench")
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument(
        "--stock-jitter-buffer",
        action="store_true",
        help="keep aiortc's jitter buffer (adds one frame interval)",
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
