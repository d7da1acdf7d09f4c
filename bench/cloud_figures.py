"""The ``cloud`` scenario's pure parts: percentiles, the capacity knee, and the
figures (with units) from what its child processes and its outage run report.

No I/O, no processes: ``bench.cloud_run`` and the child processes
(``bench.cloud_pipeline``, ``bench.cloud_nodes``) measure, this module names and
judges. See ``bench/scenarios/cloud.py`` for what each figure means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.figures import Figure, Figures

ACK_P99_LIMIT_MS = 100.0  # issue 7: raise the nodes until ack p99 crosses this
CAPACITY_GOAL_NODES = 1000  # issue 7: at least this many on the 2-core box
MIN_ACKED_FRACTION = 0.99  # of a step's summaries acked within it, for the step to pass
DURABILITIES = ("fsync", "os")  # spool.durability: with fsync, and without
MIB = 1024 * 1024


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation, like numpy's default."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in 0..100, got {q}")
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_summary(values_ms: Sequence[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(values_ms, 50),
        "p90": percentile(values_ms, 90),
        "p99": percentile(values_ms, 99),
        "max": max(values_ms) if values_ms else None,
    }


def _rate(count: Any, seconds: Any) -> float | None:
    if not isinstance(count, (int, float)) or not isinstance(seconds, (int, float)):
        return None
    return count / seconds if seconds > 0 else None


def _get(data: Mapping[str, Any] | None, *path: str) -> Any:
    cur: Any = data
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


# --- (a) and (b): the spool and the link, with and without fsync ----------------------


def pipeline_figures(
    durability: str, result: Mapping[str, Any] | None, reason: str = ""
) -> Figures:
    """Figures of one ``bench.cloud_pipeline`` run (``durability`` is spool.durability)."""
    d = durability
    note = reason
    spool = _get(result, "spool")
    drain = _get(result, "drain")
    sustained = _get(result, "sustained")
    out: Figures = {
        f"spool_{d}_appends_per_second": Figure(
            _rate(_get(spool, "appends"), _get(spool, "seconds")),
            "summaries/s",
            "higher",
            note or f"Spool.append awaited to its commit, flat out, durability {d}, no link",
        ),
        f"spool_{d}_append_loop_us": Figure(
            _per_us(_get(spool, "loop_cpu_s"), _get(spool, "appends")),
            "us",
            "lower",
            note or "event-loop thread CPU per append (the writer thread's fsync excluded)",
        ),
        f"spool_{d}_commit_p50_ms": Figure(
            _get(spool, "commit_ms", "p50"), "ms", "lower", note or "append -> committed"
        ),
        f"spool_{d}_commit_p99_ms": Figure(
            _get(spool, "commit_ms", "p99"), "ms", "lower", note or "append -> committed"
        ),
        f"link_{d}_summaries_per_second": Figure(
            _rate(_get(sustained, "acked"), _get(sustained, "seconds")),
            "summaries/s",
            "higher",
            note
            or "appended flat out and acked by a collector process at the same time "
            "(acked per second over the window)",
        ),
        f"pipeline_{d}_machine_busy_cores": Figure(
            _get(result, "machine_busy_cores"),
            "cores",
            None,
            note or "the whole machine while it ran (the idle node and other work included)",
        ),
        f"link_{d}_drain_summaries_per_second": Figure(
            _rate(_get(drain, "summaries"), _get(drain, "seconds")),
            "summaries/s",
            "higher",
            note or "a backlog spooled while the collector was away, sent and acked",
        ),
    }
    return out


def _per_us(cpu_s: Any, count: Any) -> float | None:
    if not isinstance(cpu_s, (int, float)) or not isinstance(count, int) or count <= 0:
        return None
    return cpu_s / count * 1e6


# --- (c): catch-up after an outage ------------------------------------------------------


def outage_figures(result: Mapping[str, Any] | None, reason: str = "") -> Figures:
    """Figures of one outage run (``bench.cloud_run.outage``)."""
    r = result or {}

    def mib(v: Any) -> float | None:
        return v / MIB if isinstance(v, (int, float)) else None

    before, peak = r.get("rss_before"), r.get("rss_outage_max")
    growth = peak - before if isinstance(before, int) and isinstance(peak, int) else None
    c_before, c_peak = r.get("control_rss_before"), r.get("control_rss_outage_max")
    c_growth = c_peak - c_before if isinstance(c_before, int) and isinstance(c_peak, int) else None
    r_start, c_start = r.get("rss_ramp_start"), r.get("control_rss_ramp_start")
    ramp_growth = before - r_start if isinstance(before, int) and isinstance(r_start, int) else None
    c_ramp_growth = (
        c_before - c_start if isinstance(c_before, int) and isinstance(c_start, int) else None
    )
    ramp = f"the same load with the collector up, over the {r.get('ramp_s', 0):g} s before"
    spooled = r.get("summaries_spooled")
    drain_s = r.get("drain_s")
    note = reason
    return {
        "outage_s": Figure(r.get("outage_s"), "s", None, note or "collector SIGSTOPped"),
        "outage_load_events_per_second": Figure(
            r.get("load_events_per_second"), "events/s", None, note or "the load's own count"
        ),
        "outage_summaries_spooled": Figure(
            spooled, "summaries", None, note or "spooled while the collector was stopped"
        ),
        "catchup_s": Figure(
            r.get("catchup_s"),
            "s",
            "lower",
            note or "collector resumed -> every summary spooled before it acked",
        ),
        "catchup_reconnect_s": Figure(
            r.get("reconnect_s"), "s", "lower", note or "collector resumed -> first new ack"
        ),
        "catchup_drain_s": Figure(drain_s, "s", "lower", note or "first new ack -> caught up"),
        "catchup_summaries_per_second": Figure(
            _rate(spooled, drain_s), "summaries/s", "higher", note or "spooled / drain time"
        ),
        "node_rss_before_outage_mib": Figure(mib(before), "MiB", None, note or "control + worker"),
        "node_rss_outage_max_mib": Figure(
            mib(peak), "MiB", "lower", note or "control + worker, 1 s samples"
        ),
        "node_rss_outage_growth_mib": Figure(
            mib(growth), "MiB", "lower", note or "outage max - before, control + worker"
        ),
        "control_rss_outage_growth_mib": Figure(
            mib(c_growth), "MiB", "lower", note or "the control process (spool, link) alone"
        ),
        "node_rss_baseline_growth_mib": Figure(
            mib(ramp_growth), "MiB", None, note or f"control + worker: {ramp}"
        ),
        "control_rss_baseline_growth_mib": Figure(
            mib(c_ramp_growth), "MiB", None, note or f"control: {ramp}"
        ),
        "outage_machine_busy_cores": Figure(
            r.get("machine_busy_cores"),
            "cores",
            None,
            note or "the whole machine during the outage: node, load and anything else",
        ),
        "node_spool_depth_max": Figure(
            r.get("spool_depth_max"), "records", None, note or "during the outage"
        ),
    }


# --- (d): collector capacity ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepVerdict:
    nodes: int
    passed: bool
    why: str


def judge_step(step: Mapping[str, Any], limit_ms: float = ACK_P99_LIMIT_MS) -> StepVerdict:
    """A step passes when every stream stayed up, at least 99% of its summaries were
    acked within it, and the ack p99 is at most ``limit_ms``."""
    nodes = int(step.get("nodes", 0))
    p99 = step.get("ack_p99_ms")
    sent, acked = step.get("sent", 0), step.get("acked", 0)
    if step.get("errors"):
        return StepVerdict(nodes, False, f"{step['errors']} streams failed")
    if step.get("connected", nodes) < nodes:
        return StepVerdict(nodes, False, f"only {step.get('connected')} of {nodes} connected")
    if not sent or acked < MIN_ACKED_FRACTION * sent:
        return StepVerdict(nodes, False, f"{acked} of {sent} summaries acked")
    if p99 is None or p99 > limit_ms:
        return StepVerdict(nodes, False, f"ack p99 {p99} ms > {limit_ms:g} ms")
    return StepVerdict(nodes, True, f"ack p99 {p99:.1f} ms")


def knee(
    steps: Sequence[Mapping[str, Any]], limit_ms: float = ACK_P99_LIMIT_MS
) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """(the last step that passed before the first failure, the first failing step)."""
    last_ok: Mapping[str, Any] | None = None
    for step in sorted(steps, key=lambda s: int(s.get("nodes", 0))):
        if not judge_step(step, limit_ms).passed:
            return last_ok, step
        last_ok = step
    return last_ok, None


def capacity_figures(
    steps: Sequence[Mapping[str, Any]] | None, limit_ms: float = ACK_P99_LIMIT_MS, reason: str = ""
) -> Figures:
    """The knee and every step's figures (``capacity_<n>n_*``)."""
    steps = steps or []
    ok, failed = knee(steps, limit_ms) if steps else (None, None)
    note = reason
    out: Figures = {
        "capacity_nodes": Figure(
            ok.get("nodes") if ok else (None if not steps else 0),
            "nodes",
            "higher",
            note
            or f"most simulated nodes (1 summary/s each) with ack p99 <= {limit_ms:g} ms"
            + ("" if failed else "; never crossed: the last step tried"),
        ),
        "capacity_ack_p99_ms": Figure(
            ok.get("ack_p99_ms") if ok else None, "ms", "lower", note or "at capacity_nodes"
        ),
        "capacity_collector_cpu_cores": Figure(
            ok.get("collector_cpu_cores") if ok else None,
            "cores",
            None,
            note or "the collector process at capacity_nodes",
        ),
        "capacity_first_failing_nodes": Figure(
            failed.get("nodes") if failed else None,
            "nodes",
            None,
            note or (judge_step(failed, limit_ms).why if failed else "no step failed"),
        ),
    }
    for step in steps:
        n = int(step.get("nodes", 0))
        prefix = f"capacity_{n}n"
        out[f"{prefix}_ack_p50_ms"] = Figure(step.get("ack_p50_ms"), "ms", "lower")
        out[f"{prefix}_ack_p99_ms"] = Figure(step.get("ack_p99_ms"), "ms", "lower")
        out[f"{prefix}_summaries_per_second"] = Figure(
            _rate(step.get("acked"), step.get("seconds")), "summaries/s", None
        )
        out[f"{prefix}_collector_cpu_cores"] = Figure(
            step.get("collector_cpu_cores"), "cores", None
        )
        rate = _rate(step.get("acked"), step.get("seconds"))
        cpu = step.get("collector_cpu_cores")
        out[f"{prefix}_collector_us_per_summary"] = Figure(
            cpu / rate * 1e6 if isinstance(cpu, (int, float)) and rate else None,
            "us",
            "lower",
            "collector CPU (every thread) per summary acked: what a busy box cannot hide",
        )
        out[f"{prefix}_load_cpu_cores"] = Figure(
            step.get("load_cpu_cores"),
            "cores",
            None,
            "the load process; near 1 core it, not the collector, may be the limit",
        )
        out[f"{prefix}_load_lag_p99_ms"] = Figure(
            step.get("load_lag_p99_ms"),
            "ms",
            None,
            "how late the load process sent (its own event loop's lag)",
        )
    return out
