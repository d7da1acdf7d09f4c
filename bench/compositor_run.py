"""``compositor`` measurements: the node's compositor (in a child process) and the
ffmpeg CLI drawing the same overlay (the peer).

Node: ``python -m bench.compositor_run [--frames F]`` prints one JSON object. First
it loads the compiled blend kernels (``load_kernels``: their start-up cost, reported
apart). For each size and danmaku count it builds the workload
(``bench.compositor.Workload``), a
``Compositor(Painter(w, h, TextRenderer(find_font()), probe_enabled=False))`` with a
fresh sprite cache, times ``Painter.prewarm`` of every sprite (the cold-cache cost),
composites ``WARMUP_FRAMES`` untimed frames, then times ``F`` calls of
``Compositor.composite(frame, t)`` on real yuv420p ``av.VideoFrame``s (a pool of
``POOL_FRAMES`` distinct frames, cycled), t advancing 1/30 s per frame. A comment
that leaves re-enters as a new snapshot, published and prewarmed between frames the
way the media worker does (``set_scene`` after ``prewarm``); the timed call is the
composite alone. Per frame: wall time (``perf_counter_ns``) for the median and p99,
and the thread's CPU time for the mean.

Peer: the ffmpeg CLI (``bench.compositor.peer_argv``), single-threaded, per
configuration a short and a long run; per-frame user CPU = difference of the two
runs' user CPU over the difference of their frames, minus the same for the "copy"
baseline. See bench/README.md for why the CLI and not PyAV's filter graph.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from bench import compositor as comp
from bench.peer import run_child

ROOT = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT_S = 600.0
FFMPEG_TIMEOUT_S = 120.0


# ---- node (runs in the child process) --------------------------------------------------


def _frame_pool(width: int, height: int, count: int) -> list[Any]:
    """``count`` distinct yuv420p frames with a picture in them (gradient and noise)."""
    import av
    import numpy as np

    from edge_node.overlay.blend import frame_planes

    rng = np.random.default_rng(comp.SEED)
    ramp = np.linspace(16, 235, width, dtype=np.float32)[None, :]
    frames = []
    for i in range(count):
        frame = av.VideoFrame(width, height, "yuv420p")
        y, u, v = frame_planes(frame)
        noise = rng.integers(-12, 12, size=(height, width), dtype=np.int16)
        y[...] = np.clip(ramp + noise + i, 16, 235).astype(np.uint8)
        u[...] = 128 - (i % 8)
        v[...] = 128 + (i % 8)
        frames.append(frame)
    return frames


def measure_node_config(
    width: int,
    height: int,
    n: int,
    frames: int,
    warmup: int,
    pool: Sequence[Any],
    font: str | None,
) -> dict[str, Any]:
    """One size and danmaku count: cold prewarm, then ``frames`` timed composites."""
    from edge_node.overlay.compositor import Compositor
    from edge_node.overlay.measure import TextMeasure
    from edge_node.overlay.text import TextRenderer
    from edge_node.overlay.widgets import Painter

    wl = comp.Workload.build(width, height, n, TextMeasure(font))
    text = TextRenderer(font)  # a fresh, empty sprite cache
    painter = Painter(width, height, text, probe_enabled=False)
    compositor = Compositor(painter)

    gc.collect()
    started = time.perf_counter_ns()
    painter.prewarm(wl.scene_all_visible(), 0.0)
    cold_ms = (time.perf_counter_ns() - started) / 1e6
    cold_sprites = text.misses

    version = 1
    cycles = wl.cycles(0.0)
    scene = wl.scene_at(0.0, version)
    compositor.set_scene(scene)
    wall_ns: list[int] = []
    cpu_ns = 0
    visible = 0
    misses_before = 0
    gc.collect()
    for k in range(warmup + frames):
        t = k / comp.FPS
        now = wl.cycles(t)
        if now != cycles:
            # A comment left and came back: the engine's new snapshot, prewarmed
            # before it is handed over, as the worker does on "scene".
            cycles = now
            version += 1
            scene = wl.scene_at(t, version)
            painter.prewarm(scene, t)
            compositor.set_scene(scene)
        frame = pool[k % len(pool)]
        if k == warmup:
            misses_before = text.misses
        timed = k >= warmup
        if timed:
            visible += wl.visible(t)
        c0 = time.thread_time_ns()
        w0 = time.perf_counter_ns()
        compositor.composite(frame, t)
        w1 = time.perf_counter_ns()
        c1 = time.thread_time_ns()
        if timed:
            wall_ns.append(w1 - w0)
            cpu_ns += c1 - c0
    wall_ms = sorted(v / 1e6 for v in wall_ns)
    return {
        "n": n,
        "width": width,
        "height": height,
        "frames": frames,
        "p50_ms": comp.percentile(wall_ms, 50),
        "p99_ms": comp.percentile(wall_ms, 99),
        "mean_ms": sum(wall_ms) / len(wall_ms),
        "max_ms": wall_ms[-1],
        "cpu_ms": cpu_ns / 1e6 / frames,
        "cold_ms": cold_ms,
        "cold_sprites": cold_sprites,
        "visible_mean": visible / frames,
        "frame_path_renders": text.misses - misses_before,
        "snapshots": version,
    }


def load_kernels() -> dict[str, Any]:
    """Import the compiled blend kernels and warm them up, timed: what the media worker
    pays at start-up (numba's import, then compiling the kernels, or loading them from
    numba's on-disk cache, and their first calls). Run first in a fresh process."""
    started = time.perf_counter_ns()
    from edge_node.overlay import blend, blend_kernels

    blend.warm_up()
    load_ms = (time.perf_counter_ns() - started) / 1e6
    import numba

    stats = [cast(Any, k).stats for k in (blend_kernels.blend_sprite, blend_kernels.fill_rect)]
    return {
        "kernels_load_ms": load_ms,
        "kernels_compiled": sum(sum(st.cache_misses.values()) for st in stats),
        "kernels_from_cache": sum(sum(st.cache_hits.values()) for st in stats),
        "numba": numba.__version__,
    }


def measure_node(
    frames: int,
    warmup: int = comp.WARMUP_FRAMES,
    sizes: Sequence[str] = tuple(comp.SIZES),
    counts: Sequence[int] = comp.COUNTS,
    pool_frames: int = comp.POOL_FRAMES,
) -> dict[str, Any]:
    kernels = load_kernels()  # first: nothing has imported them yet in the child
    from edge_node.overlay.text import TextRenderer, find_font

    font = find_font()
    started = time.perf_counter_ns()
    TextRenderer(font)
    init_ms = (time.perf_counter_ns() - started) / 1e6
    configs = []
    for size in sizes:
        width, height = comp.SIZES[size]
        pool = _frame_pool(width, height, pool_frames)
        for n in counts:
            result = measure_node_config(width, height, n, frames, warmup, pool, font)
            result["size"] = size
            configs.append(result)
            print(
                f"{size} n={n}: p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms,"
                f" cold {result['cold_ms']:.1f} ms",
                file=sys.stderr,
                flush=True,
            )
        del pool
    return {
        **kernels,
        "font": font,
        "text_renderer_init_ms": init_ms,
        "warmup_frames": warmup,
        "pool_frames": pool_frames,
        "configs": configs,
    }


def node_argv(frames: int, sizes: Sequence[str], counts: Sequence[int]) -> list[str]:
    return [
        sys.executable, "-m", "bench.compositor_run",
        "--frames", str(frames),
        "--sizes", ",".join(sizes),
        "--counts", ",".join(str(n) for n in counts),
    ]  # fmt: skip


async def run_node_child(
    frames: int, log_path: Path, sizes: Sequence[str], counts: Sequence[int]
) -> dict[str, Any]:
    """The node measurement in its own process (no event loop, no aiohttp beside it)."""
    with open(log_path, "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *node_argv(frames, sizes, counts),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
        )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), CHILD_TIMEOUT_S)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"compositor child exited with {proc.returncode}; see {log_path}")
    result: dict[str, Any] = json.loads(out)
    return result


# ---- peer ------------------------------------------------------------------------------


def peer_unavailable(ffmpeg: str | None = None) -> str | None:
    exe = ffmpeg or shutil.which("ffmpeg")
    if exe is None:
        return "ffmpeg is not on PATH (apt-get install ffmpeg to measure the peer)"
    if not os.path.isfile(comp.PEER_FONT):
        return f"{comp.PEER_FONT} is missing (apt-get install fonts-wqy-microhei)"
    import subprocess

    try:
        listed = subprocess.run(
            [exe, "-hide_banner", "-filters"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ffmpeg -filters failed: {exc}"
    missing = [f for f in ("drawtext", "drawbox") if f" {f} " not in listed]
    if missing:
        return f"this ffmpeg has no {', '.join(missing)} filter"
    return None


class _TextFiles:
    """One file per distinct text, for drawtext's ``textfile``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._paths: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        path = self._paths.get(text)
        if path is None:
            path = str(self.directory / f"t{len(self._paths)}.txt")
            Path(path).write_text(text, encoding="utf-8")  # no newline: drawn as is
            self._paths[text] = path
        return path


async def _cpu(argv: list[str], log_path: Path) -> dict[str, Any]:
    r = await asyncio.to_thread(run_child, argv, FFMPEG_TIMEOUT_S, log_path)
    if r["exit_status"] != 0:
        tail = log_path.read_text(errors="replace")[-400:] if log_path.exists() else ""
        raise RuntimeError(f"ffmpeg exited with {r['exit_status']}: {tail}")
    return r


@dataclass
class _PeerRuns:
    """ffmpeg runs of one peer measurement: scripts in ``work``, stderr logs in ``logs``."""

    work: Path
    logs: Path

    async def slope(self, size: str, filters: list[str], extra: int, name: str) -> dict[str, Any]:
        """Per-frame and fixed user CPU of one filter chain: a short and a long run."""
        width, height = comp.SIZES[size]
        script = self.work / f"{name}.txt"
        script.write_text(",".join(filters), encoding="utf-8")
        short = comp.PEER_SHORT_FRAMES
        a = await _cpu(comp.peer_argv(width, height, short, script), self.logs / f"{name}-a.log")
        b = await _cpu(
            comp.peer_argv(width, height, short + extra, script), self.logs / f"{name}-b.log"
        )
        per_frame_s = (b["user_s"] - a["user_s"]) / extra
        return {
            "frames": [short, short + extra],
            "user_s": [a["user_s"], b["user_s"]],
            "sys_s": [a["sys_s"], b["sys_s"]],
            "wall_s": [a["wall_s"], b["wall_s"]],
            "max_rss_kib": b["max_rss_kib"],
            "per_frame_ms": per_frame_s * 1e3,
            "sys_per_frame_ms": (b["sys_s"] - a["sys_s"]) / extra * 1e3,
            "fixed_ms": (a["user_s"] - per_frame_s * short) * 1e3,
        }


async def measure_peer(
    frames: int,
    logs: Path,
    sizes: Sequence[str] = tuple(comp.SIZES),
    counts: Sequence[int] = comp.COUNTS,
) -> dict[str, Any]:
    """The peer over every size and count (see the module's docstring)."""
    from edge_node.overlay.measure import TextMeasure
    from edge_node.overlay.text import find_font

    logs.mkdir(parents=True, exist_ok=True)
    measure = TextMeasure(find_font())
    baselines: dict[str, Any] = {}
    configs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-compositor-") as tmp:
        runs = _PeerRuns(Path(tmp), logs)
        files = _TextFiles(Path(tmp))
        for size in sizes:
            width, height = comp.SIZES[size]
            base: dict[str, Any] = {}
            for name, filters in comp.BASELINE_FILTERS.items():
                extra = comp.peer_extra_frames(None, frames)
                base[name] = await runs.slope(size, filters, extra, f"{size}-{name}")
            copy = base["copy"]
            base["copy_ms"] = copy["per_frame_ms"] - base["null"]["per_frame_ms"]
            baselines[size] = base
            for n in counts:
                wl = comp.Workload.build(width, height, n, measure)
                filters = comp.peer_filters(wl, files)
                extra = comp.peer_extra_frames(n, frames)
                r = await runs.slope(size, filters, extra, f"{size}-n{n}")
                r.update(
                    size=size,
                    n=n,
                    filters=len(filters),
                    ms=r["per_frame_ms"] - copy["per_frame_ms"],
                    init_ms=r["fixed_ms"] - copy["fixed_ms"],
                )
                configs.append(r)
    return {"baselines": baselines, "configs": configs}


def example_script(size: str = "720p", n: int = 50) -> str:
    """The peer's filter script for one configuration, text files shown as
    ``<text>.txt`` (for the report)."""
    from edge_node.overlay.measure import TextMeasure
    from edge_node.overlay.text import find_font

    width, height = comp.SIZES[size]
    wl = comp.Workload.build(width, height, n, TextMeasure(find_font()))
    return ",".join(comp.peer_filters(wl, lambda text: f"<{text}>.txt"))


def render_both(size: str, n: int, frame_index: int, work: Path) -> tuple[Any, Any]:
    """The same frame drawn by the node's compositor and by the peer's filters (PIL RGB
    images): what "equal work" means, checked by the tests and shown in the report."""
    import subprocess

    import av

    from edge_node.overlay.blend import frame_planes
    from edge_node.overlay.compositor import Compositor
    from edge_node.overlay.measure import TextMeasure
    from edge_node.overlay.text import TextRenderer, find_font
    from edge_node.overlay.widgets import Painter

    width, height = comp.SIZES[size]
    font = find_font()
    wl = comp.Workload.build(width, height, n, TextMeasure(font))
    t = frame_index / comp.FPS
    painter = Painter(width, height, TextRenderer(font), probe_enabled=False)
    compositor = Compositor(painter)
    scene = wl.scene_at(t)
    compositor.set_scene(scene)
    painter.prewarm(scene, t)  # as the worker does: text is rendered off the frame path
    frame = av.VideoFrame(width, height, "yuv420p")
    y, u, v = frame_planes(frame)
    y[...], u[...], v[...] = 99, 128, 128  # 0x606060 in limited range, the peer's source
    compositor.composite(frame, t)
    node = cast(Any, frame).to_image()  # untyped in av's stubs

    script = work / "frame.txt"
    script.write_text(",".join(comp.peer_filters(wl, _TextFiles(work))), encoding="utf-8")
    png = work / "peer.png"
    argv = comp.peer_argv(width, height, frame_index + 1, script)
    argv[-3:] = ["-update", "1", "-y", str(png)]  # the last frame, as a PNG
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    from PIL import Image

    with Image.open(png) as img:
        peer = img.convert("RGB")
    return node, peer


def write_side_by_side(out: Path, size: str = "720p", n: int = 10, frame_index: int = 60) -> None:
    """``out``: the node's frame above the peer's, for the report."""
    from PIL import Image, ImageDraw, ImageFont

    with tempfile.TemporaryDirectory(prefix="bench-compositor-") as tmp:
        node, peer = render_both(size, n, frame_index, Path(tmp))
    w, h = node.size
    both = Image.new("RGB", (w, 2 * h))
    both.paste(node, (0, 0))
    both.paste(peer, (0, h))
    draw = ImageDraw.Draw(both)
    font = ImageFont.load_default(size=20)
    for label, y in (("node: Compositor(Painter)", 0), ("peer: ffmpeg drawtext + drawbox", h)):
        box = draw.textbbox((12, y + h - 34), label, font=font)
        draw.rectangle((0, box[1] - 6, box[2] + 12, y + h), fill=(0, 0, 0))
        draw.text((12, y + h - 34), label, fill=(255, 255, 0), font=font)
    both.save(out, format="PNG", optimize=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.compositor_run",
        description="time the node's compositor; prints one JSON object",
    )
    p.add_argument("--frames", type=int, default=comp.FRAMES)
    p.add_argument("--warmup", type=int, default=comp.WARMUP_FRAMES)
    p.add_argument("--sizes", default=",".join(comp.SIZES))
    p.add_argument("--counts", default=",".join(str(n) for n in comp.COUNTS))
    p.add_argument("--pool", type=int, default=comp.POOL_FRAMES)
    args = p.parse_args(argv)
    result = measure_node(
        frames=max(1, args.frames),
        warmup=max(0, args.warmup),
        sizes=[s for s in args.sizes.split(",") if s],
        counts=[int(n) for n in args.counts.split(",") if n],
        pool_frames=max(1, args.pool),
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
