"""Text width without rendering, for the control process's lane allocator.

The worker renders the sprites; the control process only needs their widths to place
danmaku on lanes. Pillow's advance widths with the same font give them to within a
few pixels (fallback glyphs aside); the board reserves room for a merge counter on
top, which absorbs the difference.
"""

from __future__ import annotations

import functools
import math

from PIL import ImageFont

OUTLINE_PX = 2
SHAPING_SLACK_PX = 2  # a layout's kerning and shaping against the sum of advances
MAX_GLYPHS = 20_000  # per size: every CJK character a crowd types, and then some


class TextMeasure:
    """``measure(text, size_px)``: the width in pixels of an outlined sprite of text.

    The sum of the characters' advance widths, each measured once per size: a new
    comment costs a few dictionary lookups instead of a Pillow layout (~150 µs with
    raqm). Kerning and shaping make a real layout differ from the sum by a few pixels
    (-1.6 to +6.4 px over 7,000 danmaku-like texts, Latin, CJK and emoji, 32 px);
    ``SHAPING_SLACK_PX`` and the merge counter the board reserves absorb that.
    """

    def __init__(self, font_path: str | None) -> None:
        self.font_path = font_path
        self._advances: dict[int, dict[str, float]] = {}

    @functools.lru_cache(maxsize=8)  # noqa: B019 - a handful of sizes, measure lives forever
    def _font(self, size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        if self.font_path:
            return ImageFont.truetype(self.font_path, size_px)
        return ImageFont.load_default(size=size_px)

    def __call__(self, text: str, size_px: int) -> int:
        advances = self._advances.get(size_px)
        if advances is None:
            advances = self._advances[size_px] = {}
        total = 0.0
        for ch in text:
            advance = advances.get(ch)
            if advance is None:
                if len(advances) >= MAX_GLYPHS:  # a flood of rare characters: start over
                    advances.clear()
                advance = advances[ch] = self._font(size_px).getlength(ch)
            total += advance
        return math.ceil(total) + 2 * OUTLINE_PX + 2 + SHAPING_SLACK_PX
