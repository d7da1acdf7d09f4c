"""AMF0 encoding and decoding, as RTMP commands use it. Pure functions.

Decoding errors raise ``ProtocolError`` naming the AMF0 field, so a publisher sending
garbage is refused with a reason, never crashes the node.
"""

from __future__ import annotations

import struct
from typing import Any

from edge_node.errors import ProtocolError

NUMBER, BOOLEAN, STRING, OBJECT, NULL, UNDEFINED = 0x00, 0x01, 0x02, 0x03, 0x05, 0x06
ECMA_ARRAY, OBJECT_END, STRICT_ARRAY, DATE, LONG_STRING = 0x08, 0x09, 0x0A, 0x0B, 0x0C

MAX_DEPTH = 16


class Undefined:
    """AMF0 ``undefined`` (distinct from ``null``/None)."""

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED_VALUE = Undefined()


def encode(value: Any) -> bytes:
    if value is None:
        return bytes([NULL])
    if isinstance(value, Undefined):
        return bytes([UNDEFINED])
    if isinstance(value, bool):
        return bytes([BOOLEAN, 1 if value else 0])
    if isinstance(value, (int, float)):
        return bytes([NUMBER]) + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            return bytes([LONG_STRING]) + struct.pack(">I", len(raw)) + raw
        return bytes([STRING]) + struct.pack(">H", len(raw)) + raw
    if isinstance(value, dict):
        out = bytearray([OBJECT])
        for k, v in value.items():
            key = str(k).encode("utf-8")
            out += struct.pack(">H", len(key)) + key + encode(v)
        out += b"\x00\x00" + bytes([OBJECT_END])
        return bytes(out)
    if isinstance(value, (list, tuple)):
        out = bytearray([STRICT_ARRAY]) + struct.pack(">I", len(value))
        for v in value:
            out += encode(v)
        return bytes(out)
    raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


def encode_all(*values: Any) -> bytes:
    return b"".join(encode(v) for v in values)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("amf0", f"truncated value at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def utf8(self, n: int) -> str:
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("amf0", f"string at byte {self.pos - n} is not UTF-8") from None

    def properties(self, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while True:
            key = self.utf8(self.u16())
            if key == "" and self.data[self.pos : self.pos + 1] == bytes([OBJECT_END]):
                self.pos += 1
                return out
            out[key] = self.value(depth + 1)

    def value(self, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise ProtocolError("amf0", f"nesting deeper than {MAX_DEPTH}")
        marker = self.u8()
        if marker == NUMBER:
            return struct.unpack(">d", self.take(8))[0]
        if marker == BOOLEAN:
            return self.u8() != 0
        if marker == STRING:
            return self.utf8(self.u16())
        if marker == LONG_STRING:
            return self.utf8(self.u32())
        if marker == OBJECT:
            return self.properties(depth)
        if marker == ECMA_ARRAY:
            self.u32()  # advisory count; the end marker is what ends it
            return self.properties(depth)
        if marker == STRICT_ARRAY:
            count = self.u32()
            if count > len(self.data):
                raise ProtocolError("amf0", f"strict array of {count} items is longer than data")
            return [self.value(depth + 1) for _ in range(count)]
        if marker == NULL:
            return None
        if marker == UNDEFINED:
            return UNDEFINED_VALUE
        if marker == DATE:
            ms = struct.unpack(">d", self.take(8))[0]
            self.take(2)  # time zone, unused by the format's own spec
            return ms
        raise ProtocolError(
            "amf0", f"unsupported type marker 0x{marker:02x} at byte {self.pos - 1}"
        )


def decode_all(data: bytes) -> list[Any]:
    reader = _Reader(data)
    values = []
    while reader.pos < len(data):
        values.append(reader.value())
    return values
