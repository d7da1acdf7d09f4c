"""Framing of the msgpack channel between the control process and the media worker.

A frame is a 4-byte big-endian length followed by one msgpack map. Sans-I/O: bytes in,
messages out; the adapters (worker pipes, supervisor streams) only move bytes.

Down (control -> worker): ``init`` (config), ``scene`` (snapshot), ``keyframe``, ``stop``.
Up (worker -> control): ``hello``, ``pkt`` (encoded video + timings), ``stats``.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from edge_node.errors import ProtocolError

MAX_FRAME_BYTES = 16 * 1024 * 1024
_LEN = struct.Struct(">I")

Message = dict[str, Any]


def encode_message(msg: Message) -> bytes:
    body: bytes = msgpack.packb(msg, use_bin_type=True)
    if len(body) > MAX_FRAME_BYTES:
        raise ProtocolError("channel", f"message of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _LEN.pack(len(body)) + body


class MessageReader:
    """Reassembles framed messages from arbitrary byte chunks."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= _LEN.size:
            (length,) = _LEN.unpack_from(self._buf)
            if length > MAX_FRAME_BYTES:
                raise ProtocolError("channel", f"frame length {length} exceeds {MAX_FRAME_BYTES}")
            end = _LEN.size + length
            if len(self._buf) < end:
                break
            body = bytes(self._buf[_LEN.size : end])
            del self._buf[:end]
            try:
                msg = msgpack.unpackb(body, raw=False)
            except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
                raise ProtocolError("channel", f"undecodable msgpack frame: {exc}") from None
            if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
                raise ProtocolError("channel", "frame is not a map with a string 't'")
            out.append(msg)
        return out

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)
