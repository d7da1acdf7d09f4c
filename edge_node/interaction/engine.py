"""The interaction engine: every viewer, operator and cloud event goes through here.

Sans-I/O: ``handle`` takes a decoded message, who sent it and ``now`` (monotonic
seconds); it returns the effects (the reply to the sender, state pushed to clients)
and updates the state the scene is built from. No sockets, no clocks, no asyncio:
the WebSocket, the WHEP data channel, the operator console and the cloud link are
thin adapters that all call ``handle`` (or ``command``), then ``tick`` when
``next_timer`` says so.

Order of checks for a message: role allowed -> dedup (user, id) -> rate limit ->
feature. Every message with an id gets exactly one ``ack`` or ``err``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_node.config import AnticheatConfig, Config, OverlayConfig
from edge_node.errors import ConfigError
from edge_node.interaction import auth
from edge_node.interaction.anticheat import (
    VIEWER_KINDS,
    AntiCheat,
    AntiCheatParams,
    UnknownReviewEntry,
)
from edge_node.interaction.audit import MemoryAudit
from edge_node.interaction.autoreply import AutoReplies
from edge_node.interaction.coupons import CouponDrops
from edge_node.interaction.effects import CommandError, Effect, Push, Reply
from edge_node.interaction.effects import arg as _arg
from edge_node.interaction.lottery import Lotteries
from edge_node.interaction.messages import (
    Command,
    Comment,
    Gift,
    Join,
    Like,
    Message,
    Probe,
    Vote,
    WireError,
    ack,
    err,
)
from edge_node.interaction.moderation import Moderation, ReviewError, WordListError
from edge_node.interaction.pk import Pks
from edge_node.interaction.ratelimit import Dedup, KeyedLimiter
from edge_node.overlay.lanes import DanmakuBoard
from edge_node.overlay.scene import (
    GiftAlert,
    LikeCounter,
    Pinned,
    Scene,
    Style,
    Ticker,
    VoteBar,
)

# Likes within this window that count as a burst (the counter glows).
LIKE_BURST_WINDOW_S = 1.0
LIKE_BURST_LIKES = 50
LIKE_BURST_SHOW_S = 1.5
GIFT_ALERTS_KEPT = 8
GIFT_PRIORITY_S = 300.0  # a gift sender's comments are highlighted this long
STATE_PUSH_INTERVAL_S = 0.2  # pushed vote tallies, at most this often
DEDUP_WINDOW = 100_000
MAX_LIMITER_KEYS = 100_000
ANNOUNCE_DEFAULT_S = 30.0
MAX_COMMAND_WORD_CHARS = 20_000  # words.set: ~40 ms to compile (see _cmd_words_set)
# overlay.style: the bounds of the config keys, and of the style's own extras.
_STYLE_BOUNDS: dict[str, tuple[float, float]] = {
    f.name: (f.metadata["min"], f.metadata["max"])
    for f in dataclasses.fields(OverlayConfig)
    if f.metadata.get("min") is not None and f.name in {g.name for g in dataclasses.fields(Style)}
} | {"speed_per_px": (0.0, 10.0), "gap_px": (0.0, 1000.0)}


@dataclass
class Poll:
    poll: str
    question: str
    options: tuple[str, ...]
    ends_at: float | None
    votes: dict[str, int] = field(default_factory=dict)  # user -> option
    closed: bool = False

    def totals(self) -> list[int]:
        counts = Counter(self.votes.values())
        return [counts.get(i, 0) for i in range(len(self.options))]


class Engine:
    def __init__(
        self,
        cfg: Config,
        measure: Callable[[str, int], int],
        *,
        moderation: Moderation | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """``measure(text, font_px)`` gives a text's width (the lane allocator's);
        ``moderation`` holds the word list, review queue and audit log (in memory when
        not given); ``random_bytes`` seeds lottery draws (the OS's CSPRNG by default)."""
        self.cfg = cfg
        self.moderation = moderation or Moderation(MemoryAudit(maxlen=10_000))
        self._random_bytes = random_bytes
        # Wall clock = now + wall_offset: for the audit log and summaries only (the
        # adapter sets it; the engine's own timing is all on the monotonic ``now``).
        self.wall_offset = 0.0
        self.lotteries = Lotteries()
        self.pks = Pks()
        self.coupons = CouponDrops()
        self.autoreplies = AutoReplies()
        self.anticheat = anticheat_from_config(cfg.anticheat)
        self._anticheat_swept = -1e9
        self.last_outcome = ""  # of the last message handled (the adapter counts it)
        self._feature_versions = self._versions()
        # (source, action) of each moderation / anti-cheat action, for the summaries.
        self._actions: list[tuple[str, str]] = []
        ic = cfg.interaction
        self.style = Style.from_config(cfg.overlay)
        self.board = DanmakuBoard(self.style, cfg.video.width, cfg.video.height, measure)
        self.vote_change_allowed = cfg.interaction.vote_change_allowed
        self._dedup = Dedup(DEDUP_WINDOW)
        self._limits: dict[str, KeyedLimiter[str]] = {
            "comment": KeyedLimiter(ic.comment_rate_per_s, ic.comment_burst, MAX_LIMITER_KEYS),
            "like": KeyedLimiter(ic.like_rate_per_s, ic.like_burst, MAX_LIMITER_KEYS),
            "vote": KeyedLimiter(ic.vote_rate_per_s, ic.vote_burst, MAX_LIMITER_KEYS),
            "join": KeyedLimiter(ic.vote_rate_per_s, ic.vote_burst, MAX_LIMITER_KEYS),
        }
        self.muted: dict[str, float | None] = {}  # user -> until (None: until unmuted)
        self.polls: dict[str, Poll] = {}
        self.poll_on_screen: str | None = None
        self.likes = 0
        self._like_times: deque[tuple[float, int]] = deque()
        self._likes_in_window = 0  # the sum of _like_times, kept as it changes
        self._like_burst_until = 0.0
        self.gifts: deque[GiftAlert] = deque(maxlen=GIFT_ALERTS_KEPT)
        self._gift_senders: dict[str, float] = {}
        self.ticker: Ticker | None = None
        self.probe: int | None = None
        self._dirty_polls: set[str] = set()
        self._pushes: list[Push] = []
        self._last_state_push = -1e9
        # Scene versioning: bumped on every visible change; ``changed_at`` is the
        # arrival time of the oldest change not yet published (latency accounting).
        self.version = 0
        self.changed_at: float | None = None
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (type, outcome) -> n
        self._commands: dict[str, Callable[[str, Mapping[str, Any], float], dict[str, Any]]] = {
            "announce": self._cmd_announce,
            "mute": self._cmd_mute,
            "unmute": self._cmd_unmute,
            "poll.open": self._cmd_poll_open,
            "poll.close": self._cmd_poll_close,
            "overlay.style": self._cmd_style,
            "lottery.open": lambda u, a, n: self.lotteries.open(a, n, self._random_bytes(32)),
            "lottery.draw": lambda u, a, n: self.lotteries.draw(a, n),
            "pk.open": lambda u, a, n: self.pks.open(a, n),
            "pk.close": lambda u, a, n: self.pks.close(a, n),
            "autoreply.set": lambda u, a, n: self.autoreplies.set(a, n),
            "autoreply.list": lambda u, a, n: {
                "rules": [{"pattern": r.pattern, "reply": r.reply} for r in self.autoreplies.rules]
            },
            "coupon.open": lambda u, a, n: self.coupons.open(a, n),
            "coupon.close": lambda u, a, n: self.coupons.close(a, n),
            "words.set": self._cmd_words_set,
            "words.list": lambda u, a, n: {
                "words": [e.to_wire() for e in self.moderation.words.entries]
            },
            "review.list": self._cmd_review_list,
            "review.approve": self._cmd_review_approve,
            "review.reject": self._cmd_review_reject,
        }

    # ---- the entry point ------------------------------------------------------------

    def handle(self, user: str, role: str, msg: Message, now: float) -> list[Effect]:
        kind = msg.TYPE
        try:
            if not auth.allowed(role, kind):
                raise WireError("forbidden", f"role '{role}' may not send '{kind}'", msg.id)
            if self._dedup.seen(user, msg.id):
                self._count(kind, "duplicate")
                return [Reply(ack(msg.id, duplicate=True))]
            limiter = self._limits.get(kind)
            if limiter is not None and not limiter.allow(user, now):
                raise WireError("rate_limited", f"too many '{kind}' messages; slow down", msg.id)
            if role == "viewer" and self.anticheat is not None and kind in VIEWER_KINDS:
                dropped = self._screen(user, msg, now)
                if dropped is not None:
                    return dropped
            effects = self._dispatch(user, role, msg, now)
        except WireError as exc:
            self._count(kind, exc.code)
            return [Reply(exc.reply())]
        except CommandError as exc:
            self._count(kind, exc.code)
            return [Reply(err(msg.id, exc.code, exc.msg))]  # type: ignore[arg-type]
        return effects

    def command(self, user: str, cmd: str, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        """An operator or cloud command (already authorised); returns its result map."""
        handler = self._commands.get(cmd)
        if handler is None:
            raise CommandError("unknown_target", f"unknown command '{cmd}'")
        result = handler(user, args, now)
        self._count("command", "accepted")
        self._features_changed(now)
        return result

    def _screen(self, user: str, msg: Message, now: float) -> list[Effect] | None:
        """Anti-cheat: None to go on; a shadow-dropped event is acked as if it had been
        taken (the sender sees no difference, nobody else sees it); a mute is applied
        (unless the user is muted already) and refused like any muted message."""
        assert self.anticheat is not None
        text = msg.text if isinstance(msg, Comment) else ""
        n = msg.n if isinstance(msg, Like) else 1
        verdict = self.anticheat.observe(user, msg.TYPE, text, n, now)
        if verdict.action == "allow":
            return None
        if verdict.entry is not None:
            self._actions.append(("anticheat", verdict.action))
        if verdict.action == "shadow_drop":
            self._count(msg.TYPE, "shadow_dropped")
            return [Reply(ack(msg.id))]
        if not self._is_muted(user, now):
            self._mute(user, verdict.seconds, now)
        raise WireError("forbidden", "you are muted", msg.id)

    def _dispatch(self, user: str, role: str, msg: Message, now: float) -> list[Effect]:
        if isinstance(msg, Comment):
            return self._comment(user, msg, now)
        if isinstance(msg, Like):
            return self._like(msg, now)
        if isinstance(msg, Vote):
            return self._vote(user, msg, now)
        if isinstance(msg, Gift):
            return self._gift(user, msg, now)
        if isinstance(msg, Probe):
            return self._probe(msg, now)
        if isinstance(msg, Command):
            result = self.command(user, msg.cmd, msg.args, now)
            return [Reply(ack(msg.id, result=result)), *self.take_pushes()]
        if isinstance(msg, Join):
            return self._join(user, msg, now)
        raise WireError("bad_message", f"unhandled message type {msg.TYPE}", msg.id)

    # ---- features -------------------------------------------------------------------

    def _comment(self, user: str, msg: Comment, now: float) -> list[Effect]:
        if self._is_muted(user, now):
            raise WireError("forbidden", "you are muted", msg.id)
        decision = self.moderation.check(user, msg.id, msg.text, now + self.wall_offset)
        if decision.action != "accept":
            self._actions.append(("moderation", decision.action))
        if decision.action == "block":
            raise WireError("blocked", "refused by the room's word list", msg.id)
        if decision.action == "hold":
            raise WireError("held", f"held for review (item {decision.item})", msg.id)
        text = decision.text_out  # masked spans are *** already
        highlight = self._gift_senders.get(user, -1e9) + GIFT_PRIORITY_S > now
        outcome = self.board.add(msg.id, text, now, highlight=highlight)
        if outcome in ("shown", "merged"):
            self._changed(now)
        # The comment as shown takes part in what listens to comments: lottery and
        # coupon keywords, PK side picks, auto-reply rules.
        self.lotteries.on_comment(user, text, now)
        self.pks.on_comment(user, text, now)
        self.coupons.on_comment(user, text, now)
        self.autoreplies.on_comment(user, text, now, msg.id)
        self._features_changed(now)
        self._count("comment", "masked" if decision.masked else "accepted")
        reply = ack(msg.id, masked=True) if decision.masked else ack(msg.id)
        return [Reply(reply), *self.take_pushes()]

    def _join(self, user: str, msg: Join, now: float) -> list[Effect]:
        entered = self.lotteries.join(user, msg.lottery, now, not self._is_muted(user, now))
        self._features_changed(now)
        self._count("join", "accepted" if entered else "duplicate")
        reply = ack(msg.id) if entered else ack(msg.id, duplicate=True)
        return [Reply(reply), *self.take_pushes()]

    def _is_muted(self, user: str, now: float) -> bool:
        if user not in self.muted:
            return False
        until = self.muted[user]
        return until is None or until > now

    def _like(self, msg: Like, now: float) -> list[Effect]:
        self.likes += msg.n
        self._like_times.append((now, msg.n))
        self._likes_in_window += msg.n
        while self._like_times and self._like_times[0][0] < now - LIKE_BURST_WINDOW_S:
            self._likes_in_window -= self._like_times.popleft()[1]
        if self._likes_in_window >= LIKE_BURST_LIKES:
            self._like_burst_until = now + LIKE_BURST_SHOW_S
        self._changed(now)
        self._count("like", "accepted")
        return [Reply(ack(msg.id))]

    def _vote(self, user: str, msg: Vote, now: float) -> list[Effect]:
        if self.pks.is_pk(msg.poll):
            self.pks.pick(user, msg.poll, msg.option, now, not self._is_muted(user, now))
            self._features_changed(now)
            self._count("vote", "accepted")
            return [Reply(ack(msg.id)), *self.take_pushes()]
        poll = self.polls.get(msg.poll)
        if poll is None or poll.closed:
            raise WireError("unknown_target", f"no open poll '{msg.poll}'", msg.id)
        if not 0 <= msg.option < len(poll.options):
            raise WireError(
                "bad_message", f"option: {msg.option} is not 0..{len(poll.options) - 1}", msg.id
            )
        if user in poll.votes and not self.vote_change_allowed:
            raise WireError("forbidden", "you have already voted in this poll", msg.id)
        poll.votes[user] = msg.option
        self._dirty_polls.add(poll.poll)
        self._changed(now)
        self._count("vote", "accepted")
        return [Reply(ack(msg.id))]

    def _gift(self, user: str, msg: Gift, now: float) -> list[Effect]:
        self.gifts.append(GiftAlert(msg.id, user, msg.gift, msg.n, now))
        self._gift_senders[user] = now
        self.pks.on_gift(user, msg.gift, msg.n, now)
        self._changed(now)
        self._features_changed(now)
        self._count("gift", "accepted")
        return [Reply(ack(msg.id))]

    def _probe(self, msg: Probe, now: float) -> list[Effect]:
        if not self.cfg.bench.probe:
            raise WireError("forbidden", "probes are off on this node (bench.probe)", msg.id)
        self.probe = msg.seq
        self._changed(now)
        self._count("probe", "accepted")
        return [Reply(ack(msg.id))]

    # ---- commands -------------------------------------------------------------------

    def _cmd_announce(self, user: str, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        text = _arg(args, "text", str)
        seconds = float(_arg(args, "seconds", (int, float), ANNOUNCE_DEFAULT_S))
        if not text.strip() or len(text) > 200:
            raise CommandError("bad_message", "text: 1..200 characters")
        self.ticker = Ticker(text, now, now + seconds if seconds > 0 else None)
        self._changed(now)
        return {}

    def _cmd_mute(self, user: str, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        target = _arg(args, "user", str)
        seconds = _arg(args, "seconds", (int, float, type(None)), None)
        self._mute(target, seconds, now)
        return {}

    def _mute(self, target: str, seconds: float | None, now: float) -> None:
        self.muted[target] = None if seconds is None else now + float(seconds)
        self.lotteries.disqualify(target)  # a muted user never wins
        self._pushes.append(
            Push(
                {
                    "t": "state",
                    "muted": True,
                    "seconds": None if seconds is None else float(seconds),
                },
                user=target,
            )
        )

    def _cmd_unmute(self, user: str, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        self._unmute(_arg(args, "user", str))
        return {}

    def _unmute(self, target: str) -> None:
        if self.anticheat is not None:
            self.anticheat.lift(target)  # the operator's word ends automatic penalties too
        if self.muted.pop(target, 0.0) != 0.0:
            self._pushes.append(Push({"t": "state", "muted": False}, user=target))

    def _cmd_poll_open(self, user: str, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        poll_id = _arg(args, "poll", str)
        question = _arg(args, "question", str)
        options = _arg(args, "options", (list, tuple))
        if not 2 <= len(options) <= 8 or not all(isinstance(o, str) and o for o in options):
            raise CommandError("bad_message", "options: 2..8 non-empty strings")
        seconds = _arg(args, "seconds", (int, float, type(None)), None)
        if poll_id in self.polls and not self.polls[poll_id].closed:
            raise CommandError("busy", f"poll '{poll_id}' is already open")
        ends = None if seconds is None else now + float(seconds)
        self.polls[poll_id] = Poll(poll_id, question, tuple(options), ends)
        self.poll_on_screen = poll_id
        self._dirty_polls.add(poll_id)
        self._changed(now)
        return {"poll": poll_id}

    def _cmd_poll_close(self, user: str, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        poll_id = _arg(args, "poll", str)
        poll = self.polls.get(poll_id)
        if poll is None:
            raise CommandError("unknown_target", f"no poll '{poll_id}'")
        poll.closed = True
        self._dirty_polls.add(poll_id)
        self._changed(now)
        return {"poll": poll_id, "totals": poll.totals()}

    def _cmd_style(self, user: str, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        """``overlay.style``: numeric style keys, each within the bounds of its config
        key (``overlay.*``), so no command can ask for a billion lanes."""
        changes: dict[str, Any] = {}
        for key, value in args.items():
            bounds = _STYLE_BOUNDS.get(key)
            if bounds is None:
                raise CommandError("bad_message", f"{key}: not a style key")
            current = getattr(self.style, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CommandError("bad_message", f"{key}: expected a number")
            low, high = bounds
            if not (math.isfinite(value) and low <= value <= high):
                raise CommandError("bad_message", f"{key}: {value!r} is not in {low:g}..{high:g}")
            changes[key] = type(current)(value)
        style = dataclasses.replace(self.style, **changes)
        self.style = style
        self.board.set_style(style)
        self._changed(now)
        return {}

    def _cmd_words_set(self, user: str, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        # Compiling costs ~2 us per pattern character on the event loop: a command keeps
        # to what builds in a few tens of ms; longer lists go in moderation.words_file,
        # which is compiled off the loop.
        words = args.get("words")
        if isinstance(words, list):
            chars = sum(len(w.get("pattern", "")) for w in words if isinstance(w, Mapping))
            if chars > MAX_COMMAND_WORD_CHARS:
                raise CommandError(
                    "bad_message",
                    f"args.words: {chars} pattern characters; a command takes at most "
                    f"{MAX_COMMAND_WORD_CHARS} (put longer lists in moderation.words_file)",
                )
        try:
            return self.moderation.words_set(args, user, now + self.wall_offset)
        except WordListError as exc:
            raise CommandError("bad_message", str(exc)) from None

    def _cmd_review_list(self, user: str, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        """Held comments, then the anti-cheat actions awaiting review (items ``ac-<id>``:
        approve keeps the action, reject reverses it)."""
        items: list[dict[str, Any]] = self.moderation.review_list()["items"]
        if self.anticheat is not None:
            for entry in self.anticheat.entries(pending_only=True):
                items.append({**entry.as_dict(), "item": f"ac-{entry.id}", "kind": "anticheat"})
        return {"items": items}

    def _cmd_review_approve(self, user: str, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        item = args.get("item")
        if self._anticheat_item(item) is not None:
            assert self.anticheat is not None
            self.anticheat.confirm(self._ac_entry(item), now)
            self._actions.append(("review", "confirm"))
            return {}
        try:
            held = self.moderation.approve(item, user, now + self.wall_offset)
        except ReviewError as exc:
            raise CommandError("unknown_target", str(exc)) from None
        self._actions.append(("review", "approve"))
        if self.board.add(held.msg_id or held.item, held.text, now) in ("shown", "merged"):
            self._changed(now)
        return {}

    def _cmd_review_reject(self, user: str, args: Mapping[str, Any], now: float) -> dict[str, Any]:
        item = args.get("item")
        if self._anticheat_item(item) is not None:
            assert self.anticheat is not None
            entry = self.anticheat.reverse(self._ac_entry(item), now)
            self._unmute(entry.user)
            self._actions.append(("review", "reverse"))
            return {}
        try:
            self.moderation.reject(item, user, now + self.wall_offset)
        except ReviewError as exc:
            raise CommandError("unknown_target", str(exc)) from None
        self._actions.append(("review", "reject"))
        return {}

    def _anticheat_item(self, item: object) -> str | None:
        if self.anticheat is None or not isinstance(item, str) or not item.startswith("ac-"):
            return None
        return item

    def _ac_entry(self, item: object) -> int:
        assert self.anticheat is not None and isinstance(item, str)
        try:
            entry = int(item[3:])
            self.anticheat.entry(entry)
        except (ValueError, UnknownReviewEntry):
            raise CommandError("unknown_target", f"item: no review item '{item}'") from None
        return entry

    # ---- time -----------------------------------------------------------------------

    def tick(self, now: float) -> list[Effect]:
        """Advance timers: danmaku leaving, polls ending, mutes expiring, state pushes."""
        before = len(self.board.items())
        self.board.tick(now)
        if len(self.board.items()) != before:
            self._changed(now)
        for poll in self.polls.values():
            if not poll.closed and poll.ends_at is not None and now >= poll.ends_at:
                poll.closed = True
                self._dirty_polls.add(poll.poll)
                self._changed(now)
        for user, until in list(self.muted.items()):
            if until is not None and until <= now:
                del self.muted[user]
                self._pushes.append(Push({"t": "state", "muted": False}, user=user))
        if self.ticker is not None and self.ticker.until is not None and now >= self.ticker.until:
            self.ticker = None
            self._changed(now)
        for feature in (self.lotteries, self.pks, self.autoreplies):
            feature.tick(now)
        self._features_changed(now)
        if self.anticheat is not None and now >= self._anticheat_swept + 1.0:
            self._anticheat_swept = now
            self.anticheat.expire(now)
            self.anticheat.refresh_population(now)
        effects: list[Effect] = [*self.take_pushes()]
        if self._dirty_polls and now >= self._last_state_push + STATE_PUSH_INTERVAL_S:
            for poll_id in sorted(self._dirty_polls):
                poll = self.polls[poll_id]
                effects.append(Push(_poll_state(poll)))
            self._dirty_polls.clear()
            self._last_state_push = now
        return effects

    def next_timer(self, now: float) -> float | None:
        times = [t for t in (self.board.next_change(now),) if t is not None]
        times += [p.ends_at for p in self.polls.values() if not p.closed and p.ends_at]
        if self._dirty_polls:
            times.append(self._last_state_push + STATE_PUSH_INTERVAL_S)
        if self.ticker is not None and self.ticker.until is not None:
            times.append(self.ticker.until)
        if self._like_burst_until > now:
            times.append(self._like_burst_until)
        times += [u for u in self.muted.values() if u is not None]
        for feature in (self.lotteries, self.pks, self.autoreplies):
            t = feature.next_timer(now)
            if t is not None:
                times.append(t)
        if self.anticheat is not None and self.anticheat.next_expiry() is not None:
            times.append(max(now, self._anticheat_swept + 1.0))
        return min(times) if times else None

    # ---- scene ----------------------------------------------------------------------

    def scene(self, now: float) -> Scene:
        vote = None
        poll = self.polls.get(self.poll_on_screen or "")
        if poll is not None:
            vote = VoteBar(
                poll.poll,
                poll.question,
                poll.options,
                tuple(poll.totals()),
                None if poll.closed else poll.ends_at,
            )
        pinned: tuple[Pinned, ...] = self.autoreplies.pinned(now)
        banner = self.pks.banner(now)
        if banner is not None:
            pinned = (*pinned, banner)
        return Scene(
            version=self.version,
            style=self.style,
            danmaku=self.board.items(),
            pinned=pinned,
            vote=vote,
            pk=self.pks.bar(now),
            lottery=self.lotteries.banner(now),
            gifts=tuple(self.gifts),
            ticker=self.ticker,
            likes=LikeCounter(self.likes, self._like_burst_until) if self.likes else None,
            probe=self.probe,
            changed_at=self.changed_at,
        )

    def summary_state(self) -> dict[str, Any]:
        """Votes, PK and lottery as the one-second summaries report them (small maps)."""
        polls = {
            p.poll: {"totals": p.totals(), "closed": p.closed}
            for p in self.polls.values()
            if not p.closed or p.poll == self.poll_on_screen
        }
        state: dict[str, Any] = {"polls": polls} if polls else {}
        pk = self.pks.current
        if pk is not None:
            state["pk"] = pk.result()
        lotteries = self.lotteries.status()
        if lotteries:
            state["lotteries"] = lotteries
        drops = self.coupons.status()
        if drops:
            state["coupons"] = drops
        return state

    def welcome(self, user: str, now: float) -> list[dict[str, Any]]:
        """State a client needs when it connects (a late viewer sees the open panels):
        the poll on screen, the PK, the lotteries not yet drawn, the user's mute."""
        out: list[dict[str, Any]] = []
        poll = self.polls.get(self.poll_on_screen or "")
        if poll is not None:
            out.append(_poll_state(poll))
        pk = self.pks.current
        if pk is not None:
            closed = pk.closed_at is not None or now >= pk.ends_at
            out.append(
                {
                    "t": "state",
                    **pk.result(),
                    "sides": list(pk.sides),
                    "scoring": pk.scoring,
                    "seconds": max(0.0, pk.ends_at - now),
                    "closed": closed,
                }
            )
        for lot in self.lotteries.status():
            if lot["phase"] != "drawn":
                out.append({"t": "state", **lot})
        for drop in self.coupons.status():
            if drop["open"]:
                out.append(
                    {"t": "state", "coupon": drop["drop"], "open": True, "keyword": drop["keyword"]}
                )
        if self._is_muted(user, now):
            until = self.muted[user]
            seconds = None if until is None else until - now
            out.append({"t": "state", "muted": True, "seconds": seconds})
        return out

    def take_actions(self) -> list[tuple[str, str]]:
        """(source, action) of the moderation and review actions since the last call."""
        actions, self._actions = self._actions, []
        return actions

    def take_pushes(self) -> list[Push]:
        """State pushes produced by commands and features (mute notices, lottery
        entries, coupon codes, PK sides, auto-replies), for the adapter to send."""
        pushes, self._pushes = self._pushes, []
        for feature in (self.lotteries, self.pks, self.coupons, self.autoreplies):
            pushes += feature.take_pushes()
        return pushes

    def _versions(self) -> tuple[int, ...]:
        return (self.lotteries.version, self.pks.version, self.autoreplies.version)

    def _features_changed(self, now: float) -> None:
        """A feature changed what is on screen (banner, bar, pinned reply): new scene."""
        versions = self._versions()
        if versions != self._feature_versions:
            self._feature_versions = versions
            self._changed(now)

    def published(self) -> None:
        """The adapter sent the current scene: later changes start a new latency clock."""
        self.changed_at = None

    def _changed(self, now: float) -> None:
        self.version += 1
        if self.changed_at is None:
            self.changed_at = now

    def _count(self, kind: str, outcome: str) -> None:
        self.outcomes[(kind, outcome)] += 1
        self.last_outcome = outcome


def _poll_state(poll: Poll) -> dict[str, Any]:
    """The pushed state of a poll: enough for a client that has not seen it open."""
    return {
        "t": "state",
        "poll": poll.poll,
        "question": poll.question,
        "options": list(poll.options),
        "totals": poll.totals(),
        "closed": poll.closed,
    }


def anticheat_from_config(ac: AnticheatConfig) -> AntiCheat | None:
    """The anti-cheat of the ``[anticheat]`` section (None when it is off); a bad value
    is a ConfigError naming the key."""
    if not ac.enabled:
        return None
    detectors = tuple(d.strip() for d in ac.detectors.split(",") if d.strip())
    try:
        params = AntiCheatParams(
            detectors=detectors,
            rate_ceiling_per_s=ac.rate_ceiling_per_s,
            rate_action=ac.rate_action,  # type: ignore[arg-type]
            rate_action_s=ac.rate_action_s,
            text_min_users=ac.text_min_users,
            text_action_s=ac.text_action_s,
            like_short_floor_per_s=ac.like_short_floor_per_s,
            like_action_s=ac.like_action_s,
            swarm_min_users=ac.swarm_min_users,
            swarm_action_s=ac.swarm_action_s,
            whitelist_s=ac.whitelist_s,
            max_users=ac.max_users,
        )
    except ValueError as exc:
        raise ConfigError("anticheat", str(exc)) from None
    return AntiCheat(params)
