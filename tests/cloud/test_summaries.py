"""Summary windows: aligned, contiguous, every event counted exactly once."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.cloud.summaries import EventRecord, SummaryWindows, words_of


def ev(
    t: float,
    user: str = "u",
    kind: str = "comment",
    outcome: str = "accepted",
    text: str = "",
    likes: int = 0,
) -> EventRecord:
    return EventRecord(t, user, kind, outcome, text, likes)


def test_windows_are_aligned_and_empty_ones_are_explicit() -> None:
    w = SummaryWindows(window_s=1, lateness_s=0.5)
    w.add(ev(100.2, text="主播好 666"), now=100.2)
    w.add(ev(100.7, user="v", kind="like", likes=5), now=100.7)
    w.add(ev(102.1, outcome="rate_limited"), now=102.1)
    out = w.close_due(now=103.6)
    assert [s.start for s in out] == [100, 101, 102]
    first, gap, third = out
    assert first.events == {"comment": {"accepted": 1}, "like": {"accepted": 1}}
    assert first.unique_users == 2 and first.likes == 5
    assert dict(first.top_words)["666"] == 1 and dict(first.top_words)["主播"] == 1
    assert gap.empty and gap.events == {}
    assert third.events == {"comment": {"rate_limited": 1}}


def test_late_events_are_kept_and_flagged() -> None:
    w = SummaryWindows(window_s=1, lateness_s=0.5)
    w.add(ev(10.1), now=10.1)
    assert [s.start for s in w.close_due(now=11.6)] == [10]
    w.add(ev(10.9), now=11.7)  # belongs to a window already sent
    (s,) = w.close_due(now=12.6)
    assert s.start == 11 and "late" in s.flags and s.events == {"comment": {"accepted": 1}}


def test_clock_jump_is_flagged_not_a_flood_of_windows() -> None:
    w = SummaryWindows()
    w.add(ev(1000.0), now=1000.0)
    w.close_due(now=1003.0)
    w.add(ev(50_000.0), now=50_000.0)  # the wall clock stepped by 13 hours
    out = w.close_due(now=50_003.0)
    assert len(out) < 10 and any("clock_jump" in s.flags for s in out)


def test_absurd_values_are_clipped_and_flagged() -> None:
    w = SummaryWindows()
    w.add(ev(5.0, kind="like", likes=10**12), now=5.0)
    (s,) = w.close_due(now=8.5)[:1]
    assert s.likes == 1_000_000 and "clipped" in s.flags


def test_chinese_text_splits_into_bigrams() -> None:
    assert words_of("太好看了 wow 666!") == ["太好", "好看", "看了", "wow", "666"]


@settings(max_examples=150, deadline=None)
@given(gaps=st.lists(st.tuples(st.floats(0, 0.9), st.floats(0, 1.5)), max_size=100))
def test_every_event_is_counted_once_in_contiguous_windows(
    gaps: list[tuple[float, float]],
) -> None:
    w = SummaryWindows(window_s=1, lateness_s=1.0)
    now = 1_000.0
    out = []
    for step, lateness in gaps:
        now += step
        w.add(ev(now - lateness), now=now)  # some arrive late
        out += w.close_due(now)
    out += w.close_due(now + 10.0)
    counted = sum(n for s in out for o in s.events.values() for n in o.values())
    assert counted == len(gaps)
    assert all(b.start - a.start == 1 for a, b in itertools.pairwise(out))
