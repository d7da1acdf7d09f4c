"""Text width without rendering, for the control process's lane allocator.

The worker renders the sprites; the control process only needs their widths to place
danmaku on lanes. Pillow's advance widths with the same font give them to within a
few pixels (fallback glyphs aside); the board reserves room for a merge counter on
top, which absorbs the difference.
"""

from __future__ import annotations

import functools

from PIL import ImageFont

OUTLINE_PX = 2


class TextMeasure:
    """``measure(text, size_px)``: the width in pixels of an outlined sprite of text."""

    def __init__(self, font_path: str | None) -> None:
        self.font_path = font_path

    @functools.lru_cache(maxsize=8)  # noqa: B019 - a handful of sizes, measure lives forever
    def _font(self, size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        if self.font_path:
            return ImageFont.truetype(self.font_path, size_px)
        return ImageFont.load_default(size=size_px)

    def __call__(self, text: str, size_px: int) -> int:
        return self._width(text, size_px)

    # Viewers repeat themselves ("666"): a width is measured once (~150 µs of Pillow).
    @functools.lru_cache(maxsize=8192)  # noqa: B019 - bounded, lives as long as the node
    def _width(self, text: str, size_px: int) -> int:
        return int(self._font(size_px).getlength(text)) + 2 * OUTLINE_PX + 2
