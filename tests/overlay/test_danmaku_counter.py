"""Counters that change every frame are drawn from small cached sprites: a merged
comment ("666 x57") is its text plus a counter sprite, the like count is its digits;
neither re-renders the whole label when the number moves."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from edge_node.overlay.scene import Danmaku, LikeCounter, Scene, Style
from edge_node.overlay.text import TextRenderer, find_font
from edge_node.overlay.widgets import Painter, lane_y

FONT = find_font()
pytestmark = pytest.mark.skipif(FONT is None, reason="no TrueType font on this machine")
W, H = 640, 360


def painted_columns(painter: Painter, d: Danmaku, t: float) -> tuple[int, int]:
    """First and last column the comment's lane got ink in (luma planes start black)."""
    scene = Scene(version=1, danmaku=(d,))
    painter.prewarm(scene, t)
    y_plane = np.zeros((H, W), np.uint8)
    planes = (
        y_plane,
        np.full((H // 2, W // 2), 128, np.uint8),
        np.full((H // 2, W // 2), 128, np.uint8),
    )
    painter.paint(planes, scene, t)
    top = lane_y(Style(), H, d.lane)
    cols = np.flatnonzero(y_plane[top : top + Style().font_size_px + 8].max(axis=0) > 40)
    assert cols.size, "nothing drawn"
    return int(cols[0]), int(cols[-1])


def test_a_merged_comment_shows_its_counter_where_one_sprite_would() -> None:
    renderer = TextRenderer(FONT)
    painter = Painter(W, H, renderer, probe_enabled=False)
    # start 2 s ago at 100 px/s: the left edge is 200 px in from the right.
    merged = Danmaku("a", "主播666", 0, 0.0, 100.0, 200, count=57)
    first, last = painted_columns(painter, merged, 2.0)
    assert first == pytest.approx(W - 200, abs=8)  # the outline and side bearing
    alone = Danmaku("b", "主播666", 0, 0.0, 100.0, 200)
    _, last_alone = painted_columns(painter, alone, 2.0)
    as_one = renderer.render("主播666 x57", Style().font_size_px)
    assert last > last_alone + 20  # the counter is there, after the text
    assert last == pytest.approx(W - 200 + as_one.width, abs=8)  # where one sprite ends


def test_a_new_count_renders_only_the_counter() -> None:
    renderer = TextRenderer(FONT)
    painter = Painter(W, H, renderer, probe_enabled=False)
    painted_columns(painter, Danmaku("a", "主播好看好看", 0, 0.0, 100.0, 300, count=2), 1.0)
    misses = renderer.misses
    for count in range(3, 13):
        painted_columns(painter, Danmaku("a", "主播好看好看", 0, 0.0, 100.0, 300, count=count), 1.0)
    assert renderer.misses - misses == 10  # " x3" .. " x12", the comment never again
    # Another merged comment with a count already seen costs nothing new.
    painted_columns(painter, Danmaku("b", "666", 1, 0.0, 100.0, 100), 1.0)
    misses = renderer.misses
    painted_columns(painter, Danmaku("b", "666", 1, 0.0, 100.0, 100, count=5), 1.0)
    assert renderer.misses == misses


def test_scene_wire_keeps_the_count() -> None:
    d = Danmaku("a", "666", 2, 1.5, 120.0, 80, count=57)
    back = Scene.from_wire(msgpack.unpackb(msgpack.packb(Scene(version=3, danmaku=(d,)).to_wire())))
    assert back.danmaku == (d,)
    assert back.danmaku[0].shown == "666 x57"
    assert Danmaku("a", "666", 2, 1.5, 120.0, 80).shown == "666"


def likes_columns(painter: Painter, total: int) -> tuple[int, int]:
    scene = Scene(version=1, likes=LikeCounter(total))
    y_plane = np.zeros((H, W), np.uint8)
    chroma = np.full((H // 2, W // 2), 128, np.uint8)
    painter.paint((y_plane, chroma, chroma.copy()), scene, 1.0)
    cols = np.flatnonzero(y_plane[H // 2 :].max(axis=0) > 40)
    assert cols.size, "nothing drawn"
    return int(cols[0]), int(cols[-1])


def test_the_like_count_is_drawn_from_cached_digits() -> None:
    renderer = TextRenderer(FONT)
    painter = Painter(W, H, renderer, probe_enabled=False)
    likes_columns(painter, 1234567890)  # every digit once
    misses = renderer.misses
    for total in (5, 98, 31337, 2024061, 999999999):
        likes_columns(painter, total)
    assert renderer.misses == misses  # a new count renders nothing
    # The digits span what one sprite of the number would, right-aligned at the margin.
    s = Style()
    whole = renderer.render("31337", s.font_size_px)
    first, last = likes_columns(painter, 31337)
    right = W - s.safe_margin_px
    assert last <= right and last >= right - 8
    heart = renderer.render("❤", s.font_size_px)
    assert first == pytest.approx(right - whole.width - 4 - heart.width, abs=10)
