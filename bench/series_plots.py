"""Plots over time and over a swept variable for the ``ramp``, ``fanout``, ``show-*``
and ``soak`` scenarios, drawn with ``bench.plot`` (Pillow). The time series come from
each run's ``RunResult.series``; the reduction of many points to one per slice is
here and pure, so that it is testable without a picture."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench import plot
from bench.interaction import percentile
from bench.sampler import Sample

if TYPE_CHECKING:
    from bench.report import Suite

MIB = 1024 * 1024
Points = list[tuple[float, float]]


def per_slice(points: Sequence[tuple[float, float]], slice_s: float, q: float) -> Points:
    """``(t, value)`` points reduced to one per ``slice_s`` seconds: (slice start, the
    q-th percentile of the values in it); empty slices are left out."""
    if slice_s <= 0:
        raise ValueError(f"slice_s: {slice_s} is not > 0")
    buckets: dict[int, list[float]] = {}
    for t, v in points:
        if math.isfinite(t) and math.isfinite(v):
            buckets.setdefault(math.floor(t / slice_s), []).append(v)
    out: Points = []
    for k in sorted(buckets):
        value = percentile(buckets[k], q)
        if value is not None:
            out.append((k * slice_s, value))
    return out


def rss_series(samples: Sequence[Sample]) -> Points:
    """(seconds since the first sample, MiB of every sampled process together)."""
    if not samples:
        return []
    t0 = samples[0].t
    return [(s.t - t0, sum(s.rss_bytes.values()) / MIB) for s in samples if s.rss_bytes]


def xy_chart(
    path: Path,
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    x_label: str,
    y_label: str,
    bound: tuple[str, float] | None = None,
) -> None:
    """Lines through (x, y); ``bound`` = (label, y) adds a flat line across the x range
    (a target)."""
    lines = {name: list(points) for name, points in series.items() if points}
    xs = [x for points in lines.values() for x, _ in points]
    if bound is not None and xs:
        lines[bound[0]] = [(min(xs), bound[1]), (max(xs), bound[1])]
    plot.line_chart(path, title, lines, x_label, y_label)


def runs_series_chart(
    suite: Suite,
    out_dir: Path,
    file_name: str,
    series_name: str,
    title: str,
    y_label: str,
    reduce: Callable[[Points], Points] | None = None,
) -> list[str]:
    """One line per run of the runs' ``series_name`` over time; the file name when
    any run had the series."""
    lines: dict[str, Points] = {}
    for i, run in enumerate(suite.runs, 1):
        points = list(run.series.get(series_name) or [])
        if reduce is not None:
            points = reduce(points)
        if points:
            lines[f"run {i}"] = points
    if not lines:
        return []
    plot.line_chart(out_dir / file_name, title, lines, "seconds since the run started", y_label)
    return [file_name]
