"""Trends: straight-line fits and what a long run drifted by (sans-I/O but for
``fd_count``, one read of /proc).

``fanout`` fits node CPU against viewers (the slope is the CPU one more viewer
costs); ``soak`` fits RSS against time (the slope is a leak rate, MiB per hour) and
compares the open file descriptors, CPU and latency of the run's first and last
tenth.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from bench.figures import Figure, Figures

Points = Sequence[tuple[float, float]]
EDGE_FRACTION = 0.1  # "start" and "end" of a run: its first and last tenth


def linear_fit(points: Points) -> tuple[float, float] | None:
    """Least-squares (slope, intercept) of y on x; None with fewer than two distinct x
    (or x so close together that their spread underflows to zero)."""
    pts = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    if len({x for x, _ in pts}) < 2:
        return None
    n = len(pts)
    mx = math.fsum(x for x, _ in pts) / n
    my = math.fsum(y for _, y in pts) / n
    sxx = math.fsum((x - mx) ** 2 for x, _ in pts)
    sxy = math.fsum((x - mx) * (y - my) for x, y in pts)
    if sxx == 0.0:
        return None
    slope = sxy / sxx
    return slope, my - slope * mx


def edge_means(points: Points, fraction: float = EDGE_FRACTION) -> tuple[float, float] | None:
    """Mean y over the first and over the last ``fraction`` of the x range (at least
    one point each); None without points."""
    pts = sorted((x, y) for x, y in points if math.isfinite(x) and math.isfinite(y))
    if not pts:
        return None
    lo, hi = pts[0][0], pts[-1][0]
    span = (hi - lo) * fraction
    first = [y for x, y in pts if x <= lo + span] or [pts[0][1]]
    last = [y for x, y in pts if x >= hi - span] or [pts[-1][1]]
    return math.fsum(first) / len(first), math.fsum(last) / len(last)


def fd_count(pid: int) -> int | None:
    """Open file descriptors of ``pid`` (entries of /proc/<pid>/fd); None when gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def drift_figures(
    rss_mib: Points, fds: Points, cpu_cores: Points, latency_p99_ms: Points
) -> Figures:
    """What a long run drifted by, each series (seconds, value) sampled over it."""
    out: Figures = {}
    fit = linear_fit(rss_mib)
    out["node_rss_slope_mib_per_hour"] = Figure(
        fit[0] * 3600 if fit else None,
        "MiB/h",
        "lower",
        "least-squares slope of the node's RSS (control + worker) over the run",
    )
    for name, points, unit in (
        ("node_rss", rss_mib, "MiB"),
        ("node_fds", fds, "fds"),
        ("node_cpu", cpu_cores, "cores"),
        ("probe_p99", latency_p99_ms, "ms"),
    ):
        edges = edge_means(points)
        start, end = edges if edges else (None, None)
        note = f"mean over the run's first / last {EDGE_FRACTION:.0%}"
        out[f"{name}_start"] = Figure(start, unit, None, note)
        out[f"{name}_end"] = Figure(end, unit, None, note)
        out[f"{name}_change"] = Figure(
            end - start if start is not None and end is not None else None, unit, "lower", note
        )
    fd_values = [v for _, v in fds]
    out["node_fds_max"] = Figure(max(fd_values) if fd_values else None, "fds", "lower")
    return out
