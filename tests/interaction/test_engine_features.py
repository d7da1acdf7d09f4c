"""Issue 6's features through the engine's one entry point (``handle``/``command``):
moderation before pixels, review, lottery, PK, auto-reply, coupons, gifts."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from edge_node import config
from edge_node.errors import ConfigError
from edge_node.interaction.audit import MemoryAudit
from edge_node.interaction.effects import Push, Reply
from edge_node.interaction.engine import Engine, anticheat_from_config
from edge_node.interaction.lottery import recompute_winners
from edge_node.interaction.messages import Command, Comment, Gift, Join, Vote
from edge_node.interaction.moderation import Moderation


def engine(**interaction: Any) -> tuple[Engine, MemoryAudit]:
    cfg = config.demo_config()
    cfg = dataclasses.replace(cfg, interaction=dataclasses.replace(cfg.interaction, **interaction))
    audit = MemoryAudit()
    e = Engine(
        cfg,
        measure=lambda text, size: size // 2 * len(text),
        moderation=Moderation(audit),
        random_bytes=lambda n: bytes(range(n)),
    )
    return e, audit


def reply(effects: list[Reply | Push]) -> dict[str, Any]:
    (r,) = [e for e in effects if isinstance(e, Reply)]
    return r.payload


def pushes(effects: list[Reply | Push], user: str | None = None) -> list[dict[str, Any]]:
    return [e.payload for e in effects if isinstance(e, Push) and e.user == user]


_ids = iter(range(1_000_000))


def cmd(e: Engine, name: str, args: dict[str, Any], now: float = 0.0) -> dict[str, Any]:
    return reply(e.handle("op", "operator", Command(f"c{next(_ids)}", name, args), now))


def say(e: Engine, user: str, text: str, now: float = 0.0) -> list[Reply | Push]:
    return e.handle(user, "viewer", Comment(f"m{next(_ids)}", text), now)


def shown(e: Engine, now: float = 0.0) -> list[str]:
    return [d.text for d in e.scene(now).danmaku]


def test_moderation_blocks_masks_and_holds_before_pixels_and_audits_each() -> None:
    e, audit = engine()
    words = [
        {"pattern": "傻逼", "action": "block"},
        {"pattern": "scam", "action": "mask"},
        {"pattern": "加微信", "action": "hold"},
    ]
    assert cmd(e, "words.set", {"words": words})["result"] == {"count": 3}
    assert cmd(e, "words.list", {})["result"] == {"words": words}  # for the console's editor
    assert reply(say(e, "u1", "你 傻 B"))["t"] == "ack"  # not the listed word
    assert reply(say(e, "u2", "你傻ｂｉ"))["t"] == "ack"
    assert reply(say(e, "u3", "你 傻-逼"))["code"] == "blocked"  # separators
    assert reply(say(e, "u4", "你傻傻傻逼逼"))["code"] == "blocked"  # repeats
    masked = reply(say(e, "u5", "this is a SC4M!"))
    assert masked == {"t": "ack", "id": masked["id"], "masked": True}
    held = reply(say(e, "u6", "加 微 信 123"))
    assert held["code"] == "held" and "item" in held["msg"]
    on_screen = shown(e)
    assert "this is a ***!" in on_screen
    assert not any("逼" in t or "微" in t for t in on_screen)
    actions = [(a.kind, a.action) for a in audit.entries]
    assert actions.count(("moderation", "block")) == 2
    assert ("moderation", "mask") in actions and ("moderation", "hold") in actions
    assert e.outcomes[("comment", "blocked")] == 2 and e.outcomes[("comment", "masked")] == 1
    assert e.take_actions().count(("moderation", "block")) == 2


def test_a_held_comment_is_listed_then_approved_onto_the_screen_or_rejected() -> None:
    e, audit = engine()
    cmd(e, "words.set", {"words": [{"pattern": "link", "action": "hold"}]})
    say(e, "u1", "free link here")
    say(e, "u2", "another link")
    items = cmd(e, "review.list", {})["result"]["items"]
    assert [i["text"] for i in items] == ["free link here", "another link"]
    assert cmd(e, "review.approve", {"item": items[0]["item"]})["result"] == {}
    assert "free link here" in shown(e)
    assert cmd(e, "review.reject", {"item": items[1]["item"]})["result"] == {}
    assert "another link" not in shown(e)
    assert cmd(e, "review.list", {})["result"]["items"] == []
    again = cmd(e, "review.approve", {"item": items[1]["item"]})
    assert again["code"] == "unknown_target"
    assert [a.action for a in audit.entries if a.kind == "review"] == ["approve", "reject"]


def test_a_bad_word_list_is_refused_naming_the_entry_and_the_old_list_stays() -> None:
    e, _ = engine()
    cmd(e, "words.set", {"words": [{"pattern": "spam", "action": "block"}]})
    r = cmd(e, "words.set", {"words": [{"pattern": "x", "action": "block"}, {"pattern": "y"}]})
    assert r["code"] == "bad_message" and "words[1]" in r["msg"]
    assert reply(say(e, "u", "spam"))["code"] == "blocked"


def test_a_lottery_draw_is_recomputable_and_muted_or_late_users_never_win() -> None:
    e, _ = engine(comment_rate_per_s=100.0, comment_burst=100)
    opened = cmd(e, "lottery.open", {"lottery": "L", "keyword": "抽奖", "winners": 3})["result"]
    assert opened["lottery"] == "L" and len(opened["commit"]) == 64
    for i in range(6):
        r = e.handle(f"v{i}", "viewer", Join(f"j{i}", "L"), 1.0)
        assert reply(r)["t"] == "ack"
    assert reply(e.handle("v0", "viewer", Join("j0b", "L"), 1.0)).get("duplicate") is True
    eff = say(e, "k1", "抽 奖！", 1.5)  # entry by keyword (folded)
    assert {"t": "state", "lottery": "L", "entered": True} in pushes(eff, "k1")
    cmd(e, "mute", {"user": "v1"}, 2.0)  # a muted user is out
    assert e.scene(2.0).lottery is not None and e.scene(2.0).lottery.entrants == 6  # type: ignore[union-attr]
    drawn = cmd(e, "lottery.draw", {"lottery": "L"}, 3.0)["result"]
    assert "v1" not in drawn["entrants"] and "v1" not in drawn["winners"]
    assert len(set(drawn["winners"])) == 3
    assert recompute_winners(drawn["seed"], drawn["entrants"], 3) == drawn["winners"]
    late = reply(e.handle("late", "viewer", Join("j9", "L"), 4.0))
    assert late["code"] == "unknown_target"
    assert cmd(e, "lottery.draw", {"lottery": "L"}, 4.0)["code"] == "unknown_target"


def test_pk_scored_by_gifts_with_sides_picked_by_vote_or_comment() -> None:
    e, _ = engine()
    args = {"pk": "B", "sides": ["红队", "蓝队"], "seconds": 60, "scoring": "gifts"}
    assert cmd(e, "pk.open", args)["result"] == {"pk": "B"}
    assert reply(e.handle("fan1", "viewer", Vote("v1", "B", 0), 1.0))["t"] == "ack"
    say(e, "fan2", "蓝队", 1.0)
    e.handle("fan1", "platform", Gift("g1", "rocket", 2), 2.0)
    e.handle("fan2", "platform", Gift("g2", "rose", 5), 2.0)
    bar = e.scene(2.0).pk
    assert bar is not None and bar.sides == ("红队", "蓝队") and sum(bar.scores) == 7
    assert reply(e.handle("fan1", "viewer", Gift("g3", "rose", 1), 2.0))["code"] == "forbidden"
    closed = cmd(e, "pk.close", {"pk": "B"}, 3.0)["result"]
    assert closed["pk"] == "B" and closed["scores"] == list(bar.scores)
    assert e.summary_state()["pk"]["scores"] == closed["scores"]


def test_auto_reply_answers_the_asker_pins_it_and_cannot_be_used_to_spam() -> None:
    e, _ = engine(comment_rate_per_s=100.0, comment_burst=100)
    rules = [{"pattern": "多少钱|price", "reply": "@{user} 今晚 99 元"}]
    assert cmd(e, "autoreply.set", {"rules": rules})["result"] == {"count": 1}
    first = say(e, "buyer", "这个多少钱？", 1.0)
    sent = pushes(first, "buyer")
    assert sent and "今晚 99 元" in str(sent)
    assert cmd(e, "autoreply.list", {})["result"] == {"rules": rules}
    assert any("今晚 99 元" in p.text for p in e.scene(1.0).pinned)
    version = e.scene(1.0).version
    pins = {p.id for p in e.scene(1.0).pinned}
    for i in range(20):  # many askers within the rule's cool-down: one pin on screen
        say(e, f"b{i}", "price?", 1.1 + i * 0.01)
        pins |= {p.id for p in e.scene(1.1 + i * 0.01).pinned}
    assert len(pins) == 1 and e.scene(1.3).version >= version
    # One asker repeating the question gets at most a couple of private replies.
    private = [p for i in range(10) for p in pushes(say(e, "pest", "price", 2 + i), "pest")]
    assert 1 <= len(private) <= 2


def test_coupon_drop_gives_each_of_the_first_n_matching_users_one_code() -> None:
    e, _ = engine(comment_rate_per_s=100.0, comment_burst=100)
    codes = ["C1", "C2", "C3"]
    assert cmd(e, "coupon.open", {"drop": "D", "keyword": "券", "codes": codes})["result"] == {
        "drop": "D"
    }
    given: dict[str, str] = {}
    for round_ in range(3):
        for i in range(6):
            for p in pushes(say(e, f"u{i}", "券", 1.0 + round_), f"u{i}"):
                if "coupon" in p:
                    assert f"u{i}" not in given  # exactly once each
                    given[f"u{i}"] = p["code"]
    assert sorted(given.values()) == codes  # none twice, all handed out
    assert len(given) == 3


def test_state_for_the_summaries_names_open_features() -> None:
    e, _ = engine()
    cmd(e, "lottery.open", {"lottery": "L", "winners": 1})
    state = e.summary_state()
    assert state["lotteries"][0]["lottery"] == "L"


def test_a_late_client_is_welcomed_with_what_is_open() -> None:
    e, _ = engine()
    cmd(e, "poll.open", {"poll": "P", "question": "Best?", "options": ["A", "B"]})
    cmd(e, "pk.open", {"pk": "B", "sides": ["红", "蓝"], "seconds": 30, "scoring": "votes"})
    cmd(e, "lottery.open", {"lottery": "L", "winners": 1, "keyword": "go"})
    cmd(e, "mute", {"user": "late", "seconds": 10})
    welcome = e.welcome("late", 1.0)
    poll = next(w for w in welcome if w.get("poll") == "P")
    assert poll["question"] == "Best?" and poll["options"] == ["A", "B"]
    pk = next(w for w in welcome if w.get("pk") == "B")
    assert pk["sides"] == ["红", "蓝"] and pk["closed"] is False
    assert any(w.get("lottery") == "L" and w["keyword"] == "go" for w in welcome)
    cmd(e, "coupon.open", {"drop": "D", "keyword": "券", "codes": ["X"]})
    assert {"t": "state", "coupon": "D", "open": True, "keyword": "券"} in e.welcome("x", 1.0)
    assert {"t": "state", "muted": True, "seconds": 9.0} in welcome
    assert all("muted" not in w for w in e.welcome("someone", 1.0))


def test_anti_cheat_mutes_a_spammer_and_the_operator_can_reverse_it() -> None:
    e, _ = engine(comment_rate_per_s=100.0, comment_burst=100)
    # A crowd, so the room has a population to compare with.
    for i in range(40):
        say(e, f"fan{i}", f"主播好 {i}", 1.0 + i * 0.5)
    t, replies = 30.0, []
    for k in range(120):  # one account, 2 lines a second, three lines on rotation
        t += 0.5
        replies.append(reply(say(e, "spammer", ["buy now", "cheap", "click"][k % 3], t)))
    assert any(r.get("code") == "forbidden" for r in replies)  # muted on the way
    assert e._is_muted("spammer", t)
    items = cmd(e, "review.list", {}, t)["result"]["items"]
    ac = [i for i in items if i["kind"] == "anticheat" and i["user"] == "spammer"]
    assert ac and ac[0]["item"].startswith("ac-")
    assert ("anticheat", "mute") in e.take_actions()
    assert cmd(e, "review.reject", {"item": ac[0]["item"]}, t)["result"] == {}
    assert not e._is_muted("spammer", t)  # reversed: unmuted, and exempt for a while
    assert reply(say(e, "spammer", "sorry", t + 1))["t"] == "ack"
    assert cmd(e, "review.approve", {"item": "ac-999999"}, t)["code"] == "unknown_target"


def test_a_ring_of_accounts_is_shadow_dropped_acked_but_not_shown() -> None:
    e, _ = engine(comment_rate_per_s=100.0, comment_burst=100)
    ad = "加我好友领取免费福利优惠券"
    t = 200.0
    for _ in range(4):
        for i in range(12):
            t += 0.3
            r = reply(say(e, f"ring{i}", ad, t))
            assert r["t"] == "ack"  # the sender sees no difference
    assert e.outcomes[("comment", "shadow_dropped")] > 0
    assert sum(1 for d in e.scene(t).danmaku if ad in d.text) <= 12


def test_anti_cheat_can_be_switched_off_and_a_bad_detector_is_a_config_error() -> None:
    cfg = config.demo_config()
    assert anticheat_from_config(dataclasses.replace(cfg.anticheat, enabled=False)) is None
    with pytest.raises(ConfigError) as err:
        anticheat_from_config(dataclasses.replace(cfg.anticheat, detectors="rate,psychic"))
    assert "anticheat" in str(err.value)
