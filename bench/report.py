"""Writing a suite's results: report.json (every figure, with units), report.md (the
table a human reads) and PNG plots."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import REPORT_SCHEMA, plot
from bench.figures import Figure, Figures, figures_to_json, fmt
from bench.scenarios import Check, RunResult

METHOD = {
    "medians": "every figure is the median over the runs of its per-run value",
    "window": "node figures are taken over each run's steady-state window: from the "
    "moment every viewer has its first frame, for N seconds (viewers hold their "
    "sessions until it ends)",
    "cpu": "utime + stime from /proc/<pid>/stat of the control process and the media "
    "worker, summed, over the window's wall seconds, in cores",
    "rss": "VmRSS from /proc/<pid>/status sampled every 0.5 s; node_rss_max_mib is the "
    "largest sum of both processes over the samples",
    "latency": "per-stage p50/p99 are the upper bound of the histogram bucket holding "
    "them, from /metrics scraped at the window's start and end (difference of the "
    "cumulative histograms); mean = sum / count over the same window",
    "viewer_fps": "frames decoded after the first one, per second of the viewer's window",
    "missed": "frame-counter values (bottom-left barcode) skipped between consecutive frames",
}


@dataclass
class Suite:
    scenario: str
    description: str
    seconds: float
    runs: list[RunResult]
    machine: dict[str, Any]
    node: dict[str, Any]
    figures: Figures
    peer: dict[str, Any] | None = None
    peer_reason: str | None = None
    peer_runs: list[Figures] = field(default_factory=list)
    warmup_s: float = 0.0
    created_utc: str = ""
    notes: list[str] = field(default_factory=list)


def aggregate_checks(runs: Sequence[RunResult]) -> list[dict[str, Any]]:
    """Each check once, ok when it held in every run; failing runs listed."""
    order: list[str] = []
    by_name: dict[str, list[tuple[int, Check]]] = {}
    for i, run in enumerate(runs, 1):
        for c in run.checks:
            if c.name not in by_name:
                order.append(c.name)
                by_name[c.name] = []
            by_name[c.name].append((i, c))
    out = []
    for name in order:
        seen = by_name[name]
        failed = [i for i, c in seen if not c.ok]
        out.append(
            {
                "name": name,
                "ok": not failed,
                "runs_failed": failed,
                "detail": next((c.detail for _, c in seen if not c.ok), seen[-1][1].detail),
            }
        )
    return out


def to_json(suite: Suite, plots: Sequence[str]) -> dict[str, Any]:
    return {
        "schema": REPORT_SCHEMA,
        "scenario": {"name": suite.scenario, "description": suite.description},
        "created_utc": suite.created_utc,
        "seconds_per_run": suite.seconds,
        "runs": len(suite.runs),
        "warmup_s": suite.warmup_s,
        "machine": suite.machine,
        "node": suite.node,
        "figures": figures_to_json(suite.figures),
        "checks": aggregate_checks(suite.runs),
        "peer": suite.peer,
        "peer_reason": suite.peer_reason,
        "runs_raw": [
            {
                "run": i,
                "figures": figures_to_json(run.figures),
                "checks": [c.to_json() for c in run.checks],
                "series": {
                    k: [[round(x, 3), round(y, 4)] for x, y in v] for k, v in run.series.items()
                },
                **run.raw,
            }
            for i, run in enumerate(suite.runs, 1)
        ],
        "method": METHOD,
        "notes": suite.notes,
        "plots": list(plots),
    }


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(suite: Suite, plots: Sequence[str]) -> str:
    m = suite.machine
    n = suite.node
    lines = [
        f"# bench: {suite.scenario}",
        "",
        f"{suite.description}",
        "",
        f"- when: {suite.created_utc}",
        f"- runs: {len(suite.runs)} x {suite.seconds:g} s after {suite.warmup_s:g} s of warm-up; "
        "every figure is the median over the runs",
        f"- machine: {m.get('cpu_model')}, {m.get('cores')} cores, {m.get('memory_mib')} MiB, "
        f"Python {m.get('python')}, av {m.get('av')}, aiortc {m.get('aiortc')}",
        f"- node: edge-node {n.get('version')} at {n.get('url')} "
        f"({'started by the bench' if n.get('started_by_bench') else 'given by --target'})",
        "",
        "## Figures",
        "",
    ]
    runs_n = len(suite.runs)
    head = "| figure | median | unit | " + " | ".join(f"run {i}" for i in range(1, runs_n + 1))
    lines.append(head + " |")
    lines.append("|---|---:|---|" + "---:|" * runs_n)
    for name, f in suite.figures.items():
        per_run = [run.figures.get(name) for run in suite.runs]
        from_peer = name.startswith("peer_") or not any(p is not None for p in per_run)
        if from_peer and suite.peer_runs:
            # Figures the peer runs produce (peer_*, and e.g. glass's floor_*).
            per_run = [p.get(name) for p in suite.peer_runs]
        cells = [fmt(p.value, p.unit) if p is not None else "" for p in per_run]
        label = name + (f" ({_md_escape(f.note)})" if f.note else "")
        lines.append(f"| {label} | {fmt(f.value, f.unit)} | {f.unit} | " + " | ".join(cells) + " |")
    checks = aggregate_checks(suite.runs)
    if checks:
        lines += ["", "## Checks", ""]
        for c in checks:
            mark = "ok" if c["ok"] else f"FAILED in run(s) {c['runs_failed']}"
            lines.append(f"- {mark}: {c['name']} — {_md_escape(str(c['detail']))}")
    lines += ["", "## Peer", ""]
    if suite.peer is None:
        lines.append(f"none: {suite.peer_reason}")
    else:
        lines.append(f"- {suite.peer.get('name')}: `{suite.peer.get('command')}`")
        lines.append(f"- {suite.peer.get('version')}")
        lines.append(f"- {suite.peer.get('note')}")
    lines += ["", "## Method", ""]
    lines += [f"- {k}: {v}" for k, v in METHOD.items()]
    if suite.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in suite.notes]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _value(figures: Mapping[str, Figure], name: str) -> float | None:
    f = figures.get(name)
    return f.value if f is not None else None


def write_plots(suite: Suite, out_dir: Path) -> list[str]:
    from bench.whep_run import STAGES

    written: list[str] = []
    if any(_value(suite.figures, f"{s}_p99_ms") is not None for s in STAGES):
        plot.bar_chart(
            out_dir / "stages.png",
            f"{suite.scenario}: per-stage latency, median of {len(suite.runs)} runs "
            "(bucket upper bounds)",
            list(STAGES),
            {q: [_value(suite.figures, f"{s}_{q}_ms") for s in STAGES] for q in ("p50", "p99")},
            "ms",
        )
        written.append("stages.png")
    fps_names = (
        [
            name
            for name in suite.runs[0].figures
            if (name.endswith("frames_per_second") and "mean" not in name)
            or name == "node_frames_out_per_second"
        ]
        if suite.runs
        else []
    )
    if fps_names:
        series = {
            name: [
                (float(i), v)
                for i, run in enumerate(suite.runs, 1)
                if (v := _value(run.figures, name)) is not None and math.isfinite(v)
            ]
            for name in fps_names
        }
        plot.line_chart(
            out_dir / "fps.png",
            f"{suite.scenario}: frames per second by run",
            series,
            "run",
            "frames/s",
            integer_x=True,
        )
        written.append("fps.png")
    cpu = {
        f"run {i}": run.series["node_cpu_cores"]
        for i, run in enumerate(suite.runs, 1)
        if run.series.get("node_cpu_cores")
    }
    if cpu:
        plot.line_chart(
            out_dir / "cpu.png",
            f"{suite.scenario}: node CPU (control + worker), 0.5 s samples",
            cpu,
            "seconds since the run started",
            "cores",
        )
        written.append("cpu.png")
    written += _scenario_plots(suite, out_dir)
    return written


def _scenario_plots(suite: Suite, out_dir: Path) -> list[str]:
    from bench.scenarios import get

    try:
        scenario = get(suite.scenario)
    except KeyError:
        return []
    return scenario.write_plots(suite, out_dir)


def write(suite: Suite, out_dir: Path) -> list[str]:
    """Write plots, report.json and report.md into ``out_dir``; the plots' file names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(suite, out_dir)
    with open(out_dir / "report.json", "w") as fh:
        json.dump(to_json(suite, plots), fh, indent=2)
        fh.write("\n")
    (out_dir / "report.md").write_text(to_markdown(suite, plots))
    return plots
