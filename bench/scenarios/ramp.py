"""``ramp``: event throughput ramp over WebSockets until the node answers ``busy`` or
the interaction p99 crosses 100 ms (issue 8: the knee, target >= 5,000 events/s).

Per run, against the demo node (the interaction scenario's settings: per-user and
per-address limits raised so that the load is accepted, 50 danmaku at most; the
node's admission control, ``interaction.max_events_per_s``, left at its default):

- a WHEP viewer (``bench.glass_viewer --strip probe``, its own process) logs the
  probe strip of every decoded 720p30 picture for the whole run;
- per step (``STEPS_PER_S``: 250, 500, 1k, 2k, 3k, 5k, 7k, 10k, 14k, 20k events/s), load
  processes (``bench.load_gen`` with ``--user-prefix``, as many as
  ``LOAD_RATE_PER_PROCESS`` each allows, 100 users in all, one WebSocket each; 40%
  comments, 50% likes, 10% votes) hold the rate; after ``RAMP_S`` the prober sends
  ``seconds x 10`` probes at 10/s and the node is sampled over the prober's window
  (/proc, /metrics): events handled and refused, CPU, RSS, the event-to-frame
  histogram;
- the ramp stops after the first step whose probe p99 is over 100 ms, in which the
  node answered ``busy``, or which lost most probes (``bench.ramp.stop_reason``).

``--seconds`` is each step's window. The knee and the busy rate are in
``bench.ramp``; every step's figures are ``ramp_<target>_*``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench import glass, glass_plot, live_clients, ramp
from bench import interaction as ix
from bench.engine_alone import NODE_ENV
from bench.figures import Figure, Figures, fmt
from bench.glass_procs import BusyMeter, JsonChild
from bench.sampler import Sampler, cpu_cores, cpu_series
from bench.scenarios import Check, Peer, RunContext, RunResult, Scenario
from bench.scenarios.interaction import secret_file
from bench.series_plots import xy_chart

if TYPE_CHECKING:
    from bench.report import Suite

PROBE_RATE_PER_S = 10.0  # a probe stays on screen 3 frames: one dropped frame loses none
LOAD_USERS = 100
RAMP_S = 2.0  # the load runs this long before the probes
GRACE_S = 1.0  # the viewer sees the last probes
READY_TIMEOUT_S = 30.0


class Ramp(Scenario):
    name = "ramp"
    description = (
        "event throughput ramp over WebSockets (250..20k events/s) with probes at a WHEP "
        "viewer: p50/p99 per step until busy or p99 > 100 ms; the knee (events/s where "
        "p99 crosses 100 ms), the busy rate, node CPU per step"
    )
    default_seconds = 10.0  # per step: 100 probes
    default_runs = 3
    node_env: ClassVar[Mapping[str, str]] = NODE_ENV
    peer: ClassVar[Peer | None] = None

    def __init__(self, steps: Sequence[float] = ramp.STEPS_PER_S) -> None:
        if not steps or any(s <= 0 for s in steps):
            raise ValueError(f"steps: {list(steps)} must be rates > 0")
        self.steps = tuple(steps)

    async def run_once(self, ctx: RunContext) -> RunResult:
        return await _run(ctx, self.steps)

    def write_plots(self, suite: Suite, out_dir: Path) -> list[str]:
        return plots(suite, out_dir, self.steps)


async def _run(ctx: RunContext, targets: Sequence[float]) -> RunResult:
    node = ctx.node
    secret, reason = secret_file(ctx)
    if secret is None:
        return RunResult(ramp.figures([]), [Check("tokens: the node's secret", False, reason)])
    await node.health(ctx.http)
    pids, _ = node.local_pids()
    sampler = Sampler(ctx.http, f"{node.base_url}/metrics", pids)
    group = live_clients.ClientGroup()
    seen_log = ctx.log_path("probes-seen")
    steps: list[ramp.Step] = []
    raw_steps: list[dict[str, Any]] = []
    stop = ""
    sampler.start()
    try:
        viewer = group.add(
            await live_clients.spawn(
                "viewer",
                live_clients.viewer_argv(node.base_url, "probe", seen_log),
                ctx.log_path("viewer"),
                {},
            )
        )
        if await viewer.wait_event("playing", READY_TIMEOUT_S) is None:
            stop = f"the viewer got no picture; see {ctx.log_path('viewer')}"
        for k, target in enumerate(targets if not stop else ()):
            step, raw = await _step(ctx, secret, sampler, group, k, len(targets), target, pids)
            steps.append(step)
            raw_steps.append(raw)
            _say(step)
            stop = ramp.stop_reason(step) or ""
            if stop:
                break
    finally:
        await group.stop()
        await sampler.stop()
    figures = ramp.figures(steps)
    for step, raw_step in zip(steps, raw_steps, strict=True):
        figures.update(_contention(step, raw_step))
    figures["ramp_stopped_early"] = Figure(
        1.0 if stop else 0.0, "yes/no", None, stop or "every step ran"
    )
    top = ramp.max_ok(steps)
    checks = [
        Check(
            f"p99 under {ramp.TARGET_P99_MS:g} ms up to {ramp.TARGET_KNEE_PER_S:g} events/s",
            top is not None and top >= 0.95 * ramp.TARGET_KNEE_PER_S,
            f"highest good step {top:.0f} events/s; {stop or 'no stop'}"
            if top is not None
            else stop or "no good step",
        )
    ]
    series = {
        "node_cpu_cores": cpu_series(sampler.samples),
        "ramp_p50_ms": [(s.x, s.p50_ms) for s in steps if s.p50_ms is not None],
        "ramp_p99_ms": [(s.x, s.p99_ms) for s in steps if s.p99_ms is not None],
        "ramp_node_cpu_cores": [(s.x, s.node_cpu_cores) for s in steps if s.node_cpu_cores],
    }
    return RunResult(
        figures, checks, series, {"steps": raw_steps, "stop_reason": stop, "targets": targets}
    )


async def _step(
    ctx: RunContext,
    secret: Path,
    sampler: Sampler,
    group: live_clients.ClientGroup,
    k: int,
    n_steps: int,
    target: float,
    pids: list[int],
) -> tuple[ramp.Step, dict[str, Any]]:
    url = ctx.node.base_url
    rates = live_clients.split_rate(target)
    users = max(10, LOAD_USERS // len(rates))
    loads: list[JsonChild] = []
    prober: JsonChild | None = None
    busy = BusyMeter()
    count = max(1, round(ctx.seconds * PROBE_RATE_PER_S))
    sent_log = ctx.log_path(f"step{k + 1}-probes-sent")
    raw: dict[str, Any] = {"target_per_s": target, "load_processes": len(rates)}
    edges = []
    cpu: list[dict[int, float]] = []
    polls = [f"ramp-r{ctx.run_index}-s{k}-{i}" for i in range(len(rates))]
    try:
        for i, rate in enumerate(rates):
            prefix = live_clients.load_prefix(ctx.run_index, k, i)
            argv = live_clients.load_argv(url, secret, rate, users, polls[i], 100 * k + i, prefix)
            loads.append(
                group.add(
                    await live_clients.spawn(
                        f"step{k + 1}-load{i}",
                        argv,
                        ctx.log_path(f"step{k + 1}-load{i}"),
                        ctx.node.env,  # the node's overlay style, for the load's board model
                    )
                )
            )
        for load in loads:
            if await load.wait_event("running", READY_TIMEOUT_S) is None:
                raw["error"] = f"{load.name} did not start"
        await asyncio.sleep(RAMP_S)
        edges.append(await sampler.sample())
        busy.start()
        cpu.append(live_clients.children_cpu_s(exclude=pids))
        seq0 = (1000 + ((ctx.run_index - 1) * n_steps + k) * (count + 200)) % ix.SEQ_MODULO
        prober = group.add(
            await live_clients.spawn(
                f"step{k + 1}-prober",
                live_clients.prober_argv(url, secret, sent_log, count, PROBE_RATE_PER_S, seq0),
                ctx.log_path(f"step{k + 1}-prober"),
                {},
            )
        )
        if await prober.wait_event("result", count / PROBE_RATE_PER_S + READY_TIMEOUT_S) is None:
            raw["error"] = "the prober did not finish"
        edges.append(await sampler.sample())
        busy.stop()
        cpu.append(live_clients.children_cpu_s(exclude=pids))
        await asyncio.sleep(GRACE_S)
    finally:
        await group.stop(*loads, *([prober] if prober is not None else []))
        raw["polls_closed_by_bench"] = await live_clients.close_polls(ctx.http, url, secret, polls)
    return _outcome(ctx, target, edges, busy, cpu, loads, group, sent_log, raw)


def _outcome(
    ctx: RunContext,
    target: float,
    edges: list[Any],
    busy: BusyMeter,
    cpu: list[dict[int, float]],
    loads: list[JsonChild],
    group: live_clients.ClientGroup,
    sent_log: Path,
    raw: dict[str, Any],
) -> tuple[ramp.Step, dict[str, Any]]:
    join = ix.join_files(sent_log, ctx.log_path("probes-seen"))
    handled = busy_n = node_cpu = None
    if len(edges) == 2 and edges[0].metrics is not None and edges[1].metrics is not None:
        e0, e1 = edges
        outcomes = ix.events_by_outcome(e0.metrics, e1.metrics)
        handled = sum(outcomes.values()) / (e1.t - e0.t)
        busy_n = int(sum(v for (_, o), v in outcomes.items() if o == "busy"))
        node_cpu = cpu_cores(e0, e1)
        raw["node_events"] = {f"{t}:{o}": v for (t, o), v in sorted(outcomes.items())}
        histogram = ix.histogram_figures(
            "event_to_frame", e0.metrics, e1.metrics, "edge_node_event_to_frame_seconds"
        )
        raw["node_event_to_frame_p99_ms"] = histogram["event_to_frame_p99_ms"].value
        if len(cpu) == 2:
            raw["clients_cpu_cores"] = live_clients.cpu_cores_between(cpu[0], cpu[1], e1.t - e0.t)
    raw["machine_busy_cores"] = busy.cores
    results = [group.results.get(load.name) or {} for load in loads]
    sent = sum(int(r.get("sent") or 0) for r in results)
    seconds = max((float(r.get("seconds") or 0.0) for r in results), default=0.0)
    raw["load_replies"] = [r.get("replies") for r in results]
    raw["probes"] = {"sent": join.sent, "seen": join.seen, "lost": join.lost}
    step = ramp.Step(
        target_per_s=target,
        handled_per_s=handled,
        busy=busy_n or 0,
        p50_ms=join.quantile(50),
        p99_ms=join.quantile(99),
        lost_percent=join.lost_percent,
        load_per_s=sent / seconds if seconds > 0 else None,
        node_cpu_cores=node_cpu,
    )
    return step, raw


def _contention(step: ramp.Step, raw: Mapping[str, Any]) -> Figures:
    """The whole machine over a step, and what was neither the node nor the clients."""
    key = ramp.step_key(step.target_per_s)
    busy, clients = raw.get("machine_busy_cores"), raw.get("clients_cpu_cores")
    other = None
    if busy is not None and clients is not None and step.node_cpu_cores is not None:
        other = max(0.0, busy - clients - step.node_cpu_cores)
    return {
        f"{key}_machine_busy_cores": Figure(busy, "cores", None, "the whole machine"),
        f"{key}_clients_cpu_cores": Figure(clients, "cores", None, "load, prober, viewer"),
        f"{key}_other_busy_cores": Figure(
            other, "cores", None, "machine busy - node - clients: other work on the box"
        ),
    }


def _say(step: ramp.Step) -> None:
    print(
        f"  step {step.target_per_s:.0f}/s: handled {fmt(step.handled_per_s)}/s, "
        f"p50 {fmt(step.p50_ms)} ms, p99 {fmt(step.p99_ms)} ms, busy {step.busy}, "
        f"node {fmt(step.node_cpu_cores, 'cores')} cores",
        file=sys.stderr,
        flush=True,
    )


def plots(suite: Suite, out_dir: Path, targets: Sequence[float]) -> list[str]:
    """ramp.png (p99 vs events/s handled, per run, with the 100 ms bound),
    ramp_cpu.png (node CPU vs events/s), ramp_cdf.png (probe latency CDF per step,
    every run pooled)."""
    written: list[str] = []
    lines: dict[str, list[tuple[float, float]]] = {}
    cpu: dict[str, list[tuple[float, float]]] = {}
    for i, run in enumerate(suite.runs, 1):
        if run.series.get("ramp_p99_ms"):
            lines[f"run {i} p99"] = list(run.series["ramp_p99_ms"])
        if run.series.get("ramp_node_cpu_cores"):
            cpu[f"run {i}"] = list(run.series["ramp_node_cpu_cores"])
    if lines:
        xy_chart(
            out_dir / "ramp.png",
            "probe p99 vs events/s the node handled",
            lines,
            "events/s handled (node /metrics)",
            "ms",
            bound=(f"{ramp.TARGET_P99_MS:g} ms", ramp.TARGET_P99_MS),
        )
        written.append("ramp.png")
    if cpu:
        xy_chart(out_dir / "ramp_cpu.png", "node CPU vs events/s", cpu, "events/s handled", "cores")
        written.append("ramp_cpu.png")
    logs = out_dir / "logs"
    cdf: dict[str, list[tuple[float, float]]] = {}
    for k, target in enumerate(targets, 1):
        pooled: list[float] = []
        for i in range(1, len(suite.runs) + 1):
            pooled += ix.join_files(
                logs / f"run{i}-step{k}-probes-sent.log", logs / f"run{i}-probes-seen.log"
            ).latencies_ms
        if pooled:
            cdf[f"{target:.0f}/s"] = glass.cdf_points(pooled)
    if cdf:
        glass_plot.cdf_chart(
            out_dir / "ramp_cdf.png",
            "probe latency CDF per step (every run)",
            cdf,
            "ms from the probe sent to its strip decoded",
        )
        written.append("ramp_cdf.png")
    return written


SCENARIO = Ramp()
