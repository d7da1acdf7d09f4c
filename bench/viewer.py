"""A WHEP viewer process for the bench: ``python -m bench.viewer --url URL --seconds N``.

Plays the node's stream with ``edge_node.clients.whep.WhepViewer``, reads the test
pattern's frame counter (bottom-left barcode) from every decoded frame, and reports
frames received, frames per second delivered, missed counter values, duplicates and
the time to the first frame. Runs in its own process so that decoding does not share
a GIL (or a core's accounting) with the bench or the node.

With ``--json`` it prints one JSON object per line as things happen, for the bench:
``{"event": "connected", ...}``, ``{"event": "first_frame", ...}``,
``{"event": "window_end"}`` (the N seconds are over; the session is still open), then
``{"event": "result", ...}`` after the session was DELETEd. Without it, one readable
summary at the end. With ``--hold`` the viewer keeps playing (without counting) after
its window until its standard input closes, so that the bench can keep every viewer
on while it measures the node. Exit status 0 when frames arrived, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

COUNTER_MODULO = 1 << 16
# A counter step larger than this (either way) is a discontinuity (a worker restart
# or a misread barcode), not frames missed: 10 s of video at 30 fps.
MAX_STEP = 300


@dataclass(slots=True)
class CounterTracker:
    """Accounting of the frame counters seen, in arrival order (sans-I/O)."""

    frames: int = 0
    missed: int = 0  # counter values skipped between consecutive frames
    duplicates: int = 0  # the same counter as the frame before
    reordered: int = 0  # a counter behind the newest seen (late or misread)
    discontinuities: int = 0  # jumps larger than MAX_STEP; tracking restarts there
    first: int | None = None
    last: int | None = None

    def add(self, counter: int) -> None:
        self.frames += 1
        if self.last is None:
            self.first = self.last = counter
            return
        step = (counter - self.last) % COUNTER_MODULO
        if step == 0:
            self.duplicates += 1
        elif step <= MAX_STEP:
            self.missed += step - 1
            self.last = counter
        elif COUNTER_MODULO - step <= MAX_STEP:
            self.reordered += 1
        else:
            self.discontinuities += 1
            self.last = counter


@dataclass(slots=True)
class ViewerResult:
    url: str
    seconds: float
    location: str | None = None
    connect_ms: float | None = None  # WHEP POST + answer applied
    time_to_first_frame_ms: float | None = None  # from the POST to the first decoded frame
    frames: int = 0  # frames decoded from the first one to the end of the window
    frames_per_second: float = 0.0  # frames after the first, per second of the window
    missed: int = 0
    duplicates: int = 0
    reordered: int = 0
    discontinuities: int = 0
    max_frame_interval_ms: float | None = None  # longest wait between two frames
    width: int | None = None
    height: int | None = None
    delete_status: int | None = None
    error: str | None = None
    counters: list[int] = field(default_factory=list)


def _emit(enabled: bool, event: str, **data: Any) -> None:
    if enabled:
        print(json.dumps({"event": event, **data}), flush=True)


async def _delete(base_url: str, location: str) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.delete(f"{base_url}{location}") as resp:
        return resp.status


def _stdin_closed() -> asyncio.Event:
    """An event set when standard input reaches end of file (read in a daemon thread, so
    that a parent that never closes it cannot keep this process from exiting)."""
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()

    def wait_eof() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        loop.call_soon_threadsafe(closed.set)

    threading.Thread(target=wait_eof, name="stdin-eof", daemon=True).start()
    return closed


async def _play_until(viewer: Any, release: asyncio.Event) -> None:
    """Keep taking frames (so that nothing piles up) until ``release`` is set."""
    while not release.is_set():
        frame_task = asyncio.ensure_future(viewer.frame(timeout=5.0))
        release_task = asyncio.ensure_future(release.wait())
        done, _ = await asyncio.wait(
            {frame_task, release_task}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in (frame_task, release_task):
            if task not in done:
                task.cancel()
        if frame_task in done and frame_task.exception() is not None:
            return  # the stream stopped: nothing left to hold


async def watch(
    url: str,
    seconds: float,
    host_addresses: Sequence[str],
    first_frame_timeout_s: float,
    events: bool,
    keep_counters: bool = False,
    hold: asyncio.Event | None = None,
) -> ViewerResult:
    # Imported here so that ``--help`` and the pure parts stay light.
    import aiohttp

    from edge_node.clients.whep import WhepViewer, frame_counter
    from edge_node.media.egress_whep import restrict_ice_host_addresses

    restrict_ice_host_addresses(list(host_addresses))
    base_url = url.rstrip("/")
    result = ViewerResult(url=base_url, seconds=seconds)
    tracker = CounterTracker()
    viewer = WhepViewer(base_url)
    t0 = time.monotonic()
    try:
        await viewer.connect()
        result.location = viewer.location
        result.connect_ms = (time.monotonic() - t0) * 1000
        _emit(events, "connected", location=viewer.location, connect_ms=result.connect_ms)
        frame = await viewer.frame(timeout=first_frame_timeout_s)
        t_first = time.monotonic()
        result.time_to_first_frame_ms = (t_first - t0) * 1000
        result.width, result.height = frame.width, frame.height
        _emit(events, "first_frame", time_to_first_frame_ms=result.time_to_first_frame_ms)
        deadline = t_first + seconds
        last_at, max_gap = t_first, 0.0
        while True:
            counter = frame_counter(frame)
            tracker.add(counter)
            if keep_counters:
                result.counters.append(counter)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                frame = await viewer.frame(timeout=remaining)
            except TimeoutError:
                max_gap = max(max_gap, deadline - last_at)
                break
            now = time.monotonic()
            if now >= deadline:
                max_gap = max(max_gap, now - last_at)
                break
            max_gap = max(max_gap, now - last_at)
            last_at = now
        result.max_frame_interval_ms = max_gap * 1000
    except TimeoutError:
        result.error = f"no frame within {first_frame_timeout_s:.0f} s"
    except (RuntimeError, OSError, ValueError, KeyError, aiohttp.ClientError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        _emit(events, "window_end")
        if hold is not None and result.error is None:
            await _play_until(viewer, hold)
        result.frames = tracker.frames
        # Arrivals after the first frame per second of the window: 30 fps delivers 150
        # frames after the first in 5 s.
        arrivals = max(tracker.frames - 1, 0)
        result.frames_per_second = arrivals / seconds if seconds > 0 else math.nan
        result.missed = tracker.missed
        result.duplicates = tracker.duplicates
        result.reordered = tracker.reordered
        result.discontinuities = tracker.discontinuities
        if viewer.location is not None:
            # DELETE here rather than in close() so that the answer is reported.
            location, viewer.location = viewer.location, None
            try:
                result.delete_status = await _delete(base_url, location)
            except (OSError, aiohttp.ClientError) as exc:
                result.error = result.error or f"DELETE failed: {exc}"
        await viewer.close()
    return result


def _default_host_addresses(url: str) -> list[str]:
    host = urlsplit(url).hostname or ""
    return ["127.0.0.1"] if host in ("127.0.0.1", "localhost") else []


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.viewer", description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="the node's base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to watch after frame 1")
    p.add_argument("--json", action="store_true", help="JSON lines for the bench")
    p.add_argument(
        "--host-address",
        action="append",
        default=None,
        help="ICE host address to offer (repeatable; default 127.0.0.1 for a loopback URL)",
    )
    p.add_argument("--first-frame-timeout", type=float, default=15.0, metavar="SECONDS")
    p.add_argument("--counters", action="store_true", help="include every counter read")
    p.add_argument(
        "--hold",
        action="store_true",
        help="after the window, keep playing until standard input closes",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    hosts = (
        args.host_address if args.host_address is not None else _default_host_addresses(args.url)
    )

    async def run() -> ViewerResult:
        hold = _stdin_closed() if args.hold else None
        return await watch(
            args.url,
            args.seconds,
            hosts,
            args.first_frame_timeout,
            args.json,
            args.counters,
            hold,
        )

    result = asyncio.run(run())
    data = asdict(result)
    if not args.counters:
        del data["counters"]
    if args.json:
        _emit(True, "result", **data)
    else:
        for key, value in data.items():
            print(f"{key:24} {value}")
    return 0 if result.frames > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
