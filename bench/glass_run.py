"""Glass-to-glass runs: one publisher through a path to receivers, and the peer.

``publish_through`` publishes the counter-stamped picture over RTMP for N seconds
while the receivers log what they decode, and calls back at the edges of the
steady-state window (from the first frame of this publisher seen by a receiver plus
``DISCARD_S``, to the publisher's exit), where the caller samples CPU and memory.
``run_publisher`` does the same for any publisher command that writes the same frames
log: ``whip_publisher_argv`` (``bench.whip_publisher``, over WHIP) is the other one.

``GlassPeer`` is the scenario's peer, run with the node stopped: first the *floor*
(publisher -> receiver, no middle box: x264 encode, loopback RTMP, decode), then the
ffmpeg CLI as the middle box (publisher -> ffmpeg: RTMP listen, decode, ``drawtext``,
x264 ultrafast/zerolatency, RTMP out -> receiver), as is and with a slice-threaded
decoder (``FFMPEG_VARIANTS``).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bench import glass
from bench.figures import Figure, Figures
from bench.glass_procs import (
    BusyMeter,
    JsonChild,
    ProcSampler,
    Publisher,
    SpawnedChild,
    publisher_argv,
    receiver_argv,
    wait_listening,
)
from bench.node import free_loopback_port
from bench.peer import ffmpeg_version
from bench.sampler import Sample, cpu_cores, rss_max_bytes
from bench.scenarios import Peer

MIB = 1024 * 1024
FIRST_FRAME_TIMEOUT_S = 20.0
LISTEN_TIMEOUT_S = 15.0

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)
DRAW_TEXT = "弹幕 test"


def pick_font(candidates: Sequence[str] = FONT_CANDIDATES) -> str | None:
    """The first font file that exists (CJK first), or None: drawtext's default font."""
    return next((f for f in candidates if Path(f).is_file()), None)


def drawtext_filter(font: str | None) -> str:
    """32 px text with a 2 px border at (400, 300): well clear of the bottom-left
    barcode (rows 704-719, columns 0-255 at 720p)."""
    parts = [f"text='{DRAW_TEXT}'", "x=400", "y=300", "fontsize=32", "fontcolor=white", "borderw=2"]
    if font is not None:
        parts.insert(0, f"fontfile={font}")
    return "drawtext=" + ":".join(parts)


# The ffmpeg variants run per peer run: figure prefix -> (input options, what it is).
# ``peer`` is the standing peer as FIELD_NOTES measured it. ``peer_slice`` is the same
# command with a slice-threaded decoder: by default ffmpeg's H.264 decoder uses frame
# threads, which hold frames back (about two at 2 cores, ~66 ms at 30 fps); the node's
# decoder is slice-threaded, so this is the like-for-like latency comparison.
FFMPEG_VARIANTS: dict[str, tuple[tuple[str, ...], str]] = {
    "peer": ((), "ffmpeg CLI as is"),
    "peer_slice": (("-thread_type", "slice"), "ffmpeg CLI, slice-threaded decoder"),
}


def ffmpeg_argv(
    in_port: int,
    out_port: int,
    font: str | None,
    input_options: Sequence[str] = (),
    video_filter: str | None = None,
) -> list[str]:
    """The middle box; ``video_filter`` replaces the one ``drawtext`` (the ``show-*``
    scenarios draw as many texts as the node has danmaku on screen)."""
    # -probesize 32 (the minimum) rather than 32768: the publisher's picture codes to
    # ~45 kbit/s, so 32 KiB of probe is ~4 s of stream, and ffmpeg would still be
    # probing when the measurement starts (it then drains that backlog, which times
    # its start-up, not its steady state). The stream's parameters come from the FLV
    # sequence header either way.
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
        "-listen", "1", "-probesize", "32", "-analyzeduration", "0", *input_options,
        "-i", f"rtmp://127.0.0.1:{in_port}/live/demo",
        "-vf", video_filter or drawtext_filter(font),
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
        "-g", "60", "-bf", "0",
        "-f", "flv", f"rtmp://127.0.0.1:{out_port}/live/out",
    ]  # fmt: skip


@dataclass
class PublishOutcome:
    exit_status: int | None = None  # None: killed after the timeout
    first_frame_at: float | None = None  # a receiver's first frame of this publisher
    window: tuple[float, float] | None = None  # steady-state window (monotonic s)
    error: str | None = None
    frames_logged: int = 0


async def _first_event(children: Sequence[JsonChild], event: str, pub: Publisher) -> float | None:
    """When the first of ``children`` reported ``event``; None when the publisher exited
    (or the timeout passed) before any did."""
    waits = [asyncio.ensure_future(c.wait_event(event, FIRST_FRAME_TIMEOUT_S)) for c in children]
    exited = asyncio.ensure_future(pub.proc.wait())
    pending: set[asyncio.Future[Any]] = {*waits, exited}
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for d in done:
                if d is exited:
                    continue
                msg = d.result()
                if msg is not None:
                    return float(msg.get("at") or time.monotonic())
            if exited in done:
                return None
    finally:
        for w in pending:
            w.cancel()
    return None


async def publish_through(
    url: str,
    seconds: float,
    frames_log: Path,
    stderr_log: Path,
    receivers: Sequence[JsonChild],
    at_start: Callable[[], Awaitable[Any]],
    at_end: Callable[[], Awaitable[Any]],
    size: str = glass.SIZE,
) -> PublishOutcome:
    """Publish over RTMP to ``url`` for ``seconds`` (``run_publisher``)."""
    argv = publisher_argv(url, seconds, glass.START, size, glass.FPS, frames_log)
    return await run_publisher(argv, seconds, frames_log, stderr_log, receivers, at_start, at_end)


def whip_publisher_argv(
    base_url: str,
    stream_key: str,
    seconds: float,
    start: int,
    size: str,
    fps: int,
    log: Path,
    busy_wait_s: float = 0.0,
) -> list[str]:
    """``bench.whip_publisher``: the same picture and frames log as ``publisher_argv``'s,
    over WHIP to the node at ``base_url``."""
    return [
        sys.executable, "-m", "bench.whip_publisher",
        "--url", base_url, "--stream-key", stream_key, "--seconds", f"{seconds:g}",
        "--start", str(start), "--size", size, "--fps", str(fps), "--frames-log", str(log),
        "--busy-wait", f"{busy_wait_s:g}", "--json",
    ]  # fmt: skip


async def run_publisher(
    argv: Sequence[str],
    seconds: float,
    frames_log: Path,
    stderr_log: Path,
    receivers: Sequence[JsonChild],
    at_start: Callable[[], Awaitable[Any]],
    at_end: Callable[[], Awaitable[Any]],
) -> PublishOutcome:
    """Run the publisher ``argv`` (which publishes for ``seconds`` and writes
    ``frames_log``); ``at_start``/``at_end`` at the steady-state window's edges."""
    out = PublishOutcome()
    pub = await Publisher.spawn(argv, stderr_log)
    try:
        out.first_frame_at = await _first_event(receivers, "first_frame", pub)
        if out.first_frame_at is None:
            out.error = "no receiver saw a frame of the publisher"
        else:
            await asyncio.sleep(max(0.0, out.first_frame_at + glass.DISCARD_S - time.monotonic()))
            t0 = time.monotonic()
            await at_start()
            out.exit_status = await pub.wait(seconds + 30.0)
            await at_end()
            out.window = (t0, time.monotonic())
        if out.exit_status is None and pub.proc.returncode is not None:
            out.exit_status = pub.proc.returncode
        if out.exit_status not in (0, None) and out.error is None:
            out.error = f"the publisher exited with {out.exit_status}; see {stderr_log}"
    finally:
        await pub.stop()
        if out.exit_status is None:
            out.exit_status = pub.proc.returncode
    out.frames_logged = len(glass.read_log(frames_log))
    return out


def expected(seconds: float) -> tuple[int, int]:
    """The publisher's counters: (first, how many)."""
    return glass.START, int(seconds * glass.FPS)


async def start_receiver(
    port: int, seconds: float, frames_log: Path, log: Path, name: str
) -> JsonChild:
    return await JsonChild.spawn(name, receiver_argv(port, frames_log, expected(seconds)), log)


def _mib(v: int | None) -> float | None:
    return v / MIB if v is not None else None


def _command(
    font: str | None, input_options: Sequence[str] = (), video_filter: str | None = None
) -> str:
    return (
        " ".join(ffmpeg_argv(0, 0, font, input_options, video_filter))
        .replace(":0/live/demo", ":IN/live/demo")
        .replace(":0/live/out", ":OUT/live/out")
    )


@dataclass
class GlassPeer(Peer):
    """Per run: the floor, then each ffmpeg variant as the middle box."""

    name: ClassVar[str] = "ffmpeg-cli RTMP in -> drawtext -> x264 -> RTMP out"
    font: str | None = field(default_factory=pick_font)
    size: str = glass.SIZE  # the publisher's picture, WIDTHxHEIGHT
    # The middle box's filter graph; None: one drawtext (``drawtext_filter``).
    video_filter: str | None = None

    def unavailable(self) -> str | None:
        if shutil.which("ffmpeg") is None:
            return "ffmpeg is not on PATH (apt-get install ffmpeg to measure the peer and floor)"
        return None

    def describe(self, seconds: float) -> dict[str, Any]:
        font_note = (
            f"drawtext font {self.font}"
            if self.font == FONT_CANDIDATES[0]
            else f"CJK font {FONT_CANDIDATES[0]} missing: drawtext font {self.font or 'default'}"
            " (CJK glyphs may render as boxes)"
        )
        return {
            "name": self.name,
            "command": _command(self.font, (), self.video_filter),
            "size": self.size,
            "variants": {
                prefix: {"what": what, "command": _command(self.font, options, self.video_filter)}
                for prefix, (options, what) in FFMPEG_VARIANTS.items()
            },
            "version": ffmpeg_version(),
            "font": self.font,
            "note": "run with the node stopped, once per run: first the floor "
            "(publisher -> bench.rtmp_receiver, no middle box, floor_*), then this command "
            "(peer_*), then the same with -thread_type slice before -i (peer_slice_*: "
            "ffmpeg's default frame-threaded decoder holds frames back); "
            f"{font_note}; -probesize 32 instead of 32768 (at the publisher's ~45 kbit/s, "
            "32 KiB is ~4 s of probing inside the measurement); *_cpu_cores and "
            "*_rss_max_mib sampled from /proc over the same kind of steady-state window as "
            "the node's; *_peak_rss_mib is ru_maxrss from wait4",
        }

    async def run(self, seconds: float, log_path: Path) -> Figures:
        logs, stem = log_path.parent, log_path.stem  # logs/peerN.log
        figures: Figures = {}
        floor_join, floor_reason, floor_busy = await self._floor(seconds, logs, stem)
        figures.update(glass.latency_figures("floor", floor_join, floor_reason))
        figures["floor_machine_busy_cores"] = Figure(
            floor_busy, "cores", None, "the whole machine over the floor's window"
        )
        for prefix, (options, _) in FFMPEG_VARIANTS.items():
            ff_log = log_path if prefix == "peer" else logs / f"{stem}-{prefix}-ffmpeg.log"
            join, reason, extra = await self._ffmpeg(seconds, logs, stem, ff_log, prefix, options)
            figures.update(glass.latency_figures(prefix, join, reason))
            figures.update(extra)
        return figures

    async def _floor(
        self, seconds: float, logs: Path, stem: str
    ) -> tuple[glass.Join | None, str, float | None]:
        port = free_loopback_port()
        busy = BusyMeter()
        rx_frames = logs / f"{stem}-floor-receiver-frames.log"
        pub_frames = logs / f"{stem}-floor-publisher-frames.log"
        rx_log = logs / f"{stem}-floor-receiver.log"
        rx = await start_receiver(port, seconds, rx_frames, rx_log, "floor")
        try:
            if await rx.wait_event("listening", LISTEN_TIMEOUT_S) is None:
                return None, f"the floor's receiver did not listen; see {rx_log}", None
            outcome = await publish_through(
                f"rtmp://127.0.0.1:{port}/live/demo",
                seconds,
                pub_frames,
                logs / f"{stem}-floor-publisher.log",
                [rx],
                as_async(busy.start),
                as_async(busy.stop),
                self.size,
            )
            await asyncio.sleep(glass.GRACE_S)
        finally:
            await rx.stop()
        if outcome.error is not None:
            return None, outcome.error, busy.cores
        return glass.join_files(pub_frames, rx_frames, glass.DISCARD_S), "", busy.cores

    async def _ffmpeg(
        self,
        seconds: float,
        logs: Path,
        stem: str,
        ff_log: Path,
        prefix: str,
        input_options: Sequence[str],
    ) -> tuple[glass.Join | None, str, Figures]:
        in_port, out_port = free_loopback_port(), free_loopback_port()
        rx_frames = logs / f"{stem}-{prefix}-receiver-frames.log"
        pub_frames = logs / f"{stem}-{prefix}-publisher-frames.log"
        rx_log = logs / f"{stem}-{prefix}-receiver.log"
        rx = await start_receiver(out_port, seconds, rx_frames, rx_log, prefix)
        ff: SpawnedChild | None = None
        sampler: ProcSampler | None = None
        edges: list[Sample] = []
        busy = BusyMeter()
        outcome = PublishOutcome(error="not run")
        try:
            if await rx.wait_event("listening", LISTEN_TIMEOUT_S) is None:
                return None, f"the {prefix} receiver did not listen; see {rx_log}", {}
            ff = SpawnedChild(
                ffmpeg_argv(in_port, out_port, self.font, input_options, self.video_filter), ff_log
            )
            if not await wait_listening(in_port, LISTEN_TIMEOUT_S, alive=lambda: not ff.poll()):
                return None, f"ffmpeg did not listen on port {in_port}; see {ff_log}", {}
            sampler = ProcSampler([ff.pid])
            sampler.start()

            async def sample() -> None:
                assert sampler is not None
                edges.append(sampler.sample())
                if len(edges) == 1:
                    busy.start()
                else:
                    busy.stop()

            outcome = await publish_through(
                f"rtmp://127.0.0.1:{in_port}/live/demo",
                seconds,
                pub_frames,
                logs / f"{stem}-{prefix}-publisher.log",
                [rx],
                sample,
                sample,
                self.size,
            )
            # The input ended: ffmpeg flushes its output and exits by itself.
            await ff.wait(10.0)
            await asyncio.sleep(glass.GRACE_S)
        finally:
            if sampler is not None:
                await sampler.stop()
            if ff is not None:
                await ff.stop()
            await rx.stop()
        join, note, figures = self._figures(
            prefix, ff, sampler, edges, outcome, pub_frames, rx_frames, ff_log
        )
        figures[f"{prefix}_machine_busy_cores"] = Figure(
            busy.cores,
            "cores",
            None,
            "the whole machine over the window: ffmpeg, publisher, receiver and anything else",
        )
        return join, note, figures

    @staticmethod
    def _figures(
        prefix: str,
        ff: SpawnedChild,
        sampler: ProcSampler,
        edges: Sequence[Sample],
        outcome: PublishOutcome,
        pub_frames: Path,
        rx_frames: Path,
        ff_log: Path,
    ) -> tuple[glass.Join | None, str, Figures]:
        figures: Figures = {}
        note = "" if ff.exit_status == 0 else f"ffmpeg exited with {ff.exit_status}; see {ff_log}"
        if len(edges) == 2:
            start, end = edges
            figures[f"{prefix}_cpu_cores"] = Figure(
                cpu_cores(start, end), "cores", "lower", note or "ffmpeg, steady-state window"
            )
            figures[f"{prefix}_rss_max_mib"] = Figure(
                _mib(rss_max_bytes(sampler.between(start, end))), "MiB", "lower", note
            )
        else:
            reason = outcome.error or note
            figures[f"{prefix}_cpu_cores"] = Figure(None, "cores", "lower", reason)
            figures[f"{prefix}_rss_max_mib"] = Figure(None, "MiB", "lower", reason)
        if ff.usage is not None:
            figures[f"{prefix}_peak_rss_mib"] = Figure(
                ff.usage.ru_maxrss / 1024, "MiB", "lower", "ru_maxrss of the ffmpeg child"
            )
            figures[f"{prefix}_cpu_seconds"] = Figure(
                ff.usage.ru_utime + ff.usage.ru_stime, "s", None, "whole life of the ffmpeg child"
            )
        if outcome.error is not None:
            return None, outcome.error, figures
        return glass.join_files(pub_frames, rx_frames, glass.DISCARD_S), note, figures


def as_async(fn: Callable[[], Any]) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        fn()

    return call
