"""Coupon drops: the first N matching commenters each get one code, exactly once.

``coupon.open`` gives a drop id, an optional keyword and a pool of codes. Every
accepted comment that matches (equal to the keyword after ``fold_keyword``; any comment when
the drop has no keyword) from a user who has no code from this drop yet takes the next
code from the pool, in the order the operator listed them; the code is pushed to that
user's connections. When the pool runs dry the drop closes (and everyone is told).

Why it cannot hand out a code twice or give a user two: the engine is single-threaded
and every award is one step (pop a code, record user -> code) with no await between;
"concurrent" requests are interleavings of ``on_comment`` calls, each of which sees
the previous one's result. A code is refused at ``coupon.open`` if any drop on this
node already issued it or holds it in an open pool. A user who reconnects gets the same
code again from ``codes_for``, never a new one.

Sans-I/O: ``now`` in, pushes out; no clock, no asyncio.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from edge_node.interaction.effects import CommandError, Push
from edge_node.interaction.effects import arg as _arg
from edge_node.interaction.lottery import fold_keyword, id_arg, keyword_arg

MAX_CODES: Final = 100_000
MAX_CODE_CHARS: Final = 64
MAX_OPEN_DROPS: Final = 8
CLOSED_KEPT: Final = 64
"""Closed drops remembered for ``codes_for`` and the console, oldest forgotten (their
codes stay remembered as issued, so they are still never handed out again)."""


@dataclass(eq=False)
class Drop:
    drop: str
    keyword: str | None
    match: str | None  # folded keyword; None: any comment
    pool: deque[str]  # codes not yet given, in the operator's order
    total: int
    opened_at: float
    awarded: dict[str, str] = field(default_factory=dict)  # user -> code, award order
    closed_at: float | None = None
    closed_because: str | None = None  # "exhausted" | "closed by operator"

    def status(self) -> dict[str, Any]:
        return {
            "drop": self.drop,
            "keyword": self.keyword,
            "open": self.closed_at is None,
            "issued": len(self.awarded),
            "left": len(self.pool),
            "total": self.total,
            "closed_because": self.closed_because,
        }


class CouponDrops:
    """Every coupon drop on this node.

    The engine calls ``open`` (``coupon.open``), ``close`` (a ``coupon.close`` command
    if it offers one), ``on_comment`` for every accepted comment, and sends
    ``take_pushes()``; the console reads ``status()``; a reconnecting viewer can be sent
    ``codes_for(user)`` again.
    """

    def __init__(self, fold: Callable[[str], str] = fold_keyword) -> None:
        self._fold = fold
        self._drops: dict[str, Drop] = {}  # insertion order = opening order
        self._issued: dict[str, str] = {}  # code -> drop that gave it out
        self._pushes: list[Push] = []

    def open(self, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        drop_id = id_arg(args, "drop")
        keyword, match = keyword_arg(args, self._fold)
        codes = _arg(args, "codes", (list, tuple))
        if not 1 <= len(codes) <= MAX_CODES:
            raise CommandError("bad_message", f"args.codes: 1..{MAX_CODES} codes")
        current = self._drops.get(drop_id)
        if current is not None and current.closed_at is None:
            raise CommandError("busy", f"drop '{drop_id}' is already open")
        open_drops = [d for d in self._drops.values() if d.closed_at is None]
        if len(open_drops) >= MAX_OPEN_DROPS:
            raise CommandError("busy", f"{len(open_drops)} drops are open; close one first")
        pooled = {code: d.drop for d in open_drops for code in d.pool}
        first_at: dict[str, int] = {}
        for i, code in enumerate(codes):
            if not isinstance(code, str) or not code.strip() or len(code) > MAX_CODE_CHARS:
                raise CommandError(
                    "bad_message", f"args.codes[{i}]: a code of 1..{MAX_CODE_CHARS} characters"
                )
            if code in first_at:
                raise CommandError(
                    "bad_message", f"args.codes[{i}]: the same code as args.codes[{first_at[code]}]"
                )
            first_at[code] = i
            owner = self._issued.get(code) or pooled.get(code)
            if owner is not None:
                raise CommandError(
                    "bad_message", f"args.codes[{i}]: already in drop '{owner}' on this node"
                )
        self._drops.pop(drop_id, None)  # a closed drop of the same name: replaced
        self._drops[drop_id] = Drop(
            drop=drop_id,
            keyword=keyword,
            match=match,
            pool=deque(codes),
            total=len(codes),
            opened_at=now,
        )
        self._forget_old()
        self._broadcast({"coupon": drop_id, "open": True, "keyword": keyword})
        return {"drop": drop_id}

    def close(self, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        """Ends a drop early; codes left in its pool are never handed out by it."""
        drop = self._get(id_arg(args, "drop"))
        self._close(drop, now, "closed by operator")
        return {"drop": drop.drop, "issued": len(drop.awarded), "left": len(drop.pool)}

    def on_comment(
        self, user: str, text: str, now: float, eligible: bool = True
    ) -> list[tuple[str, str]]:
        """An accepted comment: the (drop, code) pairs newly awarded to ``user``.

        Each award is pushed to the user as ``{"t": "state", "coupon": DROP, "code":
        CODE}``. A user who already has a code from a drop gets nothing more from it.
        """
        if not eligible:
            return []
        open_drops = [d for d in self._drops.values() if d.closed_at is None]
        if not open_drops:
            return []
        folded: str | None = None
        awards: list[tuple[str, str]] = []
        for drop in open_drops:
            if user in drop.awarded:
                continue
            if drop.match is not None:
                if folded is None:
                    folded = self._fold(text)
                if folded != drop.match:
                    continue
            code = drop.pool.popleft()
            drop.awarded[user] = code
            self._issued[code] = drop.drop
            awards.append((drop.drop, code))
            self._pushes.append(Push({"t": "state", "coupon": drop.drop, "code": code}, user))
            if not drop.pool:
                self._close(drop, now, "exhausted")
        return awards

    def codes_for(self, user: str) -> list[tuple[str, str]]:
        """Every (drop, code) this user was given (still remembered), to send again."""
        return [(d.drop, d.awarded[user]) for d in self._drops.values() if user in d.awarded]

    def status(self) -> list[dict[str, Any]]:
        """For the console: each drop's counts, newest last (the codes stay private)."""
        return [d.status() for d in self._drops.values()]

    def take_pushes(self) -> list[Push]:
        pushes, self._pushes = self._pushes, []
        return pushes

    def _get(self, drop_id: str) -> Drop:
        drop = self._drops.get(drop_id)
        if drop is None:
            raise CommandError("unknown_target", f"no drop '{drop_id}'")
        return drop

    def _close(self, drop: Drop, now: float, because: str) -> None:
        if drop.closed_at is not None:
            return
        drop.closed_at = now
        drop.closed_because = because
        self._broadcast({"coupon": drop.drop, "open": False, "issued": len(drop.awarded)})

    def _forget_old(self) -> None:
        closed = [d.drop for d in self._drops.values() if d.closed_at is not None]
        for drop_id in closed[: max(0, len(closed) - CLOSED_KEPT)]:
            del self._drops[drop_id]

    def _broadcast(self, state: dict[str, Any]) -> None:
        self._pushes.append(Push({"t": "state", **state}))
