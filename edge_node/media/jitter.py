"""A video jitter buffer that completes a frame at its RTP marker bit.

aiortc's ``JitterBuffer`` hands a video frame on only when the first packet of the
*next* frame arrives (it completes frames on a timestamp change): one frame interval
(33 ms at 30 fps) that neither a browser nor FFmpeg adds, since RTP marks the last
packet of an access unit (RFC 6184 for H.264). ``MarkerJitterBuffer`` completes a
frame at its marker bit, falls back to the timestamp rule for a frame whose marker
was lost, and, like aiortc's, waits at a gap (for a retransmission, or until the
buffer moves on). Audio is left to aiortc's own rule.

aiortc creates a receiver's jitter buffer by looking the class up in its receiver
module, so ``install_marker_jitter_buffer`` replaces it there, for the whole process:
the node's WHIP ingest (its only RTP receivers), and the bench's viewers.
"""

from __future__ import annotations

from typing import Any

import aiortc.rtcrtpreceiver as _receiver_mod
from aiortc.jitterbuffer import JitterBuffer, JitterFrame


class MarkerJitterBuffer(JitterBuffer):
    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        if not self._is_video:
            return super()._remove_frame(sequence_number)
        origin = self._origin
        if origin is None:
            return None
        packets: list[Any] = []
        timestamp = None
        for count in range(self.capacity):
            packet = self._packets[(origin + count) % self._capacity]
            if packet is None:
                return None  # a gap: wait for it (NACK) or for the buffer to move on
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                # The frame before ended without a marker (lost): aiortc's rule.
                self.remove(count)
                return JitterFrame(b"".join(p._data for p in packets), timestamp)
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                return JitterFrame(b"".join(p._data for p in packets), timestamp)
        return None


def install_jitter_buffer(cls: type[JitterBuffer]) -> None:
    """Make this process's aiortc RTP receivers, created from now on, use ``cls``."""
    setattr(_receiver_mod, "JitterBuffer", cls)  # noqa: B010


def install_marker_jitter_buffer() -> None:
    install_jitter_buffer(MarkerJitterBuffer)
