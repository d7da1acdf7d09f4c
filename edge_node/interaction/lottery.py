"""Danmaku lottery: a verifiable draw among viewers who comment a keyword or send ``join``.

The draw is *commit and reveal*: at ``lottery.open`` the node shows ``commit``, the hex
SHA-256 of a 32-byte seed only the node knows; at ``lottery.draw`` it reveals the seed
and the entrant list, and the winners follow from those two alone (``pick_winners``;
the algorithm is in ``docs/lottery.md``), so anyone can recompute them with
``recompute_winners`` or a few lines in any language. The commitment proves the seed
was fixed before anyone entered; the entrant list is published in entry order.

Who gets in (the eligibility rules): an entry counts when it arrives before the
deadline (``now < ends_at``; at the deadline entries close), from a user the engine
says is eligible (not muted at entry time), once per user per lottery. A second entry
is the outcome ``duplicate`` and keeps the first. A user muted after entering is
``disqualify``-ed: removed from every lottery not yet drawn, so the published list
never holds someone who cannot win.

Sans-I/O: ``now`` and the seed come in as arguments; nothing here reads a clock, makes
randomness, logs, or lets the winners depend on anything but the seed and the entrants.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import heapq
import math
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from edge_node.interaction.effects import CommandError, Push
from edge_node.interaction.effects import arg as _arg
from edge_node.overlay.scene import LotteryBanner

MAX_ID_CHARS: Final = 64
MAX_KEYWORD_CHARS: Final = 32
MAX_WINNERS: Final = 1000
MAX_SECONDS: Final = 86_400.0
MIN_SEED_BYTES: Final = 16
MAX_UNDRAWN: Final = 8
"""Lotteries open or waiting for their draw at once; more is an operator mistake."""
DRAWN_KEPT: Final = 32
"""Drawn lotteries remembered (for ``result`` and the draw-twice error), oldest forgotten."""
BANNER_AFTER_DRAW_S: Final = 30.0
"""How long the winners stay on screen after the draw."""

# Unicode general categories dropped by ``fold_keyword``: punctuation, separators, control and
# format characters (zero-width joiners, BOM, soft hyphen).
_DROPPED_CATEGORIES: Final = frozenset("PZC")


@functools.lru_cache(maxsize=1024)  # every feature folds the same comment in turn
def fold_keyword(text: str) -> str:
    """The form keywords are compared in: NFKC, case-folded, without spaces or punctuation.

    So full-width ``ＡＢＣ`` equals ``abc``, ``抽 奖！`` equals ``抽奖``, and a zero-width
    space inside a keyword changes nothing. Symbols (emoji included) are kept: ``抽奖🎉``
    is not ``抽奖``. Shared by the lottery, coupon drops, PK side names and auto-reply
    patterns, so one comment means the same thing to every feature.

    Deliberately lighter than moderation's ``normalize``: that one collapses repeats
    and reads ``1`` as ``i`` to catch evasions; here ``11`` and ``1`` (or ``抽奖`` and
    ``抽抽奖奖``) must stay different keywords.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    if text.isalnum():  # the common case: nothing to drop
        return text
    category = unicodedata.category
    return "".join(ch for ch in text if category(ch)[0] not in _DROPPED_CATEGORIES)


def draw_key(seed: bytes, user: str) -> bytes:
    """An entrant's rank key: SHA-256 of the seed's bytes followed by the user's UTF-8."""
    return hashlib.sha256(seed + user.encode("utf-8")).digest()


def pick_winners(seed: bytes, entrants: Sequence[str], k: int) -> list[str]:
    """The ``k`` entrants with the smallest ``draw_key`` (as bytes), smallest first.

    Depends on the seed and the *set* of entrants only (not their order), so a verifier
    cannot get a different answer by sorting the published list. ``k`` larger than the
    list: everyone wins. Entrants must be distinct (a user enters once).
    """
    # nsmallest is sorted(...)[:k] without sorting the losers (a draw among 100k).
    return heapq.nsmallest(max(0, k), entrants, key=lambda user: draw_key(seed, user))


def recompute_winners(seed_hex: str, entrants: Sequence[str], k: int) -> list[str]:
    """Anyone's check of a published draw: the winners of ``seed_hex`` among ``entrants``.

    Raises ``ValueError`` for a seed that is not hex, a negative ``k`` or an entrant
    listed twice (a published list never has one: such a list is not a real draw).
    """
    seed = bytes.fromhex(seed_hex)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    seen: set[str] = set()
    for user in entrants:
        if user in seen:
            raise ValueError(f"entrant {user!r} is listed twice")
        seen.add(user)
    return pick_winners(seed, entrants, k)


def commitment(seed: bytes) -> str:
    """What ``lottery.open`` shows: the hex SHA-256 of the seed's bytes."""
    return hashlib.sha256(seed).hexdigest()


class Phase(enum.Enum):
    OPEN = "open"  # taking entries
    CLOSED = "closed"  # deadline passed, waiting for the draw
    DRAWN = "drawn"  # seed revealed, winners fixed


# The lottery's life as data: (phase, event) -> next phase. A missing pair is a bug in
# this module (the public methods refuse illegal requests before getting here).
_NEXT: Final[Mapping[tuple[Phase, str], Phase]] = {
    (Phase.OPEN, "deadline"): Phase.CLOSED,
    (Phase.OPEN, "draw"): Phase.DRAWN,
    (Phase.CLOSED, "draw"): Phase.DRAWN,
}

EntryOutcome = Literal["entered", "duplicate", "closed", "ineligible"]
"""``entered``: counted now. ``duplicate``: already in, the first entry stands.
``closed``: at or after the deadline, or drawn. ``ineligible``: muted, or disqualified."""


@dataclass(eq=False)
class Lottery:
    lottery: str
    keyword: str | None  # as the operator typed it (shown on the banner)
    match: str | None  # the folded keyword comments are compared with
    winners_wanted: int
    opened_at: float
    ends_at: float | None
    seed: bytes = field(repr=False)  # secret until the draw
    commit: str
    phase: Phase = Phase.OPEN
    entrants: dict[str, float] = field(default_factory=dict)  # user -> time, entry order
    excluded: set[str] = field(default_factory=set)  # disqualified after entering
    winners: tuple[str, ...] | None = None
    drawn_at: float | None = None

    def draw_result(self) -> dict[str, Any]:
        """The ``lottery.draw`` result (only once drawn)."""
        assert self.winners is not None, "not drawn yet"
        return {
            "lottery": self.lottery,
            "seed": self.seed.hex(),
            "entrants": list(self.entrants),
            "winners": list(self.winners),
        }


class Lotteries:
    """Every lottery on this node: ``lottery.open`` / ``lottery.draw``, entries, the banner.

    The engine calls ``open``/``draw`` for the commands, ``join`` for a ``join``
    message, ``on_comment`` for every accepted comment, ``disqualify`` when it mutes a
    user, ``tick`` when ``next_timer`` comes; it sends ``take_pushes()`` and puts
    ``banner(now)`` on the scene whenever ``version`` changed.
    """

    def __init__(self, fold: Callable[[str], str] = fold_keyword) -> None:
        self._fold = fold
        self._lotteries: dict[str, Lottery] = {}  # insertion order = opening order
        self._on_screen: str | None = None
        self._pushes: list[Push] = []
        self.version = 0  # bumped on every change the banner shows

    # ---- commands -------------------------------------------------------------------

    def open(self, args: Mapping[str, Any], now: float, seed: bytes) -> dict[str, Any]:
        """``lottery.open``: ``seed`` is fresh randomness from the adapter (32 bytes)."""
        if len(seed) < MIN_SEED_BYTES:
            raise ValueError(f"seed must be at least {MIN_SEED_BYTES} bytes, got {len(seed)}")
        lottery_id = id_arg(args, "lottery")
        keyword, match = keyword_arg(args, self._fold)
        winners = _arg(args, "winners", int)
        if not 1 <= winners <= MAX_WINNERS:
            raise CommandError("bad_message", f"args.winners: 1..{MAX_WINNERS}, got {winners}")
        seconds = seconds_arg(args, required=False)
        current = self._lotteries.get(lottery_id)
        if current is not None and current.phase is not Phase.DRAWN:
            raise CommandError("busy", f"lottery '{lottery_id}' is already open; draw it first")
        undrawn = sum(1 for lot in self._lotteries.values() if lot.phase is not Phase.DRAWN)
        if undrawn >= MAX_UNDRAWN:
            raise CommandError("busy", f"{undrawn} lotteries are waiting for their draw")
        lot = Lottery(
            lottery=lottery_id,
            keyword=keyword,
            match=match,
            winners_wanted=winners,
            opened_at=now,
            ends_at=None if seconds is None else now + seconds,
            seed=bytes(seed),
            commit=commitment(seed),
        )
        self._lotteries.pop(lottery_id, None)  # a drawn one of the same name: replaced
        self._lotteries[lottery_id] = lot
        self._forget_old()
        self._on_screen = lottery_id
        self._broadcast(
            {
                "lottery": lottery_id,
                "phase": "open",
                "keyword": keyword,
                "winners": winners,
                "seconds": seconds,
                "commit": lot.commit,
            }
        )
        self.version += 1
        return {"lottery": lottery_id, "commit": lot.commit}

    def draw(self, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        """``lottery.draw``: closes entries (if still open), reveals the seed, the winners."""
        lottery_id = id_arg(args, "lottery")
        lot = self._get(lottery_id)
        if lot.phase is Phase.DRAWN:
            raise CommandError(
                "unknown_target",
                f"lottery '{lottery_id}' was already drawn; its seed, entrants and winners "
                "were published then and do not change",
            )
        self._expire(lot, now)
        entrants = list(lot.entrants)
        lot.winners = tuple(pick_winners(lot.seed, entrants, lot.winners_wanted))
        lot.drawn_at = now
        self._transition(lot, "draw")
        self._on_screen = lottery_id
        self._broadcast(
            {
                "lottery": lottery_id,
                "phase": "drawn",
                "commit": lot.commit,
                "seed": lot.seed.hex(),
                "entrants": len(entrants),  # the full list is in the command's result
                "winners": list(lot.winners),
            }
        )
        for user in lot.winners:
            self._pushes.append(Push({"t": "state", "lottery": lottery_id, "won": True}, user))
        self.version += 1
        return lot.draw_result()

    def result(self, lottery_id: str) -> dict[str, Any]:
        """The published result of a drawn lottery (for the console or a verifier)."""
        lot = self._get(lottery_id)
        if lot.winners is None:
            raise CommandError("unknown_target", f"lottery '{lottery_id}' is not drawn yet")
        return lot.draw_result()

    # ---- entries --------------------------------------------------------------------

    def enter(self, user: str, lottery_id: str, now: float, eligible: bool) -> EntryOutcome:
        """One entry attempt; ``eligible`` is the engine's word (False: muted now).

        Raises ``unknown_target`` only for a lottery that does not exist.
        """
        lot = self._get(lottery_id)
        self._expire(lot, now)
        if lot.phase is not Phase.OPEN:
            return "closed"
        if user in lot.entrants:
            return "duplicate"
        if not eligible or user in lot.excluded:
            return "ineligible"
        lot.entrants[user] = now
        if lottery_id == self._on_screen:
            self.version += 1  # the banner's count
        return "entered"

    def join(self, user: str, lottery_id: str, now: float, eligible: bool) -> bool:
        """A ``join`` message: True when entered, False for a duplicate (ack it as one).

        Refusals raise ``CommandError``: ``unknown_target`` (no such lottery, closed or
        drawn), ``forbidden`` (muted or disqualified).
        """
        outcome = self.enter(user, lottery_id, now, eligible)
        if outcome == "closed":
            raise CommandError("unknown_target", f"lottery '{lottery_id}' is closed")
        if outcome == "ineligible":
            raise CommandError("forbidden", f"you may not enter lottery '{lottery_id}'")
        return outcome == "entered"

    def on_comment(
        self, user: str, text: str, now: float, eligible: bool = True
    ) -> list[tuple[str, EntryOutcome]]:
        """An accepted comment: enters every open lottery whose keyword it equals (folded).

        Returns the attempts made (lottery, outcome); a new entry is also confirmed to
        the commenter by a push, since the comment's ack says nothing about it.
        """
        keyed = [
            lot
            for lot in self._lotteries.values()
            if lot.phase is Phase.OPEN and lot.match is not None
        ]
        if not keyed:
            return []
        folded = self._fold(text)
        attempts: list[tuple[str, EntryOutcome]] = []
        for lot in keyed:
            if folded == lot.match:
                outcome = self.enter(user, lot.lottery, now, eligible)
                attempts.append((lot.lottery, outcome))
                if outcome == "entered":
                    self._pushes.append(
                        Push({"t": "state", "lottery": lot.lottery, "entered": True}, user)
                    )
        return attempts

    def disqualify(self, user: str) -> list[str]:
        """The user was muted: out of every lottery not yet drawn, and kept out.

        Returns the lotteries the user was removed from (their published entrant lists
        will not hold the user; drawn lotteries are history and stay as published).
        """
        removed: list[str] = []
        for lot in self._lotteries.values():
            if lot.phase is Phase.DRAWN:
                continue
            lot.excluded.add(user)
            if lot.entrants.pop(user, None) is not None:
                removed.append(lot.lottery)
                if lot.lottery == self._on_screen:
                    self.version += 1
        return removed

    # ---- time and output ------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Close entries at deadlines and take drawn banners off screen."""
        for lot in self._lotteries.values():
            self._expire(lot, now)
        lot_on_screen = self._lotteries.get(self._on_screen or "")
        if (
            lot_on_screen is not None
            and lot_on_screen.drawn_at is not None
            and now >= lot_on_screen.drawn_at + BANNER_AFTER_DRAW_S
        ):
            self._on_screen = None
            self.version += 1

    def next_timer(self, now: float) -> float | None:
        times = [
            lot.ends_at
            for lot in self._lotteries.values()
            if lot.phase is Phase.OPEN and lot.ends_at is not None
        ]
        lot_on_screen = self._lotteries.get(self._on_screen or "")
        if lot_on_screen is not None and lot_on_screen.drawn_at is not None:
            times.append(lot_on_screen.drawn_at + BANNER_AFTER_DRAW_S)
        return min(times) if times else None

    def banner(self, now: float) -> LotteryBanner | None:
        """The lottery on screen: the latest opened, with its winners for a while once drawn."""
        lot = self._lotteries.get(self._on_screen or "")
        if lot is None:
            return None
        if lot.drawn_at is not None and now >= lot.drawn_at + BANNER_AFTER_DRAW_S:
            return None
        return LotteryBanner(
            lottery=lot.lottery,
            keyword=lot.keyword or "",
            entrants=len(lot.entrants),
            ends_at=lot.ends_at if lot.phase is Phase.OPEN else None,
            winners=lot.winners,
        )

    def status(self) -> list[dict[str, Any]]:
        """For the console: every known lottery, newest last (the seed only once drawn)."""
        return [
            {
                "lottery": lot.lottery,
                "phase": lot.phase.value,
                "keyword": lot.keyword,
                "winners_wanted": lot.winners_wanted,
                "entrants": len(lot.entrants),
                "commit": lot.commit,
                "winners": None if lot.winners is None else list(lot.winners),
            }
            for lot in self._lotteries.values()
        ]

    def take_pushes(self) -> list[Push]:
        pushes, self._pushes = self._pushes, []
        return pushes

    # ---- internals ------------------------------------------------------------------

    def _get(self, lottery_id: str) -> Lottery:
        lot = self._lotteries.get(lottery_id)
        if lot is None:
            raise CommandError("unknown_target", f"no lottery '{lottery_id}'")
        return lot

    def _expire(self, lot: Lottery, now: float) -> None:
        if lot.phase is Phase.OPEN and lot.ends_at is not None and now >= lot.ends_at:
            self._transition(lot, "deadline")
            self._broadcast(
                {"lottery": lot.lottery, "phase": "closed", "entrants": len(lot.entrants)}
            )
            self.version += 1

    @staticmethod
    def _transition(lot: Lottery, event: str) -> None:
        nxt = _NEXT.get((lot.phase, event))
        if nxt is None:
            raise RuntimeError(f"lottery '{lot.lottery}': no '{event}' from {lot.phase.value}")
        lot.phase = nxt

    def _forget_old(self) -> None:
        drawn = [lot.lottery for lot in self._lotteries.values() if lot.phase is Phase.DRAWN]
        for lottery_id in drawn[: max(0, len(drawn) - DRAWN_KEPT)]:
            del self._lotteries[lottery_id]

    def _broadcast(self, state: dict[str, Any]) -> None:
        self._pushes.append(Push({"t": "state", **state}))


def keyword_arg(
    args: Mapping[str, Any], fold: Callable[[str], str]
) -> tuple[str | None, str | None]:
    """The optional ``keyword`` (lottery, coupon drop) and its folded form to match."""
    keyword: str | None = _arg(args, "keyword", (str, type(None)), None)
    if keyword is None:
        return None, None
    match = fold(keyword)
    if not match or len(keyword) > MAX_KEYWORD_CHARS:
        raise CommandError(
            "bad_message",
            f"args.keyword: 1..{MAX_KEYWORD_CHARS} characters with a letter, "
            "digit or symbol (spaces and punctuation are ignored when matching)",
        )
    return keyword, match


def id_arg(args: Mapping[str, Any], name: str) -> str:
    """An id argument (lottery, pk, drop): 1..64 characters, not blank."""
    value: str = _arg(args, name, str)
    if not value.strip() or len(value) > MAX_ID_CHARS:
        raise CommandError("bad_message", f"args.{name}: 1..{MAX_ID_CHARS} characters")
    return value


def seconds_arg(args: Mapping[str, Any], required: bool) -> float | None:
    """The ``seconds`` argument: a finite number in (0, MAX_SECONDS]; absent or null is
    None where it is optional."""
    if required:
        value = _arg(args, "seconds", (int, float))
    else:
        value = _arg(args, "seconds", (int, float, type(None)), None)
    if value is None:
        return None
    seconds = float(value)
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
        raise CommandError("bad_message", f"args.seconds: more than 0, at most {MAX_SECONDS:g}")
    return seconds
