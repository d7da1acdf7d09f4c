"""FLV video tag bodies for H.264 (what RTMP carries in its video messages). Pure functions.

Ingest parses them (``parse_video_tag``); RTMP push builds them from the encoder's
Annex-B packets (``avc_sequence_header``, ``avc_video_tag``).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from edge_node.errors import ProtocolError

CODEC_AVC = 7
FRAME_KEY, FRAME_INTER = 1, 2
AVC_SEQUENCE_HEADER, AVC_NALU, AVC_END_OF_SEQUENCE = 0, 1, 2
NAL_IDR, NAL_SPS, NAL_PPS, NAL_AUD = 5, 7, 8, 9

_START_CODE = re.compile(b"\x00\x00\x01")


@dataclass(frozen=True, slots=True)
class VideoTag:
    keyframe: bool
    packet_type: int  # AVC_SEQUENCE_HEADER | AVC_NALU | AVC_END_OF_SEQUENCE
    composition_ms: int
    data: bytes  # avcC record for a sequence header, length-prefixed NALUs otherwise


def parse_video_tag(body: bytes) -> VideoTag:
    if len(body) < 5:
        raise ProtocolError("flv.video", f"tag of {len(body)} bytes is shorter than its header")
    frame_type, codec = body[0] >> 4, body[0] & 0x0F
    if body[0] & 0x80:
        raise ProtocolError("flv.video", "enhanced RTMP (HEVC/AV1) is not supported; send H.264")
    if codec != CODEC_AVC:
        raise ProtocolError("flv.video", f"codec id {codec} is not H.264 (7)")
    packet_type = body[1]
    if packet_type > AVC_END_OF_SEQUENCE:
        raise ProtocolError("flv.video", f"AVC packet type {packet_type} is not 0, 1 or 2")
    cts = int.from_bytes(body[2:5], "big", signed=True)
    return VideoTag(frame_type == FRAME_KEY, packet_type, cts, bytes(body[5:]))


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B byte stream (3- or 4-byte start codes)."""
    starts = [m.end() for m in _START_CODE.finditer(data)]
    nalus = []
    for i, start in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        # A NAL unit never ends in a zero byte (H.264 7.4.1): zeros before a start
        # code are its 4-byte form's leading zero or trailing_zero_8bits padding.
        nal = data[start:end].rstrip(b"\x00")
        if nal:
            nalus.append(nal)
    return nalus


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


def avc_decoder_config(sps: bytes, pps: bytes) -> bytes:
    """AVCDecoderConfigurationRecord (ISO 14496-15) with 4-byte NALU lengths."""
    if len(sps) < 4:
        raise ProtocolError("h264.sps", "SPS shorter than 4 bytes")
    return (
        bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1])
        + struct.pack(">H", len(sps))
        + sps
        + bytes([1])
        + struct.pack(">H", len(pps))
        + pps
    )


def avc_sequence_header(sps: bytes, pps: bytes) -> bytes:
    """The FLV video tag body announcing the decoder configuration."""
    return bytes([FRAME_KEY << 4 | CODEC_AVC, AVC_SEQUENCE_HEADER, 0, 0, 0]) + avc_decoder_config(
        sps, pps
    )


def avc_video_tag(nalus: list[bytes], keyframe: bool, composition_ms: int = 0) -> bytes:
    """An FLV video tag body carrying ``nalus`` as 4-byte length-prefixed units."""
    head = bytes([(FRAME_KEY if keyframe else FRAME_INTER) << 4 | CODEC_AVC, AVC_NALU])
    head += composition_ms.to_bytes(3, "big", signed=True)
    return head + b"".join(struct.pack(">I", len(n)) + n for n in nalus)


def parameter_sets(nalus: list[bytes]) -> tuple[bytes, bytes] | None:
    """(SPS, PPS) when both are among ``nalus``."""
    sps = next((n for n in nalus if nal_type(n) == NAL_SPS), None)
    pps = next((n for n in nalus if nal_type(n) == NAL_PPS), None)
    return (sps, pps) if sps is not None and pps is not None else None
