"""Summary windows: aligned, contiguous, every event counted exactly once."""

from __future__ import annotations

import itertools

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.cloud.spool_state import Bounds, MergeConflict, SpoolState
from edge_node.cloud.summaries import (
    EventRecord,
    SummaryWindows,
    merge_spooled,
    rollup,
    words_of,
)


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


# --- latency, actions, state; merging and roll-ups --------------------------------------


def test_a_window_carries_latencies_actions_and_the_state_at_close() -> None:
    w = SummaryWindows(window_s=1, lateness_s=0.5)
    w.add(ev(100.1), now=100.1)
    w.add_latency(0.004, t_wall=100.2, now=100.2)
    w.add_latency(0.045, t_wall=100.3, now=100.3)
    w.add_latency(0.250, t_wall=100.4, now=100.4)
    w.add_action("moderation", "block", t_wall=100.5, now=100.5)
    w.add_action("moderation", "block", t_wall=100.6, now=100.6)
    w.add_action("anticheat", "mute", t_wall=100.6, now=100.6)
    [s] = w.close_due(now=101.6, state={"polls": {"p": {"totals": [1, 2], "closed": False}}})
    assert s.latency_ms == {"10": 1, "50": 1, "500": 1}
    assert s.actions == {"anticheat": {"mute": 1}, "moderation": {"block": 2}}
    assert s.state["polls"]["p"]["totals"] == [1, 2]
    payload = s.to_payload()
    assert payload["latency_ms"] == s.latency_ms and payload["actions"] == s.actions


def test_an_absurd_latency_is_clipped_and_flagged_not_dropped() -> None:
    w = SummaryWindows(window_s=1, lateness_s=0.5)
    w.add_latency(-3.0, t_wall=100.2, now=100.2)
    [s] = w.close_due(now=101.6)
    assert s.latency_ms == {"10": 1} and "clipped" in s.flags


def _payload(start: int, comments: int, likes: int, gifts: int, users: int) -> dict[str, object]:
    events = {"comment": {"accepted": comments}} if comments else {}
    if gifts:
        events["gift"] = {"accepted": gifts}
    return {
        "start": start,
        "window_s": 1,
        "events": events,
        "unique_users": users,
        "top_words": [["666", comments]] if comments else [],
        "likes": likes,
        "gift_value": gifts * 10,
        "flags": [],
        "health": {"fps_in": float(start)},
        "latency_ms": {"50": comments},
        "actions": {},
        "state": {"polls": {"p": {"totals": [start, 0]}}},
        "empty": not events,
    }


windows = st.lists(
    st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 5), st.integers(0, 20)),
    min_size=1,
    max_size=40,
)


@given(windows, st.sampled_from([1, 2, 10, 60]))
@settings(max_examples=100, deadline=None)
def test_rollups_and_merges_keep_every_count(rows: list[tuple[int, ...]], span: int) -> None:
    payloads = [_payload(1000 + i, *row) for i, row in enumerate(rows)]
    rolled = rollup(payloads, span)
    assert [r["start"] % span for r in rolled] == [0] * len(rolled)
    assert [r["start"] for r in rolled] == sorted({p["start"] // span * span for p in payloads})  # type: ignore[operator]

    def total(ps: list[dict[str, object]], key: str) -> int:
        return sum(int(p[key]) for p in ps)  # type: ignore[call-overload]

    def events(ps: list[dict[str, object]], kind: str) -> int:
        return sum(p["events"].get(kind, {}).get("accepted", 0) for p in ps)  # type: ignore[attr-defined]

    for key in ("likes", "gift_value"):
        assert total(rolled, key) == total(payloads, key)
    for kind in ("comment", "gift"):
        assert events(rolled, kind) == events(payloads, kind)
    # The spool's merge is the same join, pairwise on bytes.
    merged = msgpack.packb(payloads[0])
    for p in payloads[1:]:
        merged = merge_spooled("summary", merged, msgpack.packb(p))
    m = msgpack.unpackb(merged, strict_map_key=False)
    assert m["start"] == 1000 and m["window_s"] == len(payloads)
    assert m["likes"] == total(payloads, "likes")
    assert m["gift_value"] == total(payloads, "gift_value")
    assert m["unique_users"] == max(int(p["unique_users"]) for p in payloads)  # type: ignore[call-overload]
    assert m["state"] == payloads[-1]["state"]  # a reading: the newest wins
    if len(payloads) > 1:
        assert "merged" in m["flags"]


def test_the_spool_merge_refuses_a_payload_that_is_not_a_summary() -> None:
    with pytest.raises(MergeConflict):
        merge_spooled("summary", msgpack.packb({"start": 1}), msgpack.packb([1, 2]))
    # Other kinds keep the counter merge.
    out = merge_spooled("likes", msgpack.packb({"n": 1}), msgpack.packb({"n": 2}))
    assert msgpack.unpackb(out) == {"n": 3}


def test_flush_at_shutdown_closes_every_window_and_flags_the_current_one_partial() -> None:
    w = SummaryWindows(window_s=1, lateness_s=2.0)
    w.add(ev(100.5), now=100.5)
    w.add(ev(102.3, kind="like", likes=3), now=102.3)
    assert w.close_due(now=102.4) == []  # nothing is due yet: lateness
    out = w.flush(now=102.4)
    assert [s.start for s in out] == [100, 101, 102]
    assert out[0].events == {"comment": {"accepted": 1}} and "partial" in out[2].flags
    assert out[2].likes == 3 and out[1].empty
    assert w.close_due(now=110.0)[0].start == 103  # and the windows go on from there


def test_a_full_spool_joins_neighbouring_summaries_and_loses_no_count() -> None:
    state = SpoolState(Bounds(max_records=5, max_bytes=10**6, max_age_s=10**6), merge_spooled)
    payloads = [
        _payload(1000 + i, comments=i % 4, likes=i, gifts=i % 2, users=3) for i in range(40)
    ]
    for p in payloads:  # the link is down: nothing is sent or acked
        state.append("summary", msgpack.packb(p), True, float(p["start"]))  # type: ignore[arg-type]
    held = [r for r in state.unacked() if r.kind == "summary"]
    assert len(held) <= 5  # the bound holds ...
    kept = [msgpack.unpackb(r.payload, strict_map_key=False) for r in held]
    # ... and every like, gift and comment is still there, in windows that tile the time.
    assert sum(k["likes"] for k in kept) == sum(int(p["likes"]) for p in payloads)  # type: ignore[call-overload]
    assert sum(k["gift_value"] for k in kept) == sum(int(p["gift_value"]) for p in payloads)  # type: ignore[call-overload]
    spans = sorted((k["start"], k["start"] + k["window_s"]) for k in kept)
    assert spans[0][0] == 1000 and spans[-1][1] == 1040
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert state.stats().merged_bound > 0
