"""Text to sprites: font discovery, glyph coverage, rendering with Pillow, and a
byte-bounded LRU cache of the rendered sprites.

Rendering is the slow path (a millisecond or two per string); the cache makes it
happen once per distinct (text, size, colours, outline). It runs in the media worker
and must never be handed untrusted strings without going through ``render``, which
strips control characters, caps the length and copes with any other code point
(combining marks, right-to-left scripts, emoji, unassigned ones).

Fonts: the configured font, else the first CJK font found on the system, else
DejaVu Sans, else Pillow's built-in font. Characters the main font cannot draw are
taken from fallback fonts (a colour emoji font and DejaVu Sans when installed),
character by character, so "666 弹幕 👍" renders whole with a CJK main font.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from edge_node.errors import ConfigError
from edge_node.overlay.sprite import Sprite

log = logging.getLogger(__name__)

Rgba = tuple[int, int, int, int]

CJK_FONT_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
)
LATIN_FONT_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
)
EMOJI_FONT_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
)

# One probe string per script; the script counts as missing when any of its
# characters is missing.
SCRIPT_PROBES: dict[str, str] = {
    "Chinese": "中文弹幕测试",
    "Latin": "AaZz",
    "digits": "0123456789",
    "emoji": "😀👍🎉",
}

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_CHARS = 256

# Colour bitmap fonts (CBDT, e.g. Noto Color Emoji) load at one pixel size only.
_COLOUR_FONT_SIZE = 109
_PROBE_SIZE = 24
# U+10FFFD (private use, plane 16) is in no font we would ship: it draws as .notdef.
_MISSING_PROBE = "\U0010fffd"
_MAX_COVERAGE_MEMO = 8192


def _first_file(paths: Iterable[str]) -> str | None:
    return next((p for p in paths if os.path.isfile(p)), None)


def find_font(configured: str | None = None, *, config_key: str = "overlay.font") -> str | None:
    """The font file to use: ``configured`` when given (it must exist), else the first
    CJK font found, else DejaVu Sans; ``None`` means Pillow's built-in font."""
    if configured:
        if not os.path.isfile(configured):
            raise ConfigError(config_key, f"font file not found: {configured}")
        return configured
    return _first_file(CJK_FONT_CANDIDATES) or _first_file(LATIN_FONT_CANDIDATES)


def find_fallback_fonts(primary: str | None) -> list[str]:
    """Fonts to take characters from that ``primary`` cannot draw: a colour emoji font
    and DejaVu Sans (wide symbol coverage), those that exist and are not ``primary``."""
    found = [_first_file(EMOJI_FONT_CANDIDATES), _first_file(LATIN_FONT_CANDIDATES)]
    return [p for p in found if p is not None and p != primary]


class _Face:
    """One font file: its instances by pixel size and a memo of which characters it
    has. Colour bitmap fonts load at their one size and are scaled when drawn."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.colour = False
        self._sizes: dict[int, ImageFont.FreeTypeFont] = {}
        self._lock = threading.Lock()
        try:
            probe = self.font(_PROBE_SIZE)
        except OSError:
            if path is None:
                raise
            # "invalid pixel size": a bitmap-only (colour emoji) font.
            self.colour = True
            probe = self.font(_COLOUR_FONT_SIZE)
        self._probe = probe
        self._notdef = self._bitmap(_MISSING_PROBE)
        self._has: dict[str, bool] = {}

    def font(self, size_px: int) -> ImageFont.FreeTypeFont:
        if self.colour:
            size_px = _COLOUR_FONT_SIZE
        font = self._sizes.get(size_px)
        if font is None:
            with self._lock:
                if self.path is None:
                    loaded = ImageFont.load_default(size_px)
                    if not isinstance(loaded, ImageFont.FreeTypeFont):
                        raise RuntimeError("Pillow was built without FreeType")
                    font = loaded
                else:
                    font = ImageFont.truetype(self.path, size_px)
                if len(self._sizes) >= 64:
                    self._sizes.clear()
                self._sizes[size_px] = font
        return font

    def _bitmap(self, ch: str) -> bytes | None:
        """The rendering of ``ch`` at the probe size (None: nothing drawn)."""
        font = self._probe
        left, top, right, bottom = font.getbbox(ch)
        w, h = math.ceil(right - left), math.ceil(bottom - top)
        if w <= 0 or h <= 0:
            return None
        mode = "RGBA" if self.colour else "L"
        img = Image.new(mode, (w, h))
        ink = (255, 255, 255, 255) if self.colour else 255
        ImageDraw.Draw(img).text((-left, -top), ch, font=font, fill=ink, embedded_color=self.colour)
        if img.getbbox(alpha_only=True) is None:
            return None
        return f"{w}x{h}:".encode() + img.tobytes()

    def has(self, ch: str) -> bool:
        """Whether the font draws ``ch`` as itself rather than as .notdef (tofu) or
        nothing at all. Whitespace counts as present."""
        known = self._has.get(ch)
        if known is not None:
            return known
        if ch.isspace():
            present = True
        else:
            try:
                bitmap = self._bitmap(ch)
            except (OSError, ValueError):
                bitmap = None
            present = bitmap is not None and bitmap != self._notdef
        if len(self._has) >= _MAX_COVERAGE_MEMO:
            self._has.clear()
        self._has[ch] = present
        return present


def check_coverage(font_path: str | None) -> list[str]:
    """The scripts of ``SCRIPT_PROBES`` (``"Chinese"``, ``"Latin"``, ``"digits"``,
    ``"emoji"``) the font cannot draw; ``None`` checks Pillow's built-in font."""
    face = _Face(font_path)
    return [
        script for script, probe in SCRIPT_PROBES.items() if not all(face.has(c) for c in probe)
    ]


def log_missing_scripts(font_path: str | None) -> list[str]:
    """Start-up check: log a warning naming the scripts ``font_path`` cannot draw
    (e.g. "Chinese" for a Latin-only font) and return them."""
    missing = check_coverage(font_path)
    if missing:
        log.warning(
            "overlay font %s cannot draw %s; those characters will show as boxes or"
            " come from a fallback font",
            font_path or "(Pillow built-in)",
            ", ".join(missing),
            extra={"font": font_path, "missing_scripts": missing},
        )
    return missing


def sanitize(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """``text`` without control characters (C0, C1, DEL) or lone surrogates, at most
    ``max_chars`` code points long."""
    kept = (c for c in text if unicodedata.category(c) not in ("Cc", "Cs"))
    return "".join(kept)[:max_chars]


def _joins_previous(ch: str) -> bool:
    """Characters that belong with the one before them: combining marks, format
    characters (ZWJ, direction marks, tags), variation selectors, skin tones."""
    return unicodedata.category(ch) in ("Mn", "Me", "Mc", "Cf") or 0x1F3FB <= ord(ch) <= 0x1F3FF


@dataclass(frozen=True, slots=True)
class _Run:
    text: str
    face: _Face


class TextRenderer:
    """Renders strings into ``Sprite``s and caches them (LRU, bounded in bytes).

    ``hits``, ``misses`` and ``evictions`` count cache lookups; ``cached_bytes`` is
    what the cache holds (always <= ``cache_bytes``). Safe to call from several
    threads (the cache is locked; rendering runs outside the lock).
    """

    def __init__(
        self,
        font_path: str | None = None,
        *,
        fallback_paths: Sequence[str] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        """``font_path`` None means Pillow's built-in font (use ``find_font()`` to pick
        one). ``fallback_paths`` None means ``find_fallback_fonts(font_path)``."""
        if fallback_paths is None:
            fallback_paths = find_fallback_fonts(font_path)
        self.font_path = font_path
        self.faces: list[_Face] = [_Face(font_path)]
        for path in fallback_paths:
            if path == font_path:
                continue
            try:
                self.faces.append(_Face(path))
            except OSError as exc:
                # A broken fallback costs some glyphs, not the overlay.
                log.warning("fallback font %s unusable: %s", path, exc, extra={"font": path})
        self.cache_bytes = cache_bytes
        self.max_chars = max_chars
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.cached_bytes = 0
        self._cache: OrderedDict[tuple[object, ...], Sprite] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._cache)

    def missing_scripts(self) -> list[str]:
        """Scripts no face (main or fallback) can draw."""
        return [
            script
            for script, probe in SCRIPT_PROBES.items()
            if not all(any(f.has(c) for f in self.faces) for c in probe)
        ]

    def render(
        self,
        text: str,
        size_px: int,
        fill_rgba: Rgba = (255, 255, 255, 255),
        outline_rgba: Rgba = (0, 0, 0, 255),
        outline_px: int = 2,
        shadow: bool = False,
    ) -> Sprite:
        """``text`` as a sprite: one line, ``size_px`` font size, filled with
        ``fill_rgba`` and outlined ``outline_px`` wide in ``outline_rgba`` (0: no
        outline), with a drop shadow if asked.

        The sprite's height depends only on the size, outline and shadow (a line box
        from the main font's ascent and descent), so lines of one style stack evenly;
        its width follows the text. Its chroma planes are built before it is returned,
        so blending it never does that work on the frame path.
        """
        size_px = max(1, int(size_px))
        outline_px = max(0, int(outline_px))
        style = (size_px, tuple(fill_rgba), tuple(outline_rgba), outline_px, bool(shadow))
        # Looked up as given first: a hit (the per-frame case) costs no sanitising.
        sprite = self._lookup((text, *style))
        if sprite is not None:
            return sprite
        clean = sanitize(text, self.max_chars)
        key = (clean, *style)
        if clean != text:
            sprite = self._lookup(key)
            if sprite is not None:
                return sprite
        text = clean
        with self._lock:
            self.misses += 1
        sprite = Sprite.from_rgba(
            self._draw(text, size_px, fill_rgba, outline_rgba, outline_px, shadow)
        )
        sprite.prepare()
        self._store(key, sprite)
        return sprite

    def cached(
        self,
        text: str,
        size_px: int,
        fill_rgba: Rgba = (255, 255, 255, 255),
        outline_rgba: Rgba = (0, 0, 0, 255),
        outline_px: int = 2,
        shadow: bool = False,
    ) -> Sprite | None:
        """The sprite ``render`` would return, if it is cached; never renders."""
        style = (
            max(1, int(size_px)),
            tuple(fill_rgba),
            tuple(outline_rgba),
            max(0, int(outline_px)),
            bool(shadow),
        )
        sprite = self._lookup((text, *style))
        if sprite is None:
            clean = sanitize(text, self.max_chars)
            if clean != text:
                sprite = self._lookup((clean, *style))
        return sprite

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self.cached_bytes = 0

    def _lookup(self, key: tuple[object, ...]) -> Sprite | None:
        with self._lock:
            sprite = self._cache.get(key)
            if sprite is not None:
                self._cache.move_to_end(key)
                self.hits += 1
            return sprite

    def _store(self, key: tuple[object, ...], sprite: Sprite) -> None:
        size = sprite.nbytes
        if size > self.cache_bytes:
            return  # larger than the whole budget: used once, never cached
        with self._lock:
            if key in self._cache:
                return  # another thread rendered it meanwhile
            while self.cached_bytes + size > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self.cached_bytes -= old.nbytes
                self.evictions += 1
            self._cache[key] = sprite
            self.cached_bytes += size

    def _runs(self, text: str) -> list[_Run]:
        runs: list[_Run] = []
        primary = self.faces[0]
        current: list[str] = []
        face = primary
        for ch in text:
            if current and _joins_previous(ch):
                current.append(ch)
                continue
            if ch.isspace():
                # Spaces stay in the run they are in, except in a colour (emoji) run:
                # those fonts have no proper space, so the main font spaces them.
                wanted = primary if face.colour else face
            else:
                wanted = next((f for f in self.faces if f.has(ch)), primary)
            if current and wanted is not face:
                runs.append(_Run("".join(current), face))
                current = []
            face = wanted
            current.append(ch)
        if current:
            runs.append(_Run("".join(current), face))
        return runs

    def _draw(
        self,
        text: str,
        size_px: int,
        fill_rgba: Rgba,
        outline_rgba: Rgba,
        outline_px: int,
        shadow: bool,
    ) -> NDArray[np.uint8]:
        primary = self.faces[0].font(size_px)
        ascent, descent = primary.getmetrics()
        stroke = outline_px if outline_rgba[3] > 0 else 0
        shadow_px = max(1, round(size_px / 16)) if shadow else 0

        # Lay the runs out along one baseline; ink may overhang the advance box
        # sideways (italics, strokes), so the canvas follows the ink horizontally.
        placed: list[tuple[_Run, float, _ColourRun | None]] = []
        pen = float(stroke)
        ink_left, ink_right = 0.0, 0.0
        for run in self._runs(text):
            font = run.face.font(size_px)
            if run.face.colour:
                image = _colour_run(run.text, font, size_px)
                advance = font.getlength(run.text) * size_px / _COLOUR_FONT_SIZE
                left, right = 0.0, float(image.image.width) if image is not None else 0.0
            else:
                image = None
                advance = float(font.getlength(run.text))
                left, _, right, _ = font.getbbox(run.text, anchor="ls", stroke_width=stroke)
            placed.append((run, pen, image))
            ink_left = min(ink_left, pen + left)
            ink_right = max(ink_right, pen + right)
            pen += advance
        ink_right = max(ink_right, pen + stroke)
        origin = -math.floor(ink_left)
        width = max(1, math.ceil(ink_right) + origin + shadow_px)
        height = ascent + descent + 2 * stroke + shadow_px
        baseline = stroke + ascent

        fill_mask = Image.new("L", (width, height))
        stroke_mask = Image.new("L", (width, height)) if stroke else None
        colour_layer: Image.Image | None = None
        for run, x, image in placed:
            if image is not None:
                if colour_layer is None:
                    colour_layer = Image.new("RGBA", (width, height))
                _paste(colour_layer, image.image, round(x) + origin, baseline - image.baseline)
                continue
            if run.face.colour:
                continue
            font = run.face.font(size_px)
            xy = (x + origin, baseline)
            ImageDraw.Draw(fill_mask).text(xy, run.text, font=font, fill=255, anchor="ls")
            if stroke_mask is not None:
                ImageDraw.Draw(stroke_mask).text(
                    xy, run.text, font=font, fill=255, anchor="ls",
                    stroke_width=stroke, stroke_fill=255,
                )  # fmt: skip
        if stroke_mask is not None and colour_layer is not None:
            # Outline the emoji too: their alpha, grown by the stroke width.
            grown = colour_layer.getchannel("A").filter(ImageFilter.MaxFilter(2 * stroke + 1))
            stroke_mask = Image.fromarray(np.maximum(np.asarray(stroke_mask), np.asarray(grown)))

        layers: list[Layer] = []
        body = stroke_mask if stroke_mask is not None else fill_mask
        if shadow_px:
            shade = np.zeros((height, width), dtype=np.float32)
            shade[shadow_px:, shadow_px:] = np.asarray(body, dtype=np.float32)[
                : height - shadow_px, : width - shadow_px
            ]
            if colour_layer is not None and stroke_mask is None:
                alpha = np.asarray(colour_layer.getchannel("A"), dtype=np.float32)
                shade[shadow_px:, shadow_px:] = np.maximum(
                    shade[shadow_px:, shadow_px:], alpha[: height - shadow_px, : width - shadow_px]
                )
            layers.append(_solid_layer(shade, (0, 0, 0, 160)))
        if stroke_mask is not None:
            layers.append(_solid_layer(np.asarray(stroke_mask, dtype=np.float32), outline_rgba))
        layers.append(_solid_layer(np.asarray(fill_mask, dtype=np.float32), fill_rgba))
        if colour_layer is not None:
            rgba = np.asarray(colour_layer, dtype=np.float32) / 255.0
            layers.append(((rgba[..., 0], rgba[..., 1], rgba[..., 2]), rgba[..., 3]))
        return _over(layers, height, width)


@dataclass(frozen=True, slots=True)
class _ColourRun:
    image: Image.Image
    baseline: int  # rows from the image's top to the baseline


def _paste(canvas: Image.Image, image: Image.Image, x: int, y: int) -> None:
    """Alpha-composite ``image`` onto ``canvas`` at ``(x, y)``, clipped to the canvas."""
    left, top = max(0, -x), max(0, -y)
    right = min(image.width, canvas.width - x)
    bottom = min(image.height, canvas.height - y)
    if left < right and top < bottom:
        part = image.crop((left, top, right, bottom))
        canvas.alpha_composite(part, (x + left, y + top))


def _colour_run(text: str, font: ImageFont.FreeTypeFont, size_px: int) -> _ColourRun | None:
    """A run of a colour bitmap font drawn at its native size and scaled to ``size_px``."""
    left, top, right, bottom = font.getbbox(text, anchor="ls")
    w, h = math.ceil(right - min(left, 0)), math.ceil(bottom - top)
    if w <= 0 or h <= 0:
        return None
    image = Image.new("RGBA", (w, h))
    ImageDraw.Draw(image).text(
        (-min(left, 0), -top), text, font=font, anchor="ls", embedded_color=True
    )
    scale = size_px / _COLOUR_FONT_SIZE
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return _ColourRun(image.resize(size, Image.Resampling.LANCZOS), round(-top * scale))


Layer = tuple[tuple[NDArray[np.float32] | float, ...], NDArray[np.float32]]
"""Straight colour (three planes, or three constants for a solid layer), alpha; 0..1."""


def _solid_layer(mask: NDArray[np.float32], rgba: Rgba) -> Layer:
    alpha = mask * np.float32(rgba[3] / (255.0 * 255.0))
    return tuple(c / 255.0 for c in rgba[:3]), alpha


def _over(layers: list[Layer], height: int, width: int) -> NDArray[np.uint8]:
    """Straight RGBA of the layers (bottom first) composited with "over"."""
    premul = [np.zeros((height, width), dtype=np.float32) for _ in range(3)]
    alpha = np.zeros((height, width), dtype=np.float32)
    for colour, a in layers:
        keep = 1.0 - a
        for channel, c in zip(premul, colour, strict=True):
            channel *= keep
            channel += c * a
        alpha *= keep
        alpha += a
    out = np.empty((height, width, 4), dtype=np.uint8)
    # 255 / alpha where anything was drawn; colour is irrelevant where alpha is 0.
    scale = np.divide(255.0, alpha, out=np.zeros_like(alpha), where=alpha > 0)
    for i, channel in enumerate(premul):
        channel *= scale
        out[..., i] = np.clip(channel + 0.5, 0, 255)
    out[..., 3] = np.clip(alpha * 255.0 + 0.5, 0, 255)
    return out
