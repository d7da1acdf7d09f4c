"""The ``cloud`` scenario's processes and measurements: a collector process it can start,
freeze and resume, the pipeline runs, the outage run against the node, and the
capacity sweep. Figures are made from what these return by ``bench.cloud_figures``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import procstat
from bench.glass_procs import ROOT, BusyMeter, JsonChild

if TYPE_CHECKING:
    from bench.scenarios import RunContext

COLLECTOR_START_TIMEOUT_S = 20.0
CAUGHT_UP_TIMEOUT_S = 45.0  # the node's link retries with up to 10 s between attempts
READY_TIMEOUT_S = 30.0
RAMP_S = 30.0  # load running, collector up, before the outage: the node's caches fill
HEALTH_EVERY_S = 0.1  # while catching up
SAMPLE_EVERY_S = 1.0  # during the outage
STALE_VIDEO_S = 2.0  # the node's /healthz calls the picture stale from here (app.py)


class CollectorProcess:
    """``python -m edge_node collector`` on a fixed loopback port; can be frozen
    (SIGSTOP: a hung collector or a black-holed uplink, no RST) and resumed."""

    def __init__(self, port: int, db: Path, log: Path | None = None) -> None:
        self.address = f"127.0.0.1:{port}"
        self.db = db
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.paused = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        stderr: Any = asyncio.subprocess.DEVNULL
        log_fh = open(self.log, "ab") if self.log is not None else None  # noqa: SIM115
        if log_fh is not None:
            stderr = log_fh
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edge_node", "collector",
                "--listen", self.address, "--db", str(self.db),
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=ROOT,
                env={k: v for k, v in os.environ.items() if not k.startswith("EDGE_NODE_")},
            )  # fmt: skip
        finally:
            if log_fh is not None:
                log_fh.close()
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), COLLECTOR_START_TIMEOUT_S)
        if b"listening on" not in line:
            await self.stop()
            raise RuntimeError(f"the collector on {self.address} did not start: {line!r}")

    def pause(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.paused = False

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        self.resume()
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# --- (a) and (b) -----------------------------------------------------------------------


async def pipeline(
    ctx: RunContext, durability: str, seconds: float, backlog: int
) -> tuple[dict[str, Any] | None, str]:
    """One ``bench.cloud_pipeline`` child; (its result, why there is none)."""
    work = ctx.out_dir / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    busy = BusyMeter()
    busy.start()
    with open(ctx.log_path(f"pipeline-{durability}"), "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.cloud_pipeline", "--durability", durability,
            "--seconds", f"{seconds:g}", "--backlog", str(backlog), "--workdir", str(work),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
        )  # fmt: skip
    timeout = 4 * seconds + 180
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None, f"bench.cloud_pipeline did not finish within {timeout:g} s"
    finally:
        busy.stop()
    result = _last_json(out)
    if result is None:
        return None, f"bench.cloud_pipeline printed no result (exit {proc.returncode})"
    if result.get("error"):
        return None, str(result["error"])
    result["machine_busy_cores"] = busy.cores
    return result, ""


def _last_json(out: bytes) -> dict[str, Any] | None:
    for line in reversed(out.splitlines()):
        with contextlib.suppress(ValueError):
            msg = json.loads(line)
            if isinstance(msg, dict):
                return msg
    return None


# --- (c): outage and catch-up ----------------------------------------------------------


@dataclass
class Outage:
    """What one outage run saw (the fields ``cloud_figures.outage_figures`` reads)."""

    outage_s: float = 0.0
    rss_before: int | None = None
    rss_outage_max: int | None = None
    control_rss_before: int | None = None
    ramp_s: float = 0.0
    rss_ramp_start: int | None = None  # the same load with the collector up: the baseline
    control_rss_ramp_start: int | None = None
    control_rss_outage_max: int | None = None
    spool_depth_max: int = 0
    summaries_spooled: int | None = None
    catchup_s: float | None = None
    reconnect_s: float | None = None
    drain_s: float | None = None
    load_events_per_second: float | None = None
    node_cpu_cores: float | None = None
    machine_busy_cores: float | None = None  # the whole box during the outage
    statuses: list[str] = field(default_factory=list)  # /healthz status during the outage
    rss_series: list[tuple[float, float]] = field(default_factory=list)  # (s, MiB)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "rss_series"}


async def _health(ctx: RunContext) -> dict[str, Any]:
    _, body = await ctx.node.health(ctx.http)
    return body or {}


async def wait_caught_up(ctx: RunContext, timeout_s: float = CAUGHT_UP_TIMEOUT_S) -> bool:
    """The node's link is up and its spool (almost) empty: at most the summary of the
    second in progress waits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cloud = (await _health(ctx)).get("cloud") or {}
        if cloud.get("connected") and cloud.get("spool_depth", 99) <= 1 and cloud.get("acked_seq"):
            return True
        await asyncio.sleep(0.25)
    return False


def describe_status(health: Mapping[str, Any]) -> str:
    """``ok``, or ``degraded`` with what /healthz shows wrong (the worker, a stale
    picture, the spool), so a report tells the outage's doing from a starved box."""
    status = str(health.get("status"))
    if status == "ok":
        return status
    why = []
    if not (health.get("worker") or {}).get("alive", True):
        why.append("worker down")
    age = (health.get("video") or {}).get("last_packet_age_s")
    if isinstance(age, (int, float)) and age >= STALE_VIDEO_S:
        why.append("video stale")
    if not (health.get("spool") or {}).get("healthy", True):
        why.append("spool unhealthy")
    return f"{status} ({', '.join(why) or 'no reason shown'})"


def _rss(pids: Sequence[int]) -> tuple[int | None, int | None]:
    """(control + worker, control) VmRSS in bytes."""
    values = [procstat.rss_bytes(p) for p in pids]
    if not values or any(v is None for v in values):
        return None, None
    return sum(v for v in values if v is not None), values[0]


def _cpu(pids: Sequence[int]) -> float | None:
    stats = [procstat.read(p) for p in pids]
    if not stats or any(s is None for s in stats):
        return None
    return sum(s.cpu_s for s in stats if s is not None)


async def outage(
    ctx: RunContext,
    collector: CollectorProcess,
    outage_s: float,
    secret: Path,
    load_rate: float,
    load_users: int = 100,
    ramp_s: float = RAMP_S,
) -> tuple[Outage | None, str]:
    """Collector frozen for ``outage_s`` while a load of ``load_rate`` events/s runs:
    the node's memory meanwhile, and how long it takes to catch up afterwards."""
    if not collector.running:
        await collector.start()
    if not await wait_caught_up(ctx):
        return None, f"the node's link did not catch up with {collector.address} first"
    pids, why = ctx.node.local_pids()
    if not pids:
        return None, f"the node's processes cannot be read: {why}"
    load = await JsonChild.spawn(
        "load",
        [sys.executable, "-m", "bench.load_gen", "--url", ctx.node.base_url,
         "--secret-file", str(secret), "--rate", f"{load_rate:g}", "--users", str(load_users),
         "--poll", f"cloud-run{ctx.run_index}", "--seed", str(ctx.run_index), "--json", "--stdin"],
        ctx.log_path("load"),
    )  # fmt: skip
    result = Outage(outage_s=outage_s, ramp_s=ramp_s)
    load_result: dict[str, Any] | None = None
    try:
        if await load.wait_event("running", READY_TIMEOUT_S) is None:
            load_result = await load.stop()
            error = (load_result or {}).get("error") or "no error reported"
            return None, f"the load did not start ({error}); see {ctx.log_path('load')}"
        # The baseline: the same load with the collector up, sampled like the outage.
        t_ramp = time.monotonic()
        result.rss_ramp_start, result.control_rss_ramp_start = _rss(pids)
        while (elapsed := time.monotonic() - t_ramp) < ramp_s:
            await asyncio.sleep(min(SAMPLE_EVERY_S, max(0.0, ramp_s - elapsed)))
            rss, _ = _rss(pids)
            if rss is not None:
                result.rss_series.append((time.monotonic() - t_ramp - ramp_s, rss / 2**20))
        result.rss_before, result.control_rss_before = _rss(pids)
        cpu0, t_stop = _cpu(pids), time.monotonic()
        busy = BusyMeter()
        busy.start()
        collector.pause()
        try:
            while (elapsed := time.monotonic() - t_stop) < outage_s:
                await asyncio.sleep(min(SAMPLE_EVERY_S, max(0.0, outage_s - elapsed)))
                health = await _health(ctx)
                result.statuses.append(describe_status(health))
                depth = (health.get("spool") or {}).get("depth")
                if isinstance(depth, int):
                    result.spool_depth_max = max(result.spool_depth_max, depth)
                rss, control = _rss(pids)
                if rss is not None and control is not None:
                    result.rss_outage_max = max(result.rss_outage_max or 0, rss)
                    result.control_rss_outage_max = max(result.control_rss_outage_max or 0, control)
                    result.rss_series.append((time.monotonic() - t_stop, rss / 2**20))
            health = await _health(ctx)
            last_seq = int((health.get("spool") or {}).get("next_seq", 1)) - 1
            acked_before = int((health.get("cloud") or {}).get("acked_seq", 0))
            cpu1, t_resume = _cpu(pids), time.monotonic()
        finally:
            collector.resume()
            result.machine_busy_cores = busy.stop()
        result.summaries_spooled = last_seq - acked_before
        if cpu0 is not None and cpu1 is not None:
            result.node_cpu_cores = (cpu1 - cpu0) / (t_resume - t_stop)
        t_first: float | None = None
        deadline = t_resume + max(60.0, outage_s)
        while time.monotonic() < deadline:
            acked = int(((await _health(ctx)).get("cloud") or {}).get("acked_seq", 0))
            now = time.monotonic()
            if t_first is None and acked > acked_before:
                t_first = now
            if acked >= last_seq:
                result.catchup_s = now - t_resume
                result.reconnect_s = (t_first or now) - t_resume
                result.drain_s = now - (t_first or now)
                break
            await asyncio.sleep(HEALTH_EVERY_S)
        reason = "" if result.catchup_s is not None else "the node did not catch up in time"
    finally:
        if load_result is None:
            load_result = await load.stop()
    seconds = (load_result or {}).get("seconds")
    sent = (load_result or {}).get("sent")
    if isinstance(seconds, (int, float)) and seconds > 0 and isinstance(sent, int):
        result.load_events_per_second = sent / seconds
    return result, reason


async def stored_seqs(collector: CollectorProcess, node_id: str) -> list[int]:
    """The node's seqs in the collector's database, oldest window first."""
    from edge_node.cloud.collector import CollectorClient

    async with CollectorClient(collector.address) as client:
        return [s.seq async for s in client.query_summaries(node_id=node_id)]


# --- (d): capacity -------------------------------------------------------------------


async def capacity(
    ctx: RunContext,
    port: int,
    steps: Sequence[int],
    step_s: float,
    settle_s: float,
) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """The sweep against a fresh collector process; (steps, extras, why none)."""
    collector = CollectorProcess(
        port, ctx.out_dir / f"capacity-run{ctx.run_index}.db", ctx.log_path("capacity-collector")
    )
    await collector.start()
    busy = BusyMeter()
    busy.start()
    nodes = await JsonChild.spawn(
        "nodes",
        [sys.executable, "-m", "bench.cloud_nodes", "--target", collector.address,
         "--steps", ",".join(map(str, steps)), "--step-seconds", f"{step_s:g}",
         "--settle-seconds", f"{settle_s:g}", "--collector-pid", str(collector.pid),
         "--json", "--stdin"],
        ctx.log_path("capacity-nodes"),
    )  # fmt: skip
    try:
        budget = len(steps) * (step_s + settle_s + 40.0) + 60.0
        done = await nodes.wait_event("result", budget)
    finally:
        await nodes.stop()
        busy.stop()
        rss = procstat.rss_bytes(collector.pid) if collector.pid else None
        await collector.stop()
    extras = {"machine_busy_cores": busy.cores, "collector_rss_end": rss}
    if done is None:
        return [], extras, f"bench.cloud_nodes gave no result; see {ctx.log_path('capacity-nodes')}"
    steps_done = done.get("steps")
    return (steps_done if isinstance(steps_done, list) else []), extras, ""


def parse_env_list(value: str | None, default: Sequence[str]) -> list[str]:
    if not value:
        return list(default)
    return [v.strip() for v in value.split(",") if v.strip()]


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"${name}: {raw!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"${name}: must be > 0, got {raw}")
    return value
