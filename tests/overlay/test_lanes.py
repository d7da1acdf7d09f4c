"""The danmaku board: no overlap on a lane, ever; every comment accounted for."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.overlay.lanes import MAX_WAIT_S, MERGE_SUFFIX, DanmakuBoard
from edge_node.overlay.scene import Style

W, H = 1280, 720


def measure(text: str, size_px: int = 32) -> int:
    return size_px // 2 * len(text)  # a monospace stand-in: the board only needs widths


def board(**style: object) -> DanmakuBoard:
    return DanmakuBoard(Style(**style), W, H, measure)  # type: ignore[arg-type]


def test_first_comment_is_shown_on_the_top_lane() -> None:
    b = board()
    assert b.add("c1", "hello", now=10.0) == "shown"
    (item,) = b.items()
    assert item.lane == 0 and item.start == 10.0
    assert item.width_px == measure("hello" + MERGE_SUFFIX)


def test_identical_comments_merge_with_a_counter() -> None:
    b = board()
    b.add("a", "666", 0.0)
    for i in range(56):
        assert b.add(f"m{i}", " 666 ", 0.1) == "merged"
    (item,) = b.items()
    assert (item.text, item.count, item.shown) == ("666", 57, "666 x57")
    assert b.counters.merged == 56 and b.counters.shown == 1


def test_gift_senders_jump_the_queue() -> None:
    b = board(lanes=1, speed_per_px=0.0)  # equal speeds: no catching up to wait out
    b.add("a", "first", 0.0)
    assert b.add("b", "plain", 0.0) == "queued"
    assert b.add("g", "from a gift sender", 0.0, highlight=True) == "queued"
    b.tick(1.5)  # "first" has fully entered (184 px at 160 px/s): lane 0 takes one more
    ids = [i.id for i in b.items()]
    assert "g" in ids and "b" not in ids


def test_queued_comments_are_dropped_after_max_wait_and_counted() -> None:
    b = board(lanes=1)
    b.add("a", "x" * 60, 0.0)
    assert b.add("b", "waiting", 0.0) == "queued"
    b.tick(MAX_WAIT_S + 0.01)
    assert b.counters.dropped == 1 and b.queued == 0


def test_max_on_screen() -> None:
    b = board(max_on_screen=3, lanes=10)
    outcomes = [b.add(f"c{i}", f"text {i}", 0.0) for i in range(5)]
    assert outcomes == ["shown"] * 3 + ["queued"] * 2


comments = st.lists(
    st.tuples(
        st.floats(0.0, 0.5, allow_nan=False),  # time since the previous comment
        st.text(alphabet="ab6 中", min_size=1, max_size=30),
        st.booleans(),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(comments=comments, lanes=st.integers(1, 6), speed_per_px=st.sampled_from([0.0, 0.5, 2.0]))
def test_no_two_comments_on_a_lane_ever_overlap(
    comments: list[tuple[float, str, bool]], lanes: int, speed_per_px: float
) -> None:
    b = board(lanes=lanes, speed_per_px=speed_per_px, gap_px=10)
    now = 0.0
    placed = {}
    outcomes = []
    for i, (dt, text, gift) in enumerate(comments):
        now += dt
        b.tick(now)
        outcomes.append(b.add(f"c{i}", text, now, highlight=gift))
        for item in b.items():
            placed[item.id] = item
    # Sample the whole life of everything that was placed.
    end = now + 30.0
    for t in [x / 10 for x in range(int(end * 10) + 1)]:
        for lane in range(lanes):
            on = sorted(
                (b.x_at(d, t), b.x_at(d, t) + d.width_px)
                for d in placed.values()
                if d.lane == lane and d.start <= t and b.x_at(d, t) + d.width_px > 0
            )
            for (_, right), (left, _) in itertools.pairwise(on):
                assert left >= right + 10 - 1e-6, (t, lane, on)
    # Accounting: every comment is shown, merged, dropped or still queued.
    c = b.counters
    assert c.shown + c.merged + c.dropped + b.queued == len(comments)
    assert c.shown == len(placed)
    assert outcomes.count("merged") == c.merged
