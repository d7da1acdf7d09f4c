"""``interaction``: event sent -> probe pixels decoded at a WHEP viewer, under load
(issue 5), and the interaction engine alone at 10k events/s.

Per run, against the demo node (``bench.probe`` on; comment/like/vote and per-address
limits raised and ``overlay.max_on_screen`` = 50 through ``EDGE_NODE_*``, so that the
load is accepted and 50 danmaku are on screen):

- a WHEP viewer in its own process (``bench.glass_viewer --strip probe``) logs
  ``seq monotonic_s`` for every decoded 720p30 picture, ``seq`` read from the
  top-left probe strip;
- a load process (``bench.load_gen``, with ``--user-prefix`` for users of the
  run's own) sends 2,000 events/s (40% comments, 50% likes, 10% votes) from 100
  users, one WebSocket each, and keeps the danmaku board full (the node's own
  ``edge_node_danmaku_on_screen`` gauge, sampled over the window, says how full);
- after a ramp (the board fills), a prober process (``bench.probe_sender``, bench
  role) sends ``seconds x 10`` probes at 10/s over the WebSocket and logs their send
  times; CLOCK_MONOTONIC is one clock for every process of the machine, so per
  probe: latency = first decoded picture showing its ``seq`` - send time;
- the node is sampled (/proc, /metrics) over the prober's window: CPU, RSS, its
  ``edge_node_event_to_frame_seconds`` and ``edge_node_engine_handle_seconds``
  histograms, the events it handled and the danmaku on screen;
- then, with the load stopped, the engine alone in this process
  (``bench.engine_alone``): 100k mixed events on a virtual clock at 10k/s, each
  ``handle()`` + ``scene()`` timed.

There is no peer to run: issue 5's figure for a bare aiortc sender (p50 56 ms, p99
73 ms on this box) is quoted as ``reference_aiortc_sender_*``, not measured here.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench import engine_alone, plot, procstat, show
from bench import interaction as ix
from bench.figures import Figure, Figures, fmt
from bench.glass_procs import ROOT, BusyMeter, JsonChild
from bench.live_clients import load_prefix
from bench.sampler import Sample, Sampler, cpu_series
from bench.scenarios import Check, Peer, RunContext, RunResult, Scenario
from bench.whep_run import node_figures

if TYPE_CHECKING:
    from bench.report import Suite

PROBE_RATE_PER_S = 10.0
LOAD_RATE_PER_S = 2000.0
LOAD_USERS = 100
RAMP_S = 6.0  # load running before the probes: the board fills (lanes take ~1/s each)
GRACE_S = 1.0  # the viewer keeps logging this long after the last probe
READY_TIMEOUT_S = 30.0
SEED_P99_MS = 200.0  # issue 5: on screen in under 200 ms
TARGET_P99_MS = 100.0  # issue 5: glass to glass p99 < 100 ms
SECRET_ENV = "BENCH_NODE_SECRET_FILE"


class FieldReference(Peer):
    """Issue 5's bare aiortc sender: quoted, not rebuilt (no run)."""

    name = "aiortc sender (issue 5 reference)"

    def unavailable(self) -> str | None:
        return (
            "not run: issue 5 quotes a bare aiortc sender that draws the probe into the "
            "next frame and VP8-encodes it per viewer at p50 "
            f"{ix.FIELD_REFERENCE_MS['p50']:g} ms, p99 {ix.FIELD_REFERENCE_MS['p99']:g} ms on "
            "this box; the bench reports those as reference_aiortc_sender_* (NOT measured in "
            "this run) and the node's ratios to them"
        )

    def describe(self, seconds: float) -> dict[str, Any]:
        return {"name": self.name}

    async def run(self, seconds: float, log_path: Path) -> Figures:
        return {}


def secret_file(ctx: RunContext) -> tuple[Path | None, str]:
    """The node's token secret: in the data dir of a node the bench started, else the
    file named by $BENCH_NODE_SECRET_FILE (``--target``)."""
    data_dir = getattr(ctx.node, "_data_dir", None)
    if ctx.node.started_by_bench and data_dir:
        path = Path(data_dir) / "node.secret"
        return (path, "") if path.exists() else (None, f"{path} does not exist")
    named = os.environ.get(SECRET_ENV)
    if named and Path(named).exists():
        return Path(named), ""
    return None, (
        f"with --target, set {SECRET_ENV} to the node's secret file (its data dir's "
        "node.secret) so that the bench can mint bench, viewer and operator tokens"
    )


async def _spawn(name: str, argv: list[str], log: Path, env: Mapping[str, str]) -> JsonChild:
    with open(log, "wb") as fh:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=fh,
            cwd=ROOT,
            env={**os.environ, **env},
        )
    return JsonChild(name, proc)


def seq_start(run_index: int, count: int) -> int:
    """Each run's probes get their own seq range, so a strip left over from the run
    before never matches."""
    return (1000 + (run_index - 1) * (count + 1000)) % ix.SEQ_MODULO


class Interaction(Scenario):
    name = "interaction"
    description = (
        "event sent -> probe pixels at a WHEP viewer (720p30) with 50 danmaku on screen "
        "and 2,000 other events/s: p50/p90/p99 over seconds x 10 probes; the node's "
        "event-to-frame and engine histograms, CPU, RSS; the engine alone at 10k events/s"
    )
    default_seconds = 100.0  # 10 probes/s: 1,000 probes per run
    default_runs = 3
    node_env: ClassVar[Mapping[str, str]] = engine_alone.NODE_ENV
    peer: ClassVar[Peer | None] = FieldReference()

    async def run_once(self, ctx: RunContext) -> RunResult:
        return await _run(ctx)

    def derived_figures(self, figures: Mapping[str, Figure]) -> Figures:
        return derived(figures)

    def write_plots(self, suite: Suite, out_dir: Path) -> list[str]:
        return plots(suite, out_dir)


def derived(figures: Mapping[str, Figure]) -> Figures:
    out: Figures = {}
    for q, ref in ix.FIELD_REFERENCE_MS.items():
        out[f"reference_aiortc_sender_{q}_ms"] = Figure(ref, "ms", None, ix.FIELD_REFERENCE_NOTE)
        node = figures.get(f"probe_latency_{q}_ms")
        if node is not None and node.value is not None:
            out[f"probe_latency_{q}_to_reference_ratio"] = Figure(
                node.value / ref,
                "ratio",
                "lower",
                f"median probe {q} / issue 5's aiortc sender {q} (reference, not measured here)",
            )
    return out


async def _run(ctx: RunContext) -> RunResult:
    node = ctx.node
    count = max(1, round(ctx.seconds * PROBE_RATE_PER_S))
    logs = {name: ctx.log_path(name) for name in ("probes-sent", "probes-seen")}
    secret, secret_reason = secret_file(ctx)
    figures: Figures = {}
    checks: list[Check] = []
    raw: dict[str, Any] = {"probe_count": count, "seq_start": seq_start(ctx.run_index, count)}
    if secret is None:
        figures.update(ix.latency_figures("probe", None, secret_reason))
        checks.append(Check("tokens: the node's secret", False, secret_reason))
        return RunResult(figures=figures, checks=checks, raw=raw)

    await node.health(ctx.http)
    health_before = dict(node.last_health or {})
    pids, pid_reason = node.local_pids()
    sampler = Sampler(ctx.http, f"{node.base_url}/metrics", pids)
    busy = BusyMeter()
    py = sys.executable
    viewer = load = prober = None
    edges: list[Sample] = []
    client_cpu: list[float] = []  # the bench's own processes' CPU seconds at the edges
    results: dict[str, Any] = {}
    reason = ""
    sampler.start()
    try:
        viewer = await _spawn(
            "viewer",
            [py, "-m", "bench.glass_viewer", "--strip", "probe", "--url", node.base_url,
             "--log", str(logs["probes-seen"]), "--json", "--stdin"],
            ctx.log_path("viewer"),
            {},
        )  # fmt: skip
        load = await _spawn(
            "load",
            # Users of this run's own (the node deduplicates on (user, id), and
            # every run's load numbers its messages alike).
            [py, "-m", "bench.load_gen", "--user-prefix", load_prefix(ctx.run_index),
             "--url", node.base_url, "--secret-file", str(secret),
             "--rate", f"{LOAD_RATE_PER_S:g}", "--users", str(LOAD_USERS),
             "--poll", f"bench-run{ctx.run_index}", "--seed", str(ctx.run_index),
             "--json", "--stdin"],
            ctx.log_path("load"),
            {},
        )  # fmt: skip
        if await viewer.wait_event("playing", READY_TIMEOUT_S) is None:
            reason = f"the viewer got no picture; see {ctx.log_path('viewer')}"
        elif await load.wait_event("running", READY_TIMEOUT_S) is None:
            reason = f"the load did not start; see {ctx.log_path('load')}"
        else:
            await asyncio.sleep(RAMP_S)
            edges.append(await sampler.sample())
            busy.start()
            client_cpu.append(_cpu_s(viewer, load))
            prober = await _spawn(
                "prober",
                [py, "-m", "bench.probe_sender", "--url", node.base_url,
                 "--secret-file", str(secret), "--log", str(logs["probes-sent"]),
                 "--count", str(count), "--rate", f"{PROBE_RATE_PER_S:g}",
                 "--seq-start", str(raw["seq_start"]), "--json", "--stdin"],
                ctx.log_path("prober"),
                {},
            )  # fmt: skip
            # The prober sends for count / rate seconds, then waits up to 5 s for acks.
            wait_s = count / PROBE_RATE_PER_S + READY_TIMEOUT_S
            if await prober.wait_event("result", wait_s) is None:
                reason = f"the prober did not finish; see {ctx.log_path('prober')}"
            edges.append(await sampler.sample())
            busy.stop()
            client_cpu.append(_cpu_s(viewer, load, prober))
            await asyncio.sleep(GRACE_S)
    finally:
        for name, child in (("prober", prober), ("load", load), ("viewer", viewer)):
            if child is not None:
                results[name] = await child.stop()
        await sampler.stop()
    await node.health(ctx.http)
    health_after = dict(node.last_health or {})

    join = ix.join_files(logs["probes-sent"], logs["probes-seen"]) if not reason else None
    figures.update(ix.latency_figures("probe", join, reason))
    prober_result = results.get("prober") or {}
    figures["probe_ack_p50_ms"] = Figure(
        prober_result.get("ack_p50_ms"), "ms", "lower", "WebSocket send -> ack, at the prober"
    )
    figures["probe_ack_p99_ms"] = Figure(prober_result.get("ack_p99_ms"), "ms", "lower")
    load_result = results.get("load")
    figures.update(ix.load_figures(load_result, LOAD_RATE_PER_S))
    viewer_result = results.get("viewer") or {}
    figures["viewer_frames"] = Figure(viewer_result.get("frames"), "frames")
    if len(edges) == 2:
        e0, e1 = edges
        window = e1.t - e0.t
        figures.update(node_figures(sampler, e0, e1, pids, pid_reason))
        figures.update(
            ix.histogram_figures(
                "node_event_to_frame", e0.metrics, e1.metrics, "edge_node_event_to_frame_seconds"
            )
        )
        figures.update(
            ix.histogram_figures(
                "node_engine_handle", e0.metrics, e1.metrics, "edge_node_engine_handle_seconds"
            )
        )
        outcomes = ix.events_by_outcome(e0.metrics, e1.metrics)
        figures.update(ix.event_rate_figures(outcomes, window))
        raw["node_events"] = {f"{t}:{o}": v for (t, o), v in sorted(outcomes.items())}
        figures.update(danmaku_figures(sampler.samples, e0, e1))
    else:
        figures.update(show.danmaku_figures([]))
    figures["machine_busy_cores"] = Figure(
        busy.cores,
        "cores",
        None,
        "the whole machine over the window: node, viewer, load, prober and anything else",
    )
    if len(edges) == 2 and len(client_cpu) == 2:
        wall = edges[1].t - edges[0].t
        clients = (client_cpu[1] - client_cpu[0]) / wall if wall > 0 else None
        figures["bench_clients_cpu_cores"] = Figure(
            clients, "cores", None, "viewer + load + prober processes over the window"
        )
        node_cpu = _value(figures, "node_cpu_cores")
        if busy.cores is not None and clients is not None and node_cpu is not None:
            figures["other_busy_cores"] = Figure(
                max(0.0, busy.cores - clients - node_cpu),
                "cores",
                None,
                "machine busy - node - bench clients: other work on the box during the window "
                "(contention; the figures are only comparable when this is near 0)",
            )
    restarts = _restarts(health_after) - _restarts(health_before)
    figures["node_worker_restarts"] = Figure(restarts, "restarts", "lower")

    # The engine alone, with the load stopped (the node idles at its test pattern).
    t = time.monotonic()
    engine_run = await asyncio.to_thread(engine_alone.run, seed=ctx.run_index)
    figures.update(engine_alone.figures(engine_run))
    raw["engine_alone"] = {
        "seconds": round(time.monotonic() - t, 3),
        "outcomes": dict(sorted(engine_run.outcomes.items())),
        "font": engine_run.font,
    }

    checks += _checks(figures, join, reason, load_result, count)
    raw.update(
        {
            "prober": prober_result,
            "viewer": viewer_result,
            "load": dict(load_result or {}),
            "lost_seqs": join.lost_seqs[:100] if join else [],
            "pids": {"control": pids[0], "worker": pids[1]} if pids else None,
            "pids_unavailable": pid_reason,
        }
    )
    series = {"node_cpu_cores": cpu_series(sampler.samples)} if pids else {}
    _say(figures)
    return RunResult(figures=figures, checks=checks, series=series, raw=raw)


def danmaku_figures(samples: Sequence[Sample], start: Sample, end: Sample) -> Figures:
    """``danmaku_on_screen_median`` and ``_min``: the node's ``edge_node_danmaku_on_screen``
    gauge in the samples from ``start`` to ``end`` (the window's edges, both taken)."""
    return show.danmaku_figures([s for s in samples if start.t <= s.t <= end.t])


def _cpu_s(*children: JsonChild | None) -> float:
    total = 0.0
    for child in children:
        stat = procstat.read(child.proc.pid) if child is not None else None
        total += stat.cpu_s if stat is not None else 0.0
    return total


def _say(figures: Mapping[str, Figure]) -> None:
    """This scenario's headline after each run (the harness prints the generic one)."""
    names = (
        "probe_latency_p50_ms",
        "probe_latency_p99_ms",
        "probe_probes_lost",
        "node_events_per_second",
        "danmaku_on_screen_median",
        "machine_busy_cores",
        "other_busy_cores",
        "engine_alone_p50_ms",
        "engine_alone_p99_ms",
        "engine_alone_cpu_p99_ms",
        "engine_alone_capacity_events_per_second",
    )
    parts = [f"{n}={fmt(figures[n].value, figures[n].unit)}" for n in names if n in figures]
    print("  " + ", ".join(parts), file=sys.stderr, flush=True)


def _value(figures: Mapping[str, Figure], name: str) -> float | None:
    f = figures.get(name)
    return f.value if f is not None else None


def _checks(
    figures: Figures,
    join: ix.ProbeJoin | None,
    reason: str,
    load_result: Mapping[str, Any] | None,
    count: int,
) -> list[Check]:
    checks: list[Check] = []
    if join is None:
        return [Check("probes seen at the viewer", False, reason)]
    checks.append(
        Check(
            "probes seen at the viewer (at most 1% lost)",
            join.sent > 0 and (join.lost_percent or 0.0) <= 1.0,
            f"{join.seen} of {join.sent} ({join.lost} lost, {join.foreign + join.early} misreads)",
        )
    )
    checks.append(
        Check(
            "at least 1,000 probes (issue 5)",
            join.sent >= 1000,
            f"{join.sent} sent" + ("" if join.sent >= 1000 else " (a shorter --seconds)"),
        )
    )
    p99 = join.quantile(99)
    for label, bound in (("seed", SEED_P99_MS), ("target", TARGET_P99_MS)):
        checks.append(
            Check(
                f"probe p99 under {bound:g} ms ({label})",
                p99 is not None and p99 < bound,
                f"p99 {p99:.1f} ms" if p99 is not None else "no latency",
            )
        )
    errors = _value(figures, "load_errors")
    checks.append(
        Check(
            "load: every event acked",
            bool(load_result) and errors == 0 and not (load_result or {}).get("error"),
            (load_result or {}).get("error") or f"{errors} error replies",
        )
    )
    rate = _value(figures, "node_events_per_second")
    checks.append(
        Check(
            f"node handled >= 90% of {LOAD_RATE_PER_S:g} events/s",
            rate is not None and rate >= 0.9 * LOAD_RATE_PER_S,
            f"{rate:.0f} events/s" if rate is not None else "no /metrics",
        )
    )
    on_screen = _value(figures, "danmaku_on_screen_median")
    checks.append(
        Check(
            f"about {show.DANMAKU} danmaku on screen (node gauge)",
            on_screen is not None and on_screen >= 0.9 * show.DANMAKU,
            f"median {on_screen:.0f}" if on_screen is not None else "no gauge",
        )
    )
    engine_p99 = _value(figures, "engine_alone_p99_ms")
    checks.append(
        Check(
            f"engine alone p99 under {engine_alone.TARGET_P99_MS:g} ms (target)",
            engine_p99 is not None and engine_p99 < engine_alone.TARGET_P99_MS,
            f"p99 {engine_p99:.3f} ms" if engine_p99 is not None else "no figure",
        )
    )
    busy = _value(figures, "engine_alone_busy_percent")
    checks.append(
        Check(
            f"engine alone keeps up with {engine_alone.DEFAULT_RATE_PER_S:g} events/s",
            busy is not None and busy < 100.0,
            f"busy {busy:.0f}% of each second of events" if busy is not None else "no figure",
        )
    )
    return checks


def _restarts(health: Mapping[str, Any]) -> int:
    worker = health.get("worker") or {}
    value = worker.get("restarts", 0)
    return int(value) if isinstance(value, int) else 0


def plots(suite: Suite, out_dir: Path) -> list[str]:
    from bench.glass_plot import cdf_chart

    written: list[str] = []
    f = suite.figures

    def v(name: str) -> float | None:
        fig = f.get(name)
        return fig.value if fig is not None else None

    bars = {
        "p50": [v("probe_latency_p50_ms"), v("reference_aiortc_sender_p50_ms")],
        "p99": [v("probe_latency_p99_ms"), v("reference_aiortc_sender_p99_ms")],
    }
    if any(x is not None for xs in bars.values() for x in xs):
        plot.bar_chart(
            out_dir / "interaction.png",
            f"event -> pixels at a WHEP viewer, median of {len(suite.runs)} runs",
            ["node (this run)", "aiortc sender (issue 5, not measured here)"],
            bars,
            "ms",
        )
        written.append("interaction.png")
    series: dict[str, list[tuple[float, float]]] = {}
    for i in range(1, len(suite.runs) + 1):
        logs = out_dir / "logs"
        j = ix.join_files(logs / f"run{i}-probes-sent.log", logs / f"run{i}-probes-seen.log")
        if j.latencies_ms:
            series[f"run {i}"] = ix.cdf_points(j.latencies_ms)
    if series:
        cdf_chart(
            out_dir / "interaction_cdf.png",
            "event -> pixels: latency CDF of every probe, per run",
            series,
            "ms from the probe sent to its strip decoded",
        )
        written.append("interaction_cdf.png")
    return written


SCENARIO = Interaction()
