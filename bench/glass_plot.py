"""Glass-to-glass plots: the latency CDF of every path (Pillow, on ``bench.plot``'s canvas)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench import plot


def cdf_chart(
    path: Path,
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    x_label: str,
    x_max: float | None = None,
) -> None:
    """Step-free CDF lines, (value, fraction 0..1) per series; x from 0 to ``x_max`` (the
    largest value when None), points beyond it clipped to the right edge."""
    canvas = plot._Canvas(title, "fraction of frames", 1.0)
    draw = canvas.draw
    xs = [x for ps in series.values() for x, _ in ps if math.isfinite(x)]
    top = x_max if x_max is not None else max(xs, default=1.0)
    ticks = plot.nice_ticks(top if top > 0 else 1.0, count=8)
    hi = ticks[-1]

    def px(x: float) -> float:
        return canvas.x0 + (canvas.x1 - canvas.x0) * min(max(x, 0.0), hi) / hi

    for t in ticks:
        draw.line((px(t), canvas.y0, px(t), canvas.y1), fill=plot.GRID)
        draw.text(
            (px(t), canvas.y0 + 8), plot._label(t), fill=plot.INK, font=canvas.small, anchor="mt"
        )
    draw.text(
        (plot.WIDTH // 2, canvas.y0 + 32), x_label, fill=plot.INK, font=canvas.font, anchor="mt"
    )
    for si, ps in enumerate(series.values()):
        colour = plot.PALETTE[si % len(plot.PALETTE)]
        xy = [(px(x), canvas.y(y)) for x, y in ps if math.isfinite(x)]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=3)
    canvas.legend(list(series))
    canvas.save(path)
