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

Besides counts, a window carries the interaction latencies observed in it (a
histogram in milliseconds), the moderation and anti-cheat actions taken, and, at
close, the state of votes, PK and lottery and the node's health. ``merge_payloads``
joins two consecutive windows into one (the spool uses it when it is full, and
``rollup`` builds 10 s / 60 s views from the 1 s windows): counts add, nothing is
dropped, the result is flagged ``merged``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from edge_node.cloud.spool_state import MergeConflict, merge_counters

MAX_GAP_S = 60.0  # more empty windows than this in a row means the clock jumped
MAX_COUNT = 1_000_000  # a single event claiming more than this is clipped
TOP_WORDS = 10
# Upper bounds (ms) of the per-window latency histogram; the last bucket is "inf".
LATENCY_BOUNDS_MS: tuple[int, ...] = (10, 20, 35, 50, 75, 100, 150, 200, 500, 1000)

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
    latency_ms: dict[str, int] = field(default_factory=dict)  # bucket bound -> count
    actions: dict[str, dict[str, int]] = field(default_factory=dict)  # {source: {action: n}}
    state: dict[str, Any] = field(default_factory=dict)  # votes, PK, lottery at close

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
            "latency_ms": self.latency_ms,
            "actions": self.actions,
            "state": self.state,
            "empty": self.empty,
        }


def latency_bucket(seconds: float) -> str:
    """The histogram key for a latency: the smallest bound (ms) it fits under."""
    ms = seconds * 1000.0
    for bound in LATENCY_BOUNDS_MS:
        if ms <= bound:
            return str(bound)
    return "inf"


@dataclass
class _Window:
    start: int
    events: Counter[tuple[str, str]] = field(default_factory=Counter)
    users: set[str] = field(default_factory=set)
    words: Counter[str] = field(default_factory=Counter)
    likes: int = 0
    gift_value: int = 0
    flags: set[str] = field(default_factory=set)
    latency: Counter[str] = field(default_factory=Counter)
    actions: Counter[tuple[str, str]] = field(default_factory=Counter)


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
        window = self._window(start)
        if flag:
            window.flags.add(flag)
        window.events[(rec.type, rec.outcome)] += 1
        window.users.add(rec.user)
        if rec.outcome == "accepted":
            if rec.text:
                window.words.update(words_of(rec.text))
            window.likes += self._clip(window, rec.likes)
            window.gift_value += self._clip(window, rec.gift_value)

    def _window(self, start: int) -> _Window:
        """The open window starting at ``start`` (made when first needed: a _Window is
        seven containers, too dear to build for every event and throw away)."""
        window = self._open.get(start)
        if window is None:
            window = self._open[start] = _Window(start)
        return window

    def _window_for(self, t_wall: float, now: float) -> _Window:
        """The open window for ``t_wall``; the current one when that was already sent."""
        start = self._start_of(t_wall)
        if (self._next_start is not None and start < self._next_start) or t_wall > now + 1:
            start = self._start_of(now)
        if self._next_start is None:
            self._next_start = start
        return self._window(start)

    def add_latency(self, seconds: float, t_wall: float, now: float) -> None:
        """An interaction's event-to-frame latency, counted in the window it ended in."""
        self._check_clock(now)
        window = self._window_for(t_wall, now)
        if not 0.0 <= seconds < 3600.0:  # a clock step, not a latency
            window.flags.add("clipped")
            seconds = min(max(seconds, 0.0), 3600.0)
        window.latency[latency_bucket(seconds)] += 1

    def add_action(self, source: str, action: str, t_wall: float, now: float) -> None:
        """A moderation or anti-cheat action (``source`` moderation|anticheat|review)."""
        self._check_clock(now)
        self._window_for(t_wall, now).actions[(source, action)] += 1

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
            window = self._window(start)
            window.flags.add("clock_jump")
            if self._next_start is not None and (
                start < self._next_start or start - self._next_start > MAX_GAP_S
            ):
                self._next_start = min([start, *self._open])

    def close_due(
        self,
        now: float,
        health: dict[str, Any] | None = None,
        state: dict[str, Any] | None = None,
    ) -> list[Summary]:
        """Windows finished ``lateness_s`` ago, oldest first, gaps filled with empty ones.

        ``health`` and ``state`` are readings taken now, given to every window closed
        by this call (they describe the node as the windows close, not as they opened).
        """
        self._check_clock(now)
        if self._next_start is None:
            self._next_start = self._start_of(now)
        out: list[Summary] = []
        while self._next_start + self.window_s + self.lateness_s <= now:
            start = self._next_start
            window = self._open.pop(start, None) or _Window(start)
            out.append(self._summary(window, health or {}, state or {}))
            self._next_start = start + self.window_s
        return out

    def flush(
        self,
        now: float,
        health: dict[str, Any] | None = None,
        state: dict[str, Any] | None = None,
    ) -> list[Summary]:
        """At shutdown: every window up to and including the current one, without
        waiting for lateness. The current window is cut short and flagged ``partial``
        (the next process may send the rest of that second as another window)."""
        out = self.close_due(now, health, state)
        assert self._next_start is not None  # close_due anchored it
        end = max([self._start_of(now), *self._open])
        while self._next_start <= end:
            start = self._next_start
            window = self._open.pop(start, None) or _Window(start)
            window.flags.add("partial")
            out.append(self._summary(window, health or {}, state or {}))
            self._next_start = start + self.window_s
        return out

    def _summary(self, w: _Window, health: dict[str, Any], state: dict[str, Any]) -> Summary:
        events: dict[str, dict[str, int]] = {}
        for (kind, outcome), n in sorted(w.events.items()):
            events.setdefault(kind, {})[outcome] = n
        actions: dict[str, dict[str, int]] = {}
        for (source, action), n in sorted(w.actions.items()):
            actions.setdefault(source, {})[action] = n
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
            latency_ms=dict(sorted(w.latency.items())),
            actions=actions,
            state=state,
        )


# --- joining windows: the spool's merge when full, and roll-ups ------------------------


def _add_nested(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if key in out and isinstance(out[key], Mapping) and isinstance(value, Mapping):
            out[key] = _add_nested(out[key], value)
        elif key in out and isinstance(value, int) and isinstance(out[key], int):
            out[key] = out[key] + value
        else:
            out[key] = value
    return out


def merge_payload_maps(older: Mapping[str, Any], newer: Mapping[str, Any]) -> dict[str, Any]:
    """Join two summary payloads into one covering both windows (and what lies between).

    Counts add; top words are recounted from both lists; ``unique_users`` becomes the
    larger of the two (a lower bound: the same user may be in both), flagged
    ``merged``; health and state are the newer window's (they are readings, not counts).
    """
    a, b = dict(older), dict(newer)
    if a.get("start", 0) > b.get("start", 0):
        a, b = b, a
    start = int(a.get("start", 0))
    end = max(start + int(a.get("window_s", 1)), int(b["start"]) + int(b.get("window_s", 1)))
    words: Counter[str] = Counter()
    for w, n in [*a.get("top_words", []), *b.get("top_words", [])]:
        words[str(w)] += int(n)
    flags = set(a.get("flags", [])) | set(b.get("flags", [])) | {"merged"}
    events = _add_nested(a.get("events", {}), b.get("events", {}))
    return {
        "start": start,
        "window_s": end - start,
        "events": events,
        "unique_users": max(int(a.get("unique_users", 0)), int(b.get("unique_users", 0))),
        "top_words": [[w, n] for w, n in words.most_common(TOP_WORDS)],
        "likes": int(a.get("likes", 0)) + int(b.get("likes", 0)),
        "gift_value": int(a.get("gift_value", 0)) + int(b.get("gift_value", 0)),
        "flags": sorted(flags),
        "health": b.get("health", {}) or a.get("health", {}),
        "latency_ms": _add_nested(a.get("latency_ms", {}), b.get("latency_ms", {})),
        "actions": _add_nested(a.get("actions", {}), b.get("actions", {})),
        "state": b.get("state", {}) or a.get("state", {}),
        "empty": not events,
    }


def merge_payloads(older: bytes, newer: bytes) -> bytes:
    """``merge_payload_maps`` on msgpack bytes (the spool's representation)."""
    a = msgpack.unpackb(older, raw=False, strict_map_key=False)
    b = msgpack.unpackb(newer, raw=False, strict_map_key=False)
    if not isinstance(a, dict) or not isinstance(b, dict) or "start" not in b:
        raise ValueError("a summary payload is a msgpack map with a start")
    return msgpack.packb(merge_payload_maps(a, b), use_bin_type=True)  # type: ignore[no-any-return]


def rollup(payloads: Iterable[Mapping[str, Any]], span_s: int) -> list[dict[str, Any]]:
    """Roll 1 s windows (payload maps, any order) up into ``span_s`` windows.

    Each output window starts at a multiple of ``span_s`` and is the merge of the
    windows that start inside it (flagged ``merged`` when it joined more than one).
    Windows of one node only: merging two nodes' windows would add their health.
    """
    if span_s < 1:
        raise ValueError("span_s must be at least 1")
    groups: dict[int, dict[str, Any]] = {}
    for p in sorted(payloads, key=lambda p: int(p.get("start", 0))):
        key = int(p.get("start", 0)) // span_s * span_s
        if key in groups:
            groups[key] = merge_payload_maps(groups[key], p)
        else:
            groups[key] = dict(p)
    for key, g in groups.items():
        g["start"], g["window_s"] = key, span_s
    return [groups[k] for k in sorted(groups)]


def merge_spooled(kind: str, older: bytes, newer: bytes) -> bytes:
    """The spool's merge function: summaries join as windows, other kinds add as counters."""
    if kind != "summary":
        return merge_counters(kind, older, newer)
    try:
        return merge_payloads(older, newer)
    except (ValueError, TypeError, KeyError) as exc:
        raise MergeConflict(kind, str(exc)) from None
