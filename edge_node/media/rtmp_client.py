"""Sans-I/O RTMP publishing client: our side of an RTMP push to a platform or CDN.

Bytes in (``receive_data``), events out (``next_event``), bytes to send pulled
(``data_to_send``); no sockets, no clocks. ``initiate()`` starts the plain handshake
(C0+C1; C2 echoes S1); after S2 the connection sets its chunk size and runs the
publisher's command sequence on its own: ``connect`` -> ``releaseStream``,
``FCPublish``, ``createStream`` -> ``publish(key, "live")``, ending in
``PublishAccepted`` or ``PublishRefused``. Then ``send_video`` / ``send_metadata``
write chunked media messages.

The chunk layer is the server's (``rtmp._Chunker``), so both roles parse and write
chunks the same way. Anything malformed from the server raises ``ProtocolError``
naming the field (the peer's fault); calling a method in the wrong state raises
``RuntimeError`` (the caller's bug). Never put the stream key in an event's text: the
adapter logs events, and the key is a secret.
"""

from __future__ import annotations

import math
import os
import struct
import urllib.parse
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

from edge_node.errors import ProtocolError
from edge_node.media import amf0
from edge_node.media.rtmp import (
    ABORT,
    ACK,
    AUDIO,
    COMMAND_AMF0,
    COMMAND_AMF3,
    DATA_AMF0,
    DATA_AMF3,
    HANDSHAKE_SIZE,
    OUR_CHUNK_SIZE,
    PEER_BW,
    SET_CHUNK_SIZE,
    USER_CONTROL,
    VIDEO,
    WINDOW_ACK,
    WINDOW_ACK_SIZE,
    _Chunker,
)

DEFAULT_PORT = 1935
DEFAULT_TLS_PORT = 443

# Chunk stream ids we send on (as FFmpeg lays them out).
CSID_CONTROL, CSID_COMMAND, CSID_AUDIO, CSID_STREAM, CSID_VIDEO = 2, 3, 4, 5, 6

# User control event types we answer.
_PING_REQUEST, _PING_RESPONSE = 6, 7
# Message types a server may send that a publisher has no use for.
_SHARED_OBJECT_AMF3, _SHARED_OBJECT_AMF0, _AGGREGATE = 16, 19, 22

PUBLISH_START = "NetStream.Publish.Start"


# ---- the push URL -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PushTarget:
    """Where to push: ``rtmp[s]://host[:port]/app/<stream key>``."""

    host: str
    port: int
    app: str
    stream_key: str
    tls: bool

    @property
    def _base(self) -> str:
        scheme = "rtmps" if self.tls else "rtmp"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def tc_url(self) -> str:
        """The ``tcUrl`` of ``connect``: the URL without the key."""
        return f"{self._base}/{self.app}"

    @property
    def redacted(self) -> str:
        """The URL with the stream key replaced by ``***``: the only form to log or show."""
        return f"{self._base}/{self.app}/***"


def parse_push_url(url: str) -> PushTarget:
    """Parse ``rtmp://host[:port]/app/key`` (port 1935) or ``rtmps://...`` (port 443).

    The key is the last path segment (a ``?query`` after it stays part of it, as
    servers expect); the app is everything between the host and the key, so
    ``/app/instance/key`` works too. Raises ``ProtocolError("push.url", ...)``; the
    message never contains the key.
    """
    form = "expected rtmp://host[:port]/app/<stream key>"
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        raise ProtocolError("push.url", form)
    scheme = scheme.lower()
    if scheme not in ("rtmp", "rtmps"):
        raise ProtocolError("push.url", f"scheme '{scheme}' is not supported; {form}")
    tls = scheme == "rtmps"
    netloc, _, path = rest.partition("/")
    if "@" in netloc:
        raise ProtocolError("push.url", "user:password@ in the URL is not supported")
    try:
        parts = urllib.parse.urlsplit("//" + netloc)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ProtocolError("push.url", f"bad host or port '{netloc}': {exc}") from None
    if not host:
        raise ProtocolError("push.url", f"no host; {form}")
    app, _, key = path.rstrip("/").rpartition("/")
    if not app.strip("/") or not key:
        raise ProtocolError("push.url", f"needs both an app and a stream key; {form}")
    if port is None:
        port = DEFAULT_TLS_PORT if tls else DEFAULT_PORT
    if port == 0:
        raise ProtocolError("push.url", "port 0 is not a port to connect to")
    return PushTarget(host, port, app.strip("/"), key, tls)


# ---- events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublishAccepted:
    stream_id: int


@dataclass(frozen=True, slots=True)
class PublishRefused:
    """The server said no (to ``connect``, ``createStream`` or ``publish``)."""

    code: str
    description: str


@dataclass(frozen=True, slots=True)
class StatusReceived:
    """Any other ``onStatus`` (e.g. an error level status once publishing)."""

    level: str
    code: str
    description: str


Event = PublishAccepted | PublishRefused | StatusReceived


class ClientState(Enum):
    IDLE = "idle"  # nothing sent yet
    HANDSHAKE = "handshake"  # C0+C1 sent, waiting for S0+S1
    HANDSHAKE_ACK = "handshake_ack"  # C2 sent, waiting for S2
    CONNECTING = "connecting"  # connect sent, waiting for its _result
    CREATING_STREAM = "creating_stream"  # createStream sent, waiting for the stream id
    PUBLISH_REQUESTED = "publish_requested"  # publish sent, waiting for onStatus
    PUBLISHING = "publishing"
    CLOSED = "closed"


_S = ClientState
# Every legal state change; anything else is a bug in this module.
_TRANSITIONS: dict[ClientState, frozenset[ClientState]] = {
    _S.IDLE: frozenset({_S.HANDSHAKE, _S.CLOSED}),
    _S.HANDSHAKE: frozenset({_S.HANDSHAKE_ACK, _S.CLOSED}),
    _S.HANDSHAKE_ACK: frozenset({_S.CONNECTING, _S.CLOSED}),
    _S.CONNECTING: frozenset({_S.CREATING_STREAM, _S.CLOSED}),
    _S.CREATING_STREAM: frozenset({_S.PUBLISH_REQUESTED, _S.CLOSED}),
    _S.PUBLISH_REQUESTED: frozenset({_S.PUBLISHING, _S.CLOSED}),
    _S.PUBLISHING: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
}

# Server messages a publisher reads for the chunk layer only, or not at all.
_IGNORED_TYPES = frozenset(
    {SET_CHUNK_SIZE, ABORT, ACK, WINDOW_ACK, PEER_BW, AUDIO, VIDEO, DATA_AMF0, DATA_AMF3}
    | {_SHARED_OBJECT_AMF3, _SHARED_OBJECT_AMF0, _AGGREGATE}
)


class RtmpClientConnection:
    def __init__(
        self, app: str, stream_key: str, tc_url: str, chunk_size: int = OUR_CHUNK_SIZE
    ) -> None:
        if not 1 <= chunk_size <= 0xFFFFFF:
            raise ValueError(f"chunk size {chunk_size} out of range")
        self.app = app
        self.tc_url = tc_url
        self._stream_key = stream_key
        self._chunk_size = chunk_size
        self.state = ClientState.IDLE
        self.stream_id = 0
        self._in = bytearray()
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._chunks = _Chunker()
        self._next_txn = 1
        self._pending: dict[float, str] = {}  # transaction id -> command name

    # ---- public API ---------------------------------------------------------------

    def initiate(self) -> None:
        """Queue C0+C1; the rest of the setup follows from the server's answers."""
        if self.state is not ClientState.IDLE:
            raise RuntimeError(f"initiate() in state {self.state.value}")
        c1 = bytes(8) + os.urandom(HANDSHAKE_SIZE - 8)  # time 0, zero, random
        self._out += b"\x03" + c1
        self._set_state(ClientState.HANDSHAKE)

    def receive_data(self, data: bytes) -> None:
        if self.state in (ClientState.IDLE, ClientState.CLOSED):
            return
        self._in += data
        self._chunks.received += len(data)
        if self.state is ClientState.HANDSHAKE:
            self._handshake_s0s1()
        if self.state is ClientState.HANDSHAKE_ACK:
            self._handshake_s2()
        if self.state in (ClientState.HANDSHAKE, ClientState.HANDSHAKE_ACK, ClientState.CLOSED):
            return  # handshake incomplete, or refused: nothing more to read
        while (msg := self._chunks.read_message(self._in)) is not None:
            self._on_message(msg.type_id, msg.timestamp, msg.payload)
            if self._refused():
                return
        self._chunks.maybe_ack(self._out)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def send_video(self, timestamp_ms: int, tag_body: bytes) -> None:
        """One FLV video tag body (``flv.avc_sequence_header`` / ``flv.avc_video_tag``)."""
        self._require_publishing("send_video")
        self._chunks.write(self._out, CSID_VIDEO, VIDEO, self.stream_id, timestamp_ms, tag_body)

    def send_audio(self, timestamp_ms: int, tag_body: bytes) -> None:
        self._require_publishing("send_audio")
        self._chunks.write(self._out, CSID_AUDIO, AUDIO, self.stream_id, timestamp_ms, tag_body)

    def send_metadata(self, metadata: dict[str, Any]) -> None:
        """``@setDataFrame("onMetaData", {...})``, the stream's description, as FFmpeg sends it."""
        self._require_publishing("send_metadata")
        # An ECMA array is an object's properties behind a count instead of the marker.
        ecma = bytes([amf0.ECMA_ARRAY]) + struct.pack(">I", len(metadata))
        ecma += amf0.encode(metadata)[1:]
        payload = amf0.encode_all("@setDataFrame", "onMetaData") + ecma
        self._chunks.write(self._out, CSID_STREAM, DATA_AMF0, self.stream_id, 0, payload)

    def close(self) -> None:
        """Queue FCUnpublish + deleteStream when publishing (a clean stop); then closed."""
        if self.state is ClientState.PUBLISHING:
            self._command(CSID_COMMAND, 0, "FCUnpublish", None, self._stream_key)
            self._command(CSID_COMMAND, 0, "deleteStream", None, float(self.stream_id))
        if self.state is not ClientState.CLOSED:
            self._set_state(ClientState.CLOSED)

    def connection_lost(self) -> None:
        if self.state is not ClientState.CLOSED:
            self._set_state(ClientState.CLOSED)

    # ---- state --------------------------------------------------------------------

    def _set_state(self, new: ClientState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"rtmp client: no transition {self.state.value} -> {new.value}")
        self.state = new

    def _refused(self) -> bool:
        # A method, not an inline check: a message can close the connection mid-loop.
        return self.state is ClientState.CLOSED

    def _require_publishing(self, what: str) -> None:
        if self.state is not ClientState.PUBLISHING:
            raise RuntimeError(f"{what}() in state {self.state.value}: publish not accepted")

    # ---- handshake ----------------------------------------------------------------

    def _handshake_s0s1(self) -> None:
        if not self._in:
            return
        if self._in[0] != 3:
            raise ProtocolError("handshake", f"version {self._in[0]} (expected 3): not RTMP")
        if len(self._in) < 1 + HANDSHAKE_SIZE:
            return
        s1 = bytes(self._in[1 : 1 + HANDSHAKE_SIZE])
        del self._in[: 1 + HANDSHAKE_SIZE]
        self._out += s1  # C2 = S1 echoed
        self._set_state(ClientState.HANDSHAKE_ACK)

    def _handshake_s2(self) -> None:
        # S2 should echo C1; servers differ on the time fields, and nothing depends on
        # it, so like FFmpeg's plain handshake we do not check it.
        if len(self._in) < HANDSHAKE_SIZE:
            return
        del self._in[:HANDSHAKE_SIZE]
        self._set_state(ClientState.CONNECTING)
        self._chunks.write(
            self._out, CSID_CONTROL, SET_CHUNK_SIZE, 0, 0, struct.pack(">I", self._chunk_size)
        )
        self._chunks.out_chunk_size = self._chunk_size
        self._chunks.write(
            self._out, CSID_CONTROL, WINDOW_ACK, 0, 0, struct.pack(">I", WINDOW_ACK_SIZE)
        )
        self._command(
            CSID_COMMAND,
            0,
            "connect",
            {
                "app": self.app,
                "type": "nonprivate",
                "flashVer": "FMLE/3.0 (compatible; edge-node)",
                "tcUrl": self.tc_url,
            },
        )

    # ---- messages -----------------------------------------------------------------

    def _on_message(self, type_id: int, ts: int, payload: bytes) -> None:
        if type_id == COMMAND_AMF0:
            self._on_command(amf0.decode_all(payload))
        elif type_id == COMMAND_AMF3:
            self._on_command(amf0.decode_all(payload[1:]))  # AMF3 command = 0 byte + AMF0
        elif type_id == USER_CONTROL:
            if len(payload) >= 6 and int.from_bytes(payload[:2], "big") == _PING_REQUEST:
                # Servers (nginx-rtmp's ping) drop clients that never answer.
                pong = struct.pack(">H", _PING_RESPONSE) + payload[2:6]
                self._chunks.write(self._out, CSID_CONTROL, USER_CONTROL, 0, 0, pong)
        elif type_id not in _IGNORED_TYPES:
            raise ProtocolError("message", f"unknown RTMP message type {type_id}")

    def _on_command(self, values: list[object]) -> None:
        if not values or not isinstance(values[0], str):
            raise ProtocolError("command", "an AMF0 command needs a name")
        # Servers cut corners: FFmpeg's sends a bare "onFCPublish", no transaction id.
        name, txn = values[0], values[1] if len(values) > 1 else 0.0
        txn_id = float(txn) if isinstance(txn, (int, float)) else 0.0
        if name in ("_result", "_error"):
            command = self._pending.pop(txn_id, "")
            if command:
                self._on_result(command, name == "_result", values[2:])
        elif name == "onStatus":
            self._on_status(_info(values[3] if len(values) > 3 else None))
        # Other calls (onBWDone, onFCPublish, _checkbw, ...) need nothing from a publisher.

    def _on_result(self, command: str, ok: bool, args: list[object]) -> None:
        if command == "connect" and self.state is ClientState.CONNECTING:
            if not ok:
                info = _info(args[1] if len(args) > 1 else None)
                self._refuse(info.get("code", "NetConnection.Connect.Rejected"), info)
                return
            self._command(CSID_COMMAND, 0, "releaseStream", None, self._stream_key)
            self._command(CSID_COMMAND, 0, "FCPublish", None, self._stream_key)
            self._command(CSID_COMMAND, 0, "createStream", None)
            self._set_state(ClientState.CREATING_STREAM)
        elif command == "createStream" and self.state is ClientState.CREATING_STREAM:
            if not ok:
                info = _info(args[1] if len(args) > 1 else None)
                self._refuse(info.get("code", "NetConnection.Call.Failed"), info)
                return
            self.stream_id = _stream_id(args[1] if len(args) > 1 else None)
            self._command(CSID_STREAM, self.stream_id, "publish", None, self._stream_key, "live")
            self._set_state(ClientState.PUBLISH_REQUESTED)
        # releaseStream / FCPublish answers (often _error: nothing to release) change nothing.

    def _on_status(self, info: dict[str, str]) -> None:
        level, code = info.get("level", ""), info.get("code", "")
        if self.state is ClientState.PUBLISH_REQUESTED:
            if code == PUBLISH_START:
                self._set_state(ClientState.PUBLISHING)
                self._events.append(PublishAccepted(self.stream_id))
                return
            if level == "error":
                self._refuse(code, info)
                return
        self._events.append(StatusReceived(level, code, info.get("description", "")))

    def _refuse(self, code: str, info: dict[str, str]) -> None:
        self._events.append(PublishRefused(code, info.get("description", "")))
        self._set_state(ClientState.CLOSED)

    # ---- output -------------------------------------------------------------------

    def _command(self, csid: int, stream_id: int, name: str, *args: object) -> None:
        txn = float(self._next_txn)
        self._next_txn += 1
        self._pending[txn] = name
        payload = amf0.encode_all(name, txn, *args)
        self._chunks.write(self._out, csid, COMMAND_AMF0, stream_id, 0, payload)


def _info(value: object) -> dict[str, str]:
    """The string fields of a status/info object (anything else: empty)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def _stream_id(value: object) -> int:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0 <= value < 2**32
        or value != int(value)
    ):
        raise ProtocolError(
            "createStream", f"stream id {value!r} is not an unsigned 32-bit integer"
        )
    return int(value)
