"""``python -m bench compare A B``: B against A, figure by figure, with thresholds.

Only figures present in both reports (with values) are compared. A regression is a
change in the worse direction beyond a threshold's relative limit *and* its absolute
floor: the floor keeps noise on small numbers from counting (a p99 moving one
histogram bucket, 0.25 -> 0.5 ms, is +100% but nothing to act on). Figures without a
threshold are shown for context. Exit status 1 when B regresses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.figures import Figure, figures_from_json, fmt


@dataclass(frozen=True, slots=True)
class Threshold:
    label: str
    applies: Callable[[str, Figure], bool]
    relative: float  # fraction of A's value
    absolute: float  # and at least this much, in the figure's unit

    def describe(self) -> str:
        return self.label


def _node(name: str) -> bool:
    """A figure of the node's (not the peer's, nor glass's no-middle-box floor)."""
    return not name.startswith(("peer_", "floor_"))


THRESHOLDS: tuple[Threshold, ...] = (
    Threshold(
        "frames per second: drop > 10%",
        lambda n, f: f.unit == "frames/s" and f.better == "higher",
        0.10,
        0.0,
    ),
    Threshold(
        "p99 latency: rise > 25% and > 0.5 ms",
        lambda n, f: n.endswith("_p99_ms") and _node(n),
        0.25,
        0.5,
    ),
    Threshold(
        "time to first frame: rise > 50% and > 100 ms",
        lambda n, f: n.endswith("time_to_first_frame_ms"),
        0.50,
        100.0,
    ),
    Threshold(
        "CPU: rise > 25% and > 0.02 cores",
        lambda n, f: f.unit == "cores" and f.better == "lower" and _node(n),
        0.25,
        0.02,
    ),
    Threshold(
        "RSS: rise > 25% and > 5 MiB",
        lambda n, f: f.unit == "MiB" and _node(n),
        0.25,
        5.0,
    ),
    Threshold(
        "missed frames: rise > 1 percentage point",
        lambda n, f: n.endswith("missed_percent"),
        0.0,
        1.0,
    ),
)


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    unit: str
    a: float
    b: float
    threshold: Threshold | None
    verdict: str  # "ok", "REGRESSION", "better", "" (no threshold)

    @property
    def change(self) -> str:
        if self.a == 0:
            return "=" if self.b == 0 else f"{self.b - self.a:+.3g}"
        return f"{(self.b - self.a) / abs(self.a) * 100:+.1f}%"


def threshold_for(name: str, figure: Figure) -> Threshold | None:
    return next((t for t in THRESHOLDS if t.applies(name, figure)), None)


def judge(name: str, a: Figure, b: Figure) -> Row | None:
    if a.value is None or b.value is None:
        return None
    t = threshold_for(name, b)
    verdict = ""
    if t is not None and b.better is not None:
        worse_by = (b.value - a.value) if b.better == "lower" else (a.value - b.value)
        limit = max(t.relative * abs(a.value), t.absolute)
        if worse_by > limit and worse_by > 0:
            verdict = "REGRESSION"
        elif worse_by < -limit and worse_by < 0:
            verdict = "better"
        else:
            verdict = "ok"
    return Row(name, b.unit, a.value, b.value, t, verdict)


def load_report(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    with open(p) as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or not isinstance(data.get("figures"), dict):
        raise ValueError(f"{p} is not a bench report (no figures)")
    return data


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Row]:
    fa, fb = figures_from_json(a["figures"]), figures_from_json(b["figures"])
    rows = [judge(name, fa[name], fb[name]) for name in fb if name in fa]
    return [r for r in rows if r is not None]


def _scenario(report: Mapping[str, Any]) -> str:
    s = report.get("scenario")
    return str(s.get("name") if isinstance(s, Mapping) else s)


def render(a_label: str, b_label: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    rows = compare(a, b)
    lines = [f"A: {a_label} (scenario {_scenario(a)})", f"B: {b_label} (scenario {_scenario(b)})"]
    if _scenario(a) != _scenario(b):
        lines.append("warning: the reports are of different scenarios")
    ma, mb = a.get("machine") or {}, b.get("machine") or {}
    for key in ("cpu_model", "cores"):
        if ma.get(key) != mb.get(key):
            lines.append(f"warning: different machines ({key}: {ma.get(key)} vs {mb.get(key)})")
    lines.append("")
    lines.append("thresholds (B regresses when worse than A by more than):")
    lines.extend(f"  - {t.describe()}" for t in THRESHOLDS)
    lines.append("")
    width = max([len(r.name) for r in rows] + [6])
    head = f"{'figure':<{width}}  {'unit':<9} {'A':>10} {'B':>10} {'change':>9}  verdict"
    lines.append(head)
    lines.append("-" * len(head))
    for r in rows:
        lines.append(
            f"{r.name:<{width}}  {r.unit:<9} {fmt(r.a, r.unit):>10} {fmt(r.b, r.unit):>10} "
            f"{r.change:>9}  {r.verdict}"
            + (f" ({r.threshold.label})" if r.verdict == "REGRESSION" and r.threshold else "")
        )
    regressions = [r for r in rows if r.verdict == "REGRESSION"]
    lines.append("")
    if regressions:
        lines.append(f"{len(regressions)} regression(s): " + ", ".join(r.name for r in regressions))
    else:
        lines.append(f"no regression beyond the thresholds ({len(rows)} figures compared)")
    return "\n".join(lines)


def has_regression(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return any(r.verdict == "REGRESSION" for r in compare(a, b))
