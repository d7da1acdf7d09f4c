"""Text rendering: fonts, glyph coverage, the sprite cache, and arbitrary input."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.errors import ConfigError
from edge_node.overlay.sprite import Sprite
from edge_node.overlay.text import (
    CJK_FONT_CANDIDATES,
    EMOJI_FONT_CANDIDATES,
    TextRenderer,
    check_coverage,
    find_font,
    log_missing_scripts,
    sanitize,
)

CJK_FONT = next((p for p in CJK_FONT_CANDIDATES if os.path.isfile(p)), None)
LATIN_ONLY_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
)
LATIN_FONT = next((p for p in LATIN_ONLY_FONTS if os.path.isfile(p)), None)
EMOJI_FONT = next((p for p in EMOJI_FONT_CANDIDATES if os.path.isfile(p)), None)

needs_cjk = pytest.mark.skipif(CJK_FONT is None, reason="no CJK font (apt: fonts-wqy-microhei)")
needs_latin = pytest.mark.skipif(LATIN_FONT is None, reason="no Latin-only font on this box")

WHITE = (255, 255, 255, 255)
BLACK = (0, 0, 0, 255)


def opaque_pixels(sprite: Sprite) -> int:
    """Luma pixels with any alpha at all."""
    return int((sprite.y_inv < 256).sum())


@pytest.fixture(scope="module")
def renderer() -> Iterator[TextRenderer]:
    # The production set-up: the discovered font plus the discovered fallbacks.
    yield TextRenderer(find_font())


@needs_cjk
def test_find_font_prefers_a_cjk_font() -> None:
    assert find_font() == CJK_FONT


def test_find_font_uses_the_configured_file() -> None:
    if LATIN_FONT is None:
        pytest.skip("no font file to configure")
    assert find_font(LATIN_FONT) == LATIN_FONT
    with pytest.raises(ConfigError) as info:
        find_font("/nonexistent/font.ttf", config_key="overlay.font_path")
    assert info.value.key == "overlay.font_path"


@needs_cjk
def test_cjk_text_renders_non_empty_glyphs() -> None:
    assert CJK_FONT is not None
    text = TextRenderer(CJK_FONT, fallback_paths=())
    sprite = text.render("弹幕测试", 32, WHITE, BLACK)
    assert sprite.height >= 32
    assert sprite.width >= 4 * 28
    assert opaque_pixels(sprite) > 0.2 * sprite.width * sprite.height
    # Real glyphs, not four .notdef boxes: those would all look alike.
    tofu = text.render("\U0010fffd" * 4, 32, WHITE, BLACK)
    assert tofu.shape != sprite.shape or not np.array_equal(tofu.y_pre, sprite.y_pre)
    assert "Chinese" not in check_coverage(CJK_FONT)


@needs_latin
def test_coverage_check_reports_chinese_missing_from_a_latin_font() -> None:
    missing = check_coverage(LATIN_FONT)
    assert "Chinese" in missing
    assert "Latin" not in missing
    assert "digits" not in missing


@needs_latin
def test_coverage_warning_names_the_missing_script(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edge_node.overlay.text"):
        missing = log_missing_scripts(LATIN_FONT)
    assert "Chinese" in missing
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "Chinese" in warnings[0].getMessage()


@needs_cjk
def test_no_warning_for_chinese_with_a_cjk_font(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edge_node.overlay.text"):
        missing = log_missing_scripts(CJK_FONT)
    assert "Chinese" not in missing
    assert all("Chinese" not in r.getMessage() for r in caplog.records)


def test_pillow_builtin_font_renders() -> None:
    text = TextRenderer(None, fallback_paths=())
    sprite = text.render("hello 123", 24, WHITE, BLACK)
    assert opaque_pixels(sprite) > 0
    assert "Latin" not in check_coverage(None)


@pytest.mark.skipif(EMOJI_FONT is None, reason="no colour emoji font installed")
def test_emoji_come_from_the_colour_font(renderer: TextRenderer) -> None:
    assert "emoji" not in renderer.missing_scripts()
    sprite = renderer.render("👍", 32, WHITE, BLACK, outline_px=0)
    assert opaque_pixels(sprite) > 100
    # Colour, not a white box: some chroma well away from neutral (128).
    planes = sprite.chroma(0, 0)
    visible = planes.inv < 64
    u = (planes.u_pre[visible].astype(int) - 128) / (256 - planes.inv[visible])
    assert np.abs(u - 128).max() > 20


def test_cache_hits_on_repeat() -> None:
    text = TextRenderer(find_font())
    first = text.render("666", 32, WHITE, BLACK)
    assert (text.hits, text.misses) == (0, 1)
    assert text.render("666", 32, WHITE, BLACK) is first
    assert (text.hits, text.misses) == (1, 1)
    # Any difference of style is another sprite.
    for other in (
        ("667", 32, WHITE, BLACK, 2, False),
        ("666", 33, WHITE, BLACK, 2, False),
        ("666", 32, (255, 0, 0, 255), BLACK, 2, False),
        ("666", 32, WHITE, (9, 9, 9, 255), 2, False),
        ("666", 32, WHITE, BLACK, 3, False),
        ("666", 32, WHITE, BLACK, 2, True),
    ):
        assert text.render(*other) is not first
    assert (text.hits, text.misses) == (1, 7)
    assert len(text) == 7
    assert text.cached_bytes == sum(s.nbytes for s in text._cache.values())


def test_cache_evicts_least_recently_used_within_budget() -> None:
    probe = TextRenderer(find_font()).render("abcd", 24, WHITE, BLACK)
    budget = int(probe.nbytes * 2.5)
    text = TextRenderer(find_font(), cache_bytes=budget)
    a = text.render("abcd", 24, WHITE, BLACK)
    text.render("abce", 24, WHITE, BLACK)
    assert text.render("abcd", 24, WHITE, BLACK) is a  # now the most recent
    text.render("abcf", 24, WHITE, BLACK)  # evicts "abce", the least recent
    assert text.evictions == 1
    assert text.render("abcd", 24, WHITE, BLACK) is a
    misses = text.misses
    text.render("abce", 24, WHITE, BLACK)
    assert text.misses == misses + 1
    for i in range(20):
        text.render(f"abc{i}", 24, WHITE, BLACK)
        assert text.cached_bytes <= budget
        assert text.cached_bytes == sum(s.nbytes for s in text._cache.values())
    assert text.evictions >= 20
    assert len(text) == 2


def test_sprite_larger_than_the_budget_is_not_cached() -> None:
    text = TextRenderer(find_font(), cache_bytes=1000)
    sprite = text.render("too big for the cache", 32, WHITE, BLACK)
    assert sprite.nbytes > 1000
    assert text.cached_bytes == 0
    assert len(text) == 0
    assert text.render("too big for the cache", 32, WHITE, BLACK) is not sprite
    assert text.misses == 2


def test_control_characters_are_stripped(renderer: TextRenderer) -> None:
    assert sanitize("a\x00b\x1b[31mc\x7f\x85d\ne\u200f") == "ab[31mcde\u200f"
    clean = renderer.render("ab", 24, WHITE, BLACK)
    assert renderer.render("a\x00\x07b\r\n", 24, WHITE, BLACK) is clean


def test_long_text_is_capped() -> None:
    text = TextRenderer(find_font(), max_chars=10)
    assert text.render("x" * 1000, 24, WHITE, BLACK) is text.render("x" * 10, 24, WHITE, BLACK)


def test_line_height_depends_only_on_the_style(renderer: TextRenderer) -> None:
    heights = {
        renderer.render(t, 32, WHITE, BLACK).height for t in ("", "a", "gjpq", "弹幕", "ÅÉ", "👍")
    }
    assert len(heights) == 1
    assert renderer.render("", 32, WHITE, BLACK).width >= 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\u0301\u0301",  # combining marks with nothing to combine with
        "e\u0301" + "\u0300" * 50,  # stacked marks
        "مرحبا بالعالم",  # right to left
        "שלום 123 abc",  # mixed direction
        "\u202eevil\u202c",  # direction overrides
        "👨‍👩‍👧 🏳️‍🌈 👍🏽 1️⃣",  # ZWJ sequences, modifiers, keycaps
        "\U0010fffd\U000e0001\ufeff\ufffe",  # private use, tags, BOM, non-character
        "\x00\x01\x02",  # only control characters
        "ﷺ" * 5,  # a very wide ligature
    ],
)
def test_awkward_text_renders(renderer: TextRenderer, text: str) -> None:
    sprite = renderer.render(text, 32, WHITE, BLACK, shadow=True)
    assert sprite.height > 0 and sprite.width > 0


@settings(max_examples=150, deadline=None)
@given(text=st.text(), size=st.integers(1, 64), outline=st.integers(0, 4), shadow=st.booleans())
def test_any_unicode_renders_without_raising(
    renderer: TextRenderer, text: str, size: int, outline: int, shadow: bool
) -> None:
    sprite = renderer.render(text, size, WHITE, BLACK, outline, shadow)
    assert sprite.height > 0 and sprite.width > 0


def test_unusable_fallback_font_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "broken.ttf"
    broken.write_bytes(b"not a font")
    with caplog.at_level(logging.WARNING, logger="edge_node.overlay.text"):
        text = TextRenderer(find_font(), fallback_paths=[str(broken)])
    assert len(text.faces) == 1
    assert "broken.ttf" in caplog.text
    assert text.render("ok", 24, WHITE, BLACK).width > 0
