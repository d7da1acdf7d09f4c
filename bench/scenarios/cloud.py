"""``cloud``: the cloud link's figures (issue 7), node side and collector side.

Per run:

(a, b) **spool and link** (``bench.cloud_pipeline``, its own process, once per
  ``spool.durability`` of ``fsync`` and ``os``, i.e. with and without fsync per
  commit): the node's ``Spool`` and ``CloudLink`` classes against a collector
  process, ~600-byte summaries. Appends per second through the spool alone (awaited
  to their commit, flat out), the event loop's CPU per append, append -> committed
  latency; a backlog drained through the link (catch-up rate); appends and acks at
  once (sustained summaries per second).
(c) **outage** against the node the bench started: its ``cloud.target`` is a
  collector process this scenario runs (the demo's embedded one is off). With the
  load of ``bench.load_gen`` at 2,000 events/s, the collector is frozen (SIGSTOP:
  no RST, like a black-holed uplink) for ``--seconds`` (default 600, issue 7's ten
  minutes), then resumed (SIGCONT): the node's RSS meanwhile (1 s samples), the
  summaries it spooled, and the catch-up time (resume -> every summary spooled
  before it acked), split into reconnect (resume -> first new ack) and drain.
  Checks that every seq reached the collector once, in order, none missing.
(d) **collector capacity** (``bench.cloud_nodes``, one load process): simulated
  nodes, each its own connection and Sync stream, one summary a second, raised in
  steps until the ack p99 crosses 100 ms; the knee (``capacity_nodes``) and every
  step's ack p50/p99, collector CPU, load CPU and load lag.

Knobs (environment, since the bench's command line is shared by every scenario):

| variable | default | meaning |
|---|---|---|
| ``BENCH_CLOUD_PARTS`` | ``pipeline,outage,capacity`` | which parts run |
| ``BENCH_CLOUD_CAPACITY_RUNS`` | ``1`` | runs that sweep (``all``, ``1,3``): minutes of 2 cores |
| ``BENCH_CLOUD_STEPS`` | ``100,250,500,1000,1500,2000,3000,4000`` | simulated nodes per step |
| ``BENCH_CLOUD_STEP_S`` / ``_SETTLE_S`` | 20 / 3 | each step's window / the wait before it |
| ``BENCH_CLOUD_PIPELINE_S`` | 5 | each measured phase of (a, b) |
| ``BENCH_CLOUD_BACKLOG`` | 20000 | summaries drained through the link in (a) |
| ``BENCH_CLOUD_LOAD_RATE`` | 2000 | events/s during the outage |
| ``BENCH_CLOUD_RAMP_S`` | 30 | the load with the collector up before it: the RSS baseline |

No peer runs: no third-party node or collector does this job to compare with.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench import cloud_figures as cf
from bench import cloud_run, engine_alone, plot
from bench.figures import Figure, Figures, fmt
from bench.node import free_loopback_port
from bench.scenarios import Check, RunContext, RunResult, Scenario
from bench.scenarios.interaction import secret_file

if TYPE_CHECKING:
    from bench.report import Suite

PARTS = ("pipeline", "outage", "capacity")
DEFAULT_STEPS = "100,250,500,1000,1500,2000,3000,4000"
MAX_RSS_GROWTH_MIB = 50.0  # "memory stays bounded": the e2e test's bound, for a short outage
TARGET_ENV = "EDGE_NODE_CLOUD__TARGET"


class Settings:
    """The scenario's knobs, read from the environment (errors name the variable)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        parts = cloud_run.parse_env_list(env.get("BENCH_CLOUD_PARTS"), PARTS)
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise ValueError(f"$BENCH_CLOUD_PARTS: unknown {unknown} (known: {PARTS})")
        self.parts = parts
        runs = env.get("BENCH_CLOUD_CAPACITY_RUNS", "1").strip()
        self.capacity_runs: set[int] | None = None  # None = every run
        if runs != "all":
            try:
                self.capacity_runs = {int(r) for r in runs.split(",") if r.strip()}
            except ValueError:
                raise ValueError(
                    f"$BENCH_CLOUD_CAPACITY_RUNS: {runs!r} (all, or run numbers)"
                ) from None
        from bench.cloud_nodes import parse_steps

        self.steps = parse_steps(env.get("BENCH_CLOUD_STEPS") or DEFAULT_STEPS)
        self.step_s = cloud_run.env_float(env, "BENCH_CLOUD_STEP_S", 20.0)
        self.settle_s = cloud_run.env_float(env, "BENCH_CLOUD_SETTLE_S", 3.0)
        self.pipeline_s = cloud_run.env_float(env, "BENCH_CLOUD_PIPELINE_S", 5.0)
        self.backlog = int(cloud_run.env_float(env, "BENCH_CLOUD_BACKLOG", 20000))
        self.load_rate = cloud_run.env_float(env, "BENCH_CLOUD_LOAD_RATE", 2000.0)
        self.ramp_s = cloud_run.env_float(env, "BENCH_CLOUD_RAMP_S", cloud_run.RAMP_S)

    def capacity_in(self, run_index: int) -> bool:
        if "capacity" not in self.parts:
            return False
        return self.capacity_runs is None or run_index in self.capacity_runs

    def to_json(self) -> dict[str, Any]:
        return {
            "parts": self.parts,
            "capacity_runs": "all" if self.capacity_runs is None else sorted(self.capacity_runs),
            "steps": self.steps,
            "step_s": self.step_s,
            "settle_s": self.settle_s,
            "pipeline_s": self.pipeline_s,
            "backlog": self.backlog,
            "load_rate": self.load_rate,
            "ramp_s": self.ramp_s,
        }


class Cloud(Scenario):
    name = "cloud"
    description = (
        "cloud link: summaries/s through spool and link (fsync and os), event-loop cost "
        "per append, catch-up after a collector outage at 2,000 events/s and the node's "
        "RSS during it, collector capacity in simulated nodes until ack p99 > 100 ms"
    )
    default_seconds = 600.0  # the outage: issue 7's ten minutes
    default_runs = 3
    # The node dials the collector this scenario runs (on the port the harness chose
    # for the embedded one, which is switched off).
    node_env: ClassVar[Mapping[str, str]] = {
        **engine_alone.NODE_ENV,
        "EDGE_NODE_CLOUD__EMBEDDED_COLLECTOR": "",
    }

    def __init__(self) -> None:
        self._collectors: dict[str, cloud_run.CollectorProcess] = {}

    async def run_once(self, ctx: RunContext) -> RunResult:
        settings = Settings(os.environ)
        figures: Figures = {}
        checks: list[Check] = []
        series: dict[str, list[tuple[float, float]]] = {}
        raw: dict[str, Any] = {"settings": settings.to_json()}
        if "pipeline" in settings.parts:
            for d in cf.DURABILITIES:
                result, why = await cloud_run.pipeline(
                    ctx, d, settings.pipeline_s, settings.backlog
                )
                figures.update(cf.pipeline_figures(d, result, why))
                raw[f"pipeline_{d}"] = result or {"error": why}
                drained = (result or {}).get("drain", {}).get("seconds") is not None
                checks.append(
                    Check(
                        f"pipeline ({d}): the backlog drained through the link",
                        drained,
                        why or f"{settings.backlog} summaries",
                    )
                )
        if "outage" in settings.parts:
            outage, checks_o, rss = await self._outage(ctx, settings)
            reason = raw_reason(checks_o)
            figures.update(cf.outage_figures(outage.to_json() if outage else None, reason))
            if outage is not None:
                figures["outage_node_cpu_cores"] = Figure(
                    outage.node_cpu_cores, "cores", None, "control + worker during the outage"
                )
                raw["outage"] = outage.to_json()
            checks += checks_o
            if rss:
                series["node_rss_mib"] = rss
        if settings.capacity_in(ctx.run_index):
            steps, extras, why = await cloud_run.capacity(
                ctx, free_loopback_port(), settings.steps, settings.step_s, settings.settle_s
            )
            figures.update(cf.capacity_figures(steps, reason=why))
            figures["capacity_machine_busy_cores"] = Figure(
                extras.get("machine_busy_cores"),
                "cores",
                None,
                "the whole machine over the sweep: collector, load, the idle node, others",
            )
            raw["capacity"] = {"steps": steps, **extras, "error": why or None}
            knee_nodes = figures["capacity_nodes"].value
            checks.append(
                Check(
                    f"collector: >= {cf.CAPACITY_GOAL_NODES} nodes at ack p99 <= "
                    f"{cf.ACK_P99_LIMIT_MS:g} ms (issue 7 goal)",
                    knee_nodes is not None and knee_nodes >= cf.CAPACITY_GOAL_NODES,
                    why or f"knee at {fmt(knee_nodes)} nodes",
                )
            )
            series["capacity_ack_p99_ms"] = [
                (float(s["nodes"]), float(s["ack_p99_ms"]))
                for s in steps
                if isinstance(s.get("ack_p99_ms"), (int, float))
            ]
        _say(figures)
        return RunResult(figures=figures, checks=checks, series=series, raw=raw)

    async def _outage(
        self, ctx: RunContext, settings: Settings
    ) -> tuple[cloud_run.Outage | None, list[Check], list[tuple[float, float]]]:
        target = ctx.node.env.get(TARGET_ENV, "")
        if not ctx.node.started_by_bench or not target.startswith("127.0.0.1:"):
            why = (
                "the outage needs a node the bench started, dialling the bench's collector "
                f"({TARGET_ENV}={target!r})"
            )
            return None, [Check("outage: measured", False, why)], []
        secret, why = secret_file(ctx)
        if secret is None:
            return None, [Check("outage: the node's secret", False, why)], []
        collector = self._collectors.get(target)
        if collector is None:
            port = int(target.rpartition(":")[2])
            collector = cloud_run.CollectorProcess(
                port, ctx.out_dir / "outage-collector.db", ctx.out_dir / "outage-collector.log"
            )
            self._collectors[target] = collector
        try:
            outage, why = await cloud_run.outage(
                ctx, collector, ctx.seconds, secret, settings.load_rate, ramp_s=settings.ramp_s
            )
            checks = [Check("outage: the node caught up", outage is not None and not why, why)]
            if outage is not None and not why:
                node_id = str((ctx.node.last_health or {}).get("node", "demo"))
                seqs = await cloud_run.stored_seqs(collector, node_id)
                contiguous = seqs == list(range(1, len(seqs) + 1))
                checks.append(
                    Check(
                        "outage: every summary at the collector once, in order, none missing",
                        contiguous and len(seqs) >= (outage.summaries_spooled or 0),
                        f"{len(seqs)} seqs, contiguous from 1: {contiguous}",
                    )
                )
                seen = ", ".join(
                    f"{s} x{outage.statuses.count(s)}" for s in sorted(set(outage.statuses))
                )
                ok = all(s == "ok" for s in outage.statuses)
                checks.append(Check("outage: /healthz ok throughout (the show goes on)", ok, seen))
                spool_ok = not any("spool" in s for s in outage.statuses)
                checks.append(Check("outage: the spool stayed healthy throughout", spool_ok, seen))
                growth = (
                    (outage.rss_outage_max - outage.rss_before) / cf.MIB
                    if outage.rss_outage_max is not None and outage.rss_before is not None
                    else None
                )
                checks.append(
                    Check(
                        f"outage: node RSS grew less than {MAX_RSS_GROWTH_MIB:g} MiB",
                        growth is not None and growth < MAX_RSS_GROWTH_MIB,
                        f"{fmt(growth)} MiB over {fmt(outage.outage_s)} s",
                    )
                )
            return outage, checks, outage.rss_series if outage else []
        finally:
            # Stopped between runs: the next run starts it again on the same database.
            await collector.stop()

    def write_plots(self, suite: Suite, out_dir: Path) -> list[str]:
        return plots(suite, out_dir)


def raw_reason(checks: list[Check]) -> str:
    """The reason of the first failed check, for the figures' notes."""
    return next((c.detail for c in checks if not c.ok and c.detail), "")


def _say(figures: Mapping[str, Figure]) -> None:
    names = (
        "spool_fsync_appends_per_second",
        "spool_fsync_append_loop_us",
        "link_fsync_summaries_per_second",
        "link_fsync_drain_summaries_per_second",
        "link_os_summaries_per_second",
        "catchup_s",
        "node_rss_outage_growth_mib",
        "capacity_nodes",
        "capacity_ack_p99_ms",
    )
    parts = [f"{n}={fmt(figures[n].value, figures[n].unit)}" for n in names if n in figures]
    print("  " + ", ".join(parts), file=sys.stderr, flush=True)


def plots(suite: Suite, out_dir: Path) -> list[str]:
    written: list[str] = []
    curves = {
        f"run {i}": run.series["capacity_ack_p99_ms"]
        for i, run in enumerate(suite.runs, 1)
        if run.series.get("capacity_ack_p99_ms")
    }
    if curves:
        curves["limit (100 ms)"] = [
            (min(x for c in curves.values() for x, _ in c), cf.ACK_P99_LIMIT_MS),
            (max(x for c in curves.values() for x, _ in c), cf.ACK_P99_LIMIT_MS),
        ]
        plot.line_chart(
            out_dir / "cloud_capacity.png",
            "collector: ack p99 by simulated nodes (1 summary/s each)",
            curves,
            "simulated nodes",
            "ack p99 (ms)",
        )
        written.append("cloud_capacity.png")
    rss = {
        f"run {i}": run.series["node_rss_mib"]
        for i, run in enumerate(suite.runs, 1)
        if run.series.get("node_rss_mib")
    }
    if rss:
        plot.line_chart(
            out_dir / "cloud_outage_rss.png",
            "node RSS (control + worker): load ramp (< 0 s), then the collector stopped",
            rss,
            "seconds into the outage",
            "MiB",
        )
        written.append("cloud_outage_rss.png")
    return written


SCENARIO = Cloud()
