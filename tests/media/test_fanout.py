"""PacketHub: keyframe gating, keyframe request limiting, pts across worker restarts,
slow subscribers and the drop counters, driven with a fake clock and plain calls."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_node.media.fanout import (
    KEYFRAME_RETRY_S,
    SUBSCRIBER_QUEUE,
    EncodedPacket,
    PacketHub,
    Subscription,
)
from edge_node.metrics import Registry

FRAME_PTS = 3000  # 30 fps at 90 kHz


class FakeClock:
    def __init__(self, start: float = 100.0) -> None:
        self.times = [start]

    def __call__(self) -> float:
        return self.times[-1]

    def advance(self, seconds: float) -> None:
        self.times.append(self.times[-1] + seconds)

    def set(self, now: float) -> None:
        self.times.append(now)


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.registry = Registry()
        self.keyframe_requests: list[float] = []
        self.hub = PacketHub(
            self.registry,
            lambda: self.keyframe_requests.append(self.clock()),
            FRAME_PTS,
            clock=self.clock,
        )

    def packet(self, pts: int, key: bool = False, gen: int = 1, data: bytes = b"\x00" * 10) -> None:
        self.hub.on_worker_message(
            {
                "t": "pkt",
                "data": data,
                "pts": pts,
                "key": key,
                "capture": self.clock() - 0.005,
                "queue_s": 0.001,
                "composite_s": 0.0,
                "encode_s": 0.002,
            },
            gen,
        )

    def stats(self, gen: int, frames_in: int = 0, dropped: int = 0) -> None:
        self.hub.on_worker_message(
            {
                "t": "stats",
                "frames_in": frames_in,
                "frames_out": frames_in,
                "dropped": dropped,
                "encoders": 1,
                "keyframes_forced": 0,
                "source": "test_pattern",
            },
            gen,
        )

    def sample(self, line_prefix: str) -> float:
        for line in self.registry.render().splitlines():
            if line.startswith(line_prefix + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no sample {line_prefix!r}")


def drain(sub: Subscription) -> list[EncodedPacket]:
    out = []
    while not sub.queue.empty():
        out.append(sub.queue.get_nowait())
    return out


# --- keyframe gating ---------------------------------------------------------------------


async def test_new_subscriber_waits_for_keyframe_then_gets_every_packet_in_order() -> None:
    h = Harness()
    h.packet(0, key=True)  # before anyone subscribed
    sub = h.hub.subscribe("viewer")
    assert h.hub.subscribers == 1
    h.packet(3000)
    h.packet(6000)
    assert drain(sub) == []
    h.packet(9000, key=True, data=b"K1")
    for i, pts in enumerate(range(12000, 12000 + 10 * FRAME_PTS, FRAME_PTS)):
        h.packet(pts, data=bytes([i]))
    h.packet(42000, key=True, data=b"K2")
    got = drain(sub)
    assert [p.data for p in got] == [b"K1", *(bytes([i]) for i in range(10)), b"K2"]
    assert [p.keyframe for p in got] == [True] + [False] * 10 + [True]
    assert all(b.pts - a.pts == FRAME_PTS for a, b in itertools.pairwise(got))
    assert sub.packets == 12
    assert not sub.waiting_keyframe


async def test_each_subscriber_starts_at_its_own_keyframe() -> None:
    h = Harness()
    a = h.hub.subscribe("a")
    h.packet(0, key=True)
    h.packet(3000)
    b = h.hub.subscribe("b")
    h.packet(6000)
    h.packet(9000, key=True)
    assert len(drain(a)) == 4
    assert len(drain(b)) == 1
    h.hub.unsubscribe(b)
    h.packet(12000)
    assert len(drain(a)) == 1
    assert drain(b) == []
    assert h.hub.subscribers == 1


async def test_packet_timings_are_recorded() -> None:
    h = Harness()
    h.packet(0, key=True, data=b"\x00" * 100)
    assert h.hub.h_queue.count == 1
    assert h.hub.h_encode.sum == 0.002
    assert h.hub.h_fanout.sum == pytest.approx(0.005)
    assert h.hub.c_packets.value() == 1
    assert h.hub.last_packet_at == h.clock()
    assert h.sample("edge_node_bitrate_bits_per_second") == 800
    assert h.sample("edge_node_frames_out_per_second") == 1


# --- keyframe requests ---------------------------------------------------------------------


async def test_keyframe_requests_merge_until_a_keyframe_goes_out() -> None:
    h = Harness()
    t0 = h.clock()
    h.hub.subscribe("a")
    assert h.keyframe_requests == [t0]
    # A second viewer and a PLI while the first request is outstanding: merged.
    h.clock.set(t0 + 0.1)
    h.hub.subscribe("b")
    h.hub.request_keyframe()
    assert len(h.keyframe_requests) == 1
    # The keyframe goes out; a viewer joining after it needs one of its own.
    h.packet(0, key=True)
    h.clock.set(t0 + 0.15)
    h.hub.subscribe("c")
    assert h.keyframe_requests == [t0, t0 + 0.15]
    # An outstanding request older than KEYFRAME_RETRY_S is taken as lost: sent again.
    h.clock.set(t0 + 0.15 + KEYFRAME_RETRY_S)
    h.hub.request_keyframe()
    assert h.keyframe_requests == [t0, t0 + 0.15, t0 + 0.15 + KEYFRAME_RETRY_S]
    assert h.hub.c_keyframe_requests.value() == 3
    assert h.sample("edge_node_keyframe_requests_total") == 3


@given(steps=st.lists(st.tuples(st.floats(0.0, 2.0, allow_nan=False), st.booleans()), max_size=40))
async def test_keyframe_requests_follow_the_outstanding_model(
    steps: list[tuple[float, bool]],
) -> None:
    h = Harness()
    expected: list[float] = []
    pending: float | None = None
    for gap, keyframe_out in steps:
        h.clock.advance(gap)
        if keyframe_out:
            h.packet(0, key=True)
            pending = None
        h.hub.request_keyframe()
        now = h.clock()
        if pending is None or now - pending >= KEYFRAME_RETRY_S:
            expected.append(now)
            pending = now
    assert h.keyframe_requests == expected
    assert h.hub.c_keyframe_requests.value() == len(expected)


# --- pts across worker generations ----------------------------------------------------------


async def test_pts_continue_across_a_generation_change() -> None:
    h = Harness()
    sub = h.hub.subscribe("v")
    for i in range(5):
        h.packet(i * FRAME_PTS, key=i == 0, gen=1)
    # The new worker counts from zero again.
    for i in range(5):
        h.packet(i * FRAME_PTS, key=i == 0, gen=2)
    pts = [p.pts for p in drain(sub)]
    assert len(pts) == 10
    assert all(b - a == FRAME_PTS for a, b in itertools.pairwise(pts)), pts


async def test_pts_stay_increasing_when_new_worker_starts_high() -> None:
    h = Harness()
    sub = h.hub.subscribe("v")
    h.packet(900_000, key=True, gen=1)
    h.packet(903_000, gen=1)
    h.packet(5_000_000, key=True, gen=2)
    h.packet(5_003_000, gen=2)
    pts = [p.pts for p in drain(sub)]
    assert pts[2] == pts[1] + FRAME_PTS
    assert pts[3] == pts[2] + FRAME_PTS


@given(
    steps=st.lists(
        st.tuples(st.booleans(), st.integers(0, 10**9)),
        min_size=1,
        max_size=50,
    )
)
async def test_pts_strictly_increasing_for_any_worker_pts(steps: list[tuple[bool, int]]) -> None:
    h = Harness()
    sub = h.hub.subscribe("v")
    gen = 1
    for new_worker, worker_pts in steps:
        gen += new_worker
        h.packet(worker_pts, key=True, gen=gen)
    pts = [p.pts for p in drain(sub)]
    assert len(pts) == len(steps)
    assert all(b > a for a, b in itertools.pairwise(pts)), pts


# --- slow subscribers ------------------------------------------------------------------------


async def test_full_subscriber_is_flushed_and_waits_for_keyframe() -> None:
    h = Harness()
    slow = h.hub.subscribe("slow")
    fast = h.hub.subscribe("fast")
    assert len(h.keyframe_requests) == 1
    h.clock.advance(1.0)
    h.packet(0, key=True)
    for i in range(1, SUBSCRIBER_QUEUE):
        h.packet(i * FRAME_PTS)
    assert slow.queue.qsize() == SUBSCRIBER_QUEUE
    assert len(drain(fast)) == SUBSCRIBER_QUEUE
    assert h.hub.c_dropped.value(stage="subscriber") == 0

    h.packet(SUBSCRIBER_QUEUE * FRAME_PTS)  # does not fit
    assert slow.queue.empty()
    assert slow.waiting_keyframe
    assert h.hub.c_dropped.value(stage="subscriber") == SUBSCRIBER_QUEUE + 1
    assert h.sample('edge_node_frames_dropped_total{stage="subscriber"}') == SUBSCRIBER_QUEUE + 1
    assert len(h.keyframe_requests) == 2  # asked for the keyframe it now waits for

    h.packet((SUBSCRIBER_QUEUE + 1) * FRAME_PTS)
    assert slow.queue.empty()
    h.packet((SUBSCRIBER_QUEUE + 2) * FRAME_PTS, key=True, data=b"K")
    got = drain(slow)
    assert [(p.data, p.keyframe) for p in got] == [(b"K", True)]
    # The fast subscriber lost nothing.
    assert len(drain(fast)) == 3
    assert h.hub.c_dropped.value(stage="subscriber") == SUBSCRIBER_QUEUE + 1


# --- stats ---------------------------------------------------------------------------------------


async def test_stats_update_dropped_by_deltas_within_a_generation() -> None:
    h = Harness()

    def dropped() -> float:
        return h.hub.c_dropped.value(stage="source_queue")

    h.stats(gen=1, dropped=5)
    assert dropped() == 5
    h.stats(gen=1, dropped=8)
    assert dropped() == 8
    h.stats(gen=1, dropped=8)
    assert dropped() == 8
    # A new worker counts from zero: its first report is all new.
    h.stats(gen=2, dropped=2)
    assert dropped() == 10
    h.stats(gen=2, dropped=3)
    assert dropped() == 11
    assert h.sample('edge_node_frames_dropped_total{stage="source_queue"}') == 11
    assert h.hub.c_dropped.value(stage="subscriber") == 0


async def test_stats_frames_in_rate_encoders_and_source() -> None:
    h = Harness()
    h.stats(gen=1, frames_in=0)
    h.clock.advance(2.0)
    h.stats(gen=1, frames_in=60)
    assert h.sample("edge_node_frames_in_per_second") == 30
    assert h.hub.encoders == 1
    assert h.hub.source == "test_pattern"
    assert h.sample("edge_node_video_encoders") == 1


async def test_unknown_messages_are_ignored() -> None:
    h = Harness()
    sub = h.hub.subscribe("v")
    h.hub.on_worker_message({"t": "hello", "pid": 1}, 1)
    assert drain(sub) == []
    assert h.hub.c_packets.value() == 0


async def test_viewers_gauge_follows_subscriptions() -> None:
    h = Harness()
    subs = [h.hub.subscribe(str(i)) for i in range(3)]
    assert h.sample("edge_node_viewers") == 3
    h.hub.unsubscribe(subs[0])
    h.hub.unsubscribe(subs[0])  # twice is harmless
    assert h.sample("edge_node_viewers") == 2
