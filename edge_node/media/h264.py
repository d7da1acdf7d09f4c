"""H.264 bitstream facts the node needs without decoding: where a decoder may start."""

from __future__ import annotations

from edge_node.media import flv

NAL_SLICE, NAL_SLICE_DPA, NAL_IDR = 1, 2, 5
I_SLICE_TYPES = {2, 4, 7, 9}  # I and SI, with and without the "all slices" offset of 5


def _read_ue(data: bytes, bit: int) -> tuple[int, int] | None:
    """One unsigned Exp-Golomb code at ``bit``; (value, next bit) or None if truncated."""
    zeros = 0
    while True:
        if bit // 8 >= len(data):
            return None
        if (data[bit // 8] >> (7 - bit % 8)) & 1:
            break
        zeros += 1
        bit += 1
        if zeros > 31:
            return None
    bit += 1
    value = 0
    for _ in range(zeros):
        if bit // 8 >= len(data):
            return None
        value = (value << 1) | ((data[bit // 8] >> (7 - bit % 8)) & 1)
        bit += 1
    return (1 << zeros) - 1 + value, bit


def slice_type(nal: bytes) -> int | None:
    """slice_type of a coded slice NAL unit (types 1 and 5), None if unreadable."""
    first = _read_ue(nal[1:9], 0)  # first_mb_in_slice
    if first is None:
        return None
    st = _read_ue(nal[1:9], first[1])
    return None if st is None else st[0]


def is_random_access(nalus: list[bytes]) -> bool:
    """True when decoding may start at this access unit: an IDR, or an all-intra picture
    (some encoders, aiortc's among them, answer a PLI with a non-IDR I picture)."""
    for nal in nalus:
        kind = flv.nal_type(nal)
        if kind == NAL_IDR:
            return True
        if kind == NAL_SLICE:
            return slice_type(nal) in I_SLICE_TYPES
    return False


def parameter_sets_annexb(nalus: list[bytes]) -> bytes | None:
    """SPS and PPS of ``nalus`` as an Annex-B buffer, when both are present."""
    sets = flv.parameter_sets(nalus)
    if sets is None:
        return None
    return b"\x00\x00\x00\x01" + sets[0] + b"\x00\x00\x00\x01" + sets[1]
