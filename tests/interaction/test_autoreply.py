"""Auto-reply rules: matching, templates, validation and the limits that stop spam."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.interaction.autoreply import MAX_QUOTED_CHARS, AutoReplies
from edge_node.interaction.effects import CommandError

RULES = [
    {"pattern": "price|多少钱", "reply": "@{user} it is 99 yuan"},
    {"pattern": "ship", "reply": "{user} asked “{text}”: ships tomorrow {{free}}"},
]


def replies(**kw: Any) -> AutoReplies:
    ar = AutoReplies(**kw)
    assert ar.set({"rules": RULES}, 0.0) == {"count": 2}
    return ar


def error(fn: Any, *args: Any) -> CommandError:
    with pytest.raises(CommandError) as info:
        fn(*args)
    return info.value


def test_first_matching_rule_answers_with_its_template() -> None:
    ar = replies()
    hit = ar.on_comment("amy", "What's the PRICE?", 1.0, comment_id="c1")
    assert hit is not None and (hit.rule, hit.text, hit.pinned, hit.sent) == (
        0,
        "@amy it is 99 yuan",
        True,
        True,
    )
    (push,) = ar.take_pushes()
    assert push.user == "amy"
    assert push.payload == {
        "t": "state",
        "autoreply": "@amy it is 99 yuan",
        "rule": 0,
        "reply_to": "c1",
    }
    (pin,) = ar.pinned(1.0)
    assert pin.text == "@amy it is 99 yuan" and pin.position == "bottom"
    assert ar.on_comment("bob", "hello", 2.0) is None
    # Full-width, spaces and case do not hide a keyword; braces in the text stay text.
    hit = ar.on_comment("bo{b}", "Ｗhen do you s h i p {x}?", 30.0)
    assert hit is not None and hit.rule == 1
    assert hit.text == "bo{b} asked “Ｗhen do you s h i p {x}?”: ships tomorrow {free}"


def test_the_quoted_text_and_the_reply_are_cut() -> None:
    ar = AutoReplies()
    ar.set({"rules": [{"pattern": "q", "reply": "{text}" * 10}]}, 0.0)
    hit = ar.on_comment("u", "q" * 150, 1.0)
    assert hit is not None
    assert hit.text.startswith("q" * (MAX_QUOTED_CHARS - 1) + "…")
    assert len(hit.text) == 200 and hit.text.endswith("…")


def test_no_rules_no_replies_and_set_replaces() -> None:
    ar = replies()
    assert ar.set({"rules": []}, 1.0) == {"count": 0}
    assert ar.on_comment("u", "price", 2.0) is None


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ("price", "args.rules"),
        ([{"pattern": "a", "reply": "b"}] * 33, "args.rules"),
        (["price"], "args.rules[0]"),
        ([{"pattern": "a", "reply": "b"}, {"reply": "x"}], "args.rules[1].pattern"),
        ([{"pattern": "a"}], "args.rules[0].reply"),
        ([{"pattern": 5, "reply": "x"}], "args.rules[0].pattern"),
        ([{"pattern": "a||b", "reply": "x"}], "args.rules[0].pattern"),
        ([{"pattern": "!!", "reply": "x"}], "args.rules[0].pattern"),
        ([{"pattern": "x" * 65, "reply": "x"}], "args.rules[0].pattern"),
        ([{"pattern": "|".join("abcdefghi"), "reply": "x"}], "args.rules[0].pattern"),
        ([{"pattern": "a", "reply": ""}], "args.rules[0].reply"),
        ([{"pattern": "a", "reply": "x" * 201}], "args.rules[0].reply"),
        ([{"pattern": "a", "reply": "{user.__class__}"}], "args.rules[0].reply"),
        ([{"pattern": "a", "reply": "{0}"}], "args.rules[0].reply"),
        ([{"pattern": "a", "reply": "{}"}], "args.rules[0].reply"),
        ([{"pattern": "a", "reply": "{user!r}"}], "args.rules[0].reply"),
        ([{"pattern": "a", "reply": "{text:>999}"}], "args.rules[0].reply"),
        ([{"pattern": "a", "reply": "{name}"}], "args.rules[0].reply"),
        ([{"pattern": "a", "reply": "oops {"}], "args.rules[0].reply"),
        ([{"pattern": "a", "reply": "oops }"}], "args.rules[0].reply"),
    ],
)
def test_bad_rules_name_the_field(rules: Any, field: str) -> None:
    ar = replies()
    exc = error(ar.set, {"rules": rules}, 1.0)
    assert exc.code == "bad_message" and exc.msg.startswith(field + ":"), exc.msg
    assert len(ar.rules) == 2  # a refused set changes nothing


def test_rule_and_global_cooldowns_and_the_askers_bucket() -> None:
    ar = replies(rule_cooldown_s=20, global_cooldown_s=5, user_rate_per_s=0.1, user_burst=1)
    first = ar.on_comment("a", "price", 0.0)
    assert first is not None and first.pinned and first.sent
    again = ar.on_comment("b", "price", 1.0)  # the rule cools down; b still hears back
    assert again is not None and not again.pinned and again.sent
    other = ar.on_comment("c", "ship?", 2.0)  # another rule: the global cool-down holds it
    assert other is not None and not other.pinned and other.sent
    spam = ar.on_comment("a", "price", 3.0)  # a asks again too soon: nothing at all
    assert spam is not None and not spam.pinned and not spam.sent
    later = ar.on_comment("d", "ship?", 5.0)
    assert later is not None and later.pinned and later.sent
    assert dict(ar.suppressed) == {"rule_cooldown": 2, "global_cooldown": 1, "asker_rate": 1}


def test_the_pinned_reply_expires() -> None:
    ar = replies(pin_s=8.0)
    ar.on_comment("a", "price", 1.0)
    assert ar.next_timer(1.0) == 9.0
    v = ar.version
    ar.tick(8.9)
    assert ar.version == v and ar.pinned(8.9)
    ar.tick(9.0)
    assert ar.version > v and ar.pinned(9.0) == () and ar.next_timer(9.0) is None


@settings(max_examples=200, deadline=None)
@given(
    comments=st.lists(
        st.tuples(
            st.floats(0, 120, allow_nan=False),
            st.integers(0, 5).map(lambda i: f"u{i}"),
            st.sampled_from(["price?", "ship it", "多少钱", "hi"]),
        ),
        max_size=200,
    ),
    window=st.floats(1, 60),
    start=st.floats(0, 120),
)
def test_no_flood_gets_past_the_limits(
    comments: list[tuple[float, str, str]], window: float, start: float
) -> None:
    rule_s, global_s, rate, burst = 20.0, 5.0, 0.1, 2
    ar = replies(
        rule_cooldown_s=rule_s, global_cooldown_s=global_s, user_rate_per_s=rate, user_burst=burst
    )
    hits = []
    for t, user, text in sorted(comments):
        hit = ar.on_comment(user, text, t)
        if text != "hi":
            assert hit is not None
            hits.append((t, user, hit))
        else:
            assert hit is None
    in_window = [(u, h) for t, u, h in hits if start <= t < start + window]
    pinned = [h for _, h in in_window if h.pinned]
    # On screen: one per rule per cool-down, and all rules together one per global one.
    assert len(pinned) <= math.floor(window / global_s) + 1
    for rule in (0, 1):
        assert sum(h.rule == rule for h in pinned) <= math.floor(window / rule_s) + 1
    # In private: each asker's token bucket.
    for user in {u for u, _ in in_window}:
        sent = sum(h.sent for u, h in in_window if u == user)
        assert sent <= burst + rate * window + 1e-9
    # Nothing held back goes uncounted.
    held = sum(not h.pinned for _, _, h in hits)
    assert held == ar.suppressed["rule_cooldown"] + ar.suppressed["global_cooldown"]
    assert sum(not h.sent for _, _, h in hits) == ar.suppressed["asker_rate"]
