"""Anti-cheat: spot abnormal viewer behaviour, restrict it automatically, and hand
every restriction to a human who can reverse it.

Sans-I/O. The engine calls ``observe(user, kind, text, n, now, first_seen)`` for each
viewer event that passed authentication (and the rate limiter), *before* the event
takes effect, and obeys the ``Verdict``:

- ``allow``: handle the event as usual;
- ``shadow_drop``: acknowledge it as usual, but let it have no effect (the comment is
  not drawn, the likes are not counted, the vote is not tallied): the sender, a bot
  most likely, learns nothing;
- ``mute``: refuse the user's comments for ``seconds`` (the engine's own mute, with
  its ``{"t":"state","muted":true}`` push, so a real person knows why).

Four detectors, each an O(1) update per event (about 4 us of CPU per event in all at
10k events/s, population refreshes included: ``python -m edge_node.interaction.botmix``):

``rate``
    A user's comment rate (an exponentially decayed count, half-life
    ``rate_half_life_s``) above the population's bar, max(floor, median + ``rate_z``
    x MAD scaled to a standard deviation) over the users active in the last
    ``population_window_s`` (recomputed once a second of ``now`` from at most
    ``population_sample`` of them, so a frenzy in which everyone types fast raises
    the bar for everyone). Rate alone cannot tell a superfan in a hot moment from a
    script, so above ``rate_floor_per_s`` the user's last ``rate_recent`` comments must
    also be at most ``rate_max_distinct`` different lines (a script repeats itself);
    above ``rate_ceiling_per_s``, beyond what anyone types for a minute, the words do
    not matter. Repeat offences double the penalty.
``identical_text``
    The same normalised text (``text_key``: NFKC, case-folded, spaces, punctuation,
    emoji and trailing digits removed, repeated runs collapsed, cut to
    ``text_key_chars``) from at least ``text_min_users`` users within
    ``text_window_s``, at least ``text_repeat_share`` of whom sent it
    ``text_repeats`` times or more: a copy-paste ring repeats its line; a crowd asking
    "这个多少钱" mostly says it once or twice each. Only the repeaters are acted
    against, and texts lighter than ``text_min_weight`` ("666", "好看", "上链接": a
    CJK character weighs 2, a Latin letter 1) are never evidence: the room types them.
``like_burst``
    Likes (the sum of ``n``) per second over three horizons (half-lives
    ``like_short_half_life_s``, ``like_long_half_life_s`` and
    ``like_sustained_half_life_s``), each above max(its floor, median + ``like_z`` x
    MAD) of the users who liked recently. A thumb manages 10-15 taps a second, in
    sessions of seconds, not minutes on end.
``swarm``
    At least ``swarm_min_users`` users, each posting within ``swarm_fresh_s`` of being
    first seen, sending the same (normalised, so near-same) text within
    ``text_window_s``, and making up at least ``swarm_fresh_share`` of its senders
    (newcomers echoing what the regulars say are not a swarm). Posts in the first
    ``swarm_warmup_s`` after the first event never count: the start of a show is one
    big organic swarm.

The identical-text and swarm detectors act on every qualifying sender at once (not
only on the one whose event tripped them), and on later ones as they post.

Every action creates a ``ReviewEntry`` (id, user, detector, evidence, action, time).
``reverse(entry_id, now)`` lifts the user's restrictions, forgets the behaviour that
led to them, and exempts the user for ``whitelist_s``. Restrictions expire on their
own (checked as events arrive; ``expire(now)`` reclaims them and says which ended).

Memory is bounded whatever the input: users, texts, senders per text, restrictions,
exemptions, review entries and the text cache each have a cap (the oldest is
forgotten first, and counted in ``evicted``). Nothing here reads a clock, sleeps, logs
or does I/O; ``now`` (monotonic seconds) is passed in and should not go backwards
(if it does, no time passes).
"""

from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from edge_node.errors import EdgeNodeError

Action = Literal["allow", "shadow_drop", "mute"]
ReviewState = Literal["pending", "confirmed", "reversed"]
Penalty = Literal["shadow_drop", "mute"]
DETECTORS = ("rate", "identical_text", "like_burst", "swarm")
VIEWER_KINDS = frozenset({"comment", "like", "vote", "join"})
MAD_TO_SIGMA = 1.4826  # MAD x this estimates a standard deviation for normal data
TEXT_CACHE_MAX = 4096

# What each detector's restriction applies to: a mute is the engine's (comments); a
# swarm's fake accounts must not vote or enter lotteries either.
_SCOPE = {
    "rate": frozenset({"comment"}),
    "identical_text": frozenset({"comment"}),
    "like_burst": frozenset({"like"}),
    "swarm": VIEWER_KINDS,
}
_NOT_TEXT = re.compile(r"[\W_]+")  # spaces, punctuation, emoji
_REPEATS = re.compile(r"(\D{1,4}?)\1+")  # "哈哈哈" -> "哈", "好看好看" -> "好看"; digits stay


@dataclass(frozen=True, slots=True)
class AntiCheatParams:
    """Every threshold, with the reason for its default. Times in seconds."""

    # rate: a chatty human sustains a few comments a minute, a superfan in a hot
    # moment one every two seconds (in varied words); a script repeats its line.
    rate_half_life_s: float = 60.0
    rate_floor_per_s: float = 0.2  # with at most ...
    rate_max_distinct: int = 3  # ... this many different lines (short ones all differ)
    rate_recent: int = 8  # ... among the user's last comments
    rate_ceiling_per_s: float = 0.8  # whatever the words
    rate_z: float = 6.0
    rate_action: Penalty = "mute"
    rate_action_s: float = 60.0  # doubled for each repeat offence ...
    rate_action_max_s: float = 960.0  # ... up to this
    population_window_s: float = 60.0
    population_sample: int = 512
    population_min: int = 20  # fewer active users: the floors alone decide
    stats_interval_s: float = 1.0
    # identical text: rings repeat their line; crowds say theirs once each.
    text_window_s: float = 180.0
    text_key_chars: int = 16
    text_min_weight: int = 8  # 4 CJK characters or 8 Latin letters
    text_min_users: int = 8
    text_repeats: int = 3  # a sender who sent it this often within the window repeats ...
    text_repeat_share: float = 0.5  # ... and this share of the senders must repeat
    text_action: Penalty = "shadow_drop"
    text_action_s: float = 600.0
    # like bursts: a thumb does 10-15 taps/s for seconds.
    like_short_half_life_s: float = 3.0
    like_short_floor_per_s: float = 30.0
    like_long_half_life_s: float = 30.0
    like_long_floor_per_s: float = 10.0
    like_sustained_half_life_s: float = 120.0  # minutes on end: nobody's thumb
    like_sustained_floor_per_s: float = 6.0
    like_z: float = 6.0
    like_action_s: float = 300.0
    # swarms of fresh accounts (shadow-dropped in everything: votes, entries too).
    swarm_fresh_s: float = 30.0
    swarm_min_users: int = 10
    swarm_fresh_share: float = 0.7
    swarm_warmup_s: float = 120.0
    swarm_action_s: float = 1800.0
    # operator reversal
    whitelist_s: float = 3600.0
    # the detectors that act (the others still observe, so enabling one starts warm)
    detectors: tuple[str, ...] = DETECTORS
    # memory caps (oldest forgotten first)
    max_users: int = 50_000  # ~0.3 KB each
    max_texts: int = 20_000  # ~0.6 KB each (most texts are said once)
    max_senders_per_text: int = 256
    max_restricted: int = 10_000
    max_whitelist: int = 10_000
    max_reviews: int = 10_000

    def __post_init__(self) -> None:
        unknown = set(self.detectors) - set(DETECTORS)
        if not isinstance(self.detectors, tuple) or unknown:
            raise ValueError(
                f"detectors: a tuple of names from {DETECTORS}, got {self.detectors!r}"
            )
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "detectors":
                continue
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{f.name}: expected an integer, got {value!r}")
            if f.name.endswith("_action"):
                if value not in ("shadow_drop", "mute"):
                    raise ValueError(f"{f.name}: must be 'shadow_drop' or 'mute', got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{f.name}: expected a number, got {type(value).__name__}")
            elif not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{f.name}: must be a finite number > 0, got {value!r}")
        for name in ("text_repeat_share", "swarm_fresh_share"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name}: must be at most 1, got {getattr(self, name)!r}")
        for name in ("text_min_users", "swarm_min_users", "text_repeats"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name}: must be at least 2, got {getattr(self, name)!r}")
        if self.rate_ceiling_per_s < self.rate_floor_per_s:
            raise ValueError("rate_ceiling_per_s: must be at least rate_floor_per_s")
        if self.rate_action_max_s < self.rate_action_s:
            raise ValueError("rate_action_max_s: must be at least rate_action_s")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one event. ``seconds``: how much longer the restriction lasts;
    ``entry``: the review entry this very event created (None when the restriction
    was already in force, possibly put there by a sweep while the user was silent: so
    on a ``mute``, the engine mutes the user unless they already are)."""

    action: Action
    seconds: float = 0.0
    reason: str = ""  # the detector, one of DETECTORS
    entry: int | None = None


ALLOW = Verdict("allow")


@dataclass(frozen=True, slots=True)
class ReviewEntry:
    id: int
    user: str
    detector: str
    evidence: str
    action: Penalty
    seconds: float
    at: float
    state: ReviewState = "pending"
    reviewed_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class Restriction:
    """A penalty in force: ``kinds`` are the event kinds it applies to."""

    user: str
    detector: str
    action: Penalty
    kinds: frozenset[str]
    until: float
    entry: int


class UnknownReviewEntry(EdgeNodeError, LookupError):
    """An entry id that never existed or was forgotten (``max_reviews``): the engine
    answers ``unknown_target``."""

    def __init__(self, entry_id: int) -> None:
        super().__init__(f"entry: no review entry {entry_id}")
        self.entry_id = entry_id


class _User:
    __slots__ = ("c", "c_at", "first_seen", "l_at", "last_seen", "likes", "offences", "recent")

    def __init__(self, now: float, first_seen: float) -> None:
        self.first_seen = first_seen
        self.last_seen = now
        self.c = 0.0  # decayed comment count
        self.c_at = now
        self.likes: tuple[float, ...] = ()  # decayed likes per horizon (none yet: ())
        self.l_at = -math.inf
        self.offences = 0
        self.recent: tuple[str, ...] = ()  # keys of the last comments ("" when light)


class _Text:
    """Recent senders of one normalised text, counted per user, within the window."""

    __slots__ = (
        "fresh",
        "per_user",
        "recent",
        "repeaters",
        "repeats",
        "sample",
        "swarm_until",
        "swept",
    )

    def __init__(self, sample: str, repeats: int) -> None:
        self.repeats = repeats
        # (t, user, fresh), oldest first. A list, not a deque: most texts are said
        # once, and an empty deque alone costs 600 bytes.
        self.recent: list[tuple[float, str, bool]] = []
        self.per_user: dict[str, int] = {}
        self.fresh: dict[str, int] = {}
        self.repeaters = 0  # users in per_user with a count >= repeats
        self.sample = sample
        self.swept = -math.inf  # identical-text sweep done until then
        self.swarm_until = -math.inf

    def add(self, now: float, user: str, fresh: bool, cap: int) -> int:
        if len(self.recent) >= cap:
            self._forget(1)
        self.recent.append((now, user, fresh))
        count = self.per_user.get(user, 0) + 1
        self.per_user[user] = count
        if count == self.repeats:
            self.repeaters += 1
        if fresh:
            self.fresh[user] = self.fresh.get(user, 0) + 1
        return count

    def prune(self, cutoff: float) -> None:
        recent = self.recent
        old = 0
        while old < len(recent) and recent[old][0] < cutoff:
            old += 1
        if old:
            self._forget(old)

    def _forget(self, oldest: int) -> None:
        per_user, fresh_users = self.per_user, self.fresh
        for _, user, fresh in self.recent[:oldest]:
            count = per_user[user] - 1
            if count:
                per_user[user] = count
                if count == self.repeats - 1:
                    self.repeaters -= 1
            else:
                del per_user[user]
            if fresh:
                left = fresh_users[user] - 1
                if left:
                    fresh_users[user] = left
                else:
                    del fresh_users[user]
        del self.recent[:oldest]


@dataclass(frozen=True, slots=True)
class _Bar:
    """A population threshold and the figures behind it (for the evidence)."""

    limit: float
    median: float
    sigma: float
    users: int


def text_key(text: str, chars: int = 16) -> tuple[str, int]:
    """The normalised form two copies of a line share, and its weight (CJK 2, else 1).

    Digits inside the line stay (a phone number, "3号链接", a height are what the line
    says), but trailing ones go with the other trailing marks: that is where scripts
    put the noise that dodges exact deduplication ("加微信 vx123 4711")."""
    s = unicodedata.normalize("NFKC", text[: chars * 4]).casefold()
    end = len(s)
    while end and not s[end - 1].isalpha():
        end -= 1
    s = _NOT_TEXT.sub("", s[:end])
    key = _REPEATS.sub(r"\1", s[: chars * 2])[:chars]
    # UTF-8 length: 1 for ASCII, 3 for CJK; (bytes + chars) // 2 weighs CJK 2, ASCII 1.
    return key, (len(key.encode()) + len(key)) // 2


def _bar(values: list[float], floor: float, z: float, min_users: int) -> _Bar:
    if len(values) < min_users:
        return _Bar(floor, 0.0, 0.0, len(values))
    values.sort()
    median = values[len(values) // 2]
    deviations = sorted(abs(v - median) for v in values)
    # A room typing in lockstep (MAD 0) still has a spread: at least half the median.
    sigma = max(MAD_TO_SIGMA * deviations[len(deviations) // 2], median / 2)
    return _Bar(max(floor, median + z * sigma), median, sigma, len(values))


def _decayed(value: float, at: float, now: float, tau: float) -> float:
    return value * math.exp(-(now - at) / tau) if now > at else value


class AntiCheat:
    def __init__(self, params: AntiCheatParams | None = None) -> None:
        p = self.params = params or AntiCheatParams()
        ln2 = math.log(2.0)
        self._tau_c = p.rate_half_life_s / ln2
        # Like horizons: (half-life, time constant, floor).
        self._like_horizons = tuple(
            (half_life, half_life / ln2, floor)
            for half_life, floor in (
                (p.like_short_half_life_s, p.like_short_floor_per_s),
                (p.like_long_half_life_s, p.like_long_floor_per_s),
                (p.like_sustained_half_life_s, p.like_sustained_floor_per_s),
            )
        )
        self._users: OrderedDict[str, _User] = OrderedDict()
        self._texts: OrderedDict[str, _Text] = OrderedDict()
        self._text_cache: dict[str, tuple[str, int]] = {}
        self._restricted: OrderedDict[str, list[Restriction]] = OrderedDict()
        self._exempt: OrderedDict[str, float] = OrderedDict()
        self._reviews: OrderedDict[int, ReviewEntry] = OrderedDict()
        self._next_entry = 1
        self._on = frozenset(p.detectors)
        self._started: float | None = None
        self.population_due = -math.inf  # when observe() next refreshes the bars
        self.rate_bar = _Bar(p.rate_floor_per_s, 0.0, 0.0, 0)
        self.like_bars = tuple(_Bar(floor, 0.0, 0.0, 0) for _, _, floor in self._like_horizons)
        # (detector, action) -> restrictions created; action -> events not allowed
        self.actions: Counter[tuple[str, str]] = Counter()
        self.verdicts: Counter[str] = Counter()
        self.evicted: Counter[str] = Counter()  # what a cap made us forget, by table

    # ---- the entry point -------------------------------------------------------------

    def observe(
        self,
        user: str,
        kind: str,
        text: str,
        n: int,
        now: float,
        first_seen: bool | None = None,
    ) -> Verdict:
        """One viewer event (``kind`` in VIEWER_KINDS; ``text`` for comments, ``n`` the
        likes a like message carries). ``first_seen``: the engine's word that this user
        is new (None: new when this object has not seen them)."""
        if kind not in VIEWER_KINDS:
            raise ValueError(f"kind: expected one of {sorted(VIEWER_KINDS)}, got {kind!r}")
        if kind == "like" and n < 1:
            raise ValueError(f"n: a like message carries at least 1 like, got {n!r}")
        if self._started is None:
            self._started = now
        if now >= self.population_due:
            self.refresh_population(now)
        u = self._touch(user, now, first_seen)
        if kind == "comment":
            verdict = self._comment(user, u, text, now)
        elif kind == "like":
            verdict = self._like(user, u, n, now)
        else:
            verdict = self._restriction(user, kind, now) or ALLOW
        if verdict is not ALLOW:
            self.verdicts[verdict.action] += 1
        return verdict

    def _touch(self, user: str, now: float, first_seen: bool | None) -> _User:
        users = self._users
        u = users.get(user)
        if u is None:
            if len(users) >= self.params.max_users:
                users.popitem(last=False)
                self.evicted["users"] += 1
            u = users[user] = _User(now, now if first_seen is not False else -math.inf)
        else:
            users.move_to_end(user)
            if first_seen:
                u.first_seen = now
            if now > u.last_seen:
                u.last_seen = now
        return u

    # ---- detectors -------------------------------------------------------------------

    def _comment(self, user: str, u: _User, text: str, now: float) -> Verdict:
        p = self.params
        u.c = _decayed(u.c, u.c_at, now, self._tau_c) + 1.0
        u.c_at = max(u.c_at, now)
        key, rec, count = self._record_text(user, u, text, now)
        recent = u.recent = (*u.recent, key)[-p.rate_recent :]
        active = self._restriction(user, "comment", now)
        if active is not None or self._is_exempt(user, now):
            return active or ALLOW
        if rec is not None:
            verdict = None
            if "swarm" in self._on:
                verdict = self._check_swarm(user, rec, now)
            if verdict is None and "identical_text" in self._on:
                verdict = self._check_identical(user, rec, count, now)
            if verdict is not None:
                return verdict
        rate = u.c / self._tau_c
        bar = self.rate_bar
        if rate <= bar.limit or "rate" not in self._on:
            return ALLOW
        # Lines too short to be evidence ("666") count as all different.
        distinct = len(set(recent)) - 1 + recent.count("") if "" in recent else len(set(recent))
        if len(recent) >= p.rate_recent and distinct <= p.rate_max_distinct:
            why = f"their last {len(recent)} comments are {distinct} different lines"
        elif rate > max(bar.limit, p.rate_ceiling_per_s):
            why = f"above the ceiling of {p.rate_ceiling_per_s:g}/s"
        else:
            return ALLOW
        u.offences += 1
        seconds = min(p.rate_action_max_s, p.rate_action_s * 2 ** min(u.offences - 1, 30))
        evidence = (
            f"{rate:.2f} comments/s (half-life {p.rate_half_life_s:g} s) against "
            f"{_population(bar)}, {why}; offence {u.offences}"
        )
        return self._restrict(user, "rate", p.rate_action, evidence, seconds, now) or ALLOW

    def _record_text(
        self, user: str, u: _User, text: str, now: float
    ) -> tuple[str, _Text | None, int]:
        """The text's key ("" when too light to be evidence), its record and how often
        ``user`` sent it within the window."""
        p = self.params
        cached = self._text_cache.get(text)
        if cached is None:
            if len(self._text_cache) >= TEXT_CACHE_MAX:
                self._text_cache.clear()
            cached = self._text_cache[text] = text_key(text, p.text_key_chars)
        key, weight = cached
        if weight < p.text_min_weight:
            return "", None, 0
        texts = self._texts
        rec = texts.get(key)
        if rec is None:
            if len(texts) >= p.max_texts:
                texts.popitem(last=False)
                self.evicted["texts"] += 1
            rec = texts[key] = _Text(text, p.text_repeats)
        else:
            texts.move_to_end(key)
            rec.prune(now - p.text_window_s)
        # Posts made during the warm-up never count as fresh, even after it.
        warm = self._started is not None and now - self._started >= p.swarm_warmup_s
        fresh = warm and now - u.first_seen <= p.swarm_fresh_s
        return key, rec, rec.add(now, user, fresh, p.max_senders_per_text)

    def _check_swarm(self, user: str, rec: _Text, now: float) -> Verdict | None:
        p = self.params
        if user not in rec.fresh:  # (nobody is, during the warm-up)
            return None
        fresh = len(rec.fresh)
        if rec.swarm_until <= now:
            if fresh < p.swarm_min_users or fresh < p.swarm_fresh_share * len(rec.per_user):
                return None
            rec.swarm_until = now + p.text_window_s
            evidence = (
                f"{fresh} of {len(rec.per_user)} senders of {rec.sample!r} within "
                f"{p.text_window_s:g} s were first seen <= {p.swarm_fresh_s:g} s earlier"
            )
            for other in list(rec.fresh):
                if other != user:
                    self._restrict(other, "swarm", "shadow_drop", evidence, p.swarm_action_s, now)
        else:
            evidence = f"fresh account joining a swarm posting {rec.sample!r}"
        return self._restrict(user, "swarm", "shadow_drop", evidence, p.swarm_action_s, now)

    def _check_identical(self, user: str, rec: _Text, count: int, now: float) -> Verdict | None:
        p = self.params
        senders = len(rec.per_user)
        if senders < p.text_min_users or rec.repeaters < p.text_repeat_share * senders:
            return None
        evidence = (
            f"{rec.sample!r} from {senders} users within {p.text_window_s:g} s, "
            f"{rec.repeaters} of them at least {p.text_repeats} times"
        )
        if rec.swept <= now:
            rec.swept = now + p.text_window_s
            for other, times in list(rec.per_user.items()):
                if times >= p.text_repeats and other != user:
                    self._restrict(
                        other,
                        "identical_text",
                        p.text_action,
                        f"{evidence}; this user {times} times",
                        p.text_action_s,
                        now,
                    )
        if count < p.text_repeats:
            return None
        return self._restrict(
            user,
            "identical_text",
            p.text_action,
            f"{evidence}; this user {count} times",
            p.text_action_s,
            now,
        )

    def _like(self, user: str, u: _User, n: int, now: float) -> Verdict:
        p = self.params
        dt = now - u.l_at if now > u.l_at else 0.0
        horizons = self._like_horizons
        if u.likes:
            u.likes = tuple(
                v * math.exp(-dt / tau) + n
                for v, (_, tau, _) in zip(u.likes, horizons, strict=True)
            )
        else:
            u.likes = (float(n),) * len(horizons)
        u.l_at = max(u.l_at, now)
        active = self._restriction(user, "like", now)
        if active is not None or self._is_exempt(user, now) or "like_burst" not in self._on:
            return active or ALLOW
        for value, (half_life, tau, _), bar in zip(u.likes, horizons, self.like_bars, strict=True):
            rate = value / tau
            if rate > bar.limit:
                evidence = (
                    f"{rate:.1f} likes/s (half-life {half_life:g} s) against {_population(bar)}"
                )
                verdict = self._restrict(
                    user, "like_burst", "shadow_drop", evidence, p.like_action_s, now
                )
                return verdict or ALLOW
        return ALLOW

    def refresh_population(self, now: float) -> None:
        """Recompute the bars from the median and MAD of the rates of the most recently
        active users (at most ``population_sample``; ~0.3 ms at the cap). ``observe``
        does it once per ``stats_interval_s``; a timer may call it instead, to keep
        the work off the event path."""
        p = self.params
        self.population_due = now + p.stats_interval_s
        cutoff = now - p.population_window_s
        comments: list[float] = []
        horizons = self._like_horizons
        likes: list[list[float]] = [[] for _ in horizons]
        tau_c = self._tau_c
        for u in reversed(self._users.values()):
            if u.last_seen < cutoff or len(comments) >= p.population_sample:
                break
            comments.append(_decayed(u.c, u.c_at, now, tau_c) / tau_c)
            if u.l_at >= cutoff and u.likes:
                for values, value, (_, tau, _) in zip(likes, u.likes, horizons, strict=True):
                    values.append(_decayed(value, u.l_at, now, tau) / tau)
        self.rate_bar = _bar(comments, p.rate_floor_per_s, p.rate_z, p.population_min)
        self.like_bars = tuple(
            _bar(values, floor, p.like_z, p.population_min)
            for values, (_, _, floor) in zip(likes, horizons, strict=True)
        )

    # ---- restrictions ----------------------------------------------------------------

    def _restriction(self, user: str, kind: str, now: float) -> Verdict | None:
        """The verdict of a restriction in force on ``user`` for ``kind``, if any."""
        held = self._restricted.get(user)
        if not held:
            return None
        live = [r for r in held if r.until > now]
        if len(live) != len(held):
            if live:
                self._restricted[user] = live
            else:
                del self._restricted[user]
        for r in live:
            if kind in r.kinds:
                return Verdict(r.action, r.until - now, r.detector)
        return None

    def _restrict(
        self,
        user: str,
        detector: str,
        action: Penalty,
        evidence: str,
        seconds: float,
        now: float,
    ) -> Verdict | None:
        """Put a restriction on ``user`` with its review entry; None when the user is
        exempt or already restricted by this detector (nothing new happened)."""
        p = self.params
        if self._is_exempt(user, now):
            return None
        held = self._restricted.get(user)
        if held and any(r.detector == detector and r.until > now for r in held):
            return None
        entry = ReviewEntry(self._next_entry, user, detector, evidence, action, seconds, now)
        self._next_entry += 1
        if len(self._reviews) >= p.max_reviews:
            self._reviews.popitem(last=False)
            self.evicted["reviews"] += 1
        self._reviews[entry.id] = entry
        restriction = Restriction(user, detector, action, _SCOPE[detector], now + seconds, entry.id)
        if held is None:
            self._make_room(now)
            self._restricted[user] = [restriction]
        else:
            held.append(restriction)
        self.actions[(detector, action)] += 1
        return Verdict(action, seconds, detector, entry.id)

    def _make_room(self, now: float) -> None:
        """Below ``max_restricted`` users: forget run-out restrictions first, then the
        oldest ones in force (counted: a cap too small for the room frees bots)."""
        restricted = self._restricted
        while len(restricted) >= self.params.max_restricted:
            user, held = next(iter(restricted.items()))
            if any(r.until > now for r in held):
                self.evicted["restricted"] += 1
            del restricted[user]

    def _is_exempt(self, user: str, now: float) -> bool:
        until = self._exempt.get(user)
        if until is None:
            return False
        if until > now:
            return True
        del self._exempt[user]
        return False

    # ---- the operator's side ---------------------------------------------------------

    def entries(self, pending_only: bool = False) -> list[ReviewEntry]:
        """Review entries, oldest first (the newest ``max_reviews`` are kept)."""
        return [e for e in self._reviews.values() if not pending_only or e.state == "pending"]

    def entry(self, entry_id: int) -> ReviewEntry:
        try:
            return self._reviews[entry_id]
        except KeyError:
            raise UnknownReviewEntry(entry_id) from None

    def confirm(self, entry_id: int, now: float) -> ReviewEntry:
        """The operator agrees with an action: it stays as it is, marked reviewed."""
        entry = self.entry(entry_id)
        if entry.state != "pending":
            return entry
        entry = self._reviews[entry_id] = dataclasses.replace(
            entry, state="confirmed", reviewed_at=now
        )
        return entry

    def reverse(self, entry_id: int, now: float) -> ReviewEntry:
        """The operator overrules an action (confirmed or not): every restriction on its
        user is lifted, their recorded behaviour forgotten, and they are exempt for
        ``whitelist_s``. The engine should unmute the user too. Idempotent."""
        entry = self.entry(entry_id)
        if entry.state == "reversed":
            return entry
        entry = self._reviews[entry_id] = dataclasses.replace(
            entry, state="reversed", reviewed_at=now
        )
        self.lift(entry.user)
        self.exempt(entry.user, now + self.params.whitelist_s)
        u = self._users.get(entry.user)
        if u is not None:
            u.c = 0.0
            u.likes = ()
            u.l_at = -math.inf
            u.recent = ()
            u.offences = 0
            u.first_seen = -math.inf
        return entry

    def lift(self, user: str) -> list[Restriction]:
        """End every restriction on ``user`` now (the operator unmuted them, say); the
        review entries stay. Returns what was lifted."""
        return self._restricted.pop(user, [])

    def exempt(self, user: str, until: float) -> None:
        """Never act against ``user`` before ``until`` (a reversal; a guest of the show)."""
        exempt = self._exempt
        if user not in exempt and len(exempt) >= self.params.max_whitelist:
            exempt.popitem(last=False)
            self.evicted["whitelist"] += 1
        exempt[user] = until
        exempt.move_to_end(user)

    def restrictions(self, user: str, now: float) -> list[Restriction]:
        """The restrictions in force on ``user``."""
        return [r for r in self._restricted.get(user, ()) if r.until > now]

    def expire(self, now: float) -> list[Restriction]:
        """Forget restrictions and exemptions that have run out; returns the
        restrictions that ended. O(restricted users): call it about once a second."""
        ended: list[Restriction] = []
        for user, held in list(self._restricted.items()):
            live = [r for r in held if r.until > now]
            if len(live) != len(held):
                ended += [r for r in held if r.until <= now]
                if live:
                    self._restricted[user] = live
                else:
                    del self._restricted[user]
        for user, until in list(self._exempt.items()):
            if until <= now:
                del self._exempt[user]
        return ended

    def next_expiry(self) -> float | None:
        """When the earliest restriction in force runs out (O(restricted users))."""
        times = [r.until for held in self._restricted.values() for r in held]
        return min(times) if times else None

    def flagged_users(self) -> set[str]:
        """Users an action was taken against (reversed or not), among kept entries."""
        return {e.user for e in self._reviews.values()}

    def sizes(self) -> dict[str, int]:
        """Current size of every bounded table (memory-bound tests, metrics)."""
        return {
            "users": len(self._users),
            "texts": len(self._texts),
            "senders_per_text": max((len(t.recent) for t in self._texts.values()), default=0),
            "text_cache": len(self._text_cache),
            "restricted": len(self._restricted),
            "whitelist": len(self._exempt),
            "reviews": len(self._reviews),
        }


def _population(bar: _Bar) -> str:
    return (
        f"a limit of {bar.limit:.2f}/s (population of {bar.users} active users: "
        f"median {bar.median:.3f}/s, sigma {bar.sigma:.3f}/s)"
    )
