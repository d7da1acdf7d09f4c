"""The RTMP server and publishing client connections driven against each other in
memory (bytes piped by hand, no sockets): handshake, connect, publish accepted or
refused, media with big payloads and extended timestamps, the push URL; property tests
for arbitrary byte splits and for garbage, which must only ever raise ProtocolError."""

from __future__ import annotations

import contextlib
import itertools
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_node.errors import ProtocolError
from edge_node.media import amf0, rtmp
from edge_node.media import rtmp_client as rc

pytestmark = pytest.mark.timeout(60)

APP, KEY = "live", "s3cret-key"
TC_URL = "rtmp://127.0.0.1:1935/live"
TIMESTAMPS = [0, 33, 0xFFFFFE, 0xFFFFFF, 0x1000000, 0x7FFFFFFF, 0xFFFFFFFF]
SIZES = [1, 127, 128, 129, 4096, 4097, 100_000]


def check_key(key: str) -> str | None:
    return None if key == KEY else "unknown stream key"


def new_pair(
    key: str = KEY, app: str = APP, chunk_size: int = rtmp.OUR_CHUNK_SIZE
) -> tuple[rc.RtmpClientConnection, rtmp.RtmpServerConnection]:
    client = rc.RtmpClientConnection(app, key, TC_URL, chunk_size=chunk_size)
    server = rtmp.RtmpServerConnection(APP, check_key)
    return client, server


class Wire:
    """Pipes bytes both ways until both sides are quiet; keeps what each side sent."""

    def __init__(self, client: rc.RtmpClientConnection, server: rtmp.RtmpServerConnection):
        self.client, self.server = client, server
        self.from_client = bytearray()
        self.from_server = bytearray()

    def pump(self) -> None:
        for _ in range(100):
            up = self.client.data_to_send()
            if up:
                self.from_client += up
                self.server.receive_data(up)
            down = self.server.data_to_send()
            if down:
                self.from_server += down
                self.client.receive_data(down)
            if not up and not down:
                return
        raise AssertionError("the two sides never went quiet")


def drain(conn: Any) -> list[Any]:
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    return events


def publishing_pair(chunk_size: int = rtmp.OUR_CHUNK_SIZE) -> Wire:
    client, server = new_pair(chunk_size=chunk_size)
    wire = Wire(client, server)
    client.initiate()
    wire.pump()
    assert drain(client) == [rc.PublishAccepted(rtmp.STREAM_ID)]
    assert drain(server) == [rtmp.Connected(APP, TC_URL), rtmp.PublishStarted(KEY)]
    return wire


def media_session() -> Wire:
    """A whole session: setup, metadata, video of every size and timestamp, unpublish."""
    wire = publishing_pair()
    wire.client.send_metadata({"width": 160.0, "height": 96.0})
    for size, ts in zip(SIZES, TIMESTAMPS, strict=True):
        wire.client.send_video(ts, bytes([size & 0xFF]) * size)
    wire.client.close()
    wire.pump()
    return wire


# ---- handshake, connect, publish -------------------------------------------------------


def test_handshake_sizes_and_states() -> None:
    client, server = new_pair()
    client.initiate()
    c0c1 = client.data_to_send()
    assert len(c0c1) == 1 + rtmp.HANDSHAKE_SIZE and c0c1[0] == 3
    assert client.state is rc.ClientState.HANDSHAKE
    server.receive_data(c0c1)
    s0s1s2 = server.data_to_send()
    assert len(s0s1s2) == 1 + 2 * rtmp.HANDSHAKE_SIZE
    assert s0s1s2[1 + rtmp.HANDSHAKE_SIZE :] == c0c1[1:]  # S2 echoes C1
    client.receive_data(s0s1s2[:1000])  # S1 incomplete: nothing yet
    assert client.data_to_send() == b"" and client.state is rc.ClientState.HANDSHAKE
    client.receive_data(s0s1s2[1000:])
    out = client.data_to_send()
    assert out[: rtmp.HANDSHAKE_SIZE] == s0s1s2[1 : 1 + rtmp.HANDSHAKE_SIZE]  # C2 echoes S1
    assert client.state is rc.ClientState.CONNECTING
    server.receive_data(out)
    assert server.state is rtmp.State.CONNECTED


def test_publish_accepted_for_the_right_key() -> None:
    wire = publishing_pair()
    assert wire.client.state is rc.ClientState.PUBLISHING
    assert wire.server.state is rtmp.State.PUBLISHING
    assert wire.server.stream_key == KEY and not wire.server.close_after_send


def test_publish_refused_for_a_wrong_key() -> None:
    client, server = new_pair(key="wrong")
    wire = Wire(client, server)
    client.initiate()
    wire.pump()
    assert drain(client) == [rc.PublishRefused("NetStream.Publish.BadName", "unknown stream key")]
    assert client.state is rc.ClientState.CLOSED
    assert drain(server) == [
        rtmp.Connected(APP, TC_URL),
        rtmp.PublishRejected("wrong", "unknown stream key"),
    ]
    assert server.close_after_send
    with pytest.raises(RuntimeError):
        client.send_video(0, b"\x17")


def test_connect_refused_for_a_wrong_app() -> None:
    client, server = new_pair(app="other")
    wire = Wire(client, server)
    client.initiate()
    wire.pump()
    (refused,) = drain(client)
    assert isinstance(refused, rc.PublishRefused)
    assert refused.code == "NetConnection.Connect.Rejected" and "other" in refused.description
    assert server.close_after_send


def test_media_before_publish_is_a_local_error() -> None:
    client, _ = new_pair()
    with pytest.raises(RuntimeError):
        client.send_video(0, b"x")
    with pytest.raises(RuntimeError):
        client.send_metadata({})
    client.initiate()
    with pytest.raises(RuntimeError):
        client.initiate()


# ---- media ----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [128, 4096, 60_000])
def test_media_arrives_whole_with_its_timestamps(chunk_size: int) -> None:
    wire = publishing_pair(chunk_size=chunk_size)
    sent = [
        (ts, bytes([i]) * size) for i, (size, ts) in enumerate(zip(SIZES, TIMESTAMPS, strict=True))
    ]
    for ts, payload in sent:
        wire.client.send_video(ts, payload)
    wire.client.send_audio(5, b"\xaf\x01audio")
    wire.pump()
    got = drain(wire.server)
    assert got == [rtmp.MediaMessage("video", ts, payload) for ts, payload in sent] + [
        rtmp.MediaMessage("audio", 5, b"\xaf\x01audio")
    ]


def test_our_chunk_size_is_announced_first_and_used() -> None:
    client, server = new_pair()
    wire = Wire(client, server)
    client.initiate()
    wire.pump()
    after_c2 = bytes(wire.from_client[1 + 2 * rtmp.HANDSHAKE_SIZE :])
    # The first message after C2 is Set Chunk Size = 4096 on the control stream.
    assert after_c2[0] == 2 and after_c2[7] == rtmp.SET_CHUNK_SIZE
    assert struct.unpack(">I", after_c2[12:16])[0] == rtmp.OUR_CHUNK_SIZE
    drain(server)
    mark = len(wire.from_client)
    client.send_video(0, b"v" * 5000)
    wire.pump()
    chunked = bytes(wire.from_client[mark:])
    assert len(chunked) == 12 + 5000 + 1  # one type 0 header, one type 3 continuation


def test_metadata_is_set_data_frame_on_metadata() -> None:
    wire = publishing_pair()
    wire.client.send_metadata({"width": 160.0, "encoder": "edge-node"})
    wire.pump()
    (msg,) = drain(wire.server)
    assert msg.kind == "metadata" and msg.timestamp_ms == 0
    assert msg.payload[len(amf0.encode_all("@setDataFrame", "onMetaData"))] == amf0.ECMA_ARRAY
    assert amf0.decode_all(msg.payload) == [
        "@setDataFrame",
        "onMetaData",
        {"width": 160.0, "encoder": "edge-node"},
    ]


def test_close_unpublishes() -> None:
    wire = publishing_pair()
    wire.client.close()
    wire.pump()
    assert drain(wire.server) == [rtmp.PublishEnded(KEY)]
    assert wire.client.state is rc.ClientState.CLOSED
    assert wire.server.state is rtmp.State.CONNECTED


# ---- what the server may send a publisher ------------------------------------------------


def server_message(type_id: int, payload: bytes, csid: int = 2, stream_id: int = 0) -> bytes:
    out = bytearray()
    chunker = rtmp._Chunker()
    chunker.out_chunk_size = rtmp.OUR_CHUNK_SIZE  # what our server announced on connect
    chunker.write(out, csid, type_id, stream_id, 0, payload)
    return bytes(out)


def client_messages(data: bytes, chunk_size: int = rtmp.OUR_CHUNK_SIZE) -> list[Any]:
    chunker = rtmp._Chunker()
    chunker.in_chunk_size = chunk_size
    buf = bytearray(data)
    messages = []
    while (msg := chunker.read_message(buf)) is not None:
        messages.append(msg)
    assert not buf
    return messages


def test_ping_is_answered() -> None:
    wire = publishing_pair()
    wire.client.receive_data(server_message(rtmp.USER_CONTROL, struct.pack(">HI", 6, 123456)))
    (pong,) = client_messages(wire.client.data_to_send())
    assert pong.type_id == rtmp.USER_CONTROL and pong.payload == struct.pack(">HI", 7, 123456)


def test_acknowledgements_follow_the_servers_window() -> None:
    wire = publishing_pair()
    window = server_message(rtmp.WINDOW_ACK, struct.pack(">I", 100))
    status = amf0.encode_all("onStatus", 0.0, None, {"level": "status", "code": "X" * 200})
    status_msg = server_message(rtmp.COMMAND_AMF0, status, csid=5, stream_id=1)
    received = len(wire.from_server)
    acked = []
    for data in (window, status_msg, b""):
        wire.client.receive_data(data)
        received += len(data)
        out = client_messages(wire.client.data_to_send())
        acked += [struct.unpack(">I", m.payload)[0] for m in out if m.type_id == rtmp.ACK]
    assert drain(wire.client) == [rc.StatusReceived("status", "X" * 200, "")]
    # Everything received so far (handshake included) once the window is set; then
    # again after 200+ more bytes; nothing while under the window.
    assert acked == [received - len(status_msg), received]


def test_an_error_status_while_publishing_is_an_event() -> None:
    wire = publishing_pair()
    info = {"level": "error", "code": "NetStream.Publish.BadName", "description": "gone"}
    payload = amf0.encode_all("onStatus", 0.0, None, info)
    wire.client.receive_data(server_message(rtmp.COMMAND_AMF0, payload, csid=5, stream_id=1))
    assert drain(wire.client) == [rc.StatusReceived("error", "NetStream.Publish.BadName", "gone")]


def test_a_bare_command_without_transaction_id_is_accepted() -> None:
    # FFmpeg's RTMP server answers FCPublish with just the name "onFCPublish".
    wire = publishing_pair()
    wire.client.receive_data(server_message(rtmp.COMMAND_AMF0, amf0.encode("onFCPublish")))
    assert drain(wire.client) == [] and wire.client.state is rc.ClientState.PUBLISHING
    with pytest.raises(ProtocolError) as info:
        wire.client.receive_data(server_message(rtmp.COMMAND_AMF0, amf0.encode(1.0)))
    assert info.value.field == "command"


def test_a_bad_stream_id_raises_protocol_error() -> None:
    client, server = new_pair()
    wire = Wire(client, server)
    client.initiate()
    # Run the handshake and connect only: stop before the server answers createStream.
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())  # connect's _result: createStream is txn 4
    assert client.state is rc.ClientState.CREATING_STREAM
    del wire
    bad = amf0.encode_all("_result", 4.0, None, "one")
    with pytest.raises(ProtocolError) as info:
        client.receive_data(server_message(rtmp.COMMAND_AMF0, bad, csid=3))
    assert info.value.field == "createStream"


def test_a_message_shrinking_mid_way_raises_protocol_error() -> None:
    server = publishing_pair().server
    # A 300-byte video message: its first 128-byte chunk, then a new type 1 header
    # announcing 10 bytes: shorter than what already arrived.
    first = bytes([6]) + (0).to_bytes(3, "big") + (300).to_bytes(3, "big") + bytes([9])
    first += (1).to_bytes(4, "little") + b"v" * 128
    shrink = bytes([0x40 | 6]) + (0).to_bytes(3, "big") + (10).to_bytes(3, "big") + bytes([9])
    server._chunks.in_chunk_size = 128
    server.receive_data(first)
    with pytest.raises(ProtocolError) as info:
        server.receive_data(shrink + b"v" * 10)
    assert info.value.field == "chunk"


def test_abort_drops_the_partial_message() -> None:
    server = publishing_pair().server
    server._chunks.in_chunk_size = 128
    header = bytes([6]) + (0).to_bytes(3, "big") + (300).to_bytes(3, "big") + bytes([9])
    header += (1).to_bytes(4, "little")
    server.receive_data(header + b"a" * 128)  # the start of a message, then aborted
    abort = bytes([2]) + bytes(3) + (4).to_bytes(3, "big") + bytes([rtmp.ABORT]) + bytes(4)
    server.receive_data(abort + struct.pack(">I", 6))
    server.receive_data(header[:1] + bytes(3) + (3).to_bytes(3, "big") + header[7:] + b"new")
    assert drain(server) == [rtmp.MediaMessage("video", 0, b"new")]


# ---- garbage ----------------------------------------------------------------------------


def test_garbage_first_byte_raises_handshake_error() -> None:
    _, server = new_pair()
    with pytest.raises(ProtocolError) as info:
        server.receive_data(b"GET / HTTP/1.1\r\n")
    assert info.value.field == "handshake"
    client, _ = new_pair()
    client.initiate()
    with pytest.raises(ProtocolError) as info:
        client.receive_data(b"\x06" + bytes(3072))
    assert info.value.field == "handshake"


# ---- properties -------------------------------------------------------------------------

_SESSION = media_session()
CLIENT_BYTES = bytes(_SESSION.from_client)
SERVER_BYTES = bytes(_SESSION.from_server)


def feed_server(parts: list[bytes]) -> list[Any]:
    server = rtmp.RtmpServerConnection(APP, check_key)
    for part in parts:
        server.receive_data(part)
    return drain(server)


def feed_client(parts: list[bytes]) -> list[Any]:
    client = rc.RtmpClientConnection(APP, KEY, TC_URL)
    client.initiate()
    for part in parts:
        client.receive_data(part)
    return drain(client)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


SERVER_EVENTS = feed_server([CLIENT_BYTES])
CLIENT_EVENTS = feed_client([SERVER_BYTES])


def test_the_recorded_session_is_whole() -> None:
    kinds = [type(e).__name__ for e in SERVER_EVENTS]
    assert kinds[:3] == ["Connected", "PublishStarted", "MediaMessage"]
    assert kinds[-1] == "PublishEnded" and kinds.count("MediaMessage") == 1 + len(SIZES)
    assert [rc.PublishAccepted(rtmp.STREAM_ID)] == CLIENT_EVENTS


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 2**32), max_size=40))
def test_any_split_of_the_clients_bytes_gives_the_same_server_events(cuts: list[int]) -> None:
    assert feed_server(split(CLIENT_BYTES, cuts)) == SERVER_EVENTS


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 2**32), max_size=40))
def test_any_split_of_the_servers_bytes_gives_the_same_client_events(cuts: list[int]) -> None:
    assert feed_client(split(SERVER_BYTES, cuts)) == CLIENT_EVENTS


def test_byte_at_a_time() -> None:
    assert feed_server([bytes([b]) for b in CLIENT_BYTES[:20000]]) == feed_server(
        [CLIENT_BYTES[:20000]]
    )
    assert feed_client([bytes([b]) for b in SERVER_BYTES]) == CLIENT_EVENTS


def after_handshake_server() -> rtmp.RtmpServerConnection:
    server = rtmp.RtmpServerConnection(APP, check_key)
    server.receive_data(b"\x03" + bytes(2 * rtmp.HANDSHAKE_SIZE))
    assert server.state is rtmp.State.CONNECTING
    server.data_to_send()
    return server


def publishing_client() -> rc.RtmpClientConnection:
    client = rc.RtmpClientConnection(APP, KEY, TC_URL)
    client.initiate()
    client.receive_data(SERVER_BYTES)
    assert client.state is rc.ClientState.PUBLISHING
    return client


def survive(conn: Any, data: bytes) -> None:
    """Garbage may be consumed or refused with ProtocolError; nothing else may escape."""
    with contextlib.suppress(ProtocolError):
        conn.receive_data(data)
    drain(conn)
    conn.data_to_send()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_garbage_after_the_handshake(data: bytes) -> None:
    survive(after_handshake_server(), data)
    survive(publishing_pair().server, data)
    survive(publishing_client(), data)


# Structured garbage: well-formed chunks of every message type with hostile contents,
# so the parsers get past the chunk layer into the commands and the state machines.
amf_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=8) | st.sampled_from([KEY, APP]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["app", "code"]), c),
    max_leaves=6,
)
commands = st.tuples(
    st.sampled_from(
        [
            "connect",
            "createStream",
            "publish",
            "releaseStream",
            "FCPublish",
            "deleteStream",
            "play",
            "_result",
            "_error",
            "onStatus",
            "onBWDone",
            "x",
        ]
    ),
    st.lists(amf_values, max_size=4),
).map(lambda c: amf0.encode_all(c[0], *c[1]))
messages = st.tuples(
    st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 15, 16, 17, 18, 19, 20, 22, 30]),
    st.one_of(st.binary(max_size=40), commands),
    st.integers(0, 2**32 - 1),
)


def chunked(msgs: list[tuple[int, bytes, int]], chunk_size: int) -> bytes:
    chunker = rtmp._Chunker()
    chunker.out_chunk_size = chunk_size
    out = bytearray()
    for type_id, payload, ts in msgs:
        chunker.write(out, 3 if type_id in (17, 20) else 4, type_id, 1, ts, payload)
    return bytes(out)


# Valid openings, so that the garbage also lands in the connected and publishing states.
_CONNECT = (20, amf0.encode_all("connect", 1.0, {"app": APP}), 0)
_PUBLISH = [
    (20, amf0.encode_all("createStream", 2.0, None), 0),
    (20, amf0.encode_all("publish", 3.0, None, KEY, "live"), 0),
]
openings = st.sampled_from([[], [_CONNECT], [_CONNECT, *_PUBLISH]])


@settings(max_examples=400, deadline=None)
@given(openings, st.lists(messages, max_size=8))
def test_structured_garbage_only_raises_protocol_error(
    opening: list[tuple[int, bytes, int]], msgs: list[tuple[int, bytes, int]]
) -> None:
    survive(after_handshake_server(), chunked(opening + msgs, rtmp.DEFAULT_CHUNK_SIZE))
    survive(publishing_pair().server, chunked(msgs, rtmp.DEFAULT_CHUNK_SIZE))
    survive(publishing_client(), chunked(msgs, rtmp.OUR_CHUNK_SIZE))


# ---- the push URL ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "port", "app", "key", "tls"),
    [
        (
            "rtmp://a.rtmp.youtube.com/live2/abcd-1234",
            "a.rtmp.youtube.com",
            1935,
            "live2",
            "abcd-1234",
            False,
        ),
        ("rtmp://127.0.0.1:19350/live/k", "127.0.0.1", 19350, "live", "k", False),
        ("RTMP://[::1]:1936/live/k?x=1", "::1", 1936, "live", "k?x=1", False),
        (
            "rtmps://live-api-s.facebook.com:443/rtmp/FB-1-2",
            "live-api-s.facebook.com",
            443,
            "rtmp",
            "FB-1-2",
            True,
        ),
        ("rtmps://host/app/k", "host", 443, "app", "k", True),
        ("rtmp://host/app/inst/k/", "host", 1935, "app/inst", "k", False),
    ],
)
def test_push_urls(url: str, host: str, port: int, app: str, key: str, tls: bool) -> None:
    target = rc.parse_push_url(url)
    assert (target.host, target.port, target.app, target.stream_key, target.tls) == (
        host,
        port,
        app,
        key,
        tls,
    )
    assert key not in target.redacted and target.redacted.endswith(f"/{app}/***")
    assert key not in target.tc_url and target.tc_url.endswith(f":{port}/{app}")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("", "expected rtmp://"),
        ("http://host/app/secretkey", "scheme 'http'"),
        ("rtmp://host/secretkey", "app and a stream key"),
        ("rtmp://host/", "app and a stream key"),
        ("rtmp:///app/secretkey", "no host"),
        ("rtmp://host:99999/app/secretkey", "bad host or port"),
        ("rtmp://host:0/app/secretkey", "port 0"),
        ("rtmp://user:pw@host/app/secretkey", "user:password"),
    ],
)
def test_bad_push_urls(url: str, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        rc.parse_push_url(url)
    assert info.value.field == "push.url"
    assert words in info.value.reason
    assert "secretkey" not in str(info.value)
