"""Coupon drops: the first N matching users get one code each, and no code goes out twice."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.interaction.coupons import CouponDrops
from edge_node.interaction.effects import CommandError


def codes(n: int, prefix: str = "C") -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(n)]


def error(fn: Any, *args: Any) -> CommandError:
    with pytest.raises(CommandError) as info:
        fn(*args)
    return info.value


comment = st.tuples(
    st.integers(0, 30).map(lambda i: f"user{i}"),
    st.sampled_from(["领券", "领 券!", "ＬＩＮＧ", "hello", "领券了"]),
)


@settings(max_examples=400, deadline=None)
@given(
    pool=st.integers(1, 25),
    comments=st.lists(comment, max_size=120),
    keyword=st.sampled_from([None, "领券"]),
)
def test_exactly_min_n_users_codes_go_out_none_twice(
    pool: int, comments: list[tuple[str, str]], keyword: str | None
) -> None:
    """Any interleaving of many users' comments, repeats included."""
    drops = CouponDrops()
    drops.open({"drop": "D", "keyword": keyword, "codes": codes(pool)}, 0.0)
    drops.take_pushes()
    matching: list[str] = []  # distinct matching users, in order of first match
    awarded: list[tuple[str, str]] = []
    for t, (user, text) in enumerate(comments):
        if (keyword is None or text in ("领券", "领 券!")) and user not in matching:
            matching.append(user)
        for drop, code in drops.on_comment(user, text, float(t)):
            assert drop == "D"
            awarded.append((user, code))
    winners = matching[:pool]
    assert [u for u, _ in awarded] == winners  # the first N matching users, once each
    assert [c for _, c in awarded] == codes(pool)[: len(winners)]  # none twice, in order
    pushes = drops.take_pushes()
    sent = [(p.user, p.payload["code"]) for p in pushes if p.user is not None]
    assert sent == awarded  # each pushed to its user, exactly once
    (status,) = drops.status()
    assert status["issued"] == len(winners) and status["left"] == pool - len(winners)
    assert status["open"] is (len(winners) < pool)
    closes = [p.payload for p in pushes if p.user is None]
    assert closes == (
        [] if status["open"] else [{"t": "state", "coupon": "D", "open": False, "issued": pool}]
    )
    for user, code in awarded:
        assert drops.codes_for(user) == [("D", code)]


async def test_concurrent_requests_from_many_tasks() -> None:
    """Hundreds of viewers' handlers interleaved by the event loop, with repeats."""
    drops = CouponDrops()
    drops.open({"drop": "D", "codes": codes(50)}, 0.0)
    rng = random.Random(7)
    got: list[tuple[str, str]] = []

    async def viewer(user: str) -> None:
        for _ in range(5):
            await asyncio.sleep(0)  # yield: other viewers' requests run in between
            if rng.random() < 0.5:
                await asyncio.sleep(0)
            got.extend((user, code) for _, code in drops.on_comment(user, "hi", 1.0))

    await asyncio.gather(*(viewer(f"u{i}") for i in range(300)))
    assert len(got) == 50
    assert len({code for _, code in got}) == 50 and len({u for u, _ in got}) == 50


def test_each_drop_gives_a_user_one_code_and_codes_never_repeat_across_drops() -> None:
    drops = CouponDrops()
    drops.open({"drop": "A", "codes": codes(3, "A")}, 0.0)
    drops.open({"drop": "B", "keyword": "vip", "codes": codes(3, "B")}, 0.0)
    assert drops.on_comment("u", "VIP", 1.0) == [("A", "A0000"), ("B", "B0000")]
    assert drops.on_comment("u", "vip", 2.0) == []
    assert drops.on_comment("v", "hi", 2.0) == [("A", "A0001")]
    assert sorted(drops.codes_for("u")) == [("A", "A0000"), ("B", "B0000")]
    # A code already handed out, or waiting in an open pool, is refused in a new drop.
    exc = error(drops.open, {"drop": "C", "codes": ["new", "A0000"]}, 3.0)
    assert exc.code == "bad_message" and exc.msg.startswith("args.codes[1]:")
    exc = error(drops.open, {"drop": "C", "codes": ["B0002"]}, 3.0)
    assert exc.code == "bad_message" and "'B'" in exc.msg
    # Once closed, codes left unissued may be used again; issued ones never.
    assert drops.close({"drop": "B"}, 4.0) == {"drop": "B", "issued": 1, "left": 2}
    assert drops.on_comment("w", "vip", 5.0) == [("A", "A0002")]
    assert drops.open({"drop": "C", "codes": ["B0002"]}, 6.0) == {"drop": "C"}
    assert error(drops.open, {"drop": "E", "codes": ["B0000"]}, 6.0).code == "bad_message"


def test_muted_users_get_nothing() -> None:
    drops = CouponDrops()
    drops.open({"drop": "D", "codes": ["x"]}, 0.0)
    assert drops.on_comment("m", "hi", 1.0, eligible=False) == []
    assert drops.on_comment("a", "hi", 1.0) == [("D", "x")]


def test_exhausted_drop_closes_and_can_be_reopened() -> None:
    drops = CouponDrops()
    drops.open({"drop": "D", "codes": ["x"]}, 0.0)
    assert error(drops.open, {"drop": "D", "codes": ["y"]}, 0.5).code == "busy"
    drops.on_comment("a", "hi", 1.0)
    assert drops.on_comment("b", "hi", 1.0) == []
    (status,) = drops.status()
    assert status["open"] is False and status["closed_because"] == "exhausted"
    assert drops.open({"drop": "D", "codes": ["y"]}, 2.0) == {"drop": "D"}
    assert drops.on_comment("a", "hi", 3.0) == [("D", "y")]  # a new drop: a new chance


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"codes": ["x"]}, "args.drop"),
        ({"drop": "D"}, "args.codes"),
        ({"drop": "D", "codes": []}, "args.codes"),
        ({"drop": "D", "codes": "x"}, "args.codes"),
        ({"drop": "D", "codes": ["x", 5]}, "args.codes[1]"),
        ({"drop": "D", "codes": ["x", ""]}, "args.codes[1]"),
        ({"drop": "D", "codes": ["x", "y", "x"]}, "args.codes[2]"),
        ({"drop": "D", "codes": ["x" * 65]}, "args.codes[0]"),
        ({"drop": "D", "codes": ["x"], "keyword": "  "}, "args.keyword"),
    ],
)
def test_bad_arguments_name_the_field(args: dict[str, Any], field: str) -> None:
    exc = error(CouponDrops().open, args, 0.0)
    assert exc.code == "bad_message" and exc.msg.startswith(field + ":"), exc.msg


def test_unknown_drop_and_too_many_open() -> None:
    drops = CouponDrops()
    assert error(drops.close, {"drop": "nope"}, 0.0).code == "unknown_target"
    for i in range(8):
        drops.open({"drop": f"D{i}", "codes": [f"c{i}"]}, 0.0)
    assert error(drops.open, {"drop": "D9", "codes": ["c9"]}, 0.0).code == "busy"


def test_pushes() -> None:
    drops = CouponDrops()
    drops.open({"drop": "D", "keyword": "go", "codes": ["x", "y"]}, 0.0)
    drops.on_comment("a", "go", 1.0)
    assert Counter(p.user for p in drops.take_pushes()) == Counter({None: 1, "a": 1})
