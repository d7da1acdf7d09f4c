"""One run of the whole show (``show-720p``, ``show-1080p``, ``soak``): every path of
the node at once, each client its own process.

- an RTMP publisher (``edge_node.clients.rtmp_publish``, via glass's
  ``publish_through``) stamps the frame counter on a 720p30 or 1080p30 picture;
- the node decodes it, draws the danmaku the load keeps coming (50 on screen) and
  the probes, encodes once, and sends the picture to a measuring WHEP viewer
  (``bench.glass_viewer --strip both``: frame counter and probe strip of every
  picture), to ``EXTRA_VIEWERS`` counting WHEP viewers (``bench.fanout_viewer``) and
  over its RTMP push to ``bench.rtmp_receiver``;
- ``bench.load_gen`` sends 2,000 events/s over WebSockets (``show.LOAD_MIX``: comments,
  likes in bursts of ``show.LIKE_BURST``, votes, lottery entries), starting ``RAMP_S``
  before the publisher so that the board is full;
- over the publisher's steady window (glass's: from its first frame at a receiver
  plus a second, to its exit) ``bench.probe_sender`` sends 10 probes/s, and the node
  is sampled (/proc and /metrics; every ``sample_interval_s``, with its open file
  descriptors for ``soak``).

Video latency per frame = receiver time - publisher time of the same counter;
interaction latency per probe = first picture showing it - send time (one
CLOCK_MONOTONIC for every process of the machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench import glass, live_clients, show, trend
from bench import interaction as ix
from bench.figures import Figure, Figures
from bench.glass_procs import BusyMeter, JsonChild
from bench.glass_run import publish_through, start_receiver
from bench.sampler import Sample, Sampler, cpu_series
from bench.scenarios import Check, RunContext, RunResult
from bench.scenarios.glass import push_port
from bench.scenarios.interaction import secret_file, seq_start
from bench.series_plots import rss_series
from bench.whep_run import node_figures

READY_TIMEOUT_S = 30.0
PUSH_CONNECT_TIMEOUT_S = 8.0
# The publisher publishes this much longer than --seconds: its first frame takes a
# moment to come through and glass discards the first second, so that the window
# (when the probes go) still lasts about --seconds.
PUBLISH_EXTRA_S = 4.0


@dataclass(frozen=True, slots=True)
class ShowSpec:
    size: show.Size
    extra_viewers: int = show.EXTRA_VIEWERS
    sample_interval_s: float = 0.5
    slice_s: float = 1.0  # latency over time: one point per slice of send time
    fds: bool = False  # sample the node's open file descriptors too (soak)
    ramp_s: float = show.RAMP_S  # load before the publisher (a smoke test shortens it)


def _targets(ctx: RunContext) -> tuple[str, int, int | None, str]:
    """(publisher host, RTMP ingest port, push receiver port or None, why no push)."""
    node, env = ctx.node, ctx.node.env
    try:
        ingest = int(env["EDGE_NODE_INGEST__RTMP_PORT"])
    except (KeyError, ValueError):
        ingest = 1935  # a node given by --target: its default RTMP port
    push_url = env.get("EDGE_NODE_PUSH__URL", "")
    if not node.started_by_bench:
        return (
            urlsplit(node.base_url).hostname or "127.0.0.1",
            ingest,
            None,
            ("with --target the bench cannot aim the node's push at its receiver"),
        )
    if not push_url.startswith("rtmp://127.0.0.1:"):
        return "127.0.0.1", ingest, None, f"no loopback push.url ({push_url!r})"
    return "127.0.0.1", ingest, push_port(), ""


async def _ready(child: JsonChild | None, event: str, timeout_s: float, what: str) -> str:
    if child is None:
        return ""
    if await child.wait_event(event, timeout_s) is None:
        return f"{what} (see logs/{child.name})"
    return ""


async def _sample_fds(pids: list[int], interval_s: float, out: list[tuple[float, float]]) -> None:
    """(monotonic time, open fds of the node's processes together) every ``interval_s``."""
    while True:
        counts = [trend.fd_count(pid) for pid in pids]
        if all(c is not None for c in counts):
            out.append((time.monotonic(), float(sum(c or 0 for c in counts))))
        await asyncio.sleep(interval_s)


async def run(ctx: RunContext, spec: ShowSpec) -> RunResult:
    node = ctx.node
    secret, secret_reason = secret_file(ctx)
    if secret is None:
        figures = glass.latency_figures("whep", None, secret_reason)
        figures.update(ix.latency_figures("probe", None, secret_reason))
        return RunResult(figures, [Check("tokens: the node's secret", False, secret_reason)])
    host, ingest_port, rx_port, push_reason = _targets(ctx)
    pub_seconds = ctx.seconds + PUBLISH_EXTRA_S
    expect = (glass.START, int(pub_seconds * glass.FPS))
    logs = {
        name: ctx.log_path(name)
        for name in ("publisher-frames", "whep-frames", "push-frames", "probes-sent", "probes-seen")
    }
    await node.health(ctx.http)
    restarts_before = _restarts(node.last_health)
    pids, pid_reason = node.local_pids()
    sampler = Sampler(ctx.http, f"{node.base_url}/metrics", pids, spec.sample_interval_s)
    fds: list[tuple[float, float]] = []
    fd_task = (
        asyncio.create_task(_sample_fds(pids, spec.sample_interval_s, fds))
        if spec.fds and pids
        else None
    )
    group = live_clients.ClientGroup()
    busy = BusyMeter()
    edges: list[Sample] = []
    clients_cpu: list[dict[int, float]] = []
    prober: JsonChild | None = None
    extra: JsonChild | None = None
    reasons: dict[str, str] = {"push": push_reason}
    outcome = None
    url = node.base_url
    poll = f"show-run{ctx.run_index}"
    sampler.start()
    try:
        viewer = group.add(
            await live_clients.spawn(
                "whep",
                live_clients.viewer_argv(
                    url, "both", logs["whep-frames"], logs["probes-seen"], expect
                ),
                ctx.log_path("whep"),
                {},
            )
        )
        receiver = None
        if rx_port is not None:
            receiver = group.add(
                await start_receiver(
                    rx_port, pub_seconds, logs["push-frames"], ctx.log_path("push"), "push"
                )
            )
        if spec.extra_viewers:
            extra = group.add(
                await live_clients.spawn(
                    "viewers",
                    live_clients.fanout_argv(url, spec.extra_viewers, 0, pub_seconds + 60),
                    ctx.log_path("viewers"),
                    {},
                )
            )
        load = group.add(
            await live_clients.spawn(
                "load",
                live_clients.load_argv(
                    url, secret, show.LOAD_RATE_PER_S, show.LOAD_USERS, poll, ctx.run_index,
                    live_clients.load_prefix(ctx.run_index), show.LOAD_MIX, show.LIKE_BURST,
                ),
                ctx.log_path("load"),
                {},
            )
        )  # fmt: skip
        reasons["whep"] = await _ready(viewer, "playing", READY_TIMEOUT_S, "no WHEP picture")
        if receiver is not None:
            reasons["push"] = await _ready(
                receiver, "listening", READY_TIMEOUT_S, "the push receiver did not listen"
            ) or await _ready(
                receiver, "playing", PUSH_CONNECT_TIMEOUT_S, "the node's push delivered nothing"
            )
        reasons["viewers"] = await _ready(
            extra, "playing", READY_TIMEOUT_S + spec.extra_viewers, "extra viewers not playing"
        )
        reasons["load"] = await _ready(load, "running", READY_TIMEOUT_S, "the load did not start")
        await asyncio.sleep(spec.ramp_s)

        async def at_start() -> None:
            nonlocal prober
            edges.append(await sampler.sample())
            busy.start()
            clients_cpu.append(live_clients.children_cpu_s(exclude=pids))
            if extra is not None:
                await group.send_line(extra, "start")
            count = max(1, round(ctx.seconds * show.PROBE_RATE_PER_S))
            prober = group.add(
                await live_clients.spawn(
                    "prober",
                    live_clients.prober_argv(
                        url, secret, logs["probes-sent"], count, show.PROBE_RATE_PER_S,
                        seq_start(ctx.run_index, count),
                    ),
                    ctx.log_path("prober"),
                    {},
                )
            )  # fmt: skip

        async def at_end() -> None:
            edges.append(await sampler.sample())
            busy.stop()
            clients_cpu.append(live_clients.children_cpu_s(exclude=pids))
            if extra is not None:
                await group.send_line(extra, "stop")

        receivers = [c for c in (viewer, receiver) if c is not None]
        outcome = await publish_through(
            f"rtmp://{host}:{ingest_port}/live/demo",
            pub_seconds,
            logs["publisher-frames"],
            ctx.log_path("publisher"),
            receivers,
            at_start,
            at_end,
            spec.size.text,
        )
        if prober is not None and await prober.wait_event("result", READY_TIMEOUT_S) is None:
            reasons["probe"] = "the prober did not finish (see logs/prober)"
        await asyncio.sleep(glass.GRACE_S)
    finally:
        window = extra.events.get("window") if extra is not None else None
        await group.stop()
        polls_closed = await live_clients.close_polls(ctx.http, url, secret, [poll])
        await sampler.stop()
        if fd_task is not None:
            fd_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fd_task
    await node.health(ctx.http)
    error = outcome.error if outcome is not None else "not run"
    figures = _figures(ctx, spec, logs, reasons, error or "", group.results, window)
    figures["publisher_frames_sent"] = Figure(
        float(len(glass.read_log(logs["publisher-frames"]))), "frames", None, f"of {expect[1]}"
    )
    if len(edges) == 2:
        e0, e1 = edges
        figures.update(node_figures(sampler, e0, e1, pids, pid_reason))
        figures.update(show.stage_histograms(e0.metrics, e1.metrics))
        if e0.metrics is not None and e1.metrics is not None:
            outcomes = ix.events_by_outcome(e0.metrics, e1.metrics)
            figures.update(ix.event_rate_figures(outcomes, e1.t - e0.t))
        figures.update(show.danmaku_figures(sampler.between(e0, e1)))
        figures.update(_busy_figures(busy, clients_cpu, e1.t - e0.t, figures))
    else:
        why = error or "no steady window"
        figures.update(show.danmaku_figures([]))
        for name, unit in (("node_cpu_cores", "cores"), ("node_rss_max_mib", "MiB")):
            figures[name] = Figure(None, unit, "lower", why)
        figures["node_events_per_second"] = Figure(None, "events/s", None, why)
    figures["node_worker_restarts"] = Figure(
        float(_restarts(node.last_health) - restarts_before), "restarts", "lower"
    )
    series = _series(sampler.samples, logs, spec, fds) if pids else {}
    if spec.fds:
        figures.update(_drift(sampler, edges, fds, spec, series))
    checks = show.checks(figures, expect[1], spec.size)
    raw = {
        "size": spec.size.text,
        "reasons": {k: v for k, v in reasons.items() if v},
        "clients": {k: _trim(v) for k, v in group.results.items()},
        "pids": {"control": pids[0], "worker": pids[1]} if pids else None,
        "pids_unavailable": pid_reason,
        "publisher": None if outcome is None else {"exit_status": outcome.exit_status},
        "polls_closed_by_bench": polls_closed,
    }
    return RunResult(figures=figures, checks=checks, series=series, raw=raw)


def _figures(
    ctx: RunContext,
    spec: ShowSpec,
    logs: Mapping[str, Any],
    reasons: Mapping[str, str],
    error: str,
    results: Mapping[str, dict[str, Any] | None],
    window: Mapping[str, Any] | None,
) -> Figures:
    figures: Figures = {}
    sent = glass.read_log(logs["publisher-frames"])
    for path in ("whep", "push"):
        reason = reasons.get(path) or error
        got = [] if reason else glass.read_log(logs[f"{path}-frames"])
        j = None if reason else show.video_join(sent, got, spec.slice_s)
        figures.update(glass.latency_figures(path, j, reason))
    reason = reasons.get("whep") or reasons.get("probe") or reasons.get("load") or error
    pj = None if reason else ix.join_files(logs["probes-sent"], logs["probes-seen"])
    figures.update(ix.latency_figures("probe", pj, reason))
    prober = results.get("prober") or {}
    figures["probe_ack_p50_ms"] = Figure(prober.get("ack_p50_ms"), "ms", "lower", "send -> ack")
    figures["probe_ack_p99_ms"] = Figure(prober.get("ack_p99_ms"), "ms", "lower", "send -> ack")
    figures.update(ix.load_figures(results.get("load"), show.LOAD_RATE_PER_S))
    figures.update(
        show.extra_viewer_figures(window, spec.extra_viewers, reasons.get("viewers", ""))
    )
    return figures


def _busy_figures(
    busy: BusyMeter, clients_cpu: list[dict[int, float]], wall: float, figures: Figures
) -> Figures:
    out: Figures = {
        "machine_busy_cores": Figure(
            busy.cores, "cores", None, "the whole machine over the window (/proc/stat)"
        )
    }
    if len(clients_cpu) != 2 or wall <= 0:
        return out
    clients = live_clients.cpu_cores_between(clients_cpu[0], clients_cpu[1], wall)
    out["bench_clients_cpu_cores"] = Figure(
        clients, "cores", None, "publisher, viewers, push receiver, load, prober"
    )
    node = figures.get("node_cpu_cores")
    if busy.cores is not None and node is not None and node.value is not None:
        out["other_busy_cores"] = Figure(
            max(0.0, busy.cores - clients - node.value),
            "cores",
            None,
            "machine busy - node - bench clients: other work on the box (contention)",
        )
    return out


def _drift(
    sampler: Sampler,
    edges: list[Sample],
    fds: list[tuple[float, float]],
    spec: ShowSpec,
    series: Mapping[str, list[tuple[float, float]]],
) -> Figures:
    """Drift over the steady window only: clients joining before it add memory and
    descriptors that are set-up, not a leak. Without a window, every figure is None."""
    if len(edges) != 2:
        return {
            name: Figure(None, f.unit, f.better, "no steady window (see the run's reasons)")
            for name, f in trend.drift_figures([], [], [], []).items()
        }
    steady = sampler.between(edges[0], edges[1])
    return trend.drift_figures(
        rss_series(steady),
        [(t - edges[0].t, v) for t, v in fds if edges[0].t <= t <= edges[1].t],
        cpu_series(steady, min_interval_s=spec.sample_interval_s * 0.8),
        series.get("probe_latency_p99_ms", []),
    )


def _series(
    samples: list[Sample],
    logs: Mapping[str, Any],
    spec: ShowSpec,
    fds: list[tuple[float, float]],
) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {
        "node_cpu_cores": cpu_series(samples, min_interval_s=spec.sample_interval_s * 0.8),
        "node_rss_mib": rss_series(samples),
    }
    if fds and samples:
        out["node_fds"] = [(t - samples[0].t, v) for t, v in fds]
    sent = glass.read_log(logs["publisher-frames"])
    for path in ("whep", "push"):
        got = glass.read_log(logs[f"{path}-frames"])
        for q, points in show.over_time(sent, got, show.video_latencies, spec.slice_s).items():
            if points:
                out[f"{path}_latency_{q}_ms"] = points
    probes = ix.read_log(logs["probes-sent"])
    seen = ix.read_log(logs["probes-seen"])
    for q, points in show.over_time(probes, seen, show.probe_latencies, spec.slice_s).items():
        if points:
            out[f"probe_latency_{q}_ms"] = points
    return out


def _restarts(health: Mapping[str, Any] | None) -> int:
    worker = (health or {}).get("worker") or {}
    value = worker.get("restarts", 0) if isinstance(worker, Mapping) else 0
    return value if isinstance(value, int) else 0


def _trim(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A client's result without its bulky per-sample lists."""
    if result is None:
        return None
    return {k: v for k, v in result.items() if k != "viewers"}
