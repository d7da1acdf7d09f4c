"""PNG charts drawn with Pillow (matplotlib is not a dependency of the project).

Two shapes cover the reports: grouped bars (per-stage p50/p99) and lines (a figure
per run, CPU over time). Plain and legible, not pretty: axes from zero, a few round
ticks, values written on the bars, a legend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 960, 540
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 80, 30, 60, 80
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
INK, GRID, BACKGROUND = "#222222", "#dddddd", "#ffffff"

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top``."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


class _Canvas:
    def __init__(self, title: str, y_label: str, y_top: float) -> None:
        self.image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)
        self.font, self.small, self.big = _font(14), _font(12), _font(18)
        self.x0, self.x1 = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
        self.y0, self.y1 = HEIGHT - MARGIN_BOTTOM, MARGIN_TOP  # y0 = the zero line
        self.ticks = nice_ticks(y_top)
        self.y_max = self.ticks[-1]
        self.draw.text((WIDTH // 2, 24), title, fill=INK, font=self.big, anchor="mm")
        for t in self.ticks:
            y = self.y(t)
            self.draw.line((self.x0, y, self.x1, y), fill=GRID)
            self.draw.text((self.x0 - 8, y), _label(t), fill=INK, font=self.small, anchor="rm")
        self.draw.line((self.x0, self.y0, self.x1, self.y0), fill=INK)
        self.draw.line((self.x0, self.y0, self.x0, self.y1), fill=INK)
        label = Image.new("RGBA", (HEIGHT, 24), (0, 0, 0, 0))
        ImageDraw.Draw(label).text(
            (HEIGHT // 2, 12), y_label, fill=INK, font=self.font, anchor="mm"
        )
        self.image.paste(label.rotate(90, expand=True), (8, 0), label.rotate(90, expand=True))

    def y(self, v: float) -> float:
        return self.y0 - (self.y0 - self.y1) * (v / self.y_max if self.y_max else 0.0)

    def legend(self, names: Sequence[str]) -> None:
        x = self.x0
        y = HEIGHT - 24
        for i, name in enumerate(names):
            colour = PALETTE[i % len(PALETTE)]
            self.draw.rectangle((x, y - 6, x + 12, y + 6), fill=colour)
            self.draw.text((x + 18, y), name, fill=INK, font=self.font, anchor="lm")
            x += 30 + int(self.draw.textlength(name, font=self.font))

    def save(self, path: Path) -> None:
        self.image.save(path, format="PNG", optimize=True)


def bar_chart(
    path: Path,
    title: str,
    categories: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    y_label: str,
) -> None:
    """Grouped bars: one group per category, one bar per series; None = no bar."""
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    canvas = _Canvas(title, y_label, max(values, default=1.0))
    draw = canvas.draw
    group_w = (canvas.x1 - canvas.x0) / max(len(categories), 1)
    bar_w = group_w * 0.7 / max(len(series), 1)
    for ci, category in enumerate(categories):
        gx = canvas.x0 + ci * group_w + group_w * 0.15
        for si, vs in enumerate(series.values()):
            v = vs[ci] if ci < len(vs) else None
            if v is None or not math.isfinite(v):
                continue
            x = gx + si * bar_w
            draw.rectangle(
                (x, canvas.y(v), x + bar_w - 2, canvas.y0), fill=PALETTE[si % len(PALETTE)]
            )
            draw.text(
                (x + bar_w / 2, canvas.y(v) - 4),
                _label(v),
                fill=INK,
                font=canvas.small,
                anchor="mb",
            )
        draw.text(
            (canvas.x0 + (ci + 0.5) * group_w, canvas.y0 + 8),
            category,
            fill=INK,
            font=canvas.font,
            anchor="mt",
        )
    canvas.legend(list(series))
    canvas.save(path)


def line_chart(
    path: Path,
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    x_label: str,
    y_label: str,
    integer_x: bool = False,
) -> None:
    """Lines through (x, y) points, one per series, with a dot at each point."""
    points = [p for ps in series.values() for p in ps if math.isfinite(p[1])]
    canvas = _Canvas(title, y_label, max((y for _, y in points), default=1.0) * 1.1)
    draw = canvas.draw
    xs = [x for x, _ in points] or [0.0, 1.0]
    lo, hi = min(xs), max(xs)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    pad = (hi - lo) * 0.05

    def px(x: float) -> float:
        return canvas.x0 + (canvas.x1 - canvas.x0) * (x - lo + pad) / (hi - lo + 2 * pad)

    ticks = sorted({x for x, _ in points}) if integer_x else nice_ticks(hi)
    for t in ticks:
        if lo - pad <= t <= hi + pad:
            draw.text((px(t), canvas.y0 + 8), _label(t), fill=INK, font=canvas.small, anchor="mt")
    draw.text((WIDTH // 2, canvas.y0 + 32), x_label, fill=INK, font=canvas.font, anchor="mt")
    for si, ps in enumerate(series.values()):
        colour = PALETTE[si % len(PALETTE)]
        xy = [(px(x), canvas.y(y)) for x, y in ps if math.isfinite(y)]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=3)
        for x, y in xy:
            draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
    canvas.legend(list(series))
    canvas.save(path)
