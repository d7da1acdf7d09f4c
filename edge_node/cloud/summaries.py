"""One-second summaries of what happened: the windowing of issue 7. Sans-I/O.

Events go in with their wall-clock time (``add``); ``close_due(now)`` returns the
windows whose end plus the allowed lateness has passed, oldest first, as frozen
``Summary`` records ready for the spool. Windows are aligned to the wall clock
(``start`` is a whole multiple of ``window_s``). Data hygiene:

- a window with nothing in it is still emitted, flagged ``empty``, so the cloud can
  tell "nothing happened" from "nothing arrived";
- an event later than the lateness allows is counted in the current window and
  flagged ``late``, never dropped;
- a clock jump (wall time going backwards, or forwards by more than ``MAX_GAP_S``) is
  flagged ``clock_jump`` and the windows re-anchor instead of emitting thousands of
  empty ones;
- absurd values (negative or enormous counts) are clipped and flagged ``clipped``.

Duplicates never reach this module: the engine acks a repeated (user, id) without
applying it, and only applied events are recorded here.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_GAP_S = 60.0  # more empty windows than this in a row means the clock jumped
MAX_COUNT = 1_000_000  # a single event claiming more than this is clipped
TOP_WORDS = 10

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[^\W_]{2,}|\d+", re.UNICODE)


def words_of(text: str) -> list[str]:
    """Countable words: Latin-like words (lower-cased), numbers ("666"), and Chinese
    runs split into overlapping two-character pieces (Chinese has no spaces, and
    bigrams catch most words without a dictionary)."""
    out: list[str] = []
    for run in _CJK.findall(text):
        if len(run) == 1:
            out.append(run)
        out.extend(run[i : i + 2] for i in range(len(run) - 1))
    rest = _CJK.sub(" ", text)
    out.extend(w.casefold() for w in _WORD.findall(rest))
    return out


@dataclass(frozen=True, slots=True)
class EventRecord:
    t_wall: float  # Unix seconds when the event arrived
    user: str
    type: str  # comment | like | vote | join | gift | command | probe
    outcome: str  # accepted | rate_limited | forbidden | bad_message | blocked | ...
    text: str = ""
    likes: int = 0
    gift_value: int = 0


@dataclass(frozen=True, slots=True)
class Summary:
    start: int  # window start, Unix seconds
    window_s: int
    events: dict[str, dict[str, int]]  # {type: {outcome: count}}
    unique_users: int
    top_words: list[tuple[str, int]]
    likes: int
    gift_value: int
    flags: tuple[str, ...] = ()
    health: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.events

    def to_payload(self) -> dict[str, Any]:
        """The msgpack map sent to the cloud (documented in proto/edge_node/v1)."""
        return {
            "start": self.start,
            "window_s": self.window_s,
            "events": self.events,
            "unique_users": self.unique_users,
            "top_words": [list(w) for w in self.top_words],
            "likes": self.likes,
            "gift_value": self.gift_value,
            "flags": list(self.flags),
            "health": self.health,
            "empty": self.empty,
        }


@dataclass
class _Window:
    start: int
    events: Counter[tuple[str, str]] = field(default_factory=Counter)
    users: set[str] = field(default_factory=set)
    words: Counter[str] = field(default_factory=Counter)
    likes: int = 0
    gift_value: int = 0
    flags: set[str] = field(default_factory=set)


class SummaryWindows:
    def __init__(self, window_s: int = 1, lateness_s: float = 2.0) -> None:
        if window_s < 1:
            raise ValueError("window_s must be at least 1")
        self.window_s = window_s
        self.lateness_s = lateness_s
        self._open: dict[int, _Window] = {}
        self._next_start: int | None = None  # the oldest window not yet emitted
        self._last_now: float | None = None
        self.late_events = 0

    def _start_of(self, t: float) -> int:
        return math.floor(t / self.window_s) * self.window_s

    def add(self, rec: EventRecord, now: float) -> None:
        self._check_clock(now)
        start = self._start_of(rec.t_wall)
        late = self._next_start is not None and start < self._next_start
        if late or rec.t_wall > now + self.window_s:
            # Too late to change a window already sent (or from the future): count it
            # in the current window and say so.
            start = self._start_of(now)
            self.late_events += 1
            flag: str | None = "late"
        else:
            flag = None
        if self._next_start is None:
            self._next_start = start
        window = self._open.setdefault(start, _Window(start))
        if flag:
            window.flags.add(flag)
        window.events[(rec.type, rec.outcome)] += 1
        window.users.add(rec.user)
        if rec.outcome == "accepted":
            if rec.text:
                window.words.update(words_of(rec.text))
            window.likes += self._clip(window, rec.likes)
            window.gift_value += self._clip(window, rec.gift_value)

    @staticmethod
    def _clip(window: _Window, value: int) -> int:
        if 0 <= value <= MAX_COUNT:
            return value
        window.flags.add("clipped")
        return min(max(value, 0), MAX_COUNT)

    def _check_clock(self, now: float) -> None:
        last = self._last_now
        self._last_now = now
        if last is None:
            return
        if now < last - 1.0 or now > last + MAX_GAP_S:
            # The wall clock jumped (NTP step, suspend): flag the window we continue in
            # and re-anchor rather than emit a flood of empty windows.
            start = self._start_of(now)
            window = self._open.setdefault(start, _Window(start))
            window.flags.add("clock_jump")
            if self._next_start is not None and (
                start < self._next_start or start - self._next_start > MAX_GAP_S
            ):
                self._next_start = min([start, *self._open])

    def close_due(self, now: float, health: dict[str, Any] | None = None) -> list[Summary]:
        """Windows finished ``lateness_s`` ago, oldest first, gaps filled with empty ones."""
        self._check_clock(now)
        if self._next_start is None:
            self._next_start = self._start_of(now)
        out: list[Summary] = []
        while self._next_start + self.window_s + self.lateness_s <= now:
            start = self._next_start
            window = self._open.pop(start, None) or _Window(start)
            out.append(self._summary(window, health or {}))
            self._next_start = start + self.window_s
        return out

    def _summary(self, w: _Window, health: dict[str, Any]) -> Summary:
        events: dict[str, dict[str, int]] = {}
        for (kind, outcome), n in sorted(w.events.items()):
            events.setdefault(kind, {})[outcome] = n
        return Summary(
            start=w.start,
            window_s=self.window_s,
            events=events,
            unique_users=len(w.users),
            top_words=w.words.most_common(TOP_WORDS),
            likes=w.likes,
            gift_value=w.gift_value,
            flags=tuple(sorted(w.flags)),
            health=health,
        )
