"""Units of the worker pipeline: the drop-oldest queue, the pts clock, the encoder and
the test pattern, driven with plain calls (no threads started, no processes)."""

from __future__ import annotations

import itertools
import threading
import time

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_node import barcode
from edge_node.config import VideoConfig
from edge_node.media import sources
from edge_node.media.encode import H264Encoder
from edge_node.media.pipeline import DropOldestQueue, PtsClock

# --- DropOldestQueue -------------------------------------------------------------------


def test_queue_is_fifo_below_capacity() -> None:
    q = DropOldestQueue(3)
    for i in range(3):
        q.put(i)
    assert len(q) == 3
    assert [q.get(timeout=0.01) for _ in range(3)] == [0, 1, 2]
    assert q.dropped == 0


def test_queue_drops_the_oldest_and_counts_it() -> None:
    q = DropOldestQueue(2)
    for i in range(5):
        q.put(i)
    assert len(q) == 2
    assert q.dropped == 3
    assert q.get(timeout=0.01) == 3
    assert q.get(timeout=0.01) == 4
    q.put(5)
    assert q.dropped == 3


def test_queue_get_times_out_with_none() -> None:
    q = DropOldestQueue(2)
    t0 = time.monotonic()
    assert q.get(timeout=0.02) is None
    assert time.monotonic() - t0 >= 0.015
    q.put("a")
    assert q.get(timeout=0.02) == "a"
    assert q.get(timeout=0.0) is None


def test_queue_get_wakes_on_put_from_another_thread() -> None:
    q = DropOldestQueue(1)
    timer = threading.Timer(0.02, q.put, args=("late",))
    timer.start()
    try:
        assert q.get(timeout=2.0) == "late"
    finally:
        timer.cancel()


@given(maxsize=st.integers(1, 10), n=st.integers(0, 50))
def test_queue_keeps_the_newest(maxsize: int, n: int) -> None:
    q = DropOldestQueue(maxsize)
    for i in range(n):
        q.put(i)
    kept = min(n, maxsize)
    assert q.dropped == n - kept
    assert [q.get(timeout=0.0) for _ in range(kept)] == list(range(n - kept, n))
    assert len(q) == 0


# --- PtsClock ----------------------------------------------------------------------------


def test_pts_is_90khz_from_t0() -> None:
    clock = PtsClock(100.0)
    assert clock.pts(100.0) == 0
    assert clock.pts(101.0) == 90000
    assert clock.pts(101.5) == 135000


def test_pts_never_repeats_or_goes_back() -> None:
    clock = PtsClock(0.0)
    assert clock.pts(1.0) == 90000
    assert clock.pts(1.0) == 90001
    assert clock.pts(0.5) == 90002
    assert clock.pts(2.0) == 180000


@given(
    t0=st.floats(0, 1e6, allow_nan=False),
    times=st.lists(st.floats(-1e3, 1e6, allow_nan=False), max_size=100),
)
def test_pts_strictly_increasing_for_any_capture_times(t0: float, times: list[float]) -> None:
    clock = PtsClock(t0)
    out = [clock.pts(t) for t in times]
    assert all(b > a for a, b in itertools.pairwise(out))
    assert all(p >= 0 for p in out)


@given(times=st.lists(st.sampled_from([5.0, 5.0, 4.0, 6.0, 0.0]), max_size=30))
def test_pts_strictly_increasing_with_equal_and_decreasing_times(times: list[float]) -> None:
    clock = PtsClock(1.0)
    out = [clock.pts(t) for t in times]
    assert len(set(out)) == len(out)
    assert out == sorted(out)


# --- H264Encoder -------------------------------------------------------------------------

SMALL = VideoConfig(width=64, height=64, fps=30, keyframe_interval_s=1.0)
FRAME_PTS = 90000 // SMALL.fps


def small_frame(i: int, rng: np.random.Generator) -> av.VideoFrame:
    # Noise so every frame costs real bits and nothing is skipped.
    arr = rng.integers(16, 236, (SMALL.height * 3 // 2, SMALL.width), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(arr, format="yuv420p")
    frame.pts = i * FRAME_PTS
    return frame


def encode_frames(n: int, forced: set[int]) -> tuple[H264Encoder, dict[int, bool]]:
    """Encode ``n`` frames; returns frame index -> is keyframe."""
    encoder = H264Encoder(SMALL)
    rng = np.random.default_rng(1)
    keyframe_at: dict[int, bool] = {}
    for i in range(n):
        for packet in encoder.encode(small_frame(i, rng), force_keyframe=i in forced):
            assert packet.pts % FRAME_PTS == 0
            keyframe_at[packet.pts // FRAME_PTS] = bool(packet.is_keyframe)
    return encoder, keyframe_at


@pytest.fixture(scope="module")
def encoded_70() -> tuple[H264Encoder, dict[int, bool]]:
    return encode_frames(70, forced={10})


def test_one_packet_per_frame_no_delay(encoded_70: tuple[H264Encoder, dict[int, bool]]) -> None:
    encoder, keyframe_at = encoded_70
    assert sorted(keyframe_at) == list(range(70))
    assert encoder.frames_encoded == 70


def test_first_packet_is_keyframe(encoded_70: tuple[H264Encoder, dict[int, bool]]) -> None:
    assert encoded_70[1][0] is True


def test_forced_keyframe(encoded_70: tuple[H264Encoder, dict[int, bool]]) -> None:
    encoder, keyframe_at = encoded_70
    assert keyframe_at[10] is True
    assert encoder.keyframes_forced == 1


def test_keyframe_at_least_every_interval(
    encoded_70: tuple[H264Encoder, dict[int, bool]],
) -> None:
    _, keyframe_at = encoded_70
    gop = round(SMALL.keyframe_interval_s * SMALL.fps)
    keys = [i for i, key in sorted(keyframe_at.items()) if key]
    assert keys[0] == 0
    gaps = [b - a for a, b in itertools.pairwise(keys)]
    assert all(gap <= gop for gap in gaps), keys
    assert 69 - keys[-1] < gop, keys
    # Not every frame is a keyframe: the interval is honoured, not trivially satisfied.
    assert len(keys) <= 4, keys


def test_without_forcing_frame_10_is_not_a_keyframe() -> None:
    _, keyframe_at = encode_frames(12, forced=set())
    assert keyframe_at[0] is True
    assert keyframe_at[10] is False


# --- TestPattern ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pattern() -> sources.TestPattern:
    # Imported via the module so pytest does not try to collect it as a test class.
    return sources.TestPattern(1280, 720, 30, threading.Event())


def test_pattern_frame_format(pattern: sources.TestPattern) -> None:
    frame = pattern.render(0, 1_700_000_000.0)
    assert (frame.width, frame.height) == (1280, 720)
    assert frame.format.name == "yuv420p"
    assert frame.to_ndarray().shape == (1080, 1280)


@pytest.mark.parametrize("index", [0, 1, 2, 255, 4096, 0xFFFF, 0x10000, 0x12345])
def test_pattern_barcode_reads_back_the_index(pattern: sources.TestPattern, index: int) -> None:
    frame = pattern.render(index, 1_700_000_000.0 + index / 30)
    y = frame.to_ndarray()[:720]
    assert barcode.read(y, *barcode.bottom_left(720)) == index & 0xFFFF


@given(index=st.integers(0, 2**31))
def test_pattern_barcode_property(pattern: sources.TestPattern, index: int) -> None:
    y = pattern.render(index, 1_700_000_000.0).to_ndarray()[:720]
    assert barcode.read(y, *barcode.bottom_left(720)) == index & 0xFFFF


def test_pattern_frames_differ_over_time(pattern: sources.TestPattern) -> None:
    a = pattern.render(0, 1_700_000_000.0).to_ndarray()
    b = pattern.render(15, 1_700_000_000.5).to_ndarray()
    assert not np.array_equal(a, b)
