"""The danmaku board: lanes, merging and density for bullet comments. Sans-I/O.

Inputs are comments and ``now`` (CLOCK_MONOTONIC seconds); the output is the tuple of
``Danmaku`` to put in the next scene. Every comment ends up counted exactly once as
shown, merged (an identical one already on screen: ``666 x57``) or dropped (waited
too long for a lane), or is still queued; none is lost silently.

Geometry: a comment starts with its left edge at the right edge of the picture and
moves left at ``speed_px_s + speed_per_px * width`` (wider ones are faster, so long
comments cross in about the same time). A lane takes a new comment only when the
previous one has fully entered with ``gap_px`` to spare and, if the new one is
faster, it cannot catch up before the previous one has left.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from edge_node.overlay.scene import Danmaku, Style

# Width reserved for a " x999" merge counter, so a merged comment never grows into the
# one behind it.
MERGE_SUFFIX = " x999"
QUEUE_LIMIT = 200
MAX_WAIT_S = 2.0


def lane_y(style: Style, frame_height: int, lane: int) -> int:
    """Top of ``lane``: the lanes share the top ``lane_area`` of the picture."""
    usable = int(frame_height * style.lane_area) - style.safe_margin_px
    pitch = max(1, usable // max(1, style.lanes))
    return style.safe_margin_px + lane * pitch


@dataclass(slots=True)
class _OnScreen:
    item: Danmaku
    base_text: str
    count: int


@dataclass(slots=True)
class _Queued:
    id: str
    text: str
    highlight: bool
    since: float


@dataclass
class BoardCounters:
    shown: int = 0
    merged: int = 0
    dropped: int = 0


class DanmakuBoard:
    def __init__(
        self,
        style: Style,
        frame_width: int,
        frame_height: int,
        measure: Callable[[str, int], int],
    ) -> None:
        self.style = style
        self.width = frame_width
        self.height = frame_height
        self._measure = measure
        self._on_screen: dict[str, _OnScreen] = {}  # by id
        self._by_text: dict[str, str] = {}  # normalised text -> id on screen
        self._last_in_lane: dict[int, Danmaku] = {}
        self._queue: collections.deque[_Queued] = collections.deque()
        self.counters = BoardCounters()

    # ---- inputs ---------------------------------------------------------------------

    def set_style(self, style: Style) -> None:
        self.style = style

    def add(self, comment_id: str, text: str, now: float, highlight: bool = False) -> str:
        """Offer a comment; returns "shown", "merged", "queued" or "dropped"."""
        self._expire(now)
        key = " ".join(text.split()).casefold()
        same = self._by_text.get(key)
        if same is not None and not highlight:
            entry = self._on_screen[same]
            entry.count += 1
            entry.item = dataclasses.replace(entry.item, count=entry.count)
            self.counters.merged += 1
            return "merged"
        queued = _Queued(comment_id, text, highlight, now)
        if self._place(queued, now):
            return "shown"
        if len(self._queue) >= QUEUE_LIMIT:
            victim = next((q for q in self._queue if not q.highlight), None)
            if victim is None or not highlight:
                self.counters.dropped += 1
                return "dropped"
            self._queue.remove(victim)
            self.counters.dropped += 1
        if highlight:
            # Gift senders go ahead of everyone not gifting.
            idx = next((i for i, q in enumerate(self._queue) if not q.highlight), len(self._queue))
            self._queue.insert(idx, queued)
        else:
            self._queue.append(queued)
        return "queued"

    def tick(self, now: float) -> None:
        """Expire what has left the picture, drop stale queued comments, place the rest."""
        self._expire(now)
        stale = [q for q in self._queue if now - q.since > MAX_WAIT_S]
        for q in stale:
            self._queue.remove(q)
            self.counters.dropped += 1
        while self._queue and self._place(self._queue[0], now):
            self._queue.popleft()

    # ---- outputs --------------------------------------------------------------------

    def items(self) -> tuple[Danmaku, ...]:
        return tuple(e.item for e in self._on_screen.values())

    @property
    def queued(self) -> int:
        return len(self._queue)

    def next_change(self, now: float) -> float | None:
        """When ``tick`` has something to do next (a comment leaves or a queued one waits
        too long): for the adapter's single timer."""
        times = [self._exit_time(e.item) for e in self._on_screen.values()]
        if self._queue:
            times.append(self._queue[0].since + MAX_WAIT_S)
        return min(times) if times else None

    # ---- geometry -------------------------------------------------------------------

    def speed(self, width: int) -> float:
        return self.style.speed_px_s + self.style.speed_per_px * width

    def x_at(self, item: Danmaku, t: float) -> float:
        return self.width - item.speed_px_s * (t - item.start)

    def _exit_time(self, item: Danmaku) -> float:
        return item.start + (self.width + item.width_px) / item.speed_px_s

    def _lane_free(self, lane: int, width: int, speed: float, now: float) -> bool:
        prev = self._last_in_lane.get(lane)
        if prev is None:
            return True
        gap = self.style.gap_px
        prev_right = self.x_at(prev, now) + prev.width_px
        if prev_right + gap > self.width:
            return False  # not fully entered yet
        if speed > prev.speed_px_s:
            # Where our left edge is when the previous one has fully left.
            t_exit = self._exit_time(prev)
            if self.width - speed * (t_exit - now) < gap:
                return False
        return True

    def _place(self, q: _Queued, now: float) -> bool:
        s = self.style
        if len(self._on_screen) >= s.max_on_screen:
            return False
        width = self._measure(q.text + MERGE_SUFFIX, s.font_size_px)
        speed = self.speed(width)
        for lane in range(s.lanes):
            if self._lane_free(lane, width, speed, now):
                item = Danmaku(q.id, q.text, lane, now, speed, width, q.highlight)
                self._on_screen[q.id] = _OnScreen(item, q.text, 1)
                self._by_text[" ".join(q.text.split()).casefold()] = q.id
                self._last_in_lane[lane] = item
                self.counters.shown += 1
                return True
        return False

    def _expire(self, now: float) -> None:
        gone = [i for i, e in self._on_screen.items() if self._exit_time(e.item) <= now]
        for comment_id in gone:
            entry = self._on_screen.pop(comment_id)
            key = " ".join(entry.base_text.split()).casefold()
            if self._by_text.get(key) == comment_id:
                del self._by_text[key]
