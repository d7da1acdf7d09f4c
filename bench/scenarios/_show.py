"""The whole show as a scenario (``show-720p``, ``show-1080p``; ``soak`` builds on it).

A helper module (its name starts with ``_``, so ``discover()`` skips it): the
scenario modules ``show_720p``, ``show_1080p`` and ``soak`` subclass ``Show`` with a
picture size. One run is ``bench.show_run.run``; the peer, run by the harness with
the node stopped, is glass's (``GlassPeer``: the floor, then the ffmpeg CLI as an
RTMP middle box, as is and slice-threaded) at the same size, with as many scrolling
``drawtext`` filters as the node has danmaku on screen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench import glass, glass_plot, plot, show, show_run
from bench import interaction as ix
from bench.figures import Figure, Figures
from bench.glass_run import GlassPeer, pick_font
from bench.scenarios import RunContext, RunResult, Scenario
from bench.scenarios.glass import push_port
from bench.series_plots import runs_series_chart

if TYPE_CHECKING:
    from bench.report import Suite

PATHS = {  # figure prefix -> label in plots
    "whep": "node, WHEP",
    "push": "node, RTMP push",
    "peer": "ffmpeg CLI",
    "peer_slice": "ffmpeg, slice threads",
    "floor": "floor",
    "probe": "interaction (probe)",
}


@dataclass
class ShowPeer(GlassPeer):
    """Glass's peer and floor, with ``show.DANMAKU`` scrolling texts in the middle box."""

    name: ClassVar[str] = f"ffmpeg-cli RTMP in -> {show.DANMAKU} x drawtext -> x264 -> RTMP out"

    def describe(self, seconds: float) -> dict[str, Any]:
        out = super().describe(seconds)
        graph = self.video_filter or ""
        short = f"'<{show.DANMAKU} x drawtext: see peer.filter>'"
        out["command"] = str(out["command"]).replace(graph, short)
        for variant in out.get("variants", {}).values():
            variant["command"] = str(variant["command"]).replace(graph, short)
        out["filter"] = graph
        out["note"] = (
            f"{self.size} picture; the middle box draws {show.DANMAKU} scrolling drawtext "
            "texts (32 px, 2 px border, ten lanes, every text on screen at every frame), as "
            "many as the node has danmaku; the interaction path has no peer (ffmpeg has no "
            "way in for an event): the seed's 200 ms bound stands beside it. " + out["note"]
        )
        return out


def show_peer(size: show.Size) -> ShowPeer:
    font = pick_font()
    return ShowPeer(
        font=font, size=size.text, video_filter=show.peer_filter(show.DANMAKU, size, font)
    )


def describe(size: show.Size) -> str:
    return (
        f"the whole show at {size.label}30: RTMP publisher -> node (50 danmaku, 2,000 "
        "events/s over WebSockets, probes) -> WHEP viewers and RTMP push; video "
        "glass-to-glass and interaction p50/p99, CPU/RSS over time, per-stage histograms; "
        f"ffmpeg CLI ({show.DANMAKU} x drawtext) as the peer, publisher -> receiver as the floor"
    )


class Show(Scenario):
    size: ClassVar[show.Size]
    default_seconds = 30.0
    default_runs = 3
    ramp_s: ClassVar[float] = show.RAMP_S  # the load alone before the publisher starts

    @property
    def node_env(self) -> Mapping[str, str]:  # type: ignore[override]
        return show.node_env(self.size, f"rtmp://127.0.0.1:{push_port()}/live/out")

    def spec(self, seconds: float) -> show_run.ShowSpec:
        """How a run samples and slices: every 0.5 s, latency per second."""
        return show_run.ShowSpec(size=self.size, ramp_s=self.ramp_s)

    async def run_once(self, ctx: RunContext) -> RunResult:
        return await show_run.run(ctx, self.spec(ctx.seconds))

    def derived_figures(self, figures: Mapping[str, Figure]) -> Figures:
        return show.derived(figures)

    def write_plots(self, suite: Suite, out_dir: Path) -> list[str]:
        return plots(suite, out_dir, self.size, self.spec(suite.seconds).slice_s)


def plots(suite: Suite, out_dir: Path, size: show.Size, slice_s: float) -> list[str]:
    """show.png (p50/p99 of every path beside peer, floor and bound), show_cdf.png
    (every frame and probe of every run), latency and memory over time."""
    written: list[str] = []
    f = suite.figures

    def v(name: str) -> float | None:
        fig = f.get(name)
        return fig.value if fig is not None else None

    present = [p for p in PATHS if v(f"{p}_latency_p50_ms") is not None]
    if present:
        labels = [PATHS[p] for p in present] + ["seed bound"]
        bars = {
            q: [v(f"{p}_latency_{q}_ms") for p in present] + [show.SEED_BOUND_MS]
            for q in ("p50", "p99")
        }
        plot.bar_chart(
            out_dir / "show.png",
            f"show {size.label}30: latency, median of {len(suite.runs)} runs",
            labels,
            bars,
            "ms",
        )
        written.append("show.png")
    pooled = _pooled(suite, out_dir / "logs", slice_s)
    series = {label: glass.cdf_points(values) for label, values in pooled.items() if values}
    if series:
        top = max(glass.percentile(vals, 99.5) or 0.0 for vals in pooled.values() if vals)
        glass_plot.cdf_chart(
            out_dir / "show_cdf.png",
            "latency CDF: every frame and probe of every run (x clipped at p99.5)",
            series,
            "ms from sent to decoded",
            x_max=top * 1.1,
        )
        written.append("show_cdf.png")
    over_time: dict[str, list[tuple[float, float]]] = {}
    for i, run in enumerate(suite.runs, 1):
        for key, label in (
            ("whep_latency_p99_ms", "video p99"),
            ("probe_latency_p99_ms", "probe p99"),
        ):
            points = run.series.get(key)
            if points:
                over_time[f"run {i} {label}"] = list(points)
    if over_time:
        plot.line_chart(
            out_dir / "latency_time.png",
            f"latency over time, p99 per {slice_s:g} s of send time",
            over_time,
            "seconds since the path's first send",
            "ms",
        )
        written.append("latency_time.png")
    written += runs_series_chart(
        suite, out_dir, "memory.png", "node_rss_mib", "node RSS (control + worker)", "MiB"
    )
    return written


def _pooled(suite: Suite, logs: Path, slice_s: float) -> dict[str, list[float]]:
    pooled: dict[str, list[float]] = {label: [] for label in PATHS.values()}
    for i in range(1, len(suite.runs) + 1):
        sent = glass.read_log(logs / f"run{i}-publisher-frames.log")
        for p in ("whep", "push"):
            got = glass.read_log(logs / f"run{i}-{p}-frames.log")
            pooled[PATHS[p]] += show.video_join(sent, got, slice_s).latencies_ms
        pooled[PATHS["probe"]] += ix.join_files(
            logs / f"run{i}-probes-sent.log", logs / f"run{i}-probes-seen.log"
        ).latencies_ms
    for i in range(1, len(suite.peer_runs) + 1):
        for p in ("peer", "peer_slice", "floor"):
            pooled[PATHS[p]] += glass.join_files(
                logs / f"peer{i}-{p}-publisher-frames.log",
                logs / f"peer{i}-{p}-receiver-frames.log",
            ).latencies_ms
    return pooled
