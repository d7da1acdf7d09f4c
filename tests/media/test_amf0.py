"""AMF0: round-trips of what RTMP commands carry, and hostile input that must only
ever raise ProtocolError (property tests on structured and random bytes)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.errors import ProtocolError
from edge_node.media import amf0

pytestmark = pytest.mark.timeout(60)

# What a command can hold: scalars, and objects/arrays of them.
amf_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def nesting(value: Any) -> int:
    """How deep the decoder recurses for ``value`` (0 for a scalar or an empty container)."""
    children = list(value.values()) if isinstance(value, dict) else value
    if isinstance(value, (dict, list)) and children:
        return 1 + max(nesting(c) for c in children)
    return 0


def test_scalars_round_trip() -> None:
    for value in (0.0, -1.5, 1e300, True, False, None, "", "connect", "ünïcødé ✓"):
        assert amf0.decode_all(amf0.encode(value)) == [value]
    assert amf0.decode_all(amf0.encode(3)) == [3.0]  # every number is a double


def test_undefined_is_not_null() -> None:
    assert amf0.encode(amf0.UNDEFINED_VALUE) == bytes([amf0.UNDEFINED])
    (decoded,) = amf0.decode_all(amf0.encode(amf0.UNDEFINED_VALUE))
    assert decoded is amf0.UNDEFINED_VALUE
    assert amf0.decode_all(amf0.encode(None)) == [None]


def test_long_string_uses_its_own_marker() -> None:
    text = "x" * 0x10000
    data = amf0.encode(text)
    assert data[0] == amf0.LONG_STRING
    assert amf0.decode_all(data) == [text]
    assert amf0.encode("x" * 0xFFFF)[0] == amf0.STRING


def test_a_connect_command_round_trips() -> None:
    values = [
        "connect",
        1.0,
        {"app": "live", "tcUrl": "rtmp://h:1935/live", "caps": [1.0, "a", None], "x": {}},
    ]
    assert amf0.decode_all(amf0.encode_all(*values)) == values


def test_ecma_array_and_date_decode() -> None:
    # What FFmpeg sends in onMetaData: an ECMA array (advisory count, then properties).
    body = b"\x00\x05width" + amf0.encode(640.0) + b"\x00\x00\x09"
    data = bytes([amf0.ECMA_ARRAY]) + struct.pack(">I", 1) + body
    assert amf0.decode_all(data) == [{"width": 640.0}]
    date = bytes([amf0.DATE]) + struct.pack(">d", 1.5e12) + b"\x00\x00"
    assert amf0.decode_all(date) == [1.5e12]


def test_encoding_an_unsupported_type_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        amf0.encode(b"bytes")


@pytest.mark.parametrize("marker", [0x04, 0x07, 0x0D, 0x0E, 0x0F, 0x10, 0x11, 0x09, 0xFF])
def test_unknown_markers_raise_protocol_error(marker: int) -> None:
    with pytest.raises(ProtocolError) as info:
        amf0.decode_all(bytes([marker]) + b"\x00" * 8)
    assert info.value.field == "amf0"
    assert "marker" in info.value.reason


def test_bad_utf8_and_huge_counts_raise_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="UTF-8"):
        amf0.decode_all(b"\x02\x00\x02\xff\xfe")
    with pytest.raises(ProtocolError, match="longer than data"):
        amf0.decode_all(bytes([amf0.STRICT_ARRAY]) + b"\xff\xff\xff\xff")


def test_nesting_deeper_than_the_limit_raises() -> None:
    value: Any = 1.0
    for _ in range(amf0.MAX_DEPTH):
        value = [value]
    assert amf0.decode_all(amf0.encode(value)) == [value]  # exactly at the limit
    with pytest.raises(ProtocolError, match="nesting"):
        amf0.decode_all(amf0.encode([value]))


@settings(max_examples=300, deadline=None)
@given(amf_values)
def test_round_trip_property(value: Any) -> None:
    data = amf0.encode(value)
    if nesting(value) > amf0.MAX_DEPTH:
        with pytest.raises(ProtocolError):
            amf0.decode_all(data)
    else:
        assert amf0.decode_all(data) == [value]


@settings(max_examples=200, deadline=None)
@given(amf_values, st.data())
def test_every_truncation_raises_protocol_error(value: Any, data: st.DataObject) -> None:
    encoded = amf0.encode(value)
    # The encoding is self-delimiting: no non-empty strict prefix is a whole value.
    cut = data.draw(st.integers(1, len(encoded) - 1)) if len(encoded) > 1 else None
    if cut is None:
        return
    with pytest.raises(ProtocolError) as info:
        amf0.decode_all(encoded[:cut])
    assert info.value.field == "amf0"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    try:
        amf0.decode_all(data)
    except ProtocolError as exc:
        assert exc.field == "amf0"


@settings(max_examples=300, deadline=None)
@given(amf_values, st.binary(min_size=1, max_size=8), st.data())
def test_corrupted_encodings_decode_or_raise_protocol_error(
    value: Any, noise: bytes, data: st.DataObject
) -> None:
    encoded = bytearray(amf0.encode(value))
    at = data.draw(st.integers(0, len(encoded)))
    encoded[at : at + len(noise)] = noise
    try:
        amf0.decode_all(bytes(encoded))
    except ProtocolError as exc:
        assert exc.field == "amf0"
