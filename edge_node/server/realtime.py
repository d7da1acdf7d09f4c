"""The asyncio adapter around the interaction engine: clients in, effects out.

WebSocket connections, WHEP data channels, the simulated audience (and later the
cloud link) all end up in ``Interactions.receive``/``submit``, which call the one
engine entry point, send the replies, fan out pushed state, publish scene snapshots
to the media worker (at most one per frame interval, the first at once) and keep the
engine's single timer armed. Never blocks: everything here is O(message).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge_node.cloud.summaries import EventRecord
from edge_node.config import Config
from edge_node.interaction import messages
from edge_node.interaction.auth import Claims
from edge_node.interaction.effects import Push, Reply
from edge_node.interaction.engine import Engine
from edge_node.interaction.messages import Comment, Gift, Like, Message, WireError
from edge_node.interaction.ratelimit import TokenBucket
from edge_node.metrics import Registry
from edge_node.overlay.scene import Scene

log = logging.getLogger(__name__)


Send = Callable[[bytes | str], None]


@dataclass(eq=False)
class Client:
    claims: Claims
    send: Send
    kind: str  # "ws" | "datachannel" | "audience"
    ip: str = ""
    messages: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Interactions:
    def __init__(
        self,
        cfg: Config,
        engine: Engine,
        registry: Registry,
        publish_scene: Callable[[Scene], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self._publish_scene = publish_scene
        self._clock = clock
        self.clients: set[Client] = set()
        self._by_user: dict[str, set[Client]] = {}
        rate = cfg.interaction.max_events_per_s
        self._admission = TokenBucket(rate, max(1.0, rate / 4))
        self._frame_s = 1.0 / cfg.video.fps
        self._last_publish = -1e9
        self._published_version = -1
        self._publish_handle: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._flush_handle: asyncio.Handle | None = None
        # Every handled event, for the one-second summaries (cloud link).
        self.record: Callable[[EventRecord], None] | None = None
        self.c_events = registry.counter(
            "edge_node_interaction_events_total", "Interaction messages, by type and outcome."
        )
        self.h_handle = registry.histogram(
            "edge_node_engine_handle_seconds", "Engine time per message (decode to effects)."
        )
        registry.gauge(
            "edge_node_danmaku_on_screen",
            "Danmaku on screen now.",
            read=lambda: float(len(engine.board.items())),
        )
        registry.gauge(
            "edge_node_danmaku_queued",
            "Danmaku waiting for a free lane.",
            read=lambda: float(engine.board.queued),
        )
        registry.gauge(
            "edge_node_interaction_clients",
            "Connected interaction clients.",
            read=lambda: float(len(self.clients)),
        )

    # ---- clients --------------------------------------------------------------------

    def connect(self, client: Client) -> None:
        self.clients.add(client)
        self._by_user.setdefault(client.claims.user, set()).add(client)
        # What is on screen now (a late viewer sees the open panels), and the user's
        # coupon codes (theirs to keep: a reconnecting viewer gets them again).
        binary = bool(client.extra.get("binary", False))
        user = client.claims.user
        states = self.engine.welcome(user, self._clock())
        states += [
            {"t": "state", "coupon": drop, "code": code}
            for drop, code in self.engine.coupons.codes_for(user)
        ]
        for state in states:
            client.send(messages.encode_reply(state, binary=binary))

    def disconnect(self, client: Client) -> None:
        self.clients.discard(client)
        peers = self._by_user.get(client.claims.user)
        if peers is not None:
            peers.discard(client)
            if not peers:
                del self._by_user[client.claims.user]

    # ---- input ----------------------------------------------------------------------

    def receive(self, client: Client, frame: bytes | str) -> None:
        """One frame from a client: decode, handle, reply in the request's framing."""
        binary = not isinstance(frame, str)
        start = time.perf_counter()
        try:
            msg = messages.decode(
                frame, binary=binary, max_bytes=self.cfg.interaction.max_message_bytes
            )
        except WireError as exc:
            self.c_events.inc(type="unknown", outcome=exc.code)
            self.record_rejected(exc.code)
            client.send(messages.encode_reply(exc.reply(), binary=binary))
            return
        client.messages += 1
        client.extra["binary"] = binary  # pushed state follows the client's framing
        for effect in self.submit(client.claims, msg):
            if isinstance(effect, Reply):
                client.send(messages.encode_reply(effect.payload, binary=binary))
            else:
                self._push(effect)
        self.h_handle.observe(time.perf_counter() - start)

    def submit(self, claims: Claims, msg: Message) -> list[Reply | Push]:
        """The engine entry point for every source; schedules scene and timer after."""
        now = self._clock()
        if not self._admission.allow(now):
            self.c_events.inc(type=msg.TYPE, outcome="busy")
            return [Reply(messages.err(msg.id, "busy", "the node is saturated; retry later"))]
        effects = self.engine.handle(claims.user, claims.role, msg, now)
        # accepted, masked, duplicate, shadow_dropped, or the error code
        outcome = self.engine.last_outcome or "accepted"
        self.c_events.inc(type=msg.TYPE, outcome=outcome)
        if self.record is not None:
            self.record(_event_record(claims.user, msg, outcome))
        self._after_input()
        return effects

    def command(self, user: str, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        """An already-authorised command (console, cloud): result, or CommandError."""
        now = self._clock()
        result = self.engine.command(user, cmd, args, now)
        for push in self.engine.take_pushes():
            self._push(push)
        self._after_input()
        return result

    # ---- output ---------------------------------------------------------------------

    def _push(self, push: Push) -> None:
        targets = self.clients if push.user is None else self._by_user.get(push.user, set())
        # Encoded once per framing, not once per client: a tally goes to everyone.
        encoded: dict[bool, bytes | str] = {}
        for client in list(targets):
            binary = bool(client.extra.get("binary", False))
            if binary not in encoded:
                encoded[binary] = messages.encode_reply(push.payload, binary=binary)
            client.send(encoded[binary])

    def _after_input(self) -> None:
        """Publish the scene and re-arm the timer once per turn of the event loop, not
        once per event: a burst of frames read together costs one of each."""
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        now = self._clock()
        self._schedule_publish(now)
        self._arm_timer(now)

    def _schedule_publish(self, now: float) -> None:
        if self.engine.version == self._published_version or self._publish_handle is not None:
            return
        wait = self._last_publish + self._frame_s - now
        if wait <= 0:
            self._publish()
        else:
            loop = asyncio.get_running_loop()
            self._publish_handle = loop.call_later(wait, self._publish)

    def _publish(self) -> None:
        self._publish_handle = None
        now = self._clock()
        scene = self.engine.scene(now)
        self.engine.published()
        self._published_version = scene.version
        self._last_publish = now
        self._publish_scene(scene)

    def _arm_timer(self, now: float) -> None:
        when = self.engine.next_timer(now)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, when - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self._clock()
        for effect in self.engine.tick(now):
            if isinstance(effect, Push):
                self._push(effect)
        self._after_input()

    def record_rejected(self, outcome: str) -> None:
        """A frame refused before it had a type or a user (malformed, unauthorized)."""
        if self.record is not None:
            self.record(EventRecord(time.time(), "", "unknown", outcome))

    def close(self) -> None:
        for handle in (self._timer, self._publish_handle, self._flush_handle):
            if handle is not None:
                handle.cancel()


def _event_record(user: str, msg: Message, outcome: str) -> EventRecord:
    text = msg.text if isinstance(msg, Comment) else ""
    likes = msg.n if isinstance(msg, Like) else 0
    gift = msg.n if isinstance(msg, Gift) else 0
    return EventRecord(time.time(), user, msg.TYPE, outcome, text, likes, gift)
