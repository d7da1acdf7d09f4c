"""The marker-bit jitter buffer of the node's WHIP ingest (and the bench's viewers)."""

from __future__ import annotations

from typing import Any

import aiortc.rtcrtpreceiver as receiver_mod
import pytest
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from edge_node.media import jitter
from edge_node.media.jitter import MarkerJitterBuffer


def rtp(seq: int, ts: int, marker: bool, data: bytes) -> Any:
    p = RtpPacket(payload_type=96, marker=int(marker), sequence_number=seq, timestamp=ts)
    setattr(p, "_data", data)  # noqa: B010 - what aiortc's depayloader leaves on it
    return p


def test_completes_a_frame_at_its_marker() -> None:
    jb = MarkerJitterBuffer(capacity=128, is_video=True)
    assert jb.add(rtp(10, 3000, False, b"a"))[1] is None
    _, frame = jb.add(rtp(11, 3000, True, b"b"))
    assert frame is not None and frame.data == b"ab" and frame.timestamp == 3000
    # Stock aiortc would only have released it now, at the next frame's first packet.
    assert jb.add(rtp(12, 6000, False, b"c"))[1] is None
    _, frame = jb.add(rtp(13, 6000, True, b"d"))
    assert frame is not None and frame.data == b"cd"


def test_waits_for_a_gap_and_falls_back_without_marker() -> None:
    jb = MarkerJitterBuffer(capacity=128, is_video=True)
    assert jb.add(rtp(20, 100, False, b"x"))[1] is None
    assert jb.add(rtp(22, 100, True, b"z"))[1] is None  # 21 missing: wait
    _, frame = jb.add(rtp(21, 100, False, b"y"))  # retransmitted
    assert frame is not None and frame.data == b"xyz"
    # A frame whose last packet carries no marker: completed at the next timestamp.
    assert jb.add(rtp(23, 200, False, b"p"))[1] is None
    _, frame = jb.add(rtp(24, 300, False, b"q"))
    assert frame is not None and frame.data == b"p" and frame.timestamp == 200


def test_audio_keeps_aiortc_rule() -> None:
    jb = MarkerJitterBuffer(capacity=16, is_video=False)
    assert jb.add(rtp(1, 960, True, b"a"))[1] is None  # released at the next timestamp
    _, frame = jb.add(rtp(2, 1920, True, b"b"))
    assert frame is not None and frame.data == b"a"


def test_installed_it_is_what_a_new_receiver_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receiver_mod, "JitterBuffer", JitterBuffer)  # restored after
    jitter.install_marker_jitter_buffer()
    assert receiver_mod.JitterBuffer is MarkerJitterBuffer
