"""Figures: one measured number with its unit and which direction is better.

Every number in a report is a ``Figure``; a run produces a ``{name: Figure}`` map and
the report keeps the median over the runs of each name. ``better`` tells ``compare``
which way is a regression ("higher" for frames per second, "lower" for latency, CPU
and memory, None for numbers that are context, not a score).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Better = Literal["higher", "lower"] | None


@dataclass(frozen=True, slots=True)
class Figure:
    value: float | None
    unit: str
    better: Better = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": _json_number(self.value), "unit": self.unit}
        if self.better is not None:
            out["better"] = self.better
        if self.note:
            out["note"] = self.note
        return out

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Figure:
        raw = data.get("value")
        return Figure(
            value=None if raw is None else float(raw),
            unit=str(data.get("unit", "")),
            better=data.get("better"),
            note=str(data.get("note", "")),
        )


Figures = dict[str, Figure]


def _json_number(v: float | None) -> float | None:
    """JSON has no Infinity or NaN: those become None (the note says why)."""
    if v is None or math.isnan(v) or math.isinf(v):
        return None
    return round(v, 6)


def median_figures(runs: Sequence[Mapping[str, Figure]]) -> Figures:
    """The median over the runs of every figure, in first-seen order.

    Runs that lack a figure or have no value for it are left out of its median; the
    note says how many runs it is taken over when that is not all of them.
    """
    names: list[str] = []
    for run in runs:
        names.extend(n for n in run if n not in names)
    out: Figures = {}
    for name in names:
        present = [run[name] for run in runs if name in run]
        values = [f.value for f in present if f.value is not None and not math.isnan(f.value)]
        first = present[0]
        note = first.note
        if len(values) != len(runs):
            extra = f"median of {len(values)} of {len(runs)} runs"
            note = f"{note}; {extra}" if note else extra
        out[name] = Figure(
            value=statistics.median(values) if values else None,
            unit=first.unit,
            better=first.better,
            note=note,
        )
    return out


def figures_to_json(figures: Mapping[str, Figure]) -> dict[str, dict[str, Any]]:
    return {name: f.to_json() for name, f in figures.items()}


def figures_from_json(data: Mapping[str, Any]) -> Figures:
    return {name: Figure.from_json(f) for name, f in data.items() if isinstance(f, Mapping)}


def fmt(value: float | None, unit: str = "") -> str:
    """A figure's value for tables: short, and ``-`` when there is none."""
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    if value == int(value) and abs(value) < 1e9 and unit not in ("cores", "ratio"):
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"
