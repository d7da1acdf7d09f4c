"""FLV H.264 tags and Annex-B splitting: examples, round-trip properties on random
(valid) NAL units, and bad tags that must raise ProtocolError naming flv.video."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.errors import ProtocolError
from edge_node.media import flv

pytestmark = pytest.mark.timeout(60)

SPS = bytes([0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x05, 0x07, 0xEC, 0x04, 0x40])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
IDR = bytes([0x65, 0x88, 0x84, 0x00, 0x33, 0xFF])
AUD = bytes([0x09, 0xF0])


def escape(rbsp: bytes) -> bytes:
    """Emulation prevention (H.264 7.4.1): what makes a NAL unit safe in Annex-B."""
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


@st.composite
def nal_units(draw: st.DrawFn) -> bytes:
    header = draw(st.integers(0, 3)) << 5 | draw(st.integers(1, 23))
    rbsp = draw(st.binary(max_size=64)) + b"\x80"  # rbsp_stop_one_bit: never ends in 0
    return bytes([header]) + escape(rbsp)


def length_prefixed(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    assert pos == len(data)
    return out


def test_split_annexb_three_and_four_byte_start_codes() -> None:
    assert flv.split_annexb(b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS) == [SPS, PPS]
    assert flv.split_annexb(b"\x00\x00\x01" + SPS + b"\x00\x00\x00\x01" + PPS) == [SPS, PPS]
    data = b"".join(b"\x00\x00\x00\x01" + n for n in (AUD, SPS, PPS, IDR))
    assert flv.split_annexb(data) == [AUD, SPS, PPS, IDR]


def test_split_annexb_edges() -> None:
    assert flv.split_annexb(b"") == []
    assert flv.split_annexb(SPS) == []  # no start code: not Annex-B
    assert flv.split_annexb(b"junk\x00\x00\x01" + IDR) == [IDR]  # leading bytes dropped
    assert flv.split_annexb(b"\x00\x00\x01\x00\x00\x01" + IDR) == [IDR]  # empty NAL skipped
    # trailing_zero_8bits before a start code and at the end belong to no NAL unit.
    padded = b"\x00\x00\x01" + SPS + b"\x00\x00\x00\x00\x00\x01" + IDR + b"\x00\x00"
    assert flv.split_annexb(padded) == [SPS, IDR]


def test_sequence_header_parses_back() -> None:
    body = flv.avc_sequence_header(SPS, PPS)
    tag = flv.parse_video_tag(body)
    assert tag.keyframe and tag.packet_type == flv.AVC_SEQUENCE_HEADER
    assert tag.composition_ms == 0
    avcc = tag.data
    assert avcc == flv.avc_decoder_config(SPS, PPS)
    assert avcc[0] == 1 and avcc[1:4] == SPS[1:4]  # version, profile, compat, level
    assert avcc[4] & 0x03 == 3  # 4-byte NALU lengths
    assert avcc[5] & 0x1F == 1  # one SPS
    (sps_len,) = struct.unpack_from(">H", avcc, 6)
    assert avcc[8 : 8 + sps_len] == SPS
    rest = avcc[8 + sps_len :]
    assert rest[0] == 1  # one PPS
    (pps_len,) = struct.unpack_from(">H", rest, 1)
    assert rest[3 : 3 + pps_len] == PPS and len(rest) == 3 + pps_len


def test_short_sps_is_refused() -> None:
    with pytest.raises(ProtocolError) as info:
        flv.avc_decoder_config(b"\x67\x42", PPS)
    assert info.value.field == "h264.sps"


def test_parameter_sets() -> None:
    assert flv.parameter_sets([AUD, SPS, PPS, IDR]) == (SPS, PPS)
    assert flv.parameter_sets([SPS, IDR]) is None
    assert flv.parameter_sets([IDR]) is None


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "shorter"),
        (b"\x17\x01\x00\x00", "shorter"),
        (b"\x12\x01\x00\x00\x00", "codec id 2"),  # Sorenson H.263
        (b"\x91\x01\x00\x00\x00", "enhanced"),  # enhanced RTMP (HEVC)
        (b"\x17\x03\x00\x00\x00", "packet type 3"),
    ],
)
def test_bad_tags_raise_protocol_error(body: bytes, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        flv.parse_video_tag(body)
    assert info.value.field == "flv.video"
    assert words in info.value.reason


@settings(max_examples=300, deadline=None)
@given(
    st.lists(nal_units(), min_size=1, max_size=8),
    st.lists(st.booleans(), min_size=8, max_size=8),
    st.booleans(),
    st.integers(-(2**23), 2**23 - 1),
)
def test_nal_units_round_trip_through_annexb_and_flv(
    nalus: list[bytes], four_byte: list[bool], keyframe: bool, composition_ms: int
) -> None:
    annexb = b"".join(
        (b"\x00\x00\x00\x01" if long else b"\x00\x00\x01") + n
        for n, long in zip(nalus, four_byte, strict=False)
    )
    assert flv.split_annexb(annexb) == nalus
    tag = flv.parse_video_tag(flv.avc_video_tag(nalus, keyframe, composition_ms))
    assert (tag.keyframe, tag.packet_type, tag.composition_ms) == (
        keyframe,
        flv.AVC_NALU,
        composition_ms,
    )
    assert length_prefixed(tag.data) == nalus


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_random_tags_parse_or_raise_protocol_error(body: bytes) -> None:
    try:
        tag = flv.parse_video_tag(body)
    except ProtocolError as exc:
        assert exc.field == "flv.video"
    else:
        assert tag.packet_type in (0, 1, 2) and tag.data == body[5:]
