"""A lean RFC 6455 WebSocket client for the load generator (``bench.load_gen``).

Sans-I/O framing (handshake request and check, masking, a frame reader) and a thin
asyncio protocol, ``WsClient``: the opening handshake with its ``Sec-WebSocket-Accept``
check, no extension, every frame to the node masked with a fresh key from
``os.urandom``, frames written as soon as they are built (no await per send; a full
send buffer is waited for), pings answered, the closing handshake done. Cheaper per
frame than aiohttp's client, which matters when the load shares two cores with the
node it measures.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import msgpack

CONNECT_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0

# ---- WebSocket framing (RFC 6455), sans-I/O ------------------------------------------

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
MAX_HEAD_BYTES = 64 * 1024
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class WsError(RuntimeError):
    """The node broke the WebSocket protocol, refused the upgrade, or closed."""


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``Sec-WebSocket-Key: key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WS_GUID).digest()).decode()


def handshake_request(host: str, path: str, key: str, headers: dict[str, str]) -> bytes:
    """The client's opening handshake (RFC 6455 section 4.1); ``host`` as in a URL."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def check_handshake(head: bytes, key: str, rest: bytes = b"") -> None:
    """Raise ``WsError`` unless ``head`` (status line and headers, without the blank
    line) upgrades to a WebSocket for ``key`` with no extension or subprotocol; ``rest``
    (what followed, e.g. a refusal's body) goes into the message."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0]
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise WsError(f"handshake: bad header line {line!r}")
        name = name.strip().lower()
        value = value.strip()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    parts = status.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or parts[1] != "101":
        body = rest[:300].decode("utf-8", "replace")
        raise WsError(f"handshake: {status}" + (f": {body}" if body else ""))
    if fields.get("upgrade", "").lower() != "websocket":
        raise WsError(f"handshake: Upgrade is {fields.get('upgrade')!r}, not websocket")
    if "upgrade" not in [t.strip().lower() for t in fields.get("connection", "").split(",")]:
        raise WsError(f"handshake: Connection is {fields.get('connection')!r}, not Upgrade")
    if fields.get("sec-websocket-accept") != accept_key(key):
        raise WsError("handshake: wrong Sec-WebSocket-Accept")
    for name in ("sec-websocket-extensions", "sec-websocket-protocol"):
        if name in fields:
            raise WsError(f"handshake: the server chose {name} {fields[name]!r}, none offered")


class Masks:
    """Masking keys (RFC 6455 section 5.3: a fresh one per frame, from a strong source
    of entropy), read from ``os.urandom`` 16 KiB at a time."""

    def __init__(self, pool_bytes: int = 16 * 1024) -> None:
        self._pool_bytes = pool_bytes
        self._pool = b""
        self._pos = 0

    def next(self) -> bytes:
        pos = self._pos
        if pos + 4 > len(self._pool):
            self._pool = os.urandom(self._pool_bytes)
            pos = 0
        self._pos = pos + 4
        return self._pool[pos : pos + 4]


_REPEAT: dict[int, tuple[int, int]] = {}  # payload length -> (key repeater, length mask)


def mask(key: bytes, payload: bytes) -> bytes:
    """``payload`` XOR the 4-byte ``key`` repeated (its own inverse), as one big-int XOR."""
    n = len(payload)
    rep = _REPEAT.get(n)
    if rep is None:
        rep = (sum(1 << (32 * i) for i in range((n + 3) // 4)), (1 << (8 * n)) - 1)
        if n <= 4096:
            _REPEAT[n] = rep
    k = int.from_bytes(key, "little") * rep[0]
    return ((int.from_bytes(payload, "little") ^ k) & rep[1]).to_bytes(n, "little")


def client_frame(opcode: int, payload: bytes, key: bytes) -> bytes:
    """One final (FIN) frame from a client: masked with ``key``, no extension bits."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + key + mask(key, payload)


class FrameReader:
    """The server's frames to whole messages: data frames (fragments joined) as
    ``(opcode, payload)``, control frames as they come. A server's frames are never
    masked and, with no extension negotiated, carry no RSV bit."""

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._buf = b""
        self._frag_op: int | None = None
        self._frags: list[bytes] = []
        self._frag_len = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b1 & 0x80:
                raise WsError("a masked frame from the server")
            if b0 & 0x70:
                raise WsError("a frame with RSV bits set (no extension was negotiated)")
            length, head = b1 & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if length > self.max_message_bytes:
                raise WsError(f"a frame of {length} bytes (at most {self.max_message_bytes})")
            if end - pos < head + length:
                break
            payload = buf[pos + head : pos + head + length]
            pos += head + length
            opcode, fin = b0 & 0x0F, b0 & 0x80
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG or not fin or length > 125:
                    raise WsError(f"a bad control frame (opcode {opcode}, {length} bytes)")
                out.append((opcode, payload))
            elif opcode == OP_CONTINUATION:
                if self._frag_op is None:
                    raise WsError("a continuation frame with no message to continue")
                self._frags.append(payload)
                self._frag_len += length
                if self._frag_len > self.max_message_bytes:
                    raise WsError(f"a message over {self.max_message_bytes} bytes")
                if fin:
                    out.append((self._frag_op, b"".join(self._frags)))
                    self._frag_op, self._frags, self._frag_len = None, [], 0
            elif opcode in (OP_TEXT, OP_BINARY):
                if self._frag_op is not None:
                    raise WsError("a new message before the last one's final fragment")
                if fin:
                    out.append((opcode, payload))
                else:
                    self._frag_op, self._frags, self._frag_len = opcode, [payload], length
            else:
                raise WsError(f"a frame with the reserved opcode {opcode}")
        self._buf = buf[pos:]
        return out


# ---- replies ------------------------------------------------------------------------

# msgpack of a map whose first entry is "t": "ack" / "t": "state", after the map header
# (fixmap, 1 to 15 entries): the node packs its replies from dicts that start with "t".
ACK_ENTRY = msgpack.packb("t") + msgpack.packb("ack")
STATE_ENTRY = msgpack.packb("t") + msgpack.packb("state")


def reply_code(payload: bytes) -> str | None:
    """What a binary frame from the node says: ``"ack"``, the error's code, or None for
    pushed state (not a reply). An ack is known from its first bytes; anything else is
    unpacked (an unreadable frame is ``"bad_reply"``)."""
    if payload and 0x81 <= payload[0] <= 0x8F:
        if payload.startswith(ACK_ENTRY, 1):
            return "ack"
        if payload.startswith(STATE_ENTRY, 1):
            return None
    try:
        reply = msgpack.unpackb(payload)
    except (ValueError, TypeError, msgpack.UnpackException):
        return "bad_reply"
    if not isinstance(reply, dict):
        return "bad_reply"
    kind = reply.get("t")
    if kind == "state":
        return None
    return "ack" if kind == "ack" else str(reply.get("code"))


# ---- the client ---------------------------------------------------------------------

OnMessage = Callable[[int, bytes], None]  # (OP_TEXT or OP_BINARY, payload)


@dataclass(frozen=True, slots=True)
class WsUrl:
    host: str  # for the connection
    port: int
    netloc: str  # for the Host header
    path: str
    tls: bool

    @classmethod
    def of(cls, base_url: str) -> WsUrl:
        """The node's ``/ws`` under ``base_url`` (http, https, ws or wss)."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
            raise ValueError(f"url: {base_url!r} is not http(s)://HOST[:PORT][/PATH]")
        tls = parts.scheme in ("https", "wss")
        netloc = parts.netloc.rpartition("@")[2]
        port = parts.port or (443 if tls else 80)
        return cls(parts.hostname, port, netloc, parts.path.rstrip("/") + "/ws", tls)


class WsClient(asyncio.Protocol):
    """One client WebSocket: the handshake, then masked frames out (``send_binary``,
    synchronous: the transport buffers what the socket does not take at once) and
    whole messages in (``on_message``). Pings are answered; a close is echoed."""

    def __init__(self, request: bytes, key: str, on_message: OnMessage, masks: Masks) -> None:
        loop = asyncio.get_running_loop()
        self._request = request
        self._key = key
        self.on_message = on_message
        self._masks = masks
        self._head = b""
        self._reader = FrameReader()
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        # A handshake given up on (a timeout) fails later: not an unretrieved exception.
        self.opened.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.closed: asyncio.Future[None] = loop.create_future()
        self.close_reason = ""
        self._open = False  # handshake done, no close frame sent or received, not failed
        self._close_sent = False
        self.paused = False
        self._drained: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Every frame goes out as written (asyncio sets this too; said, not assumed).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        try:
            if not self.opened.done():
                data = self._handshake(data)
                if not data:
                    return
            for opcode, payload in self._reader.feed(data):
                if opcode <= OP_BINARY:
                    self.on_message(opcode, payload)
                elif opcode == OP_PING:
                    self._write(OP_PONG, payload)
                elif opcode == OP_CLOSE:
                    self._on_close(payload)
        except WsError as exc:
            self._fail(str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        reason = self.close_reason or (f"connection lost: {exc}" if exc else "connection closed")
        self.close_reason = reason
        if not self.opened.done():
            self.opened.set_exception(WsError(f"handshake: {reason}"))
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake_writer()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_writer()

    # the socket

    def send_binary(self, payload: bytes) -> None:
        """Write one binary message; ``ConnectionResetError`` once the socket is closed."""
        if not self._open:
            raise ConnectionResetError(f"websocket closed: {self.close_reason or 'by us'}")
        assert self.transport is not None
        self.transport.write(client_frame(OP_BINARY, payload, self._masks.next()))

    async def drain(self) -> None:
        """Wait while the transport holds more than its high-water mark."""
        if self.paused and not self.closed.done():
            if self._drained is None:
                self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    async def close(self, code: int = 1000, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """The closing handshake: our close frame, the node's, then the connection."""
        if self.transport is None or self.closed.done():
            return
        self._open = False
        if not self._close_sent:
            self._close_sent = True
            self._write(OP_CLOSE, code.to_bytes(2, "big"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        self.transport.close()

    def _write(self, opcode: int, payload: bytes) -> None:
        """A control frame (a pong, a close), unless the connection is going."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(opcode, payload, self._masks.next()))

    def _handshake(self, data: bytes) -> bytes:
        """Collect the server's response head; what follows it is frames."""
        self._head += data
        head, sep, rest = self._head.partition(b"\r\n\r\n")
        if not sep:
            if len(self._head) > MAX_HEAD_BYTES:
                raise WsError(f"handshake: no end of headers in {MAX_HEAD_BYTES} bytes")
            return b""
        self._head = b""
        check_handshake(head, self._key, rest)
        self._open = True
        self.opened.set_result(None)
        return rest

    def _on_close(self, payload: bytes) -> None:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        text = payload[2:].decode("utf-8", "replace")
        self.close_reason = f"closed by the node ({code}{': ' + text if text else ''})"
        self._open = False
        if not self._close_sent:
            self._close_sent = True
            self._write(OP_CLOSE, payload[:2])
        assert self.transport is not None
        self.transport.close()

    def _fail(self, reason: str) -> None:
        self._open = False
        self.close_reason = reason
        if not self.opened.done():
            self.opened.set_exception(WsError(reason))
        if self.transport is not None:
            self.transport.abort()

    def _wake_writer(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None


async def ws_connect(
    url: WsUrl,
    headers: dict[str, str],
    on_message: OnMessage,
    masks: Masks,
    timeout: float = CONNECT_TIMEOUT_S,
) -> WsClient:
    """Connect and complete the opening handshake (``WsError``, ``OSError`` or
    ``TimeoutError`` if it fails)."""
    loop = asyncio.get_running_loop()
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    request = handshake_request(url.netloc, url.path, key, headers)
    tls = ssl.create_default_context() if url.tls else None

    async def connect() -> WsClient:
        _, proto = await loop.create_connection(
            lambda: WsClient(request, key, on_message, masks),
            url.host,
            url.port,
            ssl=tls,
            server_hostname=url.host if tls else None,
        )
        try:
            await proto.opened
        except BaseException:
            if proto.transport is not None:
                proto.transport.abort()
            raise
        return proto

    return await asyncio.wait_for(connect(), timeout)
