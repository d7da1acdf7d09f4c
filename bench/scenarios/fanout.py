"""``fanout``: WHEP viewer ramp, 1, 10, 50, 100 viewers (issue 8: CPU per viewer, and 50
viewers at 720p30 on the two cores).

Per run, against the demo node (its 720p30 test pattern, ``webrtc.max_viewers``
raised to 250), per step: ``bench.fanout_viewer`` processes (at most
``VIEWERS_PER_PROCESS`` sessions each) set up N WHEP sessions; once every session
has a frame, the node is sampled (/proc, /metrics) over a window of ``--seconds``
while every session counts the frames, kbit and packets it receives; the first
session decodes and checks the frame counter. Then the sessions are DELETEd and the
next step starts from none.

Figures per step (``fanout_<N>_*``): every viewer's fps (min, median), the decoding
viewer's fps and missed counters, packets lost, node CPU and RSS; over the steps:
CPU per viewer (the least-squares slope of node CPU over N), RSS per viewer, and the
largest step whose every viewer held 28.5 fps. The viewers share the two cores with
the node: ``fanout_<N>_clients_cpu_cores`` says how much they took.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench import fanout, live_clients, prom
from bench.figures import Figure, Figures, fmt
from bench.glass_procs import BusyMeter, JsonChild
from bench.sampler import Sampler, cpu_cores, cpu_series, gauge_values, rss_max_bytes
from bench.scenarios import Check, Peer, RunContext, RunResult, Scenario
from bench.series_plots import rss_series, runs_series_chart, xy_chart
from bench.trend import linear_fit

if TYPE_CHECKING:
    from bench.report import Suite

READY_TIMEOUT_S = 30.0
SETUP_S_PER_VIEWER = 0.5  # on top of READY_TIMEOUT_S: sessions are set up 8 at a time
MIB = 1024 * 1024


class Fanout(Scenario):
    name = "fanout"
    description = (
        "WHEP viewer ramp 1/10/50/100 at 720p30 (many sessions per viewer process, one "
        "decoding): fps per viewer, node CPU and RSS per step; CPU per viewer (slope), "
        "whether 50 viewers hold 30 fps"
    )
    default_seconds = 10.0  # each step's window
    default_runs = 3
    node_env: ClassVar[Mapping[str, str]] = {"EDGE_NODE_WEBRTC__MAX_VIEWERS": "250"}
    peer: ClassVar[Peer | None] = None

    def __init__(
        self,
        steps: Sequence[int] = fanout.STEPS,
        per_process: int = fanout.VIEWERS_PER_PROCESS,
    ) -> None:
        if not steps or any(n < 1 for n in steps) or per_process < 1:
            raise ValueError(f"steps {list(steps)} and per_process {per_process} must be >= 1")
        self.steps = tuple(steps)
        self.per_process = per_process

    async def run_once(self, ctx: RunContext) -> RunResult:
        return await _run(ctx, self.steps, self.per_process)

    def write_plots(self, suite: Suite, out_dir: Path) -> list[str]:
        return plots(suite, out_dir)


async def _run(ctx: RunContext, steps: Sequence[int], per_process: int) -> RunResult:
    node = ctx.node
    await node.health(ctx.http)
    pids, pid_reason = node.local_pids()
    sampler = Sampler(ctx.http, f"{node.base_url}/metrics", pids)
    results: list[fanout.StepResult] = []
    figures: Figures = {}
    raw_steps: list[dict[str, Any]] = []
    encoders: list[float] = []
    sampler.start()
    try:
        for k, n in enumerate(steps, 1):
            step, extra, raw = await _step(ctx, sampler, k, n, per_process, pids)
            results.append(step)
            figures.update(fanout.step_figures(step))
            figures.update(extra)
            raw_steps.append(raw)
            encoders += raw.pop("encoders", [])
            _say(step, extra)
    finally:
        await sampler.stop()
    figures.update(fanout.slope_figures(results))
    checks = [
        Check(
            f"{s.viewers} viewers: every session played",
            s.playing == s.viewers,
            f"{s.playing} of {s.viewers}",
        )
        for s in results
    ]
    target = fanout.target_step(results)
    if target is not None:
        fps = target.fps()
        checks.append(
            Check(
                f"{fanout.TARGET_VIEWERS} viewers at 720p30 hold {fanout.MIN_FPS:g} fps (target)",
                target.holds(),
                f"slowest {min(fps):.1f} fps, CPU {fmt(target.node_cpu_cores, 'cores')} cores",
            )
        )
    checks.append(
        Check(
            "one video encoder whatever the viewers",
            bool(encoders) and max(encoders) == 1,
            f"edge_node_video_encoders max {max(encoders) if encoders else None}",
        )
    )
    series: dict[str, list[tuple[float, float]]] = {
        "node_cpu_cores": cpu_series(sampler.samples),
        "node_rss_mib": rss_series(sampler.samples),
        "fanout_cpu_cores": [(s.viewers, s.node_cpu_cores) for s in results if s.node_cpu_cores],
        "fanout_fps_min": [(s.viewers, min(s.fps())) for s in results if s.fps()],
        "fanout_rss_mib": [(s.viewers, s.node_rss_mib) for s in results if s.node_rss_mib],
    }
    raw = {"steps": raw_steps, "pids_unavailable": pid_reason}
    return RunResult(figures, checks, series, raw)


async def _step(
    ctx: RunContext, sampler: Sampler, k: int, n: int, per_process: int, pids: list[int]
) -> tuple[fanout.StepResult, Figures, dict[str, Any]]:
    url = ctx.node.base_url
    group = live_clients.ClientGroup()
    counts = live_clients.split_count(n, per_process)
    busy = BusyMeter()
    windows: list[dict[str, Any] | None] = []
    raw: dict[str, Any] = {"viewers": n, "processes": len(counts)}
    edges = []
    cpu: list[dict[int, float]] = []
    started = time.monotonic()
    setup_s = None
    try:
        procs: list[JsonChild] = []
        for i, count in enumerate(counts):
            argv = live_clients.fanout_argv(url, count, 1 if i == 0 else 0, ctx.seconds + 60)
            name = f"step{k}-viewers{i + 1}"
            procs.append(group.add(await live_clients.spawn(name, argv, ctx.log_path(name), {})))
        timeout = READY_TIMEOUT_S + SETUP_S_PER_VIEWER * max(counts)
        playing = [await p.wait_event("playing", timeout) for p in procs]
        got = [p.get("playing") if p else None for p in playing]
        if got == counts:
            setup_s = time.monotonic() - started
        raw["playing"] = got
        edges.append(await sampler.sample())
        busy.start()
        cpu.append(live_clients.children_cpu_s(exclude=pids))
        for p in procs:
            await group.send_line(p, "start")
        await asyncio.sleep(max(0.0, edges[0].t + ctx.seconds - time.monotonic()))
        edges.append(await sampler.sample())
        busy.stop()
        cpu.append(live_clients.children_cpu_s(exclude=pids))
        for p in procs:
            await group.send_line(p, "stop")
        windows = [await p.wait_event("window", READY_TIMEOUT_S) for p in procs]
    finally:
        await group.stop()
    e0, e1 = edges[0], edges[-1]
    window_samples = sampler.between(e0, e1)
    rss = rss_max_bytes(window_samples)
    step = fanout.StepResult(
        viewers=n,
        rows=fanout.rows_of(windows),
        node_cpu_cores=cpu_cores(e0, e1) if len(edges) == 2 else None,
        node_rss_mib=rss / MIB if rss is not None else None,
        setup_s=setup_s,
    )
    key = f"fanout_{n}"
    extra: Figures = {
        f"{key}_machine_busy_cores": Figure(busy.cores, "cores", None, "the whole machine"),
    }
    if len(cpu) == 2 and e1.t > e0.t:
        clients = live_clients.cpu_cores_between(cpu[0], cpu[1], e1.t - e0.t)
        extra[f"{key}_clients_cpu_cores"] = Figure(clients, "cores", None, "viewer processes")
        if busy.cores is not None and step.node_cpu_cores is not None:
            extra[f"{key}_other_busy_cores"] = Figure(
                max(0.0, busy.cores - clients - step.node_cpu_cores),
                "cores",
                None,
                "machine busy - node - viewers: other work on the box (contention)",
            )
    if e0.metrics is not None and e1.metrics is not None:
        dropped = prom.by_label(
            prom.diff(e1.metrics, e0.metrics), "edge_node_frames_dropped_total", "stage"
        )
        extra[f"{key}_node_frames_dropped_subscriber"] = Figure(
            dropped.get("subscriber", 0.0),
            "frames",
            "lower",
            "viewers the node's fan-out found a whole queue behind (flushed to a keyframe)",
        )
    raw["encoders"] = gauge_values(window_samples, "edge_node_video_encoders")
    raw["results"] = [group.results.get(name) for name in group.results]
    return step, extra, raw


def _say(step: fanout.StepResult, extra: Figures) -> None:
    fps = step.fps()
    slowest = min(fps) if fps else None
    busy = extra.get(f"fanout_{step.viewers}_machine_busy_cores")
    print(
        f"  {step.viewers} viewers: playing {step.playing}, fps min {fmt(slowest)}"
        f", node {fmt(step.node_cpu_cores, 'cores')} cores, RSS {fmt(step.node_rss_mib)} MiB, "
        f"machine busy {fmt(busy.value if busy else None, 'cores')} cores",
        file=sys.stderr,
        flush=True,
    )


def plots(suite: Suite, out_dir: Path) -> list[str]:
    """fanout_cpu.png (node CPU vs viewers per run, with the fit of the medians),
    fanout_fps.png (slowest viewer's fps vs viewers), fanout_rss.png and memory.png."""
    written: list[str] = []
    for series, file_name, title, y_label in (
        ("fanout_cpu_cores", "fanout_cpu.png", "node CPU vs WHEP viewers", "cores"),
        ("fanout_fps_min", "fanout_fps.png", "slowest viewer's fps vs WHEP viewers", "frames/s"),
        ("fanout_rss_mib", "fanout_rss.png", "node RSS vs WHEP viewers", "MiB"),
    ):
        lines = {
            f"run {i}": list(run.series[series])
            for i, run in enumerate(suite.runs, 1)
            if run.series.get(series)
        }
        if not lines:
            continue
        if series == "fanout_cpu_cores":
            fit = linear_fit([p for points in lines.values() for p in points])
            xs = sorted({x for points in lines.values() for x, _ in points})
            if fit is not None and len(xs) > 1:
                lines[f"fit: {fit[0]:.4f} cores/viewer"] = [(x, fit[1] + fit[0] * x) for x in xs]
        bound = ("28.5 fps", 28.5) if series == "fanout_fps_min" else None
        xy_chart(out_dir / file_name, title, lines, "WHEP viewers", y_label, bound=bound)
        written.append(file_name)
    written += runs_series_chart(
        suite, out_dir, "memory.png", "node_rss_mib", "node RSS (control + worker)", "MiB"
    )
    return written


SCENARIO = Fanout()
