"""PK (team battle): two sides, scored by gifts or votes, a countdown and a winner banner.

How a viewer takes part: they *pick a side* once per battle, by a ``vote`` message
whose ``poll`` is the PK's id (``option`` 0 or 1) or by a comment equal (after
``fold_keyword``) to a side's name, or to ``1`` / ``2``; a side's name wins over the digits
when they clash. The first pick is final: a team battle is about loyalty, and a
moving vote would let one viewer be counted for both sides in the replay.

- ``votes`` scoring: each pick is one point for that side.
- ``gifts`` scoring: a pick is joining a team; every gift the member sends before the
  deadline adds ``value(gift) * n`` to their side, the value taken from the table given
  to ``Pks`` (names not in it are worth 1 per unit). A gift from someone on no side
  scores nothing (``on_gift`` returns 0 and the engine counts it), it is still a gift.

Entries close at the deadline (``now >= ends_at``) even if ``tick`` has not run yet,
so a late vote or gift never moves a final score. ``tick`` closes the battle at the
deadline; ``pk.close`` closes it earlier, or returns the same final result if it
already closed. The result stays on screen for ``RESULT_SHOW_S``.

Sans-I/O: ``now`` in, state and pushes out; no clock, no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from edge_node.interaction.effects import CommandError, Push
from edge_node.interaction.effects import arg as _arg
from edge_node.interaction.lottery import fold_keyword, id_arg, seconds_arg
from edge_node.overlay.scene import Pinned, PkBar

MAX_SIDE_CHARS: Final = 32
MAX_GIFT_VALUE: Final = 1_000_000
RESULT_SHOW_S: Final = 15.0
"""The final scores and the winner banner stay this long after the close."""
PUSH_INTERVAL_S: Final = 0.2
"""Live score pushes to clients, at most this often (the final one is not delayed)."""
DIGITS: Final = ("1", "2")

Scoring = Literal["gifts", "votes"]
PickOutcome = Literal["joined", "same_side"]


@dataclass(eq=False)
class Pk:
    pk: str
    sides: tuple[str, str]
    folded: tuple[str, str]
    scoring: Scoring
    opened_at: float
    ends_at: float
    scores: list[int] = field(default_factory=lambda: [0, 0])
    members: dict[str, int] = field(default_factory=dict)  # user -> side index
    closed_at: float | None = None

    @property
    def winner(self) -> int | None:
        """The leading side's index; None on a tie."""
        a, b = self.scores
        return None if a == b else (0 if a > b else 1)

    def result(self) -> dict[str, Any]:
        """The ``pk.close`` result: contract fields plus ``winner`` (a side, or None: draw)."""
        winner = self.winner
        return {
            "pk": self.pk,
            "scores": list(self.scores),
            "winner": None if winner is None else self.sides[winner],
        }


class Pks:
    """The node's PK battle (one at a time: there is one PK bar on screen).

    The engine calls ``open``/``close`` for the commands, ``pick`` for a ``vote`` on a
    poll id that ``is_pk`` says is the battle, ``on_comment`` for every accepted
    comment, ``on_gift`` for every accepted gift, ``tick`` when ``next_timer`` comes;
    it puts ``bar(now)`` and ``banner(now)`` on the scene when ``version`` changed and
    sends ``take_pushes()``.
    """

    def __init__(
        self,
        gift_values: Mapping[str, int] | None = None,
        fold: Callable[[str], str] = fold_keyword,
    ) -> None:
        values = dict(gift_values or {})
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"gift_values[{name!r}]: a positive integer, got {value!r}")
            if value > MAX_GIFT_VALUE:
                raise ValueError(f"gift_values[{name!r}]: at most {MAX_GIFT_VALUE}")
        self._gift_values = values
        self._fold = fold
        self.current: Pk | None = None  # the running battle, or the last one (its result)
        self._off_screen = False  # the last battle's result has left the screen
        self._pushes: list[Push] = []
        self._scores_dirty = False
        self._last_push = -1e9
        self.version = 0

    # ---- commands -------------------------------------------------------------------

    def open(self, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        pk_id = id_arg(args, "pk")
        sides = _arg(args, "sides", (list, tuple))
        if len(sides) != 2:
            raise CommandError("bad_message", f"args.sides: exactly 2 names, got {len(sides)}")
        for i, side in enumerate(sides):
            if not isinstance(side, str) or not side.strip() or len(side) > MAX_SIDE_CHARS:
                raise CommandError(
                    "bad_message", f"args.sides[{i}]: a name of 1..{MAX_SIDE_CHARS} characters"
                )
        folded = (self._fold(sides[0]), self._fold(sides[1]))
        if not folded[0] or not folded[1] or folded[0] == folded[1]:
            raise CommandError(
                "bad_message",
                "args.sides: two names that differ in letters, digits or symbols "
                "(viewers pick a side by typing its name)",
            )
        seconds = seconds_arg(args, required=True)
        assert seconds is not None
        scoring = _arg(args, "scoring", str)
        if scoring not in ("gifts", "votes"):
            raise CommandError("bad_message", f"args.scoring: 'gifts' or 'votes', got {scoring!r}")
        pk = self.current
        if pk is not None and pk.closed_at is None and now < pk.ends_at:
            raise CommandError("busy", f"pk '{pk.pk}' is running; close it first")
        if pk is not None:
            self._close(pk, now)  # ran out but no tick yet: its final result goes out first
        self.current = Pk(
            pk=pk_id,
            sides=(sides[0], sides[1]),
            folded=folded,
            scoring=scoring,
            opened_at=now,
            ends_at=now + seconds,
        )
        self._scores_dirty = False
        self._off_screen = False
        self._broadcast(
            {
                "pk": pk_id,
                "sides": list(sides),
                "scoring": scoring,
                "seconds": seconds,
                "scores": [0, 0],
                "closed": False,
            }
        )
        self.version += 1
        return {"pk": pk_id}

    def close(self, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        """``pk.close``: ends the battle now; after the deadline, the final result again."""
        pk = self._get(id_arg(args, "pk"))
        self._close(pk, now)
        return pk.result()

    # ---- viewers --------------------------------------------------------------------

    def is_pk(self, poll_id: str) -> bool:
        """Whether a ``vote`` for ``poll_id`` is a pick in the current battle."""
        return self.current is not None and self.current.pk == poll_id

    def pick(
        self, user: str, pk_id: str, option: int, now: float, eligible: bool = True
    ) -> PickOutcome:
        """A ``vote`` message for the battle: ``option`` 0 or 1 is the side.

        Refusals raise ``CommandError``: ``unknown_target`` (no such battle, or closed),
        ``bad_message`` (option), ``forbidden`` (not eligible, or already on the other side).
        """
        pk = self._get(pk_id)
        if not self._running(pk, now):
            raise CommandError("unknown_target", f"pk '{pk_id}' is closed")
        if option not in (0, 1):
            raise CommandError("bad_message", f"option: 0 or 1 in a pk, got {option}")
        if not eligible:
            raise CommandError("forbidden", "you may not take part in this pk")
        side = pk.members.get(user)
        if side is not None:
            if side == option:
                return "same_side"
            raise CommandError("forbidden", f"you are already on side '{pk.sides[side]}'")
        self._join(pk, user, option, now)
        return "joined"

    def on_comment(
        self, user: str, text: str, now: float, eligible: bool = True
    ) -> PickOutcome | None:
        """An accepted comment: a pick when it equals a side's name or ``1``/``2``.

        Never raises: a comment is not a request to the battle. None when it is not a
        pick (or not possible: no battle running, already on the other side, muted).
        """
        pk = self.current
        if pk is None or not eligible or not self._running(pk, now):
            return None
        folded = self._fold(text)
        if folded in pk.folded:
            option = pk.folded.index(folded)
        elif folded in DIGITS:
            option = DIGITS.index(folded)
        else:
            return None
        side = pk.members.get(user)
        if side is not None:
            return "same_side" if side == option else None
        self._join(pk, user, option, now)
        self._pushes.append(Push({"t": "state", "pk": pk.pk, "side": option}, user))
        return "joined"

    def on_gift(self, user: str, gift: str, n: int, now: float) -> int:
        """An accepted gift: the points it adds to the sender's side (0: not scored)."""
        pk = self.current
        if pk is None or pk.scoring != "gifts" or not self._running(pk, now):
            return 0
        side = pk.members.get(user)
        if side is None:
            return 0
        points = self._gift_values.get(gift, 1) * n
        pk.scores[side] += points
        self._scores_changed()
        return points

    # ---- time and output ------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Close at the deadline, take the result off screen, push live scores."""
        pk = self.current
        if pk is None:
            return
        if pk.closed_at is None and now >= pk.ends_at:
            self._close(pk, now)
        if not self._off_screen and self._shown(now) is None:
            self._off_screen = True
            self.version += 1
            return
        if self._scores_dirty and now >= self._last_push + PUSH_INTERVAL_S:  # as next_timer
            self._broadcast({"pk": pk.pk, "scores": list(pk.scores), "closed": False})
            self._scores_dirty = False
            self._last_push = now

    def next_timer(self, now: float) -> float | None:
        pk = self.current
        if pk is None or self._off_screen:
            return None
        if pk.closed_at is not None:
            return pk.closed_at + RESULT_SHOW_S
        times = [pk.ends_at]
        if self._scores_dirty:
            times.append(self._last_push + PUSH_INTERVAL_S)
        return min(times)

    def bar(self, now: float) -> PkBar | None:
        """The PK bar: live scores and the countdown; final scores once closed."""
        pk = self._shown(now)
        if pk is None:
            return None
        running = pk.closed_at is None
        return PkBar(pk.pk, pk.sides, (pk.scores[0], pk.scores[1]), pk.ends_at if running else None)

    def banner(self, now: float) -> Pinned | None:
        """The winner banner (a pinned line at the top) while the final result shows."""
        pk = self._shown(now)
        if pk is None or pk.closed_at is None:
            return None
        winner = pk.winner
        a, b = pk.scores
        text = f"🏆 {pk.sides[winner]} wins {a}:{b}" if winner is not None else f"draw {a}:{b}"
        return Pinned(f"pk-{pk.pk}", text, "top", pk.closed_at + RESULT_SHOW_S)

    def take_pushes(self) -> list[Push]:
        pushes, self._pushes = self._pushes, []
        return pushes

    # ---- internals ------------------------------------------------------------------

    def _get(self, pk_id: str) -> Pk:
        pk = self.current
        if pk is None or pk.pk != pk_id:
            raise CommandError("unknown_target", f"no pk '{pk_id}'")
        return pk

    @staticmethod
    def _running(pk: Pk, now: float) -> bool:
        return pk.closed_at is None and now < pk.ends_at

    def _shown(self, now: float) -> Pk | None:
        pk = self.current
        if pk is not None and pk.closed_at is not None and now >= pk.closed_at + RESULT_SHOW_S:
            return None
        return pk

    def _join(self, pk: Pk, user: str, option: int, now: float) -> None:
        pk.members[user] = option
        if pk.scoring == "votes":
            pk.scores[option] += 1
            self._scores_changed()

    def _scores_changed(self) -> None:
        self._scores_dirty = True
        self.version += 1

    def _close(self, pk: Pk, now: float) -> None:
        if pk.closed_at is not None:
            return
        # Closed at the deadline if it passed before anyone noticed: scores froze then.
        pk.closed_at = min(now, pk.ends_at)
        self._scores_dirty = False
        self._broadcast({**pk.result(), "closed": True})
        self.version += 1

    def _broadcast(self, state: dict[str, Any]) -> None:
        self._pushes.append(Push({"t": "state", **state}))
