"""``compositor``: the workload both sides draw, and the figures made of what they measured.

Issue 4's figures: per-frame composite time at 720p and 1080p with 0, 10, 50 and 200
live danmaku plus a vote bar; the same overlay drawn by FFmpeg's own filters
(``drawtext`` per comment, ``drawbox`` + ``drawtext`` for the vote bar) as the peer.

The workload is one definition used by both sides, so they draw the same thing:

- ``N`` distinct comments of 8-14 characters mixing Chinese and Latin (the way
  danmaku look: ``主播太强了666``, ``awsl笑死GG``), in the project's style
  (``Style()``: 32 px, 2 px outline, 10 lanes over the top two thirds), lane ``i % 10``,
  speed from the danmaku board's own formula (``DanmakuBoard.speed`` of the width the
  board would measure);
- every comment scrolls right to left and re-enters as it leaves, so all ``N`` are on
  screen at every frame (a live board replaces a comment that left with a new one;
  here it is the same text again, its sprite already cached): x at time t is
  ``w - mod(t * speed + phase * (w + tw), w + tw)``, which is exactly the ``drawtext``
  expression the peer evaluates;
- a vote bar (question and three options with their shares) where ``Painter`` puts it.

With 200 comments on 10 lanes they overlap (a 1280 px lane holds about four): the
cost is per pixel drawn, which overlap does not change, and both sides draw the same.

Nothing here measures: ``bench.compositor_run`` does (the node's compositor in a
child process, the ffmpeg CLI as the peer).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import plot
from bench.figures import Figure, Figures
from edge_node.overlay.lanes import MERGE_SUFFIX, DanmakuBoard, lane_y
from edge_node.overlay.scene import Danmaku, Scene, Style, VoteBar

SIZES: dict[str, tuple[int, int]] = {"720p": (1280, 720), "1080p": (1920, 1080)}
COUNTS: tuple[int, ...] = (0, 10, 50, 200)
FPS = 30
FRAMES = 1000  # timed frames per configuration (issue 4)
WARMUP_FRAMES = 30  # composited before the timed ones, not timed
POOL_FRAMES = 16  # distinct frames cycled through (more than the L3 cache at 1080p)
TEXT_MIN, TEXT_MAX = 8, 14  # characters per comment
SEED = 4
OUTLINE_PX = 2  # Painter._label's outline width

PEER_FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
# Peer frame counts: CPU time is read per process, so every configuration runs twice,
# SHORT and SHORT + extra frames; the difference over the extra frames is the
# per-frame cost without start-up (font loading, filter set-up, glyph caches), the
# way the node's figures leave out the sprites' rendering.
PEER_SHORT_FRAMES = 30
PEER_EXTRA_FRAMES_CHEAP = 1000  # N <= 10 and the baselines: small costs, more frames
PEER_EXTRA_FRAMES = 300  # N >= 50

METHOD = {
    "node": "Compositor(Painter(w, h, TextRenderer(find_font()), probe_enabled=False)) in a "
    "child process, after loading the numba blend kernels (timed apart); per configuration "
    "a fresh sprite cache, Painter.prewarm of every sprite "
    "(cold_ms), 30 untimed frames, then 1,000 timed composite(frame, t) calls on a pool of 16 "
    "yuv420p av.VideoFrames, t += 1/30 s; p50/p99 of the per-frame wall time "
    "(perf_counter_ns), cpu_ms = the thread's CPU time over the timed calls / frames",
    "workload": "N distinct 8-14 character CJK/Latin comments, Style() defaults (32 px, "
    "2 px outline, 10 lanes), board speeds, phases spread so all N are on screen at every "
    "frame (a comment that leaves re-enters: a new snapshot, prewarmed between frames); "
    "a vote bar with a question and 3 options",
    "peer": "ffmpeg CLI, -threads 1 -filter_threads 1, lavfi color source -> drawtext per "
    "comment + drawbox/drawtext vote bar -> null muxer; per configuration a short and a "
    "long run, user CPU difference / frame difference, minus the same for a 2x2-drawbox "
    "baseline (the frame copy); no per-frame times, so no peer p99",
    "ratio": "median peer ms per frame / median node cpu_ms (mean CPU per frame on both sides)",
    "medians": "every figure is the median over the runs of its per-run value",
}

# Targets of issue 4.
TARGET_720P_N50_MS = 1.0
TARGET_RATIO = 5.0

_CJK = (
    "哈哈哈", "主播", "太强了", "加油", "好看", "弹幕", "前方高能", "来了", "牛啊",
    "打卡", "第一次来", "这波操作", "真的假的", "学到了", "笑死", "上车", "冲冲冲",
    "晚上好", "关注了", "厉害", "绝了", "名场面", "泪目", "下次一定",
)  # fmt: skip
_LATIN = (
    "666", "awsl", "GG", "nice", "lol", "wow", "yyds", "233", "up", "hi", "OMG", "MVP",
    "2333", "ok", "good", "go go", "GG wp", "hhh", "8888",
)  # fmt: skip

VOTE = VoteBar(
    poll="bench",
    question="今晚吃什么? vote",
    options=("火锅 hotpot", "烧烤 BBQ", "寿司 sushi"),
    counts=(412, 268, 120),
)


def comment_texts(n: int, seed: int = SEED) -> list[str]:
    """``n`` distinct comments of ``TEXT_MIN``..``TEXT_MAX`` characters, each with
    Chinese and Latin in it, the same for a given seed."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        length = rng.randint(TEXT_MIN, TEXT_MAX)
        text = ""
        while len(text) < length:
            text += rng.choice(_CJK if rng.random() < 0.6 else _LATIN)
        text = text[:length]
        has_cjk = any(ord(c) > 0x2E80 for c in text)
        has_latin = any(c.isascii() and c.isalnum() for c in text)
        if has_cjk and has_latin and text == text.strip() and text not in seen:
            seen.add(text)
            out.append(text)
    return out


@dataclass(frozen=True, slots=True)
class Comment:
    text: str
    lane: int
    y: int  # top of the lane (``lane_y``), where Painter draws it
    speed_px_s: float
    board_width_px: int  # the width the danmaku board reserves (text + " x999")
    text_width_px: int  # the text's own width: the scroll period is (w + this) / speed
    phase: float  # 0..1: how far across its period the comment is at t = 0


@dataclass(frozen=True, slots=True)
class Workload:
    width: int
    height: int
    style: Style
    comments: tuple[Comment, ...]
    vote: VoteBar

    @classmethod
    def build(
        cls,
        width: int,
        height: int,
        n: int,
        measure: Callable[[str, int], int],
        style: Style | None = None,
    ) -> Workload:
        """``n`` comments spread over the lanes and over their scroll periods
        (phases (i + 0.5) / n, shuffled) so that all of them are on screen at once."""
        style = style or Style()
        board = DanmakuBoard(style, width, height, measure)
        phases = [(i + 0.5) / n for i in range(n)]
        random.Random(SEED + n).shuffle(phases)
        comments = []
        for i, text in enumerate(comment_texts(n)):
            reserved = measure(text + MERGE_SUFFIX, style.font_size_px)
            lane = i % style.lanes
            comments.append(
                Comment(
                    text=text,
                    lane=lane,
                    y=lane_y(style, height, lane),
                    speed_px_s=board.speed(reserved),
                    board_width_px=reserved,
                    text_width_px=measure(text, style.font_size_px),
                    phase=phases[i],
                )
            )
        return cls(width, height, style, tuple(comments), VOTE)

    def _span(self, c: Comment) -> float:
        return float(self.width + c.text_width_px)

    def x_at(self, c: Comment, t: float) -> float:
        """The comment's left edge at ``t``: the peer's ``drawtext`` x expression."""
        span = self._span(c)
        return self.width - math.fmod(t * c.speed_px_s + c.phase * span, span)

    def cycles(self, t: float) -> tuple[int, ...]:
        """Which pass across the screen each comment is on at ``t`` (changes when one
        leaves on the left and re-enters on the right)."""
        return tuple(
            int((t * c.speed_px_s + c.phase * self._span(c)) // self._span(c))
            for c in self.comments
        )

    def visible(self, t: float) -> int:
        """Comments with some part inside the picture at ``t``."""
        n = 0
        for c in self.comments:
            x = self.x_at(c, t)
            if x < self.width and x + c.text_width_px > 0:
                n += 1
        return n

    def scene_at(self, t: float, version: int = 1) -> Scene:
        """The snapshot the engine would publish: each comment as a ``Danmaku`` that
        entered at the start of its current pass, and the vote bar."""
        items = []
        for i, (c, cycle) in enumerate(zip(self.comments, self.cycles(t), strict=True)):
            span = self._span(c)
            start = (cycle * span - c.phase * span) / c.speed_px_s
            items.append(
                Danmaku(
                    id=f"c{i}.{cycle}",
                    text=c.text,
                    lane=c.lane,
                    start=start,
                    speed_px_s=c.speed_px_s,
                    width_px=c.board_width_px,
                )
            )
        return Scene(version=version, style=self.style, danmaku=tuple(items), vote=self.vote)

    def scene_all_visible(self) -> Scene:
        """Every comment at x = 0 at t = 0: ``Painter.prewarm`` of it at t = 0 renders
        every sprite the run will need (text and vote labels)."""
        items = tuple(
            Danmaku(
                id=f"w{i}",
                text=c.text,
                lane=c.lane,
                start=-self.width / c.speed_px_s,
                speed_px_s=c.speed_px_s,
                width_px=c.board_width_px,
            )
            for i, c in enumerate(self.comments)
        )
        return Scene(version=0, style=self.style, danmaku=items, vote=self.vote)


# ---- the peer's filter graph ------------------------------------------------------------


def ff_color(rgba: tuple[int, int, int, int]) -> str:
    """FFmpeg's colour syntax for straight RGBA: ``0xRRGGBB@alpha``."""
    r, g, b, a = rgba
    return f"0x{r:02X}{g:02X}{b:02X}@{a / 255:.3f}"


Rgba = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class VoteLayout:
    size: int  # font size of the labels
    panel: tuple[int, int, int, int]  # x, y, w, h
    bars: tuple[tuple[int, int, int, int, Rgba], ...]  # x, y, w, h, colour
    labels: tuple[tuple[str, int, int], ...]  # text, x, y: the question, then each option


def vote_layout(wl: Workload) -> VoteLayout:
    """The vote bar's geometry as ``Painter._vote`` lays it out (no countdown)."""
    s = wl.style
    size = max(12, s.font_size_px * 3 // 4)
    bar_w = wl.width // 4
    row_h = size + 12
    x = wl.width - bar_w - s.safe_margin_px
    y = wl.height // 3
    rows = len(wl.vote.options)
    total = sum(wl.vote.counts) or 1
    bars = []
    labels = [(wl.vote.question, x, y)]
    for i, (option, count) in enumerate(zip(wl.vote.options, wl.vote.counts, strict=False)):
        ry = y + (i + 1) * row_h
        share = count / total
        colour = s.bar_rgba[i % len(s.bar_rgba)]
        bars.append((x, ry, max(1, int(bar_w * share)), row_h - 4, colour))
        labels.append((f"{option} {round(share * 100)}%", x + 4, ry))
    panel = (x - 8, y - 8, bar_w + 16, (rows + 1) * row_h + 16)
    return VoteLayout(size, panel, tuple(bars), tuple(labels))


def _drawtext(textfile: str, size: int, x: str, y: str, style: Style) -> str:
    # textfile + expansion=none: the text is read once and drawn as is (no escaping, no
    # per-frame %{...} parsing: the cheapest way for drawtext to draw a fixed string).
    return (
        f"drawtext=fontfile={PEER_FONT}:textfile={textfile}:expansion=none"
        f":fontsize={size}:fontcolor={ff_color(style.text_rgba)}"
        f":borderw={OUTLINE_PX}:bordercolor={ff_color(style.outline_rgba)}"
        f":x={x}:y={y}"
    )


def peer_filters(wl: Workload, textfile: Callable[[str], str]) -> list[str]:
    """The filter chain drawing ``wl`` with FFmpeg's filters, in Painter's order
    (danmaku, then the vote bar). ``textfile(text)`` is the path of a file holding
    ``text``."""
    s = wl.style
    out = []
    for c in wl.comments:
        x = f"'w-mod(t*{c.speed_px_s:.4f}+{c.phase:.6f}*(w+tw),w+tw)'"
        out.append(_drawtext(textfile(c.text), s.font_size_px, x, str(c.y), s))
    vote = vote_layout(wl)
    px, py, pw, ph = vote.panel
    out.append(f"drawbox=x={px}:y={py}:w={pw}:h={ph}:color={ff_color(s.panel_rgba)}:t=fill")
    text, lx, ly = vote.labels[0]
    out.append(_drawtext(textfile(text), vote.size, str(lx), str(ly), s))
    for (bx, by, bw, bh, colour), (text, lx, ly) in zip(vote.bars, vote.labels[1:], strict=True):
        out.append(f"drawbox=x={bx}:y={by}:w={bw}:h={bh}:color={ff_color(colour)}:t=fill")
        out.append(_drawtext(textfile(text), vote.size, str(lx), str(ly), s))
    return out


BASELINE_FILTERS = {
    # No filter at all: the source and the null muxer.
    "null": ["null"],
    # A 2x2 box: the source's frames are shared references (lavfi "color" draws once),
    # so the first filter that writes copies the frame. The node times frames it may
    # write into; this baseline takes that copy out of the peer's figures too.
    "copy": ["drawbox=x=0:y=0:w=2:h=2:color=0x000000@0.5:t=fill"],
}


def peer_argv(
    width: int, height: int, frames: int, script: Path, ffmpeg: str = "ffmpeg"
) -> list[str]:
    """One peer measurement: a flat grey lavfi picture through the filter script,
    single-threaded, to the null muxer."""
    return [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
        "-threads", "1", "-filter_threads", "1",
        "-f", "lavfi", "-i", f"color=c=0x606060:s={width}x{height}:r={FPS}",
        "-frames:v", str(frames),
        "-filter_script:v", str(script),
        "-f", "null", "-",
    ]  # fmt: skip


def peer_extra_frames(n: int | None, frames: int) -> int:
    """Frames the long peer run has over the short one (``n`` None: a baseline);
    never more than the node's frame count (``--seconds`` shortens both)."""
    extra = PEER_EXTRA_FRAMES_CHEAP if n is None or n <= 10 else PEER_EXTRA_FRAMES
    return max(1, min(extra, frames))


# ---- statistics and figures -------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), ``q`` in 0..100."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def key(size: str, n: int) -> str:
    return f"{size}_n{n}"


def node_figures(result: Mapping[str, Any]) -> Figures:
    """Figures of one node run (the child's JSON)."""
    out: Figures = {}
    for c in result.get("configs") or []:
        k = key(c["size"], c["n"])
        out[f"node_{k}_p50_ms"] = Figure(c["p50_ms"], "ms", "lower", "median per-frame composite")
        out[f"node_{k}_p99_ms"] = Figure(c["p99_ms"], "ms", "lower")
        out[f"node_{k}_cpu_ms"] = Figure(
            c["cpu_ms"], "ms", "lower", "thread CPU time per frame, mean (the ratios' base)"
        )
        out[f"node_{k}_cold_ms"] = Figure(
            c["cold_ms"],
            "ms",
            "lower",
            f"Painter.prewarm with an empty sprite cache: {c['cold_sprites']} sprites rendered",
        )
        out[f"node_{k}_visible_mean"] = Figure(c["visible_mean"], "danmaku")
    configs = result.get("configs") or []
    sprites = sum(c["cold_sprites"] for c in configs)
    if sprites:
        out["node_cold_ms_per_sprite"] = Figure(
            sum(c["cold_ms"] for c in configs) / sprites,
            "ms",
            "lower",
            "Pillow rendering of one text sprite (all configurations' prewarms)",
        )
    load = result.get("kernels_load_ms")
    if isinstance(load, int | float):
        out["node_kernels_load_ms"] = Figure(
            float(load),
            "ms",
            "lower",
            "the media worker's start-up cost of the numba blend kernels (import, compile or "
            f"cache load, first calls): {result.get('kernels_compiled')} compiled, "
            f"{result.get('kernels_from_cache')} from numba's cache",
        )
    init = result.get("text_renderer_init_ms")
    if isinstance(init, int | float):
        out["node_text_renderer_init_ms"] = Figure(float(init), "ms", None, "fonts loaded, once")
    return out


def peer_figures(result: Mapping[str, Any]) -> Figures:
    """Figures of one peer run (``compositor_run.measure_peer``'s result)."""
    out: Figures = {}
    for size, base in (result.get("baselines") or {}).items():
        out[f"peer_{size}_copy_ms"] = Figure(
            base["copy_ms"], "ms", None, "frame copy the first drawing filter makes (taken out)"
        )
    for c in result.get("configs") or []:
        k = key(c["size"], c["n"])
        out[f"peer_{k}_ms"] = Figure(
            c["ms"], "ms", "lower", "user CPU per frame over the copy baseline (long - short run)"
        )
        out[f"peer_{k}_init_ms"] = Figure(
            c["init_ms"], "ms", None, "start-up over the baseline's (fonts, filters)"
        )
    return out


def derived(figures: Mapping[str, Figure]) -> Figures:
    """Peer / node per frame, of medians: the peer's CPU per frame over the node's
    thread CPU per frame (both means over the frames: the CLI gives no per-frame times)."""
    out: Figures = {}
    for size in SIZES:
        for n in COUNTS:
            k = key(size, n)
            node, peer = figures.get(f"node_{k}_cpu_ms"), figures.get(f"peer_{k}_ms")
            if node is None or peer is None or node.value is None or peer.value is None:
                continue
            if node.value <= 0:
                continue
            out[f"peer_to_node_{k}_ratio"] = Figure(
                peer.value / node.value,
                "ratio",
                "higher",
                f"median peer_{k}_ms / median node_{k}_cpu_ms",
            )
    return out


def write_plot(figures: Mapping[str, Figure], out_dir: Path, runs: int) -> list[str]:
    """``compositor.png``: ms per frame against N, node (median, p99) and peer, per size;
    ``compositor_ratio.png``: peer / node."""

    def series(fmt: str) -> list[tuple[float, float]]:
        points = []
        for n in COUNTS:
            f = figures.get(fmt.format(n=n))
            if f is not None and f.value is not None and math.isfinite(f.value):
                points.append((float(n), f.value))
        return points

    lines: dict[str, list[tuple[float, float]]] = {}
    for size in SIZES:
        lines[f"node {size} p50"] = series(f"node_{size}_n{{n}}_p50_ms")
        lines[f"node {size} p99"] = series(f"node_{size}_n{{n}}_p99_ms")
    for size in SIZES:
        lines[f"ffmpeg {size}"] = series(f"peer_{size}_n{{n}}_ms")
    lines = {name: pts for name, pts in lines.items() if pts}
    written: list[str] = []
    if lines:
        plot.line_chart(
            out_dir / "compositor.png",
            f"ms per frame vs danmaku + vote bar: node p50/p99, ffmpeg mean CPU ({runs} runs)",
            lines,
            "danmaku on screen",
            "ms per frame",
            integer_x=True,
        )
        written.append("compositor.png")
    ratios = {
        size: [_value(figures, f"peer_to_node_{size}_n{n}_ratio") for n in COUNTS] for size in SIZES
    }
    if any(v is not None for vs in ratios.values() for v in vs):
        plot.bar_chart(
            out_dir / "compositor_ratio.png",
            f"ffmpeg filters CPU / node compositor CPU per frame (target >= {TARGET_RATIO:g}x)",
            [f"{n} danmaku" for n in COUNTS],
            ratios,
            "times the node's cost",
        )
        written.append("compositor_ratio.png")
    return written


def _value(figures: Mapping[str, Figure], name: str) -> float | None:
    f = figures.get(name)
    return f.value if f is not None else None
