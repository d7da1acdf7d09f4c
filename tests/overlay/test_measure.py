"""The lane allocator's text width against the sprite the worker actually renders."""

from __future__ import annotations

import random
import string

import pytest

from edge_node.overlay.lanes import MERGE_SUFFIX
from edge_node.overlay.measure import TextMeasure
from edge_node.overlay.text import TextRenderer, find_font

FONT = find_font()
pytestmark = pytest.mark.skipif(FONT is None, reason="no TrueType font on this machine")

SAMPLES = [
    "666",
    "主播加油！！",
    "AVAWAY To Ta",  # kerning pairs
    "我爱你 love you 🎉🎉",
    "WWWW.....VA",
    "哈哈哈哈哈哈哈哈哈哈哈哈",
    "1234567890",
]


def random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + " .,!?-我爱你好的主播加油哈"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) for _ in range(n)]


@pytest.mark.parametrize("size_px", [24, 32, 48])
def test_the_measured_width_holds_the_rendered_sprite_with_its_merge_counter(size_px: int) -> None:
    measure = TextMeasure(FONT)
    renderer = TextRenderer(FONT)
    for text in SAMPLES + random_texts(200, size_px):
        width = measure(text + MERGE_SUFFIX, size_px)
        # What the board reserves covers the comment itself with room to spare...
        assert width >= renderer.render(text, size_px).width, text
        # ...and is not wildly more than the comment with its counter.
        rendered = renderer.render(text + MERGE_SUFFIX, size_px).width
        assert abs(width - rendered) <= max(8, rendered // 10), (text, width, rendered)


def test_the_same_text_measures_the_same_and_sizes_are_separate() -> None:
    measure = TextMeasure(FONT)
    assert measure("hello 你好", 32) == measure("hello 你好", 32)
    assert measure("hello 你好", 48) > measure("hello 你好", 32)
    assert measure("", 32) == measure("", 48)  # an empty text is its outline and slack


def test_a_flood_of_distinct_characters_keeps_the_glyph_table_bounded() -> None:
    from edge_node.overlay import measure as measure_mod

    measure = TextMeasure(FONT)
    before = measure("abc", 32)
    for cp in range(0x4E00, 0x4E00 + measure_mod.MAX_GLYPHS + 500):
        measure(chr(cp), 32)
    assert measure("abc", 32) == before
    assert sum(len(table) for table in measure._advances.values()) <= measure_mod.MAX_GLYPHS
