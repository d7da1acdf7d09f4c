"""Sans-I/O RTMP server connection: the publisher's side of RTMP ingest.

Bytes in (``receive_data``), events out (``next_event``), bytes to send pulled
(``data_to_send``); no sockets, no clocks. Covers what publishers (OBS, FFmpeg,
hardware encoders) use: the plain handshake, the chunk stream, the AMF0 commands
``connect``, ``releaseStream``, ``FCPublish``, ``createStream``, ``publish``,
``FCUnpublish``, ``deleteStream``, and audio/video/metadata messages.

Anything malformed raises ``ProtocolError`` naming the field (the peer's fault): the
adapter closes that connection and the listener carries on. The chunk layer
(``_Chunker``) is shared with the publishing client, ``rtmp_client.py``.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from edge_node.errors import ProtocolError
from edge_node.media import amf0

HANDSHAKE_SIZE = 1536
DEFAULT_CHUNK_SIZE = 128
OUR_CHUNK_SIZE = 4096
WINDOW_ACK_SIZE = 5_000_000
MAX_MESSAGE_SIZE = 8 * 1024 * 1024
MAX_CHUNK_STREAMS = 64
STREAM_ID = 1

# Message type ids
SET_CHUNK_SIZE, ABORT, ACK, USER_CONTROL, WINDOW_ACK, PEER_BW = 1, 2, 3, 4, 5, 6
AUDIO, VIDEO, DATA_AMF3, DATA_AMF0, COMMAND_AMF3, COMMAND_AMF0 = 8, 9, 15, 18, 17, 20


# ---- events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    app: str
    tc_url: str


@dataclass(frozen=True, slots=True)
class PublishStarted:
    stream_key: str


@dataclass(frozen=True, slots=True)
class PublishRejected:
    stream_key: str
    reason: str


@dataclass(frozen=True, slots=True)
class PublishEnded:
    stream_key: str


@dataclass(frozen=True, slots=True)
class MediaMessage:
    kind: str  # "video" | "audio" | "metadata"
    timestamp_ms: int
    payload: bytes


Event = Connected | PublishStarted | PublishRejected | PublishEnded | MediaMessage


class State(Enum):
    HANDSHAKE = "handshake"
    HANDSHAKE_ACK = "handshake_ack"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    PUBLISHING = "publishing"
    CLOSED = "closed"


@dataclass(slots=True)
class _ChunkStreamState:
    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    payload: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True, slots=True)
class _Message:
    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes


class _Chunker:
    """The chunk layer, both directions; shared by the server and the client connection.

    Reassembles incoming messages from the peer's chunk stream (``read_message``) and
    splits outgoing ones into chunks (``write``). The protocol-control messages that
    belong to this layer (Set Chunk Size, Abort, Window Acknowledgement Size) take
    effect here, before the next chunk is parsed; they are still returned, so the
    connection sees every message.
    """

    def __init__(self) -> None:
        self._streams: dict[int, _ChunkStreamState] = {}
        self.in_chunk_size = DEFAULT_CHUNK_SIZE
        self.out_chunk_size = DEFAULT_CHUNK_SIZE
        self.peer_window = 0
        self.received = 0
        self._acked = 0

    # ---- input --------------------------------------------------------------------

    def read_message(self, buf: bytearray) -> _Message | None:
        """Consume whole chunks from ``buf`` until one completes a message; None = need more."""
        while True:
            got = self._read_chunk(buf)
            if got is None:
                return None
            if isinstance(got, _Message):
                self._on_control(got)
                return got

    def _on_control(self, msg: _Message) -> None:
        if msg.type_id == SET_CHUNK_SIZE:
            size = _u32(msg.payload) & 0x7FFFFFFF
            if not 1 <= size <= 0xFFFFFF:
                raise ProtocolError("set_chunk_size", f"chunk size {size} out of range")
            self.in_chunk_size = size
        elif msg.type_id == WINDOW_ACK:
            self.peer_window = _u32(msg.payload)
        elif msg.type_id == ABORT:
            cs = self._streams.get(_u32(msg.payload))
            if cs is not None:
                cs.payload.clear()

    def _read_chunk(self, buf: bytearray) -> _Message | bool | None:
        """Parse one chunk if ``buf`` holds it whole.

        None: not enough bytes (nothing consumed); True: a chunk was consumed; a
        ``_Message``: the chunk completed that message.
        """
        if not buf:
            return None
        first = buf[0]
        fmt, csid = first >> 6, first & 0x3F
        pos = 1
        if csid == 0:
            if len(buf) < 2:
                return None
            csid = 64 + buf[1]
            pos = 2
        elif csid == 1:
            if len(buf) < 3:
                return None
            csid = 64 + buf[1] + buf[2] * 256
            pos = 3
        header_len = (11, 7, 3, 0)[fmt]
        if len(buf) < pos + header_len:
            return None
        cs = self._streams.get(csid)
        if cs is None:
            if fmt != 0:
                raise ProtocolError("chunk", f"chunk stream {csid} starts with a type {fmt} header")
            if len(self._streams) >= MAX_CHUNK_STREAMS:
                raise ProtocolError("chunk", f"more than {MAX_CHUNK_STREAMS} chunk streams")
            cs = _ChunkStreamState()
        h = buf[pos : pos + header_len]
        pos += header_len
        ts_field = 0
        length, type_id, stream_id = cs.length, cs.type_id, cs.stream_id
        if fmt <= 2:
            ts_field = int.from_bytes(h[0:3], "big")
        if fmt <= 1:
            length = int.from_bytes(h[3:6], "big")
            type_id = h[6]
        if fmt == 0:
            stream_id = int.from_bytes(h[7:11], "little")
        extended = ts_field == 0xFFFFFF if fmt <= 2 else cs.extended
        if extended:
            if len(buf) < pos + 4:
                return None
            ts_field = int.from_bytes(buf[pos : pos + 4], "big")
            pos += 4
        if length > MAX_MESSAGE_SIZE:
            raise ProtocolError("chunk", f"message length {length} over {MAX_MESSAGE_SIZE}")
        if length < len(cs.payload):
            raise ProtocolError(
                "chunk", f"message length {length} is shorter than the {len(cs.payload)} bytes sent"
            )
        starting = not cs.payload
        need = min(self.in_chunk_size, length - len(cs.payload))
        if len(buf) < pos + need:
            return None
        # The whole chunk is here: commit the header and take the payload.
        if starting:
            if fmt == 0:
                cs.timestamp, cs.delta = ts_field, 0
            elif fmt in (1, 2):
                cs.delta = ts_field
                cs.timestamp += ts_field
            else:
                cs.timestamp += cs.delta
        cs.length, cs.type_id, cs.stream_id, cs.extended = length, type_id, stream_id, extended
        self._streams[csid] = cs
        cs.payload += buf[pos : pos + need]
        del buf[: pos + need]
        if len(cs.payload) >= cs.length:
            payload = bytes(cs.payload)
            cs.payload.clear()
            return _Message(cs.type_id, cs.stream_id, cs.timestamp & 0xFFFFFFFF, payload)
        return True

    def maybe_ack(self, out: bytearray) -> None:
        """Acknowledge what we received once the peer's window is full."""
        if self.peer_window and self.received - self._acked >= self.peer_window:
            self._acked = self.received
            self.write(out, 2, ACK, 0, 0, struct.pack(">I", self.received & 0xFFFFFFFF))

    # ---- output -------------------------------------------------------------------

    def write(
        self, out: bytearray, csid: int, type_id: int, stream_id: int, ts: int, payload: bytes
    ) -> None:
        """Append ``payload`` as one message: a type 0 header, then type 3 continuations.

        A timestamp from 0xFFFFFF up goes in the 4-byte extended field, which every
        continuation chunk repeats (as FFmpeg writes and reads it).
        """
        assert 2 <= csid <= 63, csid
        ts &= 0xFFFFFFFF
        extended = ts >= 0xFFFFFF
        ext = ts.to_bytes(4, "big") if extended else b""
        header = bytes([csid]) + (0xFFFFFF if extended else ts).to_bytes(3, "big")
        header += len(payload).to_bytes(3, "big") + bytes([type_id])
        header += stream_id.to_bytes(4, "little") + ext
        size = self.out_chunk_size
        out += header + payload[:size]
        continuation = bytes([0xC0 | csid]) + ext
        for i in range(size, len(payload), size):
            out += continuation + payload[i : i + size]


def _u32(payload: bytes) -> int:
    """A big-endian 32-bit field at the start of ``payload`` (short payloads zero-padded)."""
    return int.from_bytes(payload[:4].rjust(4, b"\0"), "big")


# Decides on a publish: returns None to accept, or the reason to refuse.
PublishCheck = Callable[[str], str | None]


class RtmpServerConnection:
    def __init__(self, app: str, check_publish: PublishCheck) -> None:
        self.app = app
        self._check_publish = check_publish
        self.state = State.HANDSHAKE
        self._in = bytearray()
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._chunks = _Chunker()
        self.stream_key = ""
        self.close_after_send = False

    # ---- public API ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        self._in += data
        self._chunks.received += len(data)
        if self.state is State.HANDSHAKE:
            self._handshake_c0c1()
        if self.state is State.HANDSHAKE_ACK:
            self._handshake_c2()
        if self.state in (State.CONNECTING, State.CONNECTED, State.PUBLISHING):
            while (msg := self._chunks.read_message(self._in)) is not None:
                self._on_message(msg.type_id, msg.stream_id, msg.timestamp, msg.payload)
            self._chunks.maybe_ack(self._out)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def connection_lost(self) -> None:
        if self.state is State.PUBLISHING:
            self._events.append(PublishEnded(self.stream_key))
        self.state = State.CLOSED

    # ---- handshake ----------------------------------------------------------------

    def _handshake_c0c1(self) -> None:
        if not self._in:
            return
        if self._in[0] != 3:
            raise ProtocolError("handshake", f"version {self._in[0]} (expected 3): not RTMP")
        if len(self._in) < 1 + HANDSHAKE_SIZE:
            return
        c1 = bytes(self._in[1 : 1 + HANDSHAKE_SIZE])
        del self._in[: 1 + HANDSHAKE_SIZE]
        s1 = b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00" + os.urandom(HANDSHAKE_SIZE - 8)
        self._out += b"\x03" + s1 + c1  # S0, S1, S2 (= C1 echoed)
        self.state = State.HANDSHAKE_ACK

    def _handshake_c2(self) -> None:
        if len(self._in) < HANDSHAKE_SIZE:
            return
        del self._in[:HANDSHAKE_SIZE]
        self.state = State.CONNECTING

    # ---- messages -----------------------------------------------------------------

    def _on_message(self, type_id: int, stream_id: int, ts: int, payload: bytes) -> None:
        if type_id in (SET_CHUNK_SIZE, WINDOW_ACK, ABORT, ACK, USER_CONTROL, PEER_BW):
            return  # the chunk layer took what it needs; nothing else for a publisher
        if type_id == COMMAND_AMF0:
            self._on_command(amf0.decode_all(payload))
        elif type_id == COMMAND_AMF3:
            self._on_command(amf0.decode_all(payload[1:]))  # AMF3 command = 0 byte + AMF0
        elif type_id in (AUDIO, VIDEO, DATA_AMF0):
            if self.state is not State.PUBLISHING:
                if type_id == DATA_AMF0:
                    return
                raise ProtocolError("media", "audio/video before a publish was accepted")
            kind = {AUDIO: "audio", VIDEO: "video", DATA_AMF0: "metadata"}[type_id]
            if payload:
                self._events.append(MediaMessage(kind, ts, payload))
        elif type_id == DATA_AMF3:
            return
        else:
            raise ProtocolError("message", f"unknown RTMP message type {type_id}")

    def _on_command(self, values: list[object]) -> None:
        if len(values) < 2 or not isinstance(values[0], str):
            raise ProtocolError("command", "an AMF0 command needs a name and a transaction id")
        name, txn = values[0], values[1]
        txn_id = float(txn) if isinstance(txn, (int, float)) else 0.0
        args = values[2:]
        if name == "connect":
            self._on_connect(txn_id, args)
        elif self.state is State.CONNECTING:
            raise ProtocolError("command", f"'{name}' before connect")
        elif name == "createStream":
            self._send_command(3, 0, "_result", txn_id, None, float(STREAM_ID))
        elif name == "publish":
            self._on_publish(txn_id, args)
        elif name in ("releaseStream", "FCPublish", "FCUnpublish", "getStreamLength"):
            if txn_id:
                self._send_command(3, 0, "_result", txn_id, None, amf0.UNDEFINED_VALUE)
        elif name in ("deleteStream", "closeStream"):
            if self.state is State.PUBLISHING:
                self._events.append(PublishEnded(self.stream_key))
                self.state = State.CONNECTED
        elif name == "play":
            self._on_status("error", "NetStream.Play.Failed", "this node only takes publishers")
            self.close_after_send = True
        # Other calls (e.g. _checkbw) need no answer from an ingest server.

    def _on_connect(self, txn: float, args: list[object]) -> None:
        if self.state is not State.CONNECTING:
            raise ProtocolError("connect", "connect sent twice")
        cmd = args[0] if args and isinstance(args[0], dict) else {}
        app = str(cmd.get("app", "")).strip("/")
        tc_url = str(cmd.get("tcUrl", ""))
        self._send(2, WINDOW_ACK, 0, 0, struct.pack(">I", WINDOW_ACK_SIZE))
        self._send(2, PEER_BW, 0, 0, struct.pack(">IB", WINDOW_ACK_SIZE, 2))
        self._send(2, SET_CHUNK_SIZE, 0, 0, struct.pack(">I", OUR_CHUNK_SIZE))
        self._chunks.out_chunk_size = OUR_CHUNK_SIZE
        if app != self.app:
            self._send_command(
                3,
                0,
                "_error",
                txn,
                None,
                {
                    "level": "error",
                    "code": "NetConnection.Connect.Rejected",
                    "description": f"unknown application '{app}' (use /{self.app}/<stream key>)",
                },
            )
            self.close_after_send = True
            self._events.append(PublishRejected("", f"unknown application '{app}'"))
            return
        self._send_command(
            3,
            0,
            "_result",
            txn,
            {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
            {
                "level": "status",
                "code": "NetConnection.Connect.Success",
                "description": "Connection succeeded.",
                "objectEncoding": 0.0,
            },
        )
        self.state = State.CONNECTED
        self._events.append(Connected(app, tc_url))

    def _on_publish(self, txn: float, args: list[object]) -> None:
        if self.state is State.PUBLISHING:
            raise ProtocolError("publish", "publish sent twice")
        raw = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
        key = raw.split("?", 1)[0]
        refusal = self._check_publish(key) if key else "no stream key"
        if refusal is not None:
            self._on_status("error", "NetStream.Publish.BadName", refusal)
            self.close_after_send = True
            self._events.append(PublishRejected(key, refusal))
            return
        self.stream_key = key
        # User control: Stream Begin for our stream id.
        self._send(2, USER_CONTROL, 0, 0, struct.pack(">HI", 0, STREAM_ID))
        self._on_status("status", "NetStream.Publish.Start", "publishing")
        self.state = State.PUBLISHING
        self._events.append(PublishStarted(key))

    # ---- output -------------------------------------------------------------------

    def _on_status(self, level: str, code: str, description: str) -> None:
        self._send_command(
            5,
            STREAM_ID,
            "onStatus",
            0.0,
            None,
            {"level": level, "code": code, "description": description},
        )

    def _send_command(self, csid: int, stream_id: int, *values: object) -> None:
        self._send(csid, COMMAND_AMF0, stream_id, 0, amf0.encode_all(*values))

    def _send(self, csid: int, type_id: int, stream_id: int, ts: int, payload: bytes) -> None:
        self._chunks.write(self._out, csid, type_id, stream_id, ts, payload)
