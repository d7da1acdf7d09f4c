"""The interaction engine, driven with plain calls and a virtual clock."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node import config
from edge_node.interaction.effects import Push, Reply
from edge_node.interaction.engine import Engine
from edge_node.interaction.messages import Command, Comment, Gift, Like, Probe, Vote


def engine(probe: bool = True, **interaction: object) -> Engine:
    cfg = config.demo_config()
    cfg = dataclasses.replace(
        cfg,
        bench=dataclasses.replace(cfg.bench, probe=probe),
        interaction=dataclasses.replace(cfg.interaction, **interaction),  # type: ignore[arg-type]
    )
    return Engine(cfg, measure=lambda text, size: size // 2 * len(text))


def reply(effects: list[Reply | Push]) -> dict:  # type: ignore[type-arg]
    (r,) = [e for e in effects if isinstance(e, Reply)]
    return r.payload


def open_poll(e: Engine, now: float = 0.0, poll: str = "p1") -> None:
    args = {"poll": poll, "question": "Best?", "options": ["A", "B", "C"]}
    r = reply(e.handle("op", "operator", Command("c-open", "poll.open", args), now))
    assert r == {"t": "ack", "id": "c-open", "result": {"poll": poll}}


def test_comment_is_acked_and_put_on_the_scene() -> None:
    e = engine()
    assert reply(e.handle("u1", "viewer", Comment("1", "hello 弹幕"), 10.0)) == {
        "t": "ack",
        "id": "1",
    }
    scene = e.scene(10.0)
    assert [d.text for d in scene.danmaku] == ["hello 弹幕"]
    assert scene.changed_at == 10.0 and scene.version > 0


def test_every_error_path_answers_with_its_code() -> None:
    e = engine(comment_rate_per_s=1.0, comment_burst=1)
    assert reply(e.handle("u1", "viewer", Command("c", "mute", {"user": "x"}), 0))["code"] == (
        "forbidden"
    )
    assert reply(e.handle("u1", "viewer", Gift("g", "rose", 1), 0))["code"] == "forbidden"
    assert reply(e.handle("u1", "viewer", Probe("p", 1), 0))["code"] == "forbidden"
    assert reply(e.handle("u1", "viewer", Comment("a", "x"), 0))["t"] == "ack"
    assert reply(e.handle("u1", "viewer", Comment("b", "y"), 0))["code"] == "rate_limited"
    assert reply(e.handle("u1", "viewer", Vote("v", "nope", 0), 0))["code"] == "unknown_target"
    r = reply(e.handle("op", "operator", Command("c2", "no.such", {}), 0))
    assert r["code"] == "unknown_target"
    r = reply(e.handle("op", "operator", Command("c3", "poll.open", {"poll": "p"}), 0))
    assert r["code"] == "bad_message" and "question" in r["msg"]


def test_duplicate_ids_are_acked_once_and_not_applied_twice() -> None:
    e = engine()
    e.handle("u1", "viewer", Like("l1", 5), 0)
    r = reply(e.handle("u1", "viewer", Like("l1", 5), 0.1))
    assert r == {"t": "ack", "id": "l1", "duplicate": True}
    assert e.likes == 5
    e.handle("u2", "viewer", Like("l1", 5), 0.2)  # another user's id "l1" is distinct
    assert e.likes == 10


def test_mute_blocks_comments_and_tells_the_user() -> None:
    e = engine()
    effects = e.handle("op", "operator", Command("m", "mute", {"user": "u1", "seconds": 10}), 0)
    assert Push({"t": "state", "muted": True, "seconds": 10.0}, user="u1") in effects
    assert reply(e.handle("u1", "viewer", Comment("1", "hi"), 1.0))["code"] == "forbidden"
    pushes = e.tick(11.0)
    assert Push({"t": "state", "muted": False}, user="u1") in pushes
    assert reply(e.handle("u1", "viewer", Comment("2", "hi"), 11.0))["t"] == "ack"


def test_poll_flow_with_pushed_tallies_and_final_result() -> None:
    e = engine()
    open_poll(e)
    for i, option in enumerate([0, 1, 1, 2, 1]):
        assert reply(e.handle(f"u{i}", "viewer", Vote(f"v{i}", "p1", option), 0.1))["t"] == "ack"
    assert reply(e.handle("u9", "viewer", Vote("bad", "p1", 7), 0.1))["code"] == "bad_message"
    pushes = e.tick(0.5)
    state = {"t": "state", "poll": "p1", "question": "Best?", "options": ["A", "B", "C"]}
    assert Push({**state, "totals": [1, 3, 1], "closed": False}) in pushes
    assert e.scene(0.5).vote is not None and e.scene(0.5).vote.counts == (1, 3, 1)
    r = reply(e.handle("op", "operator", Command("c", "poll.close", {"poll": "p1"}), 1.0))
    assert r["result"] == {"poll": "p1", "totals": [1, 3, 1]}
    assert reply(e.handle("u1", "viewer", Vote("late", "p1", 0), 1.1))["code"] == "unknown_target"


@settings(max_examples=100, deadline=None)
@given(votes=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 2)), max_size=200))
def test_vote_totals_equal_the_last_accepted_vote_of_each_user(
    votes: list[tuple[int, int]],
) -> None:
    e = engine(vote_rate_per_s=1000.0, vote_burst=1000.0)
    open_poll(e)
    last: dict[int, int] = {}
    for i, (user, option) in enumerate(votes):
        r = reply(e.handle(f"u{user}", "viewer", Vote(f"v{i}", "p1", option), 0.001 * i))
        if r["t"] == "ack":
            last[user] = option
    expected = [sum(1 for o in last.values() if o == k) for k in range(3)]
    assert e.polls["p1"].totals() == expected
    assert sum(expected) == len(last)


def test_probe_is_drawn_only_when_probes_are_on() -> None:
    e = engine(probe=True)
    assert reply(e.handle("b", "bench", Probe("p", 4242), 0))["t"] == "ack"
    assert e.scene(0).probe == 4242
    off = engine(probe=False)
    assert reply(off.handle("b", "bench", Probe("p", 1), 0))["code"] == "forbidden"


def test_gift_sender_comments_are_highlighted() -> None:
    e = engine()
    e.handle("plat", "platform", Gift("g1", "rocket", 1), 0)
    e.handle("plat", "viewer", Comment("c", "thanks!"), 0.1)
    assert e.scene(0.1).gifts[0].gift == "rocket"
    assert e.scene(0.1).danmaku[0].highlight


def test_announce_and_style_commands() -> None:
    e = engine()
    r = reply(
        e.handle("op", "operator", Command("a", "announce", {"text": "Sale!", "seconds": 5}), 0)
    )
    assert r["t"] == "ack" and e.scene(0).ticker is not None
    e.tick(5.0)
    assert e.scene(5.0).ticker is None
    r = reply(e.handle("op", "operator", Command("s", "overlay.style", {"lanes": 4}), 0))
    assert r["t"] == "ack" and e.scene(0).style.lanes == 4
    r = reply(e.handle("op", "operator", Command("s2", "overlay.style", {"bogus": 1}), 0))
    assert r["code"] == "bad_message"


def test_vote_change_can_be_refused_by_config() -> None:
    e = engine(vote_change_allowed=False)
    open_poll(e)
    assert reply(e.handle("u1", "viewer", Vote("a", "p1", 0), 0.1))["t"] == "ack"
    r = reply(e.handle("u1", "viewer", Vote("b", "p1", 1), 0.2))
    assert r["code"] == "forbidden"
    assert e.polls["p1"].totals() == [1, 0, 0]
