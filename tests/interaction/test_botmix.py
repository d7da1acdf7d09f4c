"""The seeded bot mix: deterministic, well-formed, holding the hard cases it promises,
and scored correctly."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from edge_node.interaction import botmix
from edge_node.interaction.anticheat import text_key
from edge_node.interaction.messages import MAX_LIKES, MAX_TEXT_CHARS, clean_text


@pytest.fixture(scope="module")
def mix() -> botmix.BotMix:
    return botmix.generate(4)


def test_the_same_seed_gives_the_same_stream() -> None:
    a, b = botmix.generate(9, seconds=200.0, normal_users=100), botmix.generate(9, 200.0, 100)
    assert a == b
    assert a.events != botmix.generate(10, 200.0, 100).events


def test_events_are_well_formed_and_time_ordered(mix: botmix.BotMix) -> None:
    times = [e.t for e in mix.events]
    assert times == sorted(times)
    assert times[0] >= 0.0 and times[-1] < mix.seconds
    for e in mix.events:
        assert e.is_bot == (mix.families[e.user] != "normal")
        if e.kind == "comment":
            assert e.n == 1
            assert clean_text(e.text) == e.text  # what the message parser would accept
            assert 1 <= len(e.text) <= MAX_TEXT_CHARS
        else:
            assert e.kind == "like" and e.text == ""
            assert 1 <= e.n <= MAX_LIKES


def test_every_user_asked_for_is_there(mix: botmix.BotMix) -> None:
    counts = Counter(mix.families.values())
    assert counts == {"normal": 600, "spammer": 6, "ring": 30, "like_bot": 8, "swarm": 40}
    assert set(mix.families) == {e.user for e in mix.events}
    assert mix.bots() == {u for u, f in mix.families.items() if f != "normal"}


def test_families_can_be_left_out() -> None:
    honest = botmix.generate(1, 120.0, 50, spammers=0, rings=0, like_bots=0, swarm_size=0)
    assert not honest.bots() and not any(e.is_bot for e in honest.events)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("normal_users", {"normal_users": -1}),
        ("ring_size", {"ring_size": -2}),
        ("seconds", {"seconds": 0.0}),
        ("raid_size", {"raid_size": 700}),
    ],
)
def test_bad_arguments_name_the_field(field: str, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=field):
        botmix.generate(1, **kwargs)  # type: ignore[arg-type]


def test_the_honest_audience_holds_the_hard_cases(mix: botmix.BotMix) -> None:
    normal = [e for e in mix.events if not e.is_bot]
    comments = [e for e in normal if e.kind == "comment"]
    # A longer line typed by many real viewers within two minutes ("这个多少钱"...).
    by_line: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for e in comments:
        key, weight = text_key(e.text)
        if weight >= 8:
            by_line[key].append((e.t, e.user))
    crowded = max(
        len({u for t, u in senders if t0 <= t < t0 + 120.0})
        for senders in by_line.values()
        for t0, _ in senders
    )
    assert crowded >= 10
    # Real viewers who say the same thing three times or more.
    per_user = Counter((e.user, text_key(e.text)[0]) for e in comments)
    assert sum(1 for count in per_user.values() if count >= 3) >= 10
    # The stream start and a raid: real viewers arriving together.
    first: dict[str, float] = {}
    for e in normal:
        first.setdefault(e.user, e.t)
    assert sum(1 for t in first.values() if t < 30.0) >= 250
    raid_at = 0.35 * mix.seconds
    assert sum(1 for t in first.values() if raid_at <= t < raid_at + 15.0) >= 600 // 12
    # Hot moments: some second of the show has several times the median comments.
    per_second = Counter(int(e.t) for e in comments)
    rates = sorted(per_second.values())
    assert rates[-1] >= 4 * rates[len(rates) // 2]


def test_human_thumbs_stay_human_and_like_bots_do_not(mix: botmix.BotMix) -> None:
    likes_per_s: dict[tuple[str, int], int] = Counter()
    for e in mix.events:
        if e.kind == "like":
            likes_per_s[(e.user, int(e.t))] += e.n
    normal_peak = max(n for (u, _), n in likes_per_s.items() if mix.families[u] == "normal")
    assert normal_peak <= 2 * botmix.HUMAN_TAPS_MAX_PER_S + 2  # two batches in one second
    bot_totals = Counter(e.user for e in mix.events if e.kind == "like" and e.is_bot)
    assert all(bot_totals[u] >= 50 for u in mix.users("like_bot"))


def test_a_swarm_arrives_together_and_says_the_same(mix: botmix.BotMix) -> None:
    swarm = mix.users("swarm")
    first: dict[str, float] = {}
    keys: set[str] = set()
    for e in mix.events:
        if e.user in swarm:
            first.setdefault(e.user, e.t)
            if e.kind == "comment":
                keys.add(text_key(e.text)[0])
    assert max(first.values()) - min(first.values()) <= botmix.SWARM_SPREAD_S + 10.0
    assert len(keys) == 1  # near-same lines, one normalised form


def test_with_first_seen_marks_each_users_first_event() -> None:
    events = [botmix.MixEvent(float(t), u, "like", "", 1, False) for t, u in enumerate("abab")]
    assert [first for _, first in botmix.with_first_seen(events)] == [True, True, False, False]


def test_score_counts_users_not_events() -> None:
    events = tuple(
        botmix.MixEvent(0.0, u, "like", "", 1, f != "normal")
        for u, f in (("n1", "normal"), ("n2", "normal"), ("s1", "spammer"), ("r1", "ring"))
    )
    families = {"n1": "normal", "n2": "normal", "s1": "spammer", "r1": "ring"}
    mix = botmix.BotMix(events, families, 10.0)
    score = botmix.score(mix, {"s1", "n1", "stranger"})
    assert (score.precision, score.recall, score.flagged, score.false_positives) == (
        0.5,
        0.5,
        2,
        1,
    )
    assert score.recall_by_family == {"spammer": 1.0, "ring": 0.0}
    assert botmix.score(mix, set()).precision == 1.0  # nobody flagged: nobody wrongly


def test_evaluate_replays_every_event_in_order() -> None:
    mix = botmix.generate(2, seconds=60.0, normal_users=20, spammers=1, rings=0, like_bots=1)
    seen: list[tuple[str, str, str, int, float, bool]] = []

    def observe(user: str, kind: str, text: str, n: int, now: float, first: bool) -> None:
        seen.append((user, kind, text, n, now, first))

    score = botmix.evaluate(mix, observe, lambda: mix.users("spammer"))
    assert [(u, k, x, n, t) for u, k, x, n, t, _ in seen] == [
        (e.user, e.kind, e.text, e.n, e.t) for e in mix.events
    ]
    assert sum(first for *_, first in seen) == len(mix.families)
    assert score.precision == 1.0 and score.recall_by_family["spammer"] == 1.0
