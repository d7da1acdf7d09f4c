"""Who may publish, and who is live: the ingest arbiter of the control process. Sans-I/O.

One live publisher at a time, over any protocol. It also remembers what a freshly
restarted media worker needs to pick a live stream up again (the decoder
configuration), so a worker crash costs the viewers at most one keyframe interval.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from edge_node.media import flv, h264


@dataclass(frozen=True, slots=True)
class Publisher:
    proto: str
    conn_id: int


class IngestArbiter:
    def __init__(self, stream_key: str, pulls_rtsp: bool = False) -> None:
        self._stream_key = stream_key
        self._pulls_rtsp = pulls_rtsp
        self.live: Publisher | None = None
        self.sequence_header: bytes | None = None
        self.h264_parameter_sets: bytes | None = None

    def check(self, key: str) -> str | None:
        """None when ``key`` may publish now, else the reason for the refusal."""
        if self._pulls_rtsp:
            return "this node takes its live input from its RTSP camera (ingest.rtsp_url)"
        if not self._stream_key:
            return "publishing is disabled: ingest.stream_key is not set"
        if not hmac.compare_digest(key.encode(), self._stream_key.encode()):
            return "wrong stream key"
        if self.live is not None:
            return f"another publisher is live ({self.live.proto})"
        return None

    def started(self, proto: str, conn_id: int) -> dict[str, Any]:
        self.live = Publisher(proto, conn_id)
        self.sequence_header = self.h264_parameter_sets = None
        return {"t": "in_start", "proto": proto}

    def ended(self, proto: str, conn_id: int) -> dict[str, Any] | None:
        if self.live != Publisher(proto, conn_id):
            return None
        self.live = None
        self.sequence_header = self.h264_parameter_sets = None
        return {"t": "in_end"}

    def flv_video(self, conn_id: int, timestamp_ms: int, body: bytes) -> dict[str, Any] | None:
        """The channel message for one FLV video tag, or None if it is not the live one's."""
        live = self.live
        if live is None or live.conn_id != conn_id:
            return None
        if len(body) >= 2 and body[1] == 0:  # AVC sequence header
            self.sequence_header = body
        return {"t": "in_video", "ts": timestamp_ms, "data": body}

    def media(self, conn_id: int, msg: dict[str, Any]) -> dict[str, Any] | None:
        """``msg`` if it comes from the live publisher, else None."""
        live = self.live
        return msg if live is not None and live.conn_id == conn_id else None

    def h264_unit(self, conn_id: int, annexb: bytes) -> None:
        """Remember the live WHIP stream's latest parameter sets (for a new worker)."""
        live = self.live
        if live is None or live.conn_id != conn_id or b"\x00\x00\x01\x67" not in annexb:
            return  # 0x67: an SPS NAL header; only then can the sets have changed
        sets = h264.parameter_sets_annexb(flv.split_annexb(annexb))
        if sets is not None:
            self.h264_parameter_sets = sets

    def replay(self) -> list[dict[str, Any]]:
        """What a new worker must receive to continue the live input."""
        if self.live is None:
            return []
        msgs: list[dict[str, Any]] = [{"t": "in_start", "proto": self.live.proto}]
        if self.sequence_header is not None:
            msgs.append({"t": "in_video", "ts": 0, "data": self.sequence_header})
        if self.h264_parameter_sets is not None:
            msgs.append({"t": "in_h264", "data": self.h264_parameter_sets})
        return msgs
