"""The danmaku lottery: entries, eligibility, and draws anyone can recompute."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.interaction.effects import CommandError, Push
from edge_node.interaction.lottery import (
    BANNER_AFTER_DRAW_S,
    Lotteries,
    commitment,
    fold_keyword,
    pick_winners,
    recompute_winners,
)

SEED = hashlib.sha256(b"test seed").digest()
DOC = Path(__file__).resolve().parents[2] / "docs" / "lottery.md"

users = st.text(min_size=1, max_size=12)
seeds = st.binary(min_size=32, max_size=32)


def opened(**args: Any) -> Lotteries:
    lots = Lotteries()
    lots.open({"lottery": "L", "winners": 3, **args}, 0.0, SEED)
    lots.take_pushes()
    return lots


def error(fn: Any, *args: Any) -> CommandError:
    with pytest.raises(CommandError) as info:
        fn(*args)
    return info.value


# ---- the draw algorithm -------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(seed=seeds, entrants=st.lists(users, unique=True, max_size=40), k=st.integers(1, 50))
def test_a_draw_recomputed_from_the_revealed_seed_and_entrants_gives_the_same_winners(
    seed: bytes, entrants: list[str], k: int
) -> None:
    lots = Lotteries()
    opening = lots.open({"lottery": "L", "winners": k}, 0.0, seed)
    for i, user in enumerate(entrants):
        assert lots.join(user, "L", float(i), eligible=True)
    result = lots.draw({"lottery": "L"}, 100.0)
    # The commitment shown at open is the hash of the seed revealed at the draw.
    assert hashlib.sha256(bytes.fromhex(result["seed"])).hexdigest() == opening["commit"]
    assert result["entrants"] == entrants  # published in entry order
    assert recompute_winners(result["seed"], result["entrants"], k) == result["winners"]
    # The order of the published list does not matter to a verifier.
    shuffled = list(result["entrants"])
    random.Random(k).shuffle(shuffled)
    assert recompute_winners(result["seed"], shuffled, k) == result["winners"]
    # Nobody wins twice; k larger than the entrants: all of them win.
    assert len(set(result["winners"])) == len(result["winners"]) == min(k, len(entrants))
    assert set(result["winners"]) <= set(entrants)


@given(seed=seeds, entrants=st.lists(users, unique=True, min_size=1, max_size=30))
def test_winners_are_the_smallest_sha256_of_seed_and_user(seed: bytes, entrants: list[str]) -> None:
    digests = {hashlib.sha256(seed + u.encode()).hexdigest(): u for u in entrants}
    expected = [digests[d] for d in sorted(digests)]
    assert pick_winners(seed, entrants, len(entrants)) == expected


def test_recompute_refuses_what_no_draw_publishes() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        recompute_winners(SEED.hex(), ["a", "b", "a"], 1)
    with pytest.raises(ValueError):
        recompute_winners("not hex", ["a"], 1)
    with pytest.raises(ValueError, match="k must be"):
        recompute_winners(SEED.hex(), ["a"], -1)


def test_the_documented_snippet_recomputes_the_worked_example() -> None:
    text = DOC.read_text(encoding="utf-8")
    snippet = re.search(r"```python\n(.*?)```", text, re.S)
    assert snippet is not None, "docs/lottery.md has no python snippet"
    namespace: dict[str, Any] = {"__name__": "lottery_doc"}
    exec(compile(snippet.group(1), str(DOC), "exec"), namespace)
    example = re.search(
        r"seed:\s*`([0-9a-f]{64})`.*?entrants:\s*`(\[.*?\])`.*?k:\s*`(\d+)`", text, re.S
    )
    assert example is not None, "docs/lottery.md has no worked example"
    seed_hex, entrants_text, k_text = example.groups()
    entrants = eval(entrants_text)  # a list of string literals, from our own doc
    ours = recompute_winners(seed_hex, entrants, int(k_text))
    assert namespace["winners"](seed_hex, entrants, int(k_text)) == ours
    # The winners the doc states are the ones the code computes.
    stated = re.search(r"winners:\s*`(\[.*?\])`", text)
    assert stated is not None and eval(stated.group(1)) == ours
    assert f"`{commitment(bytes.fromhex(seed_hex))}`" in text


# ---- eligibility --------------------------------------------------------------------


attempt = st.tuples(
    st.sampled_from(["u0", "u1", "u2", "u3", "u4", "u5"]),
    st.floats(0, 20, allow_nan=False),  # time of the attempt (deadline at 10)
    st.booleans(),  # eligible (not muted) at that time
    st.sampled_from(["join", "comment", "wrong comment", "mute"]),
)


@settings(max_examples=300, deadline=None)
@given(attempts=st.lists(attempt, max_size=40), k=st.integers(1, 8))
def test_muted_or_late_users_never_win_and_nobody_wins_twice(
    attempts: list[tuple[str, float, bool, str]], k: int
) -> None:
    lots = opened(keyword="抽奖", winners=k, seconds=10)
    valid: dict[str, None] = {}  # the model: who should be in, in entry order
    banned: set[str] = set()
    for user, t, eligible, how in sorted(attempts, key=lambda a: a[1]):
        lots.tick(t)
        if how == "mute":
            lots.disqualify(user)
            valid.pop(user, None)
            banned.add(user)
            continue
        if how == "join":
            try:
                lots.join(user, "L", t, eligible)
            except CommandError as exc:
                assert exc.code in ("unknown_target", "forbidden")
        else:
            lots.on_comment(user, "抽 奖！" if how == "comment" else "抽奖啊", t, eligible)
        if how != "wrong comment" and eligible and t < 10 and user not in banned:
            valid.setdefault(user, None)
    result = lots.draw({"lottery": "L"}, 30.0)
    assert result["entrants"] == list(valid)
    assert set(result["winners"]) <= set(valid)
    assert len(set(result["winners"])) == len(result["winners"]) == min(k, len(valid))


def test_a_second_entry_is_a_duplicate_and_keeps_the_first() -> None:
    lots = opened()
    assert lots.enter("a", "L", 1.0, eligible=True) == "entered"
    assert lots.enter("b", "L", 2.0, eligible=True) == "entered"
    assert lots.enter("a", "L", 3.0, eligible=True) == "duplicate"
    assert lots.join("a", "L", 4.0, eligible=True) is False
    assert lots.draw({"lottery": "L"}, 5.0)["entrants"] == ["a", "b"]


def test_entries_close_at_the_deadline_even_before_a_tick() -> None:
    lots = opened(seconds=10)
    assert lots.enter("early", "L", 9.999, eligible=True) == "entered"
    assert lots.enter("late", "L", 10.0, eligible=True) == "closed"
    assert error(lots.join, "later", "L", 11.0, True).code == "unknown_target"
    pushes = lots.take_pushes()
    assert [p.payload.get("phase") for p in pushes] == ["closed"]
    assert lots.draw({"lottery": "L"}, 12.0)["entrants"] == ["early"]


def test_a_muted_user_cannot_enter_and_a_muted_entrant_is_removed() -> None:
    lots = opened()
    assert error(lots.join, "m", "L", 1.0, False).code == "forbidden"
    assert lots.enter("a", "L", 1.0, eligible=True) == "entered"
    assert lots.enter("b", "L", 1.0, eligible=True) == "entered"
    assert lots.disqualify("a") == ["L"]
    assert lots.enter("a", "L", 2.0, eligible=True) == "ineligible"  # kept out once muted
    result = lots.draw({"lottery": "L"}, 3.0)
    assert result["entrants"] == ["b"] and result["winners"] == ["b"]


def test_comment_entries_match_the_folded_keyword_exactly() -> None:
    lots = opened(keyword="Join Me")
    assert lots.on_comment("a", "ＪＯＩＮ　ｍｅ!!", 1.0) == [("L", "entered")]
    assert lots.on_comment("b", "join me please", 1.0) == []
    assert lots.on_comment("c", "join\u200bme", 1.0) == [("L", "entered")]
    assert lots.on_comment("a", "join me", 2.0) == [("L", "duplicate")]
    pushes = lots.take_pushes()
    assert [(p.user, p.payload) for p in pushes] == [
        ("a", {"t": "state", "lottery": "L", "entered": True}),
        ("c", {"t": "state", "lottery": "L", "entered": True}),
    ]


def test_a_lottery_without_keyword_takes_joins_only() -> None:
    lots = opened()
    assert lots.on_comment("a", "anything", 1.0) == []
    assert lots.join("a", "L", 1.0, eligible=True) is True


def test_fold() -> None:
    assert fold_keyword("ＡＢＣ １２３") == "abc123"
    assert fold_keyword("抽 奖！") == "抽奖"
    assert fold_keyword("抽奖🎉") != "抽奖"
    assert fold_keyword("Straße") == fold_keyword("STRASSE")
    assert fold_keyword("!!! ...") == ""


# ---- commands and errors ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"winners": 1}, "args.lottery"),
        ({"lottery": "", "winners": 1}, "args.lottery"),
        ({"lottery": "x" * 65, "winners": 1}, "args.lottery"),
        ({"lottery": "L"}, "args.winners"),
        ({"lottery": "L", "winners": 0}, "args.winners"),
        ({"lottery": "L", "winners": True}, "args.winners"),
        ({"lottery": "L", "winners": 1.5}, "args.winners"),
        ({"lottery": "L", "winners": 1, "keyword": "!!!"}, "args.keyword"),
        ({"lottery": "L", "winners": 1, "keyword": 3}, "args.keyword"),
        ({"lottery": "L", "winners": 1, "seconds": 0}, "args.seconds"),
        ({"lottery": "L", "winners": 1, "seconds": float("inf")}, "args.seconds"),
        ({"lottery": "L", "winners": 1, "seconds": "10"}, "args.seconds"),
    ],
)
def test_bad_arguments_name_the_field(args: dict[str, Any], field: str) -> None:
    exc = error(Lotteries().open, args, 0.0, SEED)
    assert exc.code == "bad_message" and exc.msg.startswith(field + ":"), exc.msg


def test_open_draw_errors_and_results() -> None:
    lots = Lotteries()
    result = lots.open({"lottery": "L", "winners": 2, "keyword": "go"}, 0.0, SEED)
    assert result == {"lottery": "L", "commit": hashlib.sha256(SEED).hexdigest()}
    assert error(lots.open, {"lottery": "L", "winners": 1}, 1.0, SEED).code == "busy"
    assert error(lots.draw, {"lottery": "nope"}, 1.0).code == "unknown_target"
    assert error(lots.join, "a", "nope", 1.0, True).code == "unknown_target"
    assert error(lots.result, "L").code == "unknown_target"  # not drawn yet
    drawn = lots.draw({"lottery": "L"}, 2.0)
    assert drawn == {"lottery": "L", "seed": SEED.hex(), "entrants": [], "winners": []}
    again = error(lots.draw, {"lottery": "L"}, 3.0)
    assert again.code == "unknown_target" and "already drawn" in again.msg
    assert lots.result("L") == drawn
    # A drawn lottery's name can be used again for a new one, with a new seed.
    other = bytes(32)
    assert lots.open({"lottery": "L", "winners": 1}, 4.0, other)["commit"] == commitment(other)
    with pytest.raises(ValueError):
        Lotteries().open({"lottery": "L", "winners": 1}, 0.0, b"short")


def test_the_seed_stays_secret_until_the_draw() -> None:
    lots = Lotteries()
    lots.open({"lottery": "L", "winners": 1}, 0.0, SEED)
    lots.join("a", "L", 1.0, True)
    before = repr(lots.status()) + repr([p.payload for p in lots.take_pushes()])
    before += repr(lots._lotteries["L"])
    assert SEED.hex() not in before
    lots.draw({"lottery": "L"}, 2.0)
    pushes = lots.take_pushes()
    drawn = [p.payload for p in pushes if p.user is None]
    assert drawn[0]["seed"] == SEED.hex() and drawn[0]["winners"] == ["a"]
    assert [(p.user, p.payload) for p in pushes if p.user is not None] == [
        ("a", {"t": "state", "lottery": "L", "won": True})
    ]


def test_the_banner_counts_entrants_then_shows_the_winners_for_a_while() -> None:
    lots = opened(keyword="go", seconds=60)
    assert lots.banner(0.0) is not None
    banner = lots.banner(0.0)
    assert banner is not None and (banner.keyword, banner.entrants, banner.ends_at) == (
        "go",
        0,
        60.0,
    )
    v = lots.version
    lots.on_comment("a", "GO", 1.0)
    assert lots.version > v
    banner = lots.banner(1.0)
    assert banner is not None and banner.entrants == 1 and banner.winners is None
    lots.draw({"lottery": "L"}, 10.0)
    banner = lots.banner(10.0)
    assert banner is not None and banner.winners == ("a",) and banner.ends_at is None
    assert lots.next_timer(10.0) == 10.0 + BANNER_AFTER_DRAW_S
    v = lots.version
    lots.tick(10.0 + BANNER_AFTER_DRAW_S)
    assert lots.version > v and lots.banner(10.0 + BANNER_AFTER_DRAW_S) is None
    assert lots.next_timer(100.0) is None


def test_pushes_tell_everyone_about_open_and_close() -> None:
    lots = Lotteries()
    lots.open({"lottery": "L", "winners": 1, "keyword": "go", "seconds": 5}, 0.0, SEED)
    (push,) = lots.take_pushes()
    assert isinstance(push, Push) and push.user is None
    assert push.payload == {
        "t": "state",
        "lottery": "L",
        "phase": "open",
        "keyword": "go",
        "winners": 1,
        "seconds": 5.0,
        "commit": commitment(SEED),
    }
    assert lots.next_timer(0.0) == 5.0
    lots.tick(5.0)
    assert [p.payload for p in lots.take_pushes()] == [
        {"t": "state", "lottery": "L", "phase": "closed", "entrants": 0}
    ]
