"""The whole show's definitions and arithmetic (sans-I/O): what the node is given, the
ffmpeg peer's filter graph with as many texts as the node has danmaku, latency over
time, the figures the logs and samples give, the checks.

Used by ``bench.show_run`` (the processes of one run) and the ``show-720p``,
``show-1080p`` and ``soak`` scenarios.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench import glass, prom
from bench import interaction as ix
from bench.engine_alone import NODE_ENV as INTERACTION_NODE_ENV
from bench.figures import Figure, Figures
from bench.sampler import Sample, gauge_values
from bench.scenarios import Check

LOAD_RATE_PER_S = 2000.0  # issue 8: interaction p99 < 100 ms with 2,000 events/s ...
DANMAKU = 50  # ... and 50 danmaku on screen
LOAD_USERS = 100
# A show's audience: comments, likes tapped in bursts of 5, votes and lottery entries
# (each user enters once, then types the keyword). Ramp and interaction keep load_gen's
# plain default mix, so their figures stay comparable across versions.
LOAD_MIX = "comment=0.4,like=0.45,vote=0.1,join=0.05"
LIKE_BURST = 5
PROBE_RATE_PER_S = 10.0
RAMP_S = 6.0  # the load runs this long before the publisher: the board fills
VIDEO_TARGET_P99_MS = glass.TARGET_P99_MS  # 35 ms
INTERACTION_TARGET_P99_MS = 100.0
SEED_BOUND_MS = 200.0  # the seed's "on screen in under 200 ms": the bound with no peer
MIN_FPS = 28.5  # a viewer "holds 30 fps" at 95% of it
EXTRA_VIEWERS = 4  # counting WHEP viewers beside the measuring one
PEER_FONT_PX = 32  # the node's overlay.font_size_px default
PEER_LANES = 10
PEER_WORDS = ("主播", "好看", "弹幕", "晚上好", "打卡", "awsl", "up", "233", "666", "hello")


@dataclass(frozen=True, slots=True)
class Size:
    width: int
    height: int

    @property
    def text(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def label(self) -> str:
        return f"{self.height}p"


SIZES = {"720p": Size(1280, 720), "1080p": Size(1920, 1080)}


def node_env(size: Size, push_url: str) -> dict[str, str]:
    """The node's settings: the interaction scenario's (limits raised so that the
    load is accepted, 50 danmaku at most on screen), the output size, the push aimed
    at the bench's receiver (reconnecting fast: it listens only during a run), and
    room for the viewers."""
    return {
        **INTERACTION_NODE_ENV,
        "EDGE_NODE_VIDEO__WIDTH": str(size.width),
        "EDGE_NODE_VIDEO__HEIGHT": str(size.height),
        "EDGE_NODE_PUSH__URL": push_url,
        "EDGE_NODE_PUSH__BACKOFF_INITIAL_S": "0.1",
        "EDGE_NODE_PUSH__BACKOFF_MAX_S": "0.3",
        "EDGE_NODE_WEBRTC__MAX_VIEWERS": "250",
    }


def peer_texts(n: int) -> list[str]:
    """``n`` distinct danmaku-like texts (Chinese and Latin) with nothing that needs
    escaping in an ffmpeg filter graph."""
    out: list[str] = []
    k = len(PEER_WORDS)
    for i in range(n):
        a, b = PEER_WORDS[i % k], PEER_WORDS[(i // k + 3) % k]
        out.append(f"{a}{b} {i + 1}")
    return out


def peer_filter(n: int, size: Size, font: str | None) -> str:
    """``n`` scrolling ``drawtext`` filters, 32 px with a 2 px border, on ten lanes over
    the top two thirds, every text on screen at every frame (a phase each: without it
    every text starts off the right edge, where drawtext draws nothing), like the
    node's board kept full by the load."""
    lane_h = int(size.height * 0.66) // PEER_LANES
    font_part = f"fontfile={font}:" if font else ""
    parts = []
    for i, text in enumerate(peer_texts(n)):
        phase = (i + 0.5) / max(n, 1)
        speed = 120 + 12 * (i % 7)  # px/s: the board's speeds differ by text width
        x = f"'w-mod(t*{speed}+{phase:.4f}*(w+tw),w+tw)'"
        y = 4 + (i % PEER_LANES) * lane_h
        parts.append(
            f"drawtext={font_part}text='{text}':expansion=none:fontsize={PEER_FONT_PX}"
            f":fontcolor=white:borderw=2:bordercolor=black:x={x}:y={y}"
        )
    return ",".join(parts)


Entry = tuple[int, float]  # (counter or seq, monotonic seconds)
Latencies = Callable[[Sequence[Entry], Sequence[Entry]], list[float]]


def slices(
    sent: Sequence[Entry], received: Sequence[Entry], slice_s: float, max_delay_s: float = 5.0
) -> Iterator[tuple[float, list[Entry], list[Entry]]]:
    """The logs cut by send time: (slice start in seconds since the first send, the
    entries sent in the slice, the receiver's entries from the slice's start to
    ``max_delay_s`` after its end). Joining slice by slice keeps a long soak linear
    in time, and right across the 16-bit frame counter's wrap (36 min at 30 fps),
    which a join of the whole log would take for duplicates."""
    if slice_s <= 0:
        raise ValueError(f"slice_s: {slice_s} is not > 0")
    sent_sorted = sorted(sent, key=lambda e: e[1])
    got_sorted = sorted(received, key=lambda e: e[1])
    if not sent_sorted:
        return
    t0 = sent_sorted[0][1]
    i = j = k = 0
    while i < len(sent_sorted):
        lo, hi = t0 + k * slice_s, t0 + (k + 1) * slice_s
        chunk: list[Entry] = []
        while i < len(sent_sorted) and sent_sorted[i][1] < hi:
            chunk.append(sent_sorted[i])
            i += 1
        while j < len(got_sorted) and got_sorted[j][1] < lo:
            j += 1
        end = j
        while end < len(got_sorted) and got_sorted[end][1] < hi + max_delay_s:
            end += 1
        if chunk:
            yield k * slice_s, chunk, got_sorted[j:end]
        k += 1


def video_join(
    sent: Sequence[Entry],
    received: Sequence[Entry],
    slice_s: float,
    discard_s: float = glass.DISCARD_S,
) -> glass.Join:
    """glass's join of a publisher's and a receiver's logs, slice by slice (see
    ``slices``): frames sent in the first ``discard_s`` are left out, the rest summed.
    Counters foreign to a slice are not counted (a slice sees its neighbours')."""
    total = glass.Join()
    if not sent:
        return total
    t_first = min(t for _, t in sent)
    kept = [e for e in sent if e[1] - t_first >= discard_s]
    total.discarded = len(sent) - len(kept)
    for _, chunk, window in slices(kept, received, slice_s):
        j = glass.join(chunk, window, discard_s=0.0)
        total.sent += j.sent
        total.delivered += j.delivered
        total.lost += j.lost
        total.duplicates += j.duplicates
        total.early += j.early
        total.latencies_ms += j.latencies_ms
    return total


def video_latencies(chunk: Sequence[Entry], window: Sequence[Entry]) -> list[float]:
    return glass.join(chunk, window, discard_s=0.0).latencies_ms


def probe_latencies(chunk: Sequence[Entry], window: Sequence[Entry]) -> list[float]:
    return ix.join(chunk, window).latencies_ms


def over_time(
    sent: Sequence[Entry], received: Sequence[Entry], latencies: Latencies, slice_s: float
) -> dict[str, list[tuple[float, float]]]:
    """p50 and p99 latency per ``slice_s`` of send time (seconds since the first send)."""
    out: dict[str, list[tuple[float, float]]] = {"p50": [], "p99": []}
    for start, chunk, window in slices(sent, received, slice_s):
        values = latencies(chunk, window)
        for label, q in (("p50", 50.0), ("p99", 99.0)):
            v = ix.percentile(values, q)
            if v is not None:
                out[label].append((start, v))
    return out


def danmaku_figures(samples: Sequence[Sample]) -> Figures:
    """The node's own ``edge_node_danmaku_on_screen`` gauge over the window's samples."""
    values = gauge_values(samples, "edge_node_danmaku_on_screen")
    note = "the node's edge_node_danmaku_on_screen gauge, 0.5 s samples over the window"
    return {
        "danmaku_on_screen_median": Figure(
            statistics.median(values) if values else None, "danmaku", None, note
        ),
        "danmaku_on_screen_min": Figure(min(values) if values else None, "danmaku", None, note),
    }


def extra_viewer_figures(window: Mapping[str, Any] | None, count: int, reason: str) -> Figures:
    """The counting WHEP viewers (``bench.fanout_viewer``) over the window."""
    rows = list((window or {}).get("viewers") or [])
    fps = [float(r["fps"]) for r in rows if r.get("fps") is not None]
    lost = [int(r["lost"]) for r in rows if r.get("lost") is not None]
    note = "" if rows else reason or "no window from the viewers"
    return {
        "extra_viewers": Figure(float(count), "viewers", None, "counting WHEP sessions"),
        "extra_viewers_fps_min": Figure(min(fps) if fps else None, "frames/s", "higher", note),
        "extra_viewers_fps_median": Figure(
            statistics.median(fps) if fps else None, "frames/s", "higher", note
        ),
        "extra_viewers_packets_lost": Figure(
            float(sum(lost)) if lost else None, "packets", "lower", note
        ),
    }


def stage_histograms(start: prom.Samples | None, end: prom.Samples | None) -> Figures:
    """The interaction path's histograms over the window (the video stages come with
    ``bench.whep_run.node_figures``)."""
    out = ix.histogram_figures(
        "node_event_to_frame", start, end, "edge_node_event_to_frame_seconds"
    )
    out.update(
        ix.histogram_figures("node_engine_handle", start, end, "edge_node_engine_handle_seconds")
    )
    return out


def derived(figures: Mapping[str, Figure]) -> Figures:
    """Beside each headline: the peer's and the floor's ratios and distances (glass's
    arithmetic), and for the interaction path, which has no peer, the seed's bound."""
    from bench.scenarios.glass import derived as glass_derived

    out = glass_derived(figures)
    out["interaction_seed_bound_ms"] = Figure(
        SEED_BOUND_MS, "ms", None, "the seed's on-screen bound: interaction has no peer"
    )
    p99 = figures.get("probe_latency_p99_ms")
    if p99 is not None and p99.value is not None:
        out["probe_latency_p99_to_seed_bound_ratio"] = Figure(
            p99.value / SEED_BOUND_MS, "ratio", "lower", "median probe p99 / 200 ms"
        )
    return out


def value(figures: Mapping[str, Figure], name: str) -> float | None:
    f = figures.get(name)
    return f.value if f is not None else None


def checks(figures: Mapping[str, Figure], frames_expected: int, size: Size) -> list[Check]:
    """The issue's targets and the facts the figures rest on."""
    out: list[Check] = []
    sent = value(figures, "publisher_frames_sent")
    out.append(
        Check(
            "publisher sent every frame",
            sent == frames_expected,
            f"{sent or 0:.0f} of {frames_expected}",
        )
    )
    for path in ("whep", "push"):
        p99 = value(figures, f"{path}_latency_p99_ms")
        out.append(
            Check(
                f"video {path}: p99 under {VIDEO_TARGET_P99_MS:g} ms (target)",
                p99 is not None and p99 < VIDEO_TARGET_P99_MS,
                f"p99 {p99:.1f} ms" if p99 is not None else "no latency",
            )
        )
    p99 = value(figures, "probe_latency_p99_ms")
    for label, bound in (("target", INTERACTION_TARGET_P99_MS), ("seed", SEED_BOUND_MS)):
        out.append(
            Check(
                f"interaction p99 under {bound:g} ms ({label})",
                p99 is not None and p99 < bound,
                f"p99 {p99:.1f} ms" if p99 is not None else "no latency",
            )
        )
    handled = value(figures, "node_events_per_second")
    out.append(
        Check(
            f"node handled >= 90% of {LOAD_RATE_PER_S:g} events/s",
            handled is not None and handled >= 0.9 * LOAD_RATE_PER_S,
            f"{handled:.0f} events/s" if handled is not None else "no /metrics",
        )
    )
    on_screen = value(figures, "danmaku_on_screen_median")
    out.append(
        Check(
            f"about {DANMAKU} danmaku on screen (node gauge)",
            on_screen is not None and on_screen >= 0.9 * DANMAKU,
            f"median {on_screen:.0f}" if on_screen is not None else "no gauge",
        )
    )
    fps = value(figures, "extra_viewers_fps_min")
    count = value(figures, "extra_viewers") or 0
    if count:
        out.append(
            Check(
                f"every WHEP viewer at {size.label}30 holds {MIN_FPS:g} fps",
                fps is not None and fps >= MIN_FPS,
                f"slowest {fps:.1f} fps" if fps is not None else "no window",
            )
        )
    encoders = value(figures, "node_video_encoders_max")
    out.append(Check("one video encoder for everything", encoders == 1, f"max {encoders}"))
    return out
