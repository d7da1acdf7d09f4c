"""``compositor``: per-frame cost of drawing the overlay (issue 4).

The node's compositor (``Compositor(Painter(...))``) timed per frame on real yuv420p
frames at 720p and 1080p with 0, 10, 50 and 200 live danmaku plus a vote bar,
median and p99 over 1,000 frames, sprites prewarmed (the cold-cache cost reported
apart); the same overlay drawn by the ffmpeg CLI's ``drawtext`` and ``drawbox``
filters as the peer, and the ratio peer / node at equal work.

This scenario measures a stage, not a running node: the timing runs in a child
process of the bench (``bench.compositor_run``) that imports the overlay code. The
harness always starts a node; this scenario asks for a tiny one (320x180 at 5 fps)
so that it costs next to nothing while the compositor is timed, and reports what it
and everything else on the machine used meanwhile. ``--seconds`` is the scene time
each configuration animates (frames = seconds x 30; default 1,000 frames).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench import compositor as comp
from bench import compositor_run, procstat
from bench.figures import Figure, Figures
from bench.peer import ffmpeg_version
from bench.scenarios import Check, Peer, RunContext, RunResult, Scenario

if TYPE_CHECKING:
    from bench.report import Suite


def frames_for(seconds: float) -> int:
    return max(1, round(seconds * comp.FPS))


def machine_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine since boot (/proc/stat, all but idle and
    iowait)."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
    return busy / procstat.CLOCK_TICKS_PER_S


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Window:
    """Machine-wide busy cores, and those of the bench's own children, over a span."""

    def __init__(self, pids: list[int] | None = None) -> None:
        self.pids = pids or []
        self.t0 = time.monotonic()
        self.busy0 = machine_busy_s()
        self.children0 = _children_cpu_s()
        self.pid_cpu0 = self._pid_cpu()

    def _pid_cpu(self) -> float | None:
        total = 0.0
        for pid in self.pids:
            stat = procstat.read(pid)
            if stat is None:
                return None
            total += stat.cpu_s
        return total

    def figures(self, prefix: str) -> Figures:
        wall = time.monotonic() - self.t0
        busy1 = machine_busy_s()
        children = _children_cpu_s() - self.children0
        out: Figures = {}
        if wall <= 0:
            return out
        if self.busy0 is not None and busy1 is not None:
            machine = (busy1 - self.busy0) / wall
            out[f"{prefix}machine_busy_cores"] = Figure(
                machine, "cores", None, "whole machine (/proc/stat) while measuring"
            )
            out[f"{prefix}other_busy_cores"] = Figure(
                max(0.0, machine - children / wall),
                "cores",
                None,
                "the machine minus the measuring processes: contention; near 0 is a quiet run",
            )
        pid_cpu1 = self._pid_cpu()
        if self.pids and self.pid_cpu0 is not None and pid_cpu1 is not None:
            out["idle_node_cpu_cores"] = Figure(
                (pid_cpu1 - self.pid_cpu0) / wall,
                "cores",
                None,
                "the harness's 320x180 node while the compositor was timed",
            )
        return out


class CompositorPeer(Peer):
    name: ClassVar[str] = "ffmpeg CLI drawtext + drawbox"

    def __init__(
        self,
        sizes: tuple[str, ...] = tuple(comp.SIZES),
        counts: tuple[int, ...] = comp.COUNTS,
    ) -> None:
        self.sizes = sizes
        self.counts = counts

    def unavailable(self) -> str | None:
        return compositor_run.peer_unavailable()

    def describe(self, seconds: float) -> dict[str, Any]:
        frames = frames_for(seconds)
        short = comp.PEER_SHORT_FRAMES
        return {
            "name": self.name,
            "command": " ".join(
                comp.peer_argv(1280, 720, short + comp.peer_extra_frames(50, frames), Path("S"))
            ),
            "version": ffmpeg_version(),
            "note": (
                "S = a filter script: one drawtext per danmaku (CJK font "
                f"{comp.PEER_FONT}, fontsize 32, borderw 2, x = w-mod(t*speed+phase*(w+tw),"
                "w+tw)), drawbox + drawtext for the vote bar; every configuration runs for "
                f"{short} frames and for {short} + {comp.PEER_EXTRA_FRAMES} "
                f"({comp.PEER_EXTRA_FRAMES_CHEAP} for N <= 10); per-frame cost = user CPU "
                "difference / frame difference (start-up cancels), minus the same for a "
                "2x2 drawbox (the frame copy the first drawing filter makes); run with the "
                "node stopped"
            ),
            "frames_short": short,
            "frames_extra": {str(n): comp.peer_extra_frames(n, frames) for n in self.counts},
            "example_filter_script_720p_n10": compositor_run.example_script("720p", 10),
        }

    async def run(self, seconds: float, log_path: Path) -> Figures:
        logs = log_path.with_suffix("")  # logs/peerN/: one stderr log per ffmpeg run
        window = Window()
        result = await compositor_run.measure_peer(
            frames_for(seconds), logs, self.sizes, self.counts
        )
        figures = comp.peer_figures(result)
        figures.update(window.figures("peer_"))
        log_path.write_text(json.dumps(result, indent=1) + "\n")
        return figures


class CompositorScenario(Scenario):
    name = "compositor"
    description = (
        "overlay composite time per frame, 720p/1080p x 0/10/50/200 danmaku + vote bar: "
        "median, p99, cold cache; ffmpeg drawtext/drawbox filters as the peer, ratio"
    )
    default_seconds = comp.FRAMES / comp.FPS
    default_runs = 3
    # The harness always starts a node; this one is as small as the config allows.
    node_env: ClassVar[Mapping[str, str]] = {
        "EDGE_NODE_VIDEO__WIDTH": "320",
        "EDGE_NODE_VIDEO__HEIGHT": "180",
        "EDGE_NODE_VIDEO__FPS": "5",
        "EDGE_NODE_VIDEO__BITRATE_KBPS": "100",
    }
    peer: ClassVar[Peer | None] = CompositorPeer()

    async def run_once(self, ctx: RunContext) -> RunResult:
        frames = frames_for(ctx.seconds)
        pids, _ = ctx.node.local_pids()
        window = Window(pids)
        result = await compositor_run.run_node_child(
            frames, ctx.log_path("compositor"), tuple(comp.SIZES), comp.COUNTS
        )
        figures = comp.node_figures(result)
        figures.update(window.figures(""))
        raw = {"compositor": result, "method": comp.METHOD}
        return RunResult(figures=figures, checks=checks(result), raw=raw)

    def derived_figures(self, figures: Mapping[str, Figure]) -> Figures:
        return comp.derived(figures)

    def write_plots(self, suite: Suite, out_dir: Path) -> list[str]:
        written = comp.write_plot(suite.figures, out_dir, len(suite.runs))
        if suite.peer is not None:
            # Equal work, shown: one frame (720p, 10 danmaku, t = 2 s) from each side.
            try:
                compositor_run.write_side_by_side(out_dir / "compositor_frames.png")
                written.append("compositor_frames.png")
            except (OSError, subprocess.SubprocessError) as exc:
                print(f"compositor_frames.png not written: {exc}", file=sys.stderr)
        return written


def checks(result: Mapping[str, Any]) -> list[Check]:
    configs = result.get("configs") or []
    rendered = [f"{c['size']} n={c['n']}" for c in configs if c["frame_path_renders"]]
    short = [
        f"{c['size']} n={c['n']}: {c['visible_mean']:.1f}"
        for c in configs
        if c["visible_mean"] < c["n"] - 0.5
    ]
    out = [
        Check(
            "sprites prewarmed: no text rendered on the timed frames",
            not rendered,
            ", ".join(rendered) or f"{len(configs)} configurations",
        ),
        Check(
            "every danmaku on screen at every frame (mean visible >= N - 0.5)",
            not short,
            ", ".join(short) or "yes",
        ),
    ]
    target = next((c for c in configs if c["size"] == "720p" and c["n"] == 50), None)
    if target is not None:
        out.append(
            Check(
                f"issue 4 target: 720p with 50 danmaku <= {comp.TARGET_720P_N50_MS:g} ms "
                "per frame (median)",
                target["p50_ms"] <= comp.TARGET_720P_N50_MS,
                f"median {target['p50_ms']:.3f} ms, p99 {target['p99_ms']:.3f} ms",
            )
        )
    return out


SCENARIO = CompositorScenario()
