"""Drawing the scene's widgets onto a YUV420 frame, at a frame's capture time.

Runs in the media worker's encode thread, once per frame. Every widget is a few
cached sprites (text rendered once, then blended) or solid rectangles; positions and
countdowns come from the time ``t`` alone, so animation stays smooth at any frame
rate. Only the rectangles a widget covers are touched.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from edge_node import barcode
from edge_node.overlay.blend import blend, fill_rect
from edge_node.overlay.lanes import lane_y
from edge_node.overlay.scene import (
    Danmaku,
    GiftAlert,
    LikeCounter,
    Logo,
    LotteryBanner,
    PkBar,
    Scene,
    Style,
    Ticker,
    VoteBar,
)
from edge_node.overlay.sprite import Sprite
from edge_node.overlay.text import TextRenderer

log = logging.getLogger(__name__)

Planes = tuple[np.ndarray, np.ndarray, np.ndarray]

GIFT_SHOW_S = 3.0
GIFTS_AT_ONCE = 3
TICKER_SPEED_PX_S = 120.0
LOGO_CACHE = 8
COUNTER_OVERLAP_PX = 2  # a merge counter's sprite starts this far into each outline


def _countdown(ends_at: float | None, t: float) -> str:
    if ends_at is None:
        return ""
    left = max(0, int(ends_at - t + 0.999))
    return f"{left // 60}:{left % 60:02d}"


class Painter:
    def __init__(self, width: int, height: int, text: TextRenderer, probe_enabled: bool) -> None:
        self.width, self.height = width, height
        self.text = text
        self.probe_enabled = probe_enabled
        self.uncached_skips = 0
        # Per thread: the channel thread prewarms while the encode thread paints.
        self._thread = threading.local()
        # Load every font face now (the emoji one takes tens of ms): not on the first
        # event's path.
        text.render("中A1❤", 32)
        self._logos: OrderedDict[str, Sprite | None] = OrderedDict()

    def prewarm(self, scene: Scene, t: float) -> None:
        """Render the scene's text sprites into the cache now, off the frame path.

        Called when a snapshot arrives (channel thread), so the encode thread finds the
        sprites cached: a new comment's 3-5 ms of Pillow work never delays a frame.
        Painting onto 2x2 scratch planes clips every blend away; only rendering happens.
        """
        scratch = (
            np.zeros((2, 2), np.uint8),
            np.zeros((1, 1), np.uint8),
            np.zeros((1, 1), np.uint8),
        )
        self._thread.prewarming = True
        try:
            self._paint(scratch, scene, t, probe=False)
        finally:
            self._thread.prewarming = False

    def paint(self, planes: Planes, scene: Scene, t: float) -> None:
        self._paint(planes, scene, t, probe=self.probe_enabled)

    def _paint(self, planes: Planes, scene: Scene, t: float, probe: bool) -> None:
        s = scene.style
        if scene.logo is not None:
            self._logo(planes, scene.logo)
        for d in scene.danmaku:
            self._danmaku(planes, s, d, t)
        for p in scene.pinned:
            if t < p.until:
                self._pinned(planes, s, p.text, p.position)
        if scene.vote is not None:
            self._vote(planes, s, scene.vote, t)
        if scene.pk is not None:
            self._pk(planes, s, scene.pk, t)
        if scene.lottery is not None:
            self._lottery(planes, s, scene.lottery, t)
        if scene.gifts:
            self._gifts(planes, s, scene.gifts, t)
        if scene.ticker is not None and (scene.ticker.until is None or t < scene.ticker.until):
            self._ticker(planes, s, scene.ticker, t)
        if scene.likes is not None:
            self._likes(planes, s, scene.likes, t)
        if probe and scene.probe is not None:
            self._probe(planes, scene.probe)

    # ---- widgets --------------------------------------------------------------------

    def _label(
        self,
        s: Style,
        text: str,
        size: int | None = None,
        rgba: tuple[int, int, int, int] | None = None,
    ) -> Sprite:
        return self.text.render(
            text, size or s.font_size_px, rgba or s.text_rgba, s.outline_rgba, outline_px=2
        )

    def _danmaku(self, planes: Planes, s: Style, d: Danmaku, t: float) -> None:
        x = self.width - d.speed_px_s * (t - d.start)
        if t < d.start or x >= self.width or x + d.width_px <= 0:
            return
        rgba = s.highlight_rgba if d.highlight else s.text_rgba
        counter = d.counter
        if getattr(self._thread, "prewarming", False):
            self._label(s, d.text, rgba=rgba)
            if counter:
                self._label(s, counter, rgba=rgba)
            return
        sprite = self.text.cached(d.text, s.font_size_px, rgba, s.outline_rgba, outline_px=2)
        if sprite is None:
            # Not rendered yet (the channel thread renders new snapshots' text right
            # after handing them over): a new comment is still entering at the right
            # edge; it shows from the next frame. Rendering here would stall the frame.
            self.uncached_skips += 1
            return
        y = lane_y(s, self.height, d.lane)
        if x + sprite.width > 0:
            blend(*planes, sprite, int(x), y, s.opacity)
        if counter:
            # " x57" follows the text, its outline over the text's right margin.
            tail = self.text.cached(counter, s.font_size_px, rgba, s.outline_rgba, outline_px=2)
            cx = int(x) + sprite.width - 2 * COUNTER_OVERLAP_PX
            if tail is None:
                self.uncached_skips += 1
            elif cx + tail.width > 0:
                blend(*planes, tail, cx, y, s.opacity)

    def _pinned(self, planes: Planes, s: Style, text: str, position: str) -> None:
        sprite = self._label(s, text)
        x = (self.width - sprite.width) // 2
        if position == "bottom":
            y = self.height - s.safe_margin_px - sprite.height - barcode.CELL_PX
        else:
            y = s.safe_margin_px
        blend(*planes, sprite, x, y, s.opacity)

    def _panel(self, planes: Planes, s: Style, x: int, y: int, w: int, h: int) -> None:
        fill_rect(*planes, x, y, w, h, s.panel_rgba)

    def _vote(self, planes: Planes, s: Style, vote: VoteBar, t: float) -> None:
        size = max(12, s.font_size_px * 3 // 4)
        bar_w = self.width // 4
        row_h = size + 12
        x = self.width - bar_w - s.safe_margin_px
        y = self.height // 3
        rows = len(vote.options)
        self._panel(planes, s, x - 8, y - 8, bar_w + 16, (rows + 1) * row_h + 16)
        head = vote.question + ("  " + _countdown(vote.ends_at, t) if vote.ends_at else "")
        blend(*planes, self._label(s, head, size), x, y, s.opacity)
        total = sum(vote.counts) or 1
        for i, (option, count) in enumerate(zip(vote.options, vote.counts, strict=False)):
            ry = y + (i + 1) * row_h
            share = count / total
            colour = s.bar_rgba[i % len(s.bar_rgba)]
            fill_rect(*planes, x, ry, max(1, int(bar_w * share)), row_h - 4, colour)
            label = self._label(s, f"{option} {round(share * 100)}%", size)
            blend(*planes, label, x + 4, ry, s.opacity)

    def _pk(self, planes: Planes, s: Style, pk: PkBar, t: float) -> None:
        size = max(12, s.font_size_px * 3 // 4)
        w = self.width // 2
        h = size + 16
        x = (self.width - w) // 2
        y = s.safe_margin_px + s.font_size_px + 8
        a, b = pk.scores
        total = a + b
        left_w = w // 2 if total == 0 else int(w * a / total)
        fill_rect(*planes, x, y, left_w, h, s.bar_rgba[0])
        fill_rect(*planes, x + left_w, y, w - left_w, h, s.bar_rgba[1])
        blend(*planes, self._label(s, f"{pk.sides[0]} {a}", size), x + 6, y + 4, s.opacity)
        right = self._label(s, f"{b} {pk.sides[1]}", size)
        blend(*planes, right, x + w - right.width - 6, y + 4, s.opacity)
        if pk.ends_at is not None:
            clock = self._label(s, _countdown(pk.ends_at, t), size)
            blend(*planes, clock, (self.width - clock.width) // 2, y + h + 2, s.opacity)

    def _lottery(self, planes: Planes, s: Style, lot: LotteryBanner, t: float) -> None:
        size = max(12, s.font_size_px * 3 // 4)
        if lot.winners is not None:
            text = "🎉 " + ", ".join(lot.winners) if lot.winners else "no entrants"
        else:
            how = f"send「{lot.keyword}」to join" if lot.keyword else "press Join to enter"
            text = f"{how} · {lot.entrants} in · {_countdown(lot.ends_at, t)}"
        sprite = self._label(s, text, size)
        x = s.safe_margin_px
        y = self.height - s.safe_margin_px - 2 * barcode.CELL_PX - sprite.height - 8
        self._panel(planes, s, x - 6, y - 4, sprite.width + 12, sprite.height + 8)
        blend(*planes, sprite, x, y, s.opacity)

    def _gifts(self, planes: Planes, s: Style, gifts: tuple[GiftAlert, ...], t: float) -> None:
        shown = [g for g in gifts if g.start <= t < g.start + GIFT_SHOW_S][:GIFTS_AT_ONCE]
        y = self.height // 2
        for g in shown:
            sprite = self._label(s, f"{g.user} sent {g.gift} x{g.n}", rgba=s.highlight_rgba)
            # Slide in from the left during the first quarter second.
            slide = min(1.0, (t - g.start) / 0.25)
            x = int(-sprite.width + slide * (sprite.width + s.safe_margin_px))
            blend(*planes, sprite, x, y, s.opacity)
            y += sprite.height + 6

    def _ticker(self, planes: Planes, s: Style, ticker: Ticker, t: float) -> None:
        sprite = self._label(s, ticker.text)
        span = self.width + sprite.width
        x = self.width - int(((t - ticker.start) * TICKER_SPEED_PX_S) % span)
        y = self.height - s.safe_margin_px - sprite.height - barcode.CELL_PX - 4
        self._panel(planes, s, 0, y - 2, self.width, sprite.height + 4)
        blend(*planes, sprite, x, y, s.opacity)

    def _likes(self, planes: Planes, s: Style, likes: LikeCounter, t: float) -> None:
        # The heart and the number are separate sprites, and the number is drawn digit
        # by digit: it changes with nearly every frame of a show, and ten cached digit
        # sprites (per colour) cost nothing where a new sprite of the whole number cost
        # a render (2-3 ms with its chroma planes) every frame. The heart comes from the
        # (slow) colour emoji font once.
        burst = t < likes.burst_until
        rgba = s.highlight_rgba if burst else None
        heart = self._label(s, "❤")
        digits = [self._label(s, d, rgba=rgba) for d in str(likes.total)]
        # Each sprite carries its outline on both sides: neighbours overlap by one.
        width = sum(d.width for d in digits) - 2 * COUNTER_OVERLAP_PX * (len(digits) - 1)
        x = self.width - s.safe_margin_px - width
        y = self.height - s.safe_margin_px - heart.height - barcode.CELL_PX
        blend(*planes, heart, x - heart.width - 4, y, s.opacity)
        for digit in digits:
            blend(*planes, digit, x, y, s.opacity)
            x += digit.width - 2 * COUNTER_OVERLAP_PX

    def _logo(self, planes: Planes, logo: Logo) -> None:
        sprite = self._logos.get(logo.path)
        if logo.path not in self._logos:
            sprite = self._load_logo(logo.path)
            self._logos[logo.path] = sprite
            while len(self._logos) > LOGO_CACHE:
                self._logos.popitem(last=False)
        if sprite is not None:
            blend(*planes, sprite, logo.x, logo.y, logo.opacity)

    @staticmethod
    def _load_logo(path: str) -> Sprite | None:
        try:
            with Image.open(Path(path)) as img:
                rgba = np.asarray(img.convert("RGBA"))
        except (OSError, ValueError) as exc:
            log.warning("logo %s cannot be drawn: %s", path, exc)
            return None
        return Sprite.from_rgba(rgba)

    def _probe(self, planes: Planes, seq: int) -> None:
        y, u, v = planes
        barcode.draw(y, seq, *barcode.TOP_LEFT)
        u[: barcode.CELL_PX // 2, : barcode.STRIP_WIDTH_PX // 2] = 128
        v[: barcode.CELL_PX // 2, : barcode.STRIP_WIDTH_PX // 2] = 128
