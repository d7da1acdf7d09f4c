"""``glass``: video glass-to-glass latency at 720p30 (issue 3).

A publisher in its own process (``edge_node.clients.rtmp_publish``) stamps a frame
counter (the contract's bottom-left barcode) on every frame and logs when it sent
it; receivers in their own processes read the counter back from every decoded
picture and log when they got it (one machine, one CLOCK_MONOTONIC). Per run:

- node, WHEP: publisher -> node (RTMP ingest, decode, composite, x264) -> WHEP
  viewer (``bench.glass_viewer``);
- node, RTMP push: the same frames -> the node's push (``push.url``) ->
  ``bench.rtmp_receiver``; both node paths are measured on the same publisher
  session, so the node's CPU and RSS are for ingest plus both egresses;
- node, WHIP in (``whip_in_*``): then, on a session of its own, a WHIP publisher
  (``bench.whip_publisher``, the same picture and frames log over WebRTC, counters
  from ``WHIP_START``) -> node (WHIP ingest, decode, composite, x264) -> a second
  WHEP viewer; the node's CPU over that window is ``whip_in_node_cpu_cores``;
- peer (with the node stopped): publisher -> the ffmpeg CLI (RTMP listen, decode,
  ``drawtext``, x264 ultrafast/zerolatency, RTMP out) -> receiver; once as is
  (``peer_*``) and once with a slice-threaded decoder (``peer_slice_*``: ffmpeg's
  default frame threads hold about two frames back);
- floor (with the node stopped): publisher -> receiver, no middle box.

Latency per frame = receiver time - publisher send time of the same counter, over
the frames sent after the first second; p50/p90/p99/max, frames delivered and lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench import glass, glass_plot, plot
from bench.figures import Figure, Figures
from bench.glass_procs import BusyMeter, JsonChild, viewer_argv
from bench.glass_run import (
    GlassPeer,
    PublishOutcome,
    expected,
    publish_through,
    run_publisher,
    start_receiver,
    whip_publisher_argv,
)
from bench.node import free_loopback_port
from bench.sampler import Sample, Sampler, cpu_series
from bench.scenarios import Check, Peer, RunContext, RunResult, Scenario
from bench.whep_run import node_figures

if TYPE_CHECKING:
    from bench.report import Suite

PATHS = {  # figure prefix -> label in plots
    "whep": "node via WHEP",
    "push": "node via RTMP push",
    "whip_in": "node, WHIP in, WHEP out",
    "peer": "ffmpeg CLI",
    "peer_slice": "ffmpeg, slice threads",
    "floor": "floor (no middle box)",
}
NODE_PATHS = ("whep", "push", "whip_in")
READY_TIMEOUT_S = 20.0
PUSH_CONNECT_TIMEOUT_S = 8.0
# The RTMP publisher has just left when the WHIP one comes: the node may still hold
# its slot for a moment (409), so the WHIP publisher retries that long.
WHIP_BUSY_WAIT_S = 5.0
# The node's figures over the WHIP window, as ``whip_in_<name>``.
WHIP_NODE_FIGURES = (
    "node_cpu_cores",
    "control_cpu_cores",
    "worker_cpu_cores",
    "node_rss_max_mib",
    "node_frames_in_per_second",
    "window_s",
)
_push_port: int | None = None


def push_port() -> int:
    """The loopback port of the push receiver, chosen once per process (the node is
    started with its push aimed there)."""
    global _push_port
    if _push_port is None:
        _push_port = free_loopback_port()
    return _push_port


def _int(env: Mapping[str, str], key: str) -> int | None:
    try:
        return int(env[key])
    except (KeyError, ValueError):
        return None


class Glass(Scenario):
    name = "glass"
    description = (
        "video glass-to-glass at 720p30: publisher -> node -> WHEP viewer and -> RTMP push "
        "-> receiver, then WHIP publisher -> node -> WHEP viewer; p50/p90/p99 latency, "
        "frames lost, node CPU and RSS; ffmpeg CLI "
        "(RTMP -> drawtext -> RTMP) as the peer and publisher -> receiver as the floor"
    )
    default_seconds = 8.0
    default_runs = 3
    peer: ClassVar[Peer | None] = GlassPeer()

    @property
    def node_env(self) -> Mapping[str, str]:  # type: ignore[override]
        return {
            "EDGE_NODE_PUSH__URL": f"rtmp://127.0.0.1:{push_port()}/live/out",
            # The push receiver is only up during a run: reconnect quickly when it is.
            "EDGE_NODE_PUSH__BACKOFF_INITIAL_S": "0.1",
            "EDGE_NODE_PUSH__BACKOFF_MAX_S": "0.3",
        }

    async def run_once(self, ctx: RunContext) -> RunResult:
        return await _run(ctx)

    def derived_figures(self, figures: Mapping[str, Figure]) -> Figures:
        return derived(figures)

    def write_plots(self, suite: Suite, out_dir: Path) -> list[str]:
        return plots(suite, out_dir)


def derived(figures: Mapping[str, Figure]) -> Figures:
    """Node/peer latency ratios and the node's distance above the floor, of medians."""

    def value(name: str) -> float | None:
        f = figures.get(name)
        return f.value if f is not None else None

    out: Figures = {}
    node_cpu, slice_cpu = value("node_cpu_cores"), value("peer_slice_cpu_cores")
    if node_cpu is not None and slice_cpu:
        out["node_to_peer_slice_cpu_ratio"] = Figure(
            node_cpu / slice_cpu,
            "ratio",
            "lower",
            "median node_cpu_cores / median peer_slice_cpu_cores",
        )
    for peer in ("peer", "peer_slice"):
        for path in NODE_PATHS:
            for q in ("p50", "p99"):
                node, other = value(f"{path}_latency_{q}_ms"), value(f"{peer}_latency_{q}_ms")
                if node is not None and other:
                    out[f"{path}_to_{peer}_latency_{q}_ratio"] = Figure(
                        node / other, "ratio", "lower", f"median {path} {q} / median {peer} {q}"
                    )
    for path in NODE_PATHS:
        for q in ("p50", "p99"):
            node, floor = value(f"{path}_latency_{q}_ms"), value(f"floor_latency_{q}_ms")
            if node is not None and floor is not None:
                out[f"{path}_latency_{q}_over_floor_ms"] = Figure(
                    node - floor, "ms", "lower", f"median {path} {q} - median floor {q}"
                )
    return out


async def _run(ctx: RunContext) -> RunResult:
    node = ctx.node
    env = node.env
    seconds = ctx.seconds
    expect = expected(seconds)
    ingest_port = _int(env, "EDGE_NODE_INGEST__RTMP_PORT")
    push_url = env.get("EDGE_NODE_PUSH__URL", "")
    push_reason = ""
    rx_port: int | None = None
    if not node.started_by_bench:
        push_reason = "with --target the bench cannot aim the node's push at its receiver"
    elif not push_url.startswith("rtmp://127.0.0.1:"):
        push_reason = f"the node was started without a loopback push.url ({push_url!r})"
    else:
        rx_port = push_port()
    if ingest_port is None:
        ingest_port = 1935  # a node given by --target: its default RTMP port
    host = "127.0.0.1" if node.started_by_bench else _host(node.base_url)

    await node.health(ctx.http)
    health_before = dict(node.last_health or {})
    pids, pid_reason = node.local_pids()
    sampler = Sampler(ctx.http, f"{node.base_url}/metrics", pids)
    frames = {p: ctx.log_path(f"{p}-frames") for p in ("publisher", "whep", "push")}
    viewer: JsonChild | None = None
    receiver: JsonChild | None = None
    edges: list[Sample] = []
    busy = BusyMeter()
    results: dict[str, Any] = {}
    whep_reason = ""
    outcome = None
    sampler.start()
    try:
        viewer = await JsonChild.spawn(
            "whep", viewer_argv(node.base_url, frames["whep"], expect), ctx.log_path("whep")
        )
        if rx_port is not None:
            receiver = await start_receiver(
                rx_port, seconds, frames["push"], ctx.log_path("push"), "push"
            )
        if await viewer.wait_event("playing", READY_TIMEOUT_S) is None:
            whep_reason = (
                f"the WHEP viewer got no picture within {READY_TIMEOUT_S:g} s; "
                f"see {ctx.log_path('whep')}"
            )
        if receiver is not None:
            if await receiver.wait_event("listening", READY_TIMEOUT_S) is None:
                push_reason = f"the push receiver did not listen; see {ctx.log_path('push')}"
            elif await receiver.wait_event("playing", PUSH_CONNECT_TIMEOUT_S) is None:
                push_reason = (
                    f"the node's RTMP push (push.url) delivered no picture to the receiver "
                    f"within {PUSH_CONNECT_TIMEOUT_S:g} s; see node.log"
                )
        receivers = [c for c in (viewer, receiver) if c is not None]
        if whep_reason and push_reason:
            results["error"] = "neither the WHEP viewer nor the push receiver got a picture"
        else:
            sample = _window_edge(sampler, edges, busy)
            outcome = await publish_through(
                f"rtmp://{host}:{ingest_port}/live/{glass.STREAM_KEY}",
                seconds,
                frames["publisher"],
                ctx.log_path("publisher"),
                receivers,
                sample,
                sample,
            )
            await asyncio.sleep(glass.GRACE_S)
    finally:
        if viewer is not None:
            results["whep"] = await viewer.stop()
        if receiver is not None:
            results["push"] = await receiver.stop()
        await sampler.stop()
    whip = await _whip_in(ctx, pids)
    await node.health(ctx.http)
    health_after = dict(node.last_health or {})

    figures: Figures = {}
    joins: dict[str, glass.Join | None] = {}
    error = results.get("error") or (outcome.error if outcome is not None else "not run")
    reasons = {"whep": whep_reason or error or "", "push": push_reason or error or ""}
    for path in ("whep", "push"):
        ok = not reasons[path]
        joins[path] = glass.join_files(frames["publisher"], frames[path]) if ok else None
        figures.update(glass.latency_figures(path, joins[path], reasons[path]))
    sent = len(glass.read_log(frames["publisher"]))
    figures["publisher_frames_sent"] = Figure(sent, "frames", None, f"of {expect[1]}")
    if len(edges) == 2:
        figures.update(node_figures(sampler, edges[0], edges[1], pids, pid_reason))
    figures["machine_busy_cores"] = Figure(
        busy.cores,
        "cores",
        None,
        "the whole machine over the window: node, publisher, receivers and anything else",
    )
    restarts = _restarts(health_after) - _restarts(health_before)
    figures["node_worker_restarts"] = Figure(restarts, "restarts", "lower")

    figures.update(whip.figures)
    joins["whip_in"] = whip.join

    checks = [Check("publisher sent every frame", sent == expect[1], f"{sent} of {expect[1]}")]
    for path in ("whep", "push"):
        checks += path_checks(path, joins[path], reasons[path])
    checks.append(
        Check(
            "whip_in: publisher sent every frame",
            whip.sent == expect[1],
            f"{whip.sent} of {expect[1]}",
        )
    )
    checks += path_checks("whip_in", whip.join, whip.reason)
    encoders = figures.get("node_video_encoders_max")
    if encoders is not None:
        checks.append(
            Check(
                "one video encoder for WHEP and push",
                encoders.value == 1,
                f"edge_node_video_encoders max {encoders.value}",
            )
        )
    series = {"node_cpu_cores": cpu_series(sampler.samples)} if pids else {}
    raw = {
        "receivers": {**results, "whip_in": whip.viewer_result},
        "joins": {p: _join_summary(j) for p, j in joins.items()},
        "publisher": _outcome_summary(outcome),
        "whip_publisher": _outcome_summary(whip.outcome),
        "push_url": push_url or None,
        "push_health": health_after.get("push"),
        "pids": {"control": pids[0], "worker": pids[1]} if pids else None,
        "pids_unavailable": pid_reason,
        "logs": {
            p: str(path.relative_to(ctx.out_dir))
            for p, path in (*frames.items(), *whip.frames.items())
        },
    }
    return RunResult(figures=figures, checks=checks, series=series, raw=raw)


def _window_edge(
    sampler: Sampler, edges: list[Sample], busy: BusyMeter
) -> Callable[[], Awaitable[None]]:
    """The callback for both edges of a publisher's steady-state window: a sample of
    the node (kept in ``edges``) and the machine-wide busy meter."""

    async def sample() -> None:
        edges.append(await sampler.sample())
        if len(edges) == 1:
            busy.start()
        else:
            busy.stop()

    return sample


def path_checks(path: str, j: glass.Join | None, reason: str) -> list[Check]:
    """A node path's checks: frames delivered, and p99 under the issue's target."""
    if j is None:
        return [Check(f"{path}: frames delivered", False, reason)]
    p99 = j.quantile(99)
    return [
        Check(
            f"{path}: frames delivered",
            j.delivered > 0,
            f"{j.delivered} of {j.sent} ({j.lost} lost, {j.duplicates} duplicates)",
        ),
        Check(
            f"{path}: p99 under {glass.TARGET_P99_MS:g} ms (target)",
            p99 is not None and p99 < glass.TARGET_P99_MS,
            f"p99 {p99:.1f} ms" if p99 is not None else "no latency",
        ),
    ]


@dataclass
class WhipIn:
    """The WHIP path's outcome: its join (None when it did not run, with the reason),
    its figures (``whip_in_*``), frames the publisher logged, and its logs."""

    join: glass.Join | None
    reason: str
    figures: Figures
    sent: int
    frames: dict[str, Path]
    outcome: PublishOutcome | None
    viewer_result: dict[str, Any] | None


async def _whip_in(ctx: RunContext, pids: Sequence[int]) -> WhipIn:
    """WHIP publisher -> node -> a WHEP viewer of its own, on a publisher session of its
    own (the node takes one publisher at a time), after the RTMP one."""
    node, seconds = ctx.node, ctx.seconds
    expect = (glass.WHIP_START, int(seconds * glass.FPS))
    frames = {
        "whip_in-publisher": ctx.log_path("whip_in-publisher-frames"),
        "whip_in": ctx.log_path("whip_in-frames"),
    }
    sampler = Sampler(ctx.http, f"{node.base_url}/metrics", pids)
    edges: list[Sample] = []
    busy = BusyMeter()
    reason = ""
    outcome: PublishOutcome | None = None
    sampler.start()
    viewer: JsonChild | None = None
    viewer_result: dict[str, Any] | None = None
    try:
        viewer = await JsonChild.spawn(
            "whip_in",
            viewer_argv(node.base_url, frames["whip_in"], expect),
            ctx.log_path("whip_in"),
        )
        if await viewer.wait_event("playing", READY_TIMEOUT_S) is None:
            reason = (
                f"the WHIP path's WHEP viewer got no picture within {READY_TIMEOUT_S:g} s; "
                f"see {ctx.log_path('whip_in')}"
            )
        else:
            sample = _window_edge(sampler, edges, busy)
            argv = whip_publisher_argv(
                node.base_url,
                glass.STREAM_KEY,
                seconds,
                glass.WHIP_START,
                glass.SIZE,
                glass.FPS,
                frames["whip_in-publisher"],
                WHIP_BUSY_WAIT_S,
            )
            outcome = await run_publisher(
                argv,
                seconds,
                frames["whip_in-publisher"],
                ctx.log_path("whip_in-publisher"),
                [viewer],
                sample,
                sample,
            )
            reason = outcome.error or ""
            await asyncio.sleep(glass.GRACE_S)
    finally:
        if viewer is not None:
            viewer_result = await viewer.stop()
        await sampler.stop()
    j = None if reason else glass.join_files(frames["whip_in-publisher"], frames["whip_in"])
    figures = glass.latency_figures("whip_in", j, reason)
    sent = len(glass.read_log(frames["whip_in-publisher"]))
    figures["whip_in_publisher_frames_sent"] = Figure(sent, "frames", None, f"of {expect[1]}")
    if len(edges) == 2:
        node_figs = node_figures(sampler, edges[0], edges[1], pids, None)
        for name in WHIP_NODE_FIGURES:
            if name in node_figs:
                figures[f"whip_in_{name}"] = node_figs[name]
    figures["whip_in_machine_busy_cores"] = Figure(
        busy.cores, "cores", None, "the whole machine over the WHIP path's window"
    )
    return WhipIn(j, reason, figures, sent, frames, outcome, viewer_result)


def _outcome_summary(outcome: PublishOutcome | None) -> dict[str, Any] | None:
    if outcome is None:
        return None
    return {
        "exit_status": outcome.exit_status,
        "error": outcome.error,
        "window_s": None if outcome.window is None else outcome.window[1] - outcome.window[0],
    }


def _join_summary(j: glass.Join | None) -> dict[str, Any] | None:
    if j is None:
        return None
    return {
        "sent": j.sent,
        "delivered": j.delivered,
        "lost": j.lost,
        "duplicates": j.duplicates,
        "foreign": j.foreign,
        "early": j.early,
        "discarded": j.discarded,
    }


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or "127.0.0.1"


def _restarts(health: Mapping[str, Any]) -> int:
    worker = health.get("worker") or {}
    value = worker.get("restarts", 0) if isinstance(worker, Mapping) else 0
    return int(value) if isinstance(value, int) else 0


def _latencies(logs: Path, publisher: str, receiver: str) -> list[float]:
    return glass.join_files(logs / publisher, logs / receiver).latencies_ms


def plots(suite: Suite, out_dir: Path) -> list[str]:
    """glass.png (p50/p99 per path, medians) and glass_cdf.png (every frame of every run,
    pooled per path, from the frame logs in ``out_dir/logs``)."""
    written: list[str] = []
    figures = suite.figures

    def value(name: str) -> float | None:
        f = figures.get(name)
        return f.value if f is not None else None

    labels = [label for p, label in PATHS.items() if value(f"{p}_latency_p50_ms") is not None]
    if labels:
        present = [p for p in PATHS if value(f"{p}_latency_p50_ms") is not None]
        plot.bar_chart(
            out_dir / "glass.png",
            f"glass-to-glass latency, median of {len(suite.runs)} runs",
            labels,
            {q: [value(f"{p}_latency_{q}_ms") for p in present] for q in ("p50", "p99")},
            "ms",
        )
        written.append("glass.png")
    logs = out_dir / "logs"
    pooled: dict[str, list[float]] = {label: [] for label in PATHS.values()}
    for i in range(1, len(suite.runs) + 1):
        for p in NODE_PATHS:
            publisher = "whip_in-publisher" if p == "whip_in" else "publisher"
            pooled[PATHS[p]] += _latencies(
                logs, f"run{i}-{publisher}-frames.log", f"run{i}-{p}-frames.log"
            )
    for i in range(1, len(suite.peer_runs) + 1):
        for p in ("peer", "peer_slice", "floor"):
            pooled[PATHS[p]] += _latencies(
                logs, f"peer{i}-{p}-publisher-frames.log", f"peer{i}-{p}-receiver-frames.log"
            )
    series = {label: glass.cdf_points(v) for label, v in pooled.items() if v}
    if series:
        p99s = [glass.percentile(v, 99.5) or 0.0 for v in pooled.values() if v]
        glass_plot.cdf_chart(
            out_dir / "glass_cdf.png",
            "glass-to-glass latency CDF, every frame of every run (x clipped at p99.5)",
            series,
            "ms from the publisher's send to the receiver's decode",
            x_max=max(p99s) * 1.1,
        )
        written.append("glass_cdf.png")
    return written


SCENARIO = Glass()
