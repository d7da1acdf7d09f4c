"""One measured WHEP run: K viewer processes watch the node while it is sampled.

Shared by the scenarios that watch the stream (``whep``, ``whep2``, ``smoke``, and
later ones that add a publisher or overlays). The window over which the node's
figures are taken opens when every viewer has its first frame and lasts N seconds;
viewers hold their sessions until it closes. Set-up and tear-down stay out of the
steady-state numbers (time to first frame is reported on its own); each viewer's own
figures are over the N seconds after its first frame.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

from bench import prom
from bench.figures import Figure, Figures
from bench.sampler import Sample, Sampler, cpu_cores, cpu_series, gauge_values, rss_max_bytes
from bench.scenarios import Check, RunContext, RunResult
from bench.viewers import ViewerProcess

# The node's per-frame stage histograms: figure prefix -> metric name.
STAGES: dict[str, str] = {
    "queue_wait": "edge_node_queue_wait_seconds",
    "composite": "edge_node_composite_seconds",
    "encode": "edge_node_encode_seconds",
    "capture_to_fanout": "edge_node_capture_to_fanout_seconds",
}
QUANTILE_NOTE = "upper bound of the histogram bucket holding it"
MIB = 1024 * 1024


def _mib(v: int | None) -> float | None:
    return v / MIB if v is not None else None


def _viewer_figures(prefix: str, r: dict[str, Any]) -> Figures:
    frames = int(r.get("frames") or 0)
    missed = int(r.get("missed") or 0)
    expected = frames + missed
    return {
        f"{prefix}_frames_per_second": Figure(r.get("frames_per_second"), "frames/s", "higher"),
        f"{prefix}_frames_received": Figure(frames, "frames"),
        f"{prefix}_missed_frames": Figure(
            missed, "frames", "lower", "frame-counter values never received"
        ),
        f"{prefix}_missed_percent": Figure(
            100.0 * missed / expected if expected else None, "%", "lower"
        ),
        f"{prefix}_duplicate_frames": Figure(r.get("duplicates", 0), "frames", "lower"),
        f"{prefix}_reordered_frames": Figure(r.get("reordered", 0), "frames", "lower"),
        f"{prefix}_counter_discontinuities": Figure(r.get("discontinuities", 0), "count", "lower"),
        f"{prefix}_time_to_first_frame_ms": Figure(
            r.get("time_to_first_frame_ms"), "ms", "lower", "from the WHEP POST"
        ),
        f"{prefix}_max_frame_interval_ms": Figure(r.get("max_frame_interval_ms"), "ms", "lower"),
    }


def viewer_figures(results: Sequence[dict[str, Any]]) -> Figures:
    """``viewer_*`` figures; with several viewers the worst of them, plus ``viewerN_*``."""
    if len(results) == 1:
        return _viewer_figures("viewer", results[0])
    per = [_viewer_figures(f"viewer{i}", r) for i, r in enumerate(results, 1)]
    out: Figures = {}
    for figures in per:
        for name, f in figures.items():
            key = "viewer_" + name.split("_", 1)[1]
            if f.value is None:
                out.setdefault(key, Figure(None, f.unit, f.better))
                continue
            current = out.get(key)
            worse = min if f.better == "higher" else max
            if current is None or current.value is None:
                out[key] = Figure(f.value, f.unit, f.better, "worst viewer")
            else:
                out[key] = Figure(worse(current.value, f.value), f.unit, f.better, "worst viewer")
    fps = [r.get("frames_per_second") or 0.0 for r in results]
    out["viewer_mean_frames_per_second"] = Figure(statistics.fmean(fps), "frames/s", "higher")
    for figures in per:
        out.update(figures)
    return out


def stage_figures(start: prom.Samples | None, end: prom.Samples | None) -> Figures:
    """p50, p99 and mean per stage over the window (end minus start of the histograms)."""
    out: Figures = {}
    delta = prom.diff(end, start) if end is not None else None
    for stage, metric in STAGES.items():
        hist = prom.histogram(delta, metric) if delta is not None else None
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            v = hist.quantile(q) if hist is not None else None
            out[f"{stage}_{label}_ms"] = Figure(
                v * 1000 if v is not None else None, "ms", "lower", QUANTILE_NOTE
            )
        mean = hist.mean if hist is not None else None
        out[f"{stage}_mean_ms"] = Figure(mean * 1000 if mean is not None else None, "ms", "lower")
        out[f"{stage}_observations"] = Figure(hist.count if hist is not None else None, "frames")
    return out


def node_figures(
    sampler: Sampler, start: Sample, end: Sample, pids: Sequence[int], pid_reason: str | None
) -> Figures:
    window = sampler.between(start, end)
    out: Figures = {}
    if pids:
        control, worker = pids[0], pids[1]
        out["node_cpu_cores"] = Figure(
            cpu_cores(start, end), "cores", "lower", "control + media worker"
        )
        out["control_cpu_cores"] = Figure(cpu_cores(start, end, control), "cores", "lower")
        out["worker_cpu_cores"] = Figure(cpu_cores(start, end, worker), "cores", "lower")
        out["node_rss_max_mib"] = Figure(
            _mib(rss_max_bytes(window)), "MiB", "lower", "largest sum over the samples"
        )
        out["control_rss_max_mib"] = Figure(_mib(rss_max_bytes(window, control)), "MiB", "lower")
        out["worker_rss_max_mib"] = Figure(_mib(rss_max_bytes(window, worker)), "MiB", "lower")
    else:
        for name, unit in (("node_cpu_cores", "cores"), ("node_rss_max_mib", "MiB")):
            out[name] = Figure(None, unit, "lower", pid_reason or "")
    out.update(stage_figures(start.metrics, end.metrics))

    def med(name: str) -> float | None:
        values = gauge_values(window, name)
        return statistics.median(values) if values else None

    out["node_frames_in_per_second"] = Figure(med("edge_node_frames_in_per_second"), "frames/s")
    out["node_frames_out_per_second"] = Figure(
        med("edge_node_frames_out_per_second"), "frames/s", "higher", "median of the samples"
    )
    bitrate = med("edge_node_bitrate_bits_per_second")
    out["node_bitrate_kbps"] = Figure(bitrate / 1000 if bitrate is not None else None, "kbit/s")
    encoders = gauge_values(window, "edge_node_video_encoders")
    out["node_video_encoders_max"] = Figure(max(encoders) if encoders else None, "encoders")
    out["node_video_encoders_min"] = Figure(min(encoders) if encoders else None, "encoders")
    viewers = gauge_values(window, "edge_node_viewers")
    out["node_viewers_max"] = Figure(max(viewers) if viewers else None, "viewers")
    if start.metrics is not None and end.metrics is not None:
        dropped = prom.by_label(
            prom.diff(end.metrics, start.metrics), "edge_node_frames_dropped_total", "stage"
        )
        out["node_frames_dropped"] = Figure(sum(dropped.values()), "frames", "lower", "all stages")
        for stage, n in sorted(dropped.items()):
            out[f"node_frames_dropped_{stage}"] = Figure(n, "frames", "lower")
    out["window_s"] = Figure(end.t - start.t, "s", None, "steady-state window of the run")
    return out


async def measure(ctx: RunContext, viewers: int) -> RunResult:
    """Watch the node with ``viewers`` viewer processes for ``ctx.seconds``."""
    await ctx.node.health(ctx.http)
    health_before = ctx.node.last_health or {}
    pids, pid_reason = ctx.node.local_pids()
    sampler = Sampler(ctx.http, f"{ctx.node.base_url}/metrics", pids)
    procs: list[ViewerProcess] = []
    sampler.start()
    try:
        procs = list(
            await asyncio.gather(
                *(
                    ViewerProcess.spawn(
                        f"{ctx.run_index}.{i}",
                        ctx.node.base_url,
                        ctx.seconds,
                        ctx.log_path(f"viewer{i}"),
                    )
                    for i in range(1, viewers + 1)
                )
            )
        )
        await asyncio.gather(*(p.first_frame.wait() for p in procs))
        start = await sampler.sample()
        # Every viewer holds its session until released, so the node serves all of
        # them for the whole window, however late one of them started.
        await asyncio.sleep(max(0.0, start.t + ctx.seconds - time.monotonic()))
        end = await sampler.sample()
        await asyncio.wait_for(
            asyncio.gather(*(p.window_end.wait() for p in procs)), ctx.seconds + 30.0
        )
        results = list(await asyncio.gather(*(p.finish() for p in procs)))
    finally:
        await sampler.stop()
        for p in procs:
            await p.stop()
    await ctx.node.health(ctx.http)
    health_after = ctx.node.last_health or {}

    figures = viewer_figures(results)
    figures.update(node_figures(sampler, start, end, pids, pid_reason))
    restarts = _restarts(health_after) - _restarts(health_before)
    figures["node_worker_restarts"] = Figure(restarts, "restarts", "lower")

    checks = [
        Check(
            f"viewer {i} received frames",
            int(r.get("frames") or 0) > 0,
            r.get("error") or f"{r.get('frames')} frames, {r.get('frames_per_second')} fps",
        )
        for i, r in enumerate(results, 1)
    ]
    encoders = figures["node_video_encoders_max"].value
    checks.append(
        Check(
            "one video encoder whatever the viewers",
            encoders == 1,
            f"edge_node_video_encoders max {encoders} with {viewers} viewer(s)",
        )
    )
    series = {"node_cpu_cores": cpu_series(sampler.samples)} if pids else {}
    raw = {
        "viewers": results,
        "pids": {"control": pids[0], "worker": pids[1]} if pids else None,
        "pids_unavailable": pid_reason,
        "samples": len(sampler.samples),
    }
    return RunResult(figures=figures, checks=checks, series=series, raw=raw)


def _restarts(health: dict[str, Any]) -> int:
    worker = health.get("worker") or {}
    value = worker.get("restarts", 0)
    return int(value) if isinstance(value, int) else 0
