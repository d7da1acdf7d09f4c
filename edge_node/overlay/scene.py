"""Immutable scene snapshots: what the compositor draws on every frame.

The interaction engine (control process) publishes a new snapshot on every change;
the media worker keeps the latest one and reads it at every frame without a lock
(replacing a reference is atomic). Snapshots are small: widget states and start
times; sprites are rendered and cached in the worker.

Times are CLOCK_MONOTONIC seconds, a clock both processes share; the compositor
animates from a frame's capture time, so motion stays smooth at any frame rate and
across dropped frames.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from edge_node.config import OverlayConfig, parse_color


@dataclass(frozen=True, slots=True)
class Style:
    """Layout and look; changeable at run time (``overlay.style``)."""

    font_size_px: int = 32
    lanes: int = 10
    lane_area: float = 0.66  # danmaku use the top two thirds of the picture
    speed_px_s: float = 160.0  # base speed; wider comments move faster
    speed_per_px: float = 0.25  # extra px/s per px of width, so long ones clear in time
    gap_px: int = 24  # least distance between two comments on one lane
    max_on_screen: int = 60
    text_rgba: tuple[int, int, int, int] = (255, 255, 255, 255)
    outline_rgba: tuple[int, int, int, int] = (0, 0, 0, 200)
    highlight_rgba: tuple[int, int, int, int] = (255, 214, 64, 255)  # gift senders
    opacity: float = 1.0
    safe_margin_px: int = 16
    bar_rgba: tuple[tuple[int, int, int, int], ...] = (
        (64, 160, 255, 220),
        (255, 96, 96, 220),
        (96, 220, 128, 220),
        (255, 200, 64, 220),
    )
    panel_rgba: tuple[int, int, int, int] = (0, 0, 0, 140)

    @classmethod
    def from_config(cls, overlay: OverlayConfig) -> Style:
        return cls(
            font_size_px=overlay.font_size_px,
            lanes=overlay.lanes,
            lane_area=overlay.lane_area,
            speed_px_s=overlay.speed_px_s,
            max_on_screen=overlay.max_on_screen,
            opacity=overlay.opacity,
            safe_margin_px=overlay.safe_margin_px,
            text_rgba=parse_color(overlay.text_color),
            outline_rgba=parse_color(overlay.outline_color),
            highlight_rgba=parse_color(overlay.highlight_color),
        )


@dataclass(frozen=True, slots=True)
class Danmaku:
    id: str
    text: str  # the comment, e.g. "666"
    lane: int
    start: float  # when its left edge is at the right edge of the picture
    speed_px_s: float
    width_px: int  # measured when it was placed (the lane allocator's width)
    highlight: bool = False
    count: int = 1  # identical comments merged into this one: shown as "666 x57"

    @property
    def counter(self) -> str:
        """The merge counter drawn after the text (its own sprite: a count that changes
        every frame re-renders a few digits, not the whole comment), or ""."""
        return f" x{self.count}" if self.count > 1 else ""

    @property
    def shown(self) -> str:
        return self.text + self.counter


@dataclass(frozen=True, slots=True)
class Pinned:
    id: str
    text: str
    position: str  # "top" | "bottom"
    until: float


@dataclass(frozen=True, slots=True)
class VoteBar:
    poll: str
    question: str
    options: tuple[str, ...]
    counts: tuple[int, ...]
    ends_at: float | None = None


@dataclass(frozen=True, slots=True)
class PkBar:
    pk: str
    sides: tuple[str, str]
    scores: tuple[int, int]
    ends_at: float | None = None


@dataclass(frozen=True, slots=True)
class LotteryBanner:
    lottery: str
    keyword: str
    entrants: int
    ends_at: float | None = None
    winners: tuple[str, ...] | None = None  # set once drawn


@dataclass(frozen=True, slots=True)
class GiftAlert:
    id: str
    user: str
    gift: str
    n: int
    start: float


@dataclass(frozen=True, slots=True)
class Ticker:
    text: str
    start: float
    until: float | None = None


@dataclass(frozen=True, slots=True)
class Logo:
    path: str  # PNG with alpha, read (and cached) by the worker
    x: int
    y: int
    opacity: float = 1.0


@dataclass(frozen=True, slots=True)
class LikeCounter:
    total: int
    burst_until: float = 0.0  # glows until then (a burst of likes)


@dataclass(frozen=True, slots=True)
class Scene:
    version: int = 0
    style: Style = field(default_factory=Style)
    danmaku: tuple[Danmaku, ...] = ()
    pinned: tuple[Pinned, ...] = ()
    vote: VoteBar | None = None
    pk: PkBar | None = None
    lottery: LotteryBanner | None = None
    gifts: tuple[GiftAlert, ...] = ()
    ticker: Ticker | None = None
    logo: Logo | None = None
    probe: int | None = None  # the latency probe's seq, drawn only when bench.probe is on
    likes: LikeCounter | None = None
    # Arrival time of the oldest event this snapshot is the first to show (monotonic):
    # the worker reports it with the first frame that carries it (latency accounting).
    changed_at: float | None = None

    @property
    def is_empty(self) -> bool:
        """Nothing to draw: the compositor passes the frame through untouched."""
        return not (
            self.danmaku
            or self.pinned
            or self.vote
            or self.pk
            or self.lottery
            or self.gifts
            or self.ticker
            or self.logo
            or self.probe is not None
            or self.likes
        )

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Scene:
        scene: Scene = _build(cls, data)
        return scene


_NESTED: dict[tuple[type[Any], str], type[Any]] = {
    (Scene, "style"): Style,
    (Scene, "danmaku"): Danmaku,
    (Scene, "pinned"): Pinned,
    (Scene, "vote"): VoteBar,
    (Scene, "pk"): PkBar,
    (Scene, "lottery"): LotteryBanner,
    (Scene, "gifts"): GiftAlert,
    (Scene, "ticker"): Ticker,
    (Scene, "logo"): Logo,
    (Scene, "likes"): LikeCounter,
}


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _build(cls: type[Any], data: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in names:
            continue  # a newer control process may send more; ignore what we don't draw
        nested = _NESTED.get((cls, key))
        if nested is not None and value is not None:
            if isinstance(value, list):
                kwargs[key] = tuple(_build(nested, v) for v in value)
            else:
                kwargs[key] = _build(nested, value)
        else:
            kwargs[key] = _tuples(value)
    return cls(**kwargs)


EMPTY_SCENE = Scene()
