"""Length-prefixed msgpack framing between the control process and the media worker."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_node.errors import ProtocolError
from edge_node.media.channel import MAX_FRAME_BYTES, MessageReader, encode_message


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def test_round_trip_one_message() -> None:
    msg = {"t": "pkt", "data": b"\x00\x01\xff", "pts": 3000, "key": True, "capture": 12.5}
    wire = encode_message(msg)
    assert struct.unpack(">I", wire[:4])[0] == len(wire) - 4
    reader = MessageReader()
    assert reader.feed(wire) == [msg]
    assert reader.pending_bytes == 0


def test_bytes_and_str_stay_distinct() -> None:
    msg = {"t": "x", "b": b"abc", "s": "abc"}
    (back,) = MessageReader().feed(encode_message(msg))
    assert isinstance(back["b"], bytes)
    assert isinstance(back["s"], str)


def test_several_messages_in_one_chunk_and_partial_tail() -> None:
    a, b, c = {"t": "hello"}, {"t": "stats", "n": 1}, {"t": "stop"}
    wire = encode_message(a) + encode_message(b) + encode_message(c)
    reader = MessageReader()
    assert reader.feed(wire[:-2]) == [a, b]
    assert reader.pending_bytes == len(encode_message(c)) - 2
    assert reader.feed(wire[-2:]) == [c]
    assert reader.pending_bytes == 0


def test_byte_by_byte() -> None:
    msg = {"t": "scene", "items": [1, 2, {"k": "v"}]}
    reader = MessageReader()
    out: list[dict[str, Any]] = []
    for i, byte in enumerate(encode_message(msg)):
        got = reader.feed(bytes([byte]))
        if i < len(encode_message(msg)) - 1:
            assert got == []
        out += got
    assert out == [msg]


# Values msgpack carries faithfully with use_bin_type / raw=False (tuples come back as
# lists, so only lists here; no NaN, which is never equal to itself).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=64)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
messages = st.builds(
    lambda t, rest: {**rest, "t": t},
    st.text(max_size=10),
    st.dictionaries(st.text(max_size=8), values, max_size=5),
)


@given(msgs=st.lists(messages, max_size=8), data=st.data())
def test_any_messages_any_chunking_reassemble(
    msgs: list[dict[str, Any]], data: st.DataObject
) -> None:
    wire = b"".join(encode_message(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=20)))
    bounds = [0, *cuts, len(wire)]
    reader = MessageReader()
    out: list[dict[str, Any]] = []
    for start, end in itertools.pairwise(bounds):
        out += reader.feed(wire[start:end])
    assert out == msgs
    assert reader.pending_bytes == 0


def test_oversize_length_prefix_raises_before_the_body_arrives() -> None:
    reader = MessageReader()
    with pytest.raises(ProtocolError) as exc:
        reader.feed(struct.pack(">I", MAX_FRAME_BYTES + 1))
    assert exc.value.field == "channel"
    assert str(MAX_FRAME_BYTES) in str(exc.value)


def test_largest_allowed_length_just_waits() -> None:
    reader = MessageReader()
    assert reader.feed(struct.pack(">I", MAX_FRAME_BYTES) + b"\x80") == []


def test_encode_refuses_oversize_message() -> None:
    with pytest.raises(ProtocolError):
        encode_message({"t": "pkt", "data": b"\x00" * (MAX_FRAME_BYTES + 1)})


@pytest.mark.parametrize(
    "body",
    [
        b"",  # empty body
        b"\xc1",  # the one byte msgpack never uses
        b"\x81\xa1t",  # map truncated inside the frame
        b"\x81\xa1t\xa1\xff",  # invalid UTF-8 in a str
        b"\x81\xa1t\xa1x\xc0",  # trailing bytes after the map
        b"\x81\x91\x01\x01",  # a list as map key
        b"\x92" * 5000,  # nesting too deep
    ],
)
def test_garbage_body_raises(body: bytes) -> None:
    with pytest.raises(ProtocolError) as exc:
        MessageReader().feed(frame(body))
    assert exc.value.field == "channel"


@pytest.mark.parametrize(
    "obj",
    [
        {"x": 1},  # no "t"
        {"t": 5},  # "t" not a string
        {"t": b"pkt"},  # "t" is bytes, not str
        ["t", "pkt"],  # not a map
        "pkt",
        None,
    ],
)
def test_frame_without_string_t_raises(obj: Any) -> None:
    body = msgpack.packb(obj, use_bin_type=True)
    with pytest.raises(ProtocolError):
        MessageReader().feed(frame(body))


def test_good_message_after_a_bad_frame_is_still_read() -> None:
    reader = MessageReader()
    with pytest.raises(ProtocolError):
        reader.feed(frame(b"\xc1") + encode_message({"t": "ok"}))
    # The bad frame was consumed; the good one behind it is still there.
    assert reader.feed(b"") == [{"t": "ok"}]


@given(body=st.binary(max_size=64))
def test_arbitrary_bodies_decode_or_raise_protocol_error(body: bytes) -> None:
    try:
        out = MessageReader().feed(frame(body))
    except ProtocolError:
        return
    assert len(out) == 1
    assert isinstance(out[0], dict) and isinstance(out[0]["t"], str)
