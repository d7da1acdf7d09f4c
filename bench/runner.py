"""The harness: node up, N runs of a scenario, node down, peer runs, report.

Owns every process it starts: the node (stopped with SIGINT, killed after a
timeout), the viewers (through the scenario's runs) and the peer. A run that fails
half-way still stops them before the error goes up.
"""

from __future__ import annotations

import asyncio
import datetime
import sys
from pathlib import Path
from typing import Any

import aiohttp

from bench import machine
from bench import node as node_mod
from bench.figures import Figure, Figures, fmt, median_figures
from bench.report import Suite, write
from bench.scenarios import RunContext, RunResult, Scenario

WARMUP_S = 2.0

# Shown after each run, when the scenario produced them.
_HEADLINE = (
    "viewer_frames_per_second",
    "viewer_missed_frames",
    "node_cpu_cores",
    "node_rss_max_mib",
    "capture_to_fanout_p99_ms",
    "whep_latency_p50_ms",
    "whep_latency_p99_ms",
    "push_latency_p50_ms",
    "push_latency_p99_ms",
)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _headline(figures: Figures) -> str:
    parts = [
        f"{name}={fmt(figures[name].value, figures[name].unit)}"
        for name in _HEADLINE
        if name in figures
    ]
    return ", ".join(parts)


async def _run_peer(
    scenario: Scenario, seconds: float, runs: int, out_dir: Path
) -> tuple[dict[str, Any] | None, str | None, list[Figures]]:
    peer = scenario.peer
    if peer is None:
        return None, f"scenario {scenario.name} has no peer", []
    reason = peer.unavailable()
    if reason is not None:
        return None, reason, []
    results: list[Figures] = []
    for i in range(1, runs + 1):
        log = out_dir / "logs" / f"peer{i}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        _say(f"peer run {i}/{runs}: {peer.name}, {seconds:g} s")
        results.append(await peer.run(seconds, log))
    info = peer.describe(seconds)
    info["runs"] = [{k: f.to_json() for k, f in r.items()} for r in results]
    return info, None, results


async def run_suite(
    scenario: Scenario,
    seconds: float,
    runs: int,
    out_dir: Path,
    target: str | None = None,
    with_peer: bool = True,
    warmup_s: float = WARMUP_S,
) -> Suite:
    """Everything ``python -m bench run`` does; raises NodeStartError when there is no node."""
    import edge_node

    out_dir.mkdir(parents=True, exist_ok=True)
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    results: list[RunResult] = []
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        if target is None:
            _say(f"starting a node (log: {out_dir / 'node.log'})")
            node = await node_mod.start(http, out_dir, dict(scenario.node_env))
            _say(f"node healthy at {node.base_url} after {node.startup_s:.1f} s")
        else:
            node = await node_mod.attach(http, target)
            _say(f"driving the node at {node.base_url}")
        health = dict(node.last_health or {})
        stop_outcome = "left running (--target)"
        notes: list[str] = []
        try:
            if not await node.wait_streaming(http):
                notes.append("the node showed no encoder or outgoing frames before run 1")
            if warmup_s > 0:
                # The first seconds of a fresh node (x264 start, first keyframes, caches)
                # are not its steady state.
                _say(f"warming up for {warmup_s:g} s")
                await asyncio.sleep(warmup_s)
            for i in range(1, runs + 1):
                _say(f"run {i}/{runs}: {scenario.name}, {seconds:g} s")
                ctx = RunContext(
                    node=node, http=http, seconds=seconds, out_dir=out_dir, run_index=i
                )
                result = await scenario.run_once(ctx)
                results.append(result)
                failed = [c.name for c in result.checks if not c.ok]
                _say(f"  {_headline(result.figures)}")
                for name in failed:
                    _say(f"  check failed: {name}")
        finally:
            if target is None:
                stop_outcome = await node.stop()
                _say(f"node {stop_outcome}")

    figures = median_figures([r.figures for r in results])
    peer_info, peer_reason, peer_runs = (
        await _run_peer(scenario, seconds, runs, out_dir)
        if with_peer
        else (None, "skipped (--no-peer)", [])
    )
    if peer_runs:
        peer_figures = median_figures(peer_runs)
        peer_info = peer_info or {}
        peer_info["figures"] = {k: f.to_json() for k, f in peer_figures.items()}
        figures.update(peer_figures)
        node_cpu = figures.get("node_cpu_cores")
        peer_cpu = peer_figures.get("peer_cpu_cores")
        if node_cpu and peer_cpu and node_cpu.value is not None and peer_cpu.value:
            figures["node_to_peer_cpu_ratio"] = Figure(
                node_cpu.value / peer_cpu.value,
                "ratio",
                None,
                "median node_cpu_cores / median peer_cpu_cores",
            )
        if target is not None:
            notes.append("with --target the node kept running while the peer ran")
    figures.update(scenario.derived_figures(figures))
    return Suite(
        scenario=scenario.name,
        description=scenario.description,
        seconds=seconds,
        runs=results,
        machine=machine.describe(),
        node={
            "version": edge_node.__version__,
            "version_reported": health.get("version"),
            "url": node.base_url,
            "started_by_bench": target is None,
            "startup_s": None if node.startup_s is None else round(node.startup_s, 3),
            "env": node.env,
            "stop": stop_outcome,
        },
        figures=figures,
        peer=peer_info,
        peer_reason=peer_reason,
        peer_runs=peer_runs,
        warmup_s=warmup_s,
        created_utc=created,
        notes=notes,
    )


def write_report(suite: Suite, out_dir: Path) -> list[str]:
    return write(suite, out_dir)
