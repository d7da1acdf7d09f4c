"""PK battles: picking sides, scoring by votes or gifts, the deadline and the result."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.interaction.effects import CommandError
from edge_node.interaction.pk import PUSH_INTERVAL_S, RESULT_SHOW_S, Pks

GIFTS = {"rose": 1, "rocket": 500}


def running(scoring: str = "votes", seconds: float = 60, **kw: Any) -> Pks:
    pks = Pks(GIFTS, **kw)
    args = {"pk": "P", "sides": ["Red", "Blue"], "seconds": seconds, "scoring": scoring}
    assert pks.open(args, 0.0) == {"pk": "P"}
    pks.take_pushes()
    return pks


def error(fn: Any, *args: Any) -> CommandError:
    with pytest.raises(CommandError) as info:
        fn(*args)
    return info.value


def test_votes_by_message_and_by_comment() -> None:
    pks = running("votes")
    assert pks.is_pk("P") and not pks.is_pk("other")
    assert pks.pick("a", "P", 0, 1.0) == "joined"
    assert pks.pick("a", "P", 0, 1.5) == "same_side"
    assert error(pks.pick, "a", "P", 1, 2.0).code == "forbidden"  # the first pick is final
    assert error(pks.pick, "b", "P", 2, 2.0).code == "bad_message"
    assert error(pks.pick, "b", "Q", 0, 2.0).code == "unknown_target"
    assert error(pks.pick, "m", "P", 0, 2.0, False).code == "forbidden"
    assert pks.on_comment("b", "ＢＬＵＥ!", 3.0) == "joined"
    assert pks.on_comment("c", "2", 3.0) == "joined"
    assert pks.on_comment("d", " 1 ", 3.0) == "joined"
    assert pks.on_comment("e", "blue team", 3.0) is None
    assert pks.on_comment("b", "red", 3.0) is None  # already blue: not a pick
    assert pks.on_comment("m", "red", 3.0, eligible=False) is None
    assert pks.on_gift("a", "rocket", 1, 3.0) == 0  # votes battle: gifts do not score
    assert pks.close({"pk": "P"}, 4.0) == {"pk": "P", "scores": [2, 2], "winner": None}


def test_a_side_name_wins_over_the_digits() -> None:
    pks = Pks()
    pks.open({"pk": "P", "sides": ["2", "1"], "seconds": 10, "scoring": "votes"}, 0.0)
    assert pks.on_comment("a", "1", 1.0) == "joined"
    assert pks.close({"pk": "P"}, 2.0)["scores"] == [0, 1]


def test_gifts_score_for_the_senders_side_by_value() -> None:
    pks = running("gifts")
    assert pks.on_gift("stranger", "rose", 3, 1.0) == 0  # on no side: not scored
    pks.pick("a", "P", 0, 1.0)
    pks.on_comment("b", "blue", 1.0)
    assert pks.on_gift("a", "rose", 3, 2.0) == 3
    assert pks.on_gift("b", "rocket", 2, 2.0) == 1000
    assert pks.on_gift("b", "unlisted", 7, 2.0) == 7  # 1 per unit by default
    bar = pks.bar(2.0)
    assert bar is not None and bar.scores == (3, 1007) and bar.ends_at == 60.0
    result = pks.close({"pk": "P"}, 3.0)
    assert result == {"pk": "P", "scores": [3, 1007], "winner": "Blue"}
    banner = pks.banner(3.0)
    assert banner is not None and banner.text == "🏆 Blue wins 3:1007"
    assert banner.until == 3.0 + RESULT_SHOW_S


def test_the_deadline_freezes_the_scores_even_before_a_tick() -> None:
    pks = running("gifts", seconds=10)
    pks.pick("a", "P", 0, 1.0)
    assert pks.on_gift("a", "rose", 1, 9.999) == 1
    assert pks.on_gift("a", "rose", 1, 10.0) == 0
    assert pks.on_comment("b", "blue", 10.0) is None
    assert error(pks.pick, "c", "P", 1, 10.5).code == "unknown_target"
    timer = pks.next_timer(9.0)
    assert timer is not None and timer <= 9.0  # a score to push
    pks.tick(9.0)
    assert pks.next_timer(9.0) == 10.0
    pks.tick(12.0)
    final = [p.payload for p in pks.take_pushes() if p.payload.get("closed")]
    assert final == [{"t": "state", "pk": "P", "scores": [1, 0], "winner": "Red", "closed": True}]
    # Closing after the deadline returns the same final result.
    assert pks.close({"pk": "P"}, 13.0) == {"pk": "P", "scores": [1, 0], "winner": "Red"}
    bar = pks.bar(12.0)
    assert bar is not None and bar.ends_at is None and bar.scores == (1, 0)
    # Closed at the deadline: the result shows from then on, then leaves the screen.
    assert pks.next_timer(12.0) == 10.0 + RESULT_SHOW_S
    v = pks.version
    pks.tick(10.0 + RESULT_SHOW_S)
    assert pks.version > v
    assert pks.bar(10.0 + RESULT_SHOW_S) is None and pks.banner(10.0 + RESULT_SHOW_S) is None
    assert pks.next_timer(30.0) is None


def test_draw_banner() -> None:
    pks = running()
    pks.close({"pk": "P"}, 1.0)
    banner = pks.banner(1.0)
    assert banner is not None and banner.text == "draw 0:0" and banner.position == "top"


def test_one_battle_at_a_time() -> None:
    pks = running(seconds=10)
    args = {"pk": "Q", "sides": ["A", "B"], "seconds": 5, "scoring": "votes"}
    assert error(pks.open, args, 5.0).code == "busy"
    assert error(pks.close, {"pk": "Q"}, 5.0).code == "unknown_target"
    # Past the deadline (tick not run yet) a new battle may start; P's result goes first.
    assert pks.open(args, 11.0) == {"pk": "Q"}
    pushes = [p.payload for p in pks.take_pushes()]
    assert pushes[0] == {"t": "state", "pk": "P", "scores": [0, 0], "winner": None, "closed": True}
    assert pushes[1]["pk"] == "Q" and pushes[1]["closed"] is False


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"sides": ["A", "B"], "seconds": 5, "scoring": "votes"}, "args.pk"),
        ({"pk": "P", "seconds": 5, "scoring": "votes"}, "args.sides"),
        ({"pk": "P", "sides": ["A"], "seconds": 5, "scoring": "votes"}, "args.sides"),
        ({"pk": "P", "sides": ["A", 2], "seconds": 5, "scoring": "votes"}, "args.sides[1]"),
        ({"pk": "P", "sides": ["A", " "], "seconds": 5, "scoring": "votes"}, "args.sides[1]"),
        ({"pk": "P", "sides": ["Red", "ＲＥＤ"], "seconds": 5, "scoring": "votes"}, "args.sides"),
        ({"pk": "P", "sides": ["A", "B"], "scoring": "votes"}, "args.seconds"),
        ({"pk": "P", "sides": ["A", "B"], "seconds": None, "scoring": "votes"}, "args.seconds"),
        ({"pk": "P", "sides": ["A", "B"], "seconds": -1, "scoring": "votes"}, "args.seconds"),
        ({"pk": "P", "sides": ["A", "B"], "seconds": 5}, "args.scoring"),
        ({"pk": "P", "sides": ["A", "B"], "seconds": 5, "scoring": "likes"}, "args.scoring"),
    ],
)
def test_bad_arguments_name_the_field(args: dict[str, Any], field: str) -> None:
    exc = error(Pks().open, args, 0.0)
    assert exc.code == "bad_message" and exc.msg.startswith(field + ":"), exc.msg


def test_bad_gift_table() -> None:
    with pytest.raises(ValueError, match="rose"):
        Pks({"rose": 0})
    with pytest.raises(ValueError, match="rose"):
        Pks({"rose": True})


def test_live_scores_are_pushed_at_most_every_interval() -> None:
    pks = running("votes")
    for i in range(10):
        pks.pick(f"u{i}", "P", i % 2, 1.0 + i * 0.01)
    timer = pks.next_timer(1.1)
    assert timer is not None and timer <= 1.1  # due now: nothing pushed yet
    pks.tick(1.1)
    pks.pick("late", "P", 0, 1.15)
    pks.tick(1.15)  # too soon after the last push
    pushes = [p.payload for p in pks.take_pushes()]
    assert pushes == [{"t": "state", "pk": "P", "scores": [5, 5], "closed": False}]
    assert pks.next_timer(1.15) == pytest.approx(1.1 + PUSH_INTERVAL_S)
    pks.tick(1.1 + PUSH_INTERVAL_S)
    assert [p.payload["scores"] for p in pks.take_pushes()] == [[6, 5]]


event = st.tuples(
    st.sampled_from(["a", "b", "c", "d"]),
    st.floats(0, 30, allow_nan=False),
    st.sampled_from(["vote0", "vote1", "say red", "say 2", "rose", "rocket", "chat"]),
    st.integers(1, 5),
)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(event, max_size=50), scoring=st.sampled_from(["gifts", "votes"]))
def test_scores_follow_the_rules(events: list[tuple[str, float, str, int]], scoring: str) -> None:
    pks = running(scoring, seconds=20)
    side: dict[str, int] = {}
    model = [0, 0]
    for user, t, what, n in sorted(events, key=lambda e: e[1]):
        pks.tick(t)
        open_ = t < 20
        if what.startswith("vote"):
            option = int(what[-1])
            try:
                pks.pick(user, "P", option, t)
            except CommandError as exc:
                assert exc.code in ("forbidden", "unknown_target")
        elif what.startswith("say"):
            option = 0 if what == "say red" else 1
            pks.on_comment(user, what[4:], t)
        elif what in GIFTS:
            pks.on_gift(user, what, n, t)
            if open_ and scoring == "gifts" and user in side:
                model[side[user]] += GIFTS[what] * n
            continue
        else:
            pks.on_comment(user, "hello", t)
            continue
        if open_ and user not in side:
            side[user] = option
            if scoring == "votes":
                model[option] += 1
    result = pks.close({"pk": "P"}, 31.0)
    assert result["scores"] == model
    a, b = model
    assert result["winner"] == (None if a == b else ("Red" if a > b else "Blue"))
