"""Coverage-guided fuzzing of our own parsers with atheris (libFuzzer), by hand.

    python tests/faults/fuzz_atheris.py --target messages -runs=200000
    python tests/faults/fuzz_atheris.py --target rtmp -max_total_time=60
    python tests/faults/fuzz_atheris.py --target flv -runs=100000 --corpus /tmp/flv-corpus

Targets (``--target``):
- ``messages``: the interaction wire decoder and its validation (``decode``), both
  framings, then the reply it would send; whatever decodes must round-trip.
- ``rtmp``: the sans-I/O RTMP server connection (handshake, chunk stream, AMF0
  commands, media messages) fed in slices, from a raw start, after the handshake, or
  while publishing; and the publishing client's side (what a push target answers).
- ``flv``: FLV video tag parsing, Annex-B splitting, the H.264 facts read without
  decoding (NAL types, slice types, parameter sets) and AMF0 decoding.
- ``all``: the three, the first byte choosing (one start-up for a quick run of all).

``atheris.instrument_all()`` instruments every Python function loaded when it runs, so
the modules under test are imported first; it sees no coverage inside C extensions
(msgpack's unpacker, ``json``'s scanner), only our Python around them. Anything but the
parser's own error (``WireError``, ``ProtocolError``) escaping is a finding, and so is
one input taking more than ``SLOW_INPUT_S`` of CPU time. libFuzzer prints the number
of inputs tried at the end ("Done N runs"); every other argument goes to libFuzzer.
With ``--corpus DIR`` the fuzzer starts from valid inputs of the target (written there
when DIR is empty), keeps the interesting inputs it finds in DIR, and writes a crashing
input to ``DIR-crash-<sha1>`` (replay it: ``fuzz_atheris.py --target T FILE``).
"""

from __future__ import annotations

import argparse
import contextlib
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]

from edge_node.errors import ProtocolError
from edge_node.interaction import messages
from edge_node.media import amf0, flv, h264, rtmp, rtmp_client

SLOW_INPUT_S = 0.1
"""Most CPU time one input may take (the fault suite's bound: no input slower than 100 ms)."""


class SlowInput(AssertionError):
    """An input took longer than ``SLOW_INPUT_S`` of CPU time: a finding like a crash."""


# --- messages ------------------------------------------------------------------------


def fuzz_messages(data: bytes) -> None:
    """First byte: framing and how the frame arrives; the rest: the frame."""
    if not data:
        return
    mode, frame_bytes = data[0], data[1:]
    binary = bool(mode & 1)
    frame: bytes | str = frame_bytes
    if not binary and mode & 2:
        # A text frame as the WebSocket hands it over: str (lone surrogates possible).
        frame = frame_bytes.decode("utf-8", "surrogateescape")
    max_bytes = messages.DEFAULT_MAX_BYTES if mode & 4 else 256
    commands = {"announce", "mute"} if mode & 8 else None
    try:
        msg = messages.decode(frame, binary=binary, max_bytes=max_bytes, commands=commands)
    except messages.WireError as exc:
        named = bool(exc.field) and exc.msg.startswith(f"{exc.field}: ")
        if exc.code != "bad_message" or not named or len(exc.msg) > 512:
            raise AssertionError(f"unclear error: {exc.code} {exc.field!r} {exc.msg!r}") from None
        for out_binary in (False, True):  # the reply must be sendable in either framing
            reply = messages.encode_reply(exc.reply(), binary=out_binary)
            if isinstance(reply, str):
                reply.encode("utf-8")
        return
    for out_binary in (False, True):
        again = messages.decode(messages.encode(msg, binary=out_binary), binary=out_binary)
        if again != msg:
            raise AssertionError(f"round trip changed {msg!r} into {again!r}")
        messages.encode_reply(messages.ack(msg.id), binary=out_binary)


# --- RTMP ------------------------------------------------------------------------------


def _publish_in_memory() -> tuple[bytes, bytes, bytes]:
    """A good publish, our client talking to our server in memory: (the client's
    handshake C0 C1 C2, the client's connect .. publish, everything the server said)."""
    server = rtmp.RtmpServerConnection("live", lambda key: None)
    client = rtmp_client.RtmpClientConnection("live", "key", "rtmp://127.0.0.1/live")
    client.initiate()
    sent, answered = bytearray(), bytearray()
    for _ in range(50):
        out = client.data_to_send()
        sent += out
        server.receive_data(out)
        back = server.data_to_send()
        answered += back
        client.receive_data(back)
        if server.state is rtmp.State.PUBLISHING:
            sent += client.data_to_send()
            break
    if server.state is not rtmp.State.PUBLISHING:
        raise RuntimeError(f"in-memory publish did not complete: {server.state}")
    handshake_len = 1 + 2 * rtmp.HANDSHAKE_SIZE
    return bytes(sent[:handshake_len]), bytes(sent[handshake_len:]), bytes(answered)


HANDSHAKE, UNTIL_PUBLISHING, SERVER_ANSWERS = _publish_in_memory()


def _slices(data: bytes, seed: int) -> list[bytes]:
    """``data`` cut where ``seed``'s bits say: parsers must not care how bytes arrive."""
    cuts, at, step = [], 0, 1 + seed % 97
    while at < len(data):
        cuts.append(data[at : at + step])
        at += step
        step = 1 + (step * 31 + seed) % 1500
    return cuts


def _drive_server(prefix: bytes, data: bytes, seed: int) -> None:
    conn = rtmp.RtmpServerConnection("live", lambda key: None if key == "key" else "bad key")
    try:
        for piece in (prefix, *_slices(data, seed)):
            conn.receive_data(piece)
            while conn.next_event() is not None:
                pass
            conn.data_to_send()
    except ProtocolError:
        return
    finally:
        conn.connection_lost()


def _drive_client(data: bytes, seed: int) -> None:
    client = rtmp_client.RtmpClientConnection("live", "key", "rtmp://127.0.0.1/live")
    client.initiate()
    client.data_to_send()
    try:
        for piece in _slices(data, seed):
            client.receive_data(piece)
            while client.next_event() is not None:
                pass
            client.data_to_send()
    except ProtocolError:
        return
    finally:
        client.connection_lost()


def fuzz_rtmp(data: bytes) -> None:
    """First byte: where the input starts (raw, after the handshake, while publishing,
    or as a server's answer to our publishing client) and how it is sliced."""
    if not data:
        return
    mode, seed, body = data[0] % 4, data[0] >> 2, data[1:]
    if mode == 0:
        _drive_server(b"", body, seed)
    elif mode == 1:
        _drive_server(HANDSHAKE, body, seed)
    elif mode == 2:
        _drive_server(HANDSHAKE + UNTIL_PUBLISHING, body, seed)
    else:
        _drive_client(body, seed)


# --- FLV, H.264, AMF0 ----------------------------------------------------------------


def fuzz_flv(data: bytes) -> None:
    try:
        tag = flv.parse_video_tag(data)
    except ProtocolError:
        tag = None
    if tag is not None and len(tag.data) >= 4:
        # An AVC NALU tag carries length-prefixed NAL units: walk them as ingest would.
        at = 0
        while at + 4 <= len(tag.data):
            (size,) = struct.unpack_from(">I", tag.data, at)
            flv.nal_type(tag.data[at + 4 : at + 4 + size] or b"\x00")
            at += 4 + max(size, 1)
    nalus = flv.split_annexb(data)
    for nal in nalus:
        flv.nal_type(nal)
        h264.slice_type(nal)
    h264.is_random_access(nalus)
    sets = flv.parameter_sets(nalus)
    if sets is not None:
        # What RTMP push would build from them (it refuses an SPS too short to be one).
        with contextlib.suppress(ProtocolError):
            flv.avc_sequence_header(*sets)
    h264.parameter_sets_annexb(nalus)
    with contextlib.suppress(ProtocolError):
        amf0.decode_all(data)


# --- seeds ---------------------------------------------------------------------------


def _message_seeds() -> list[bytes]:
    maps: list[dict[str, object]] = [
        {"t": "comment", "id": "c1", "text": "好看！主播加油 🎉"},
        {"t": "like", "id": "l1", "n": 3},
        {"t": "vote", "id": "v1", "poll": "p1", "option": 1},
        {"t": "join", "id": "j1", "lottery": "lot"},
        {"t": "gift", "id": "g1", "gift": "rose", "n": 2},
        {"t": "command", "id": "k1", "cmd": "announce", "args": {"text": "hi", "n": [1, {}]}},
        {"t": "probe", "id": "p1", "seq": 7},
    ]
    seeds = []
    for obj in maps:
        text = str(messages.encode_reply(obj, binary=False)).encode()
        packed = messages.encode_reply(obj, binary=True)
        assert isinstance(packed, bytes)
        seeds += [b"\x04" + text, b"\x06" + text, b"\x05" + packed]
    return seeds


def _flv_seeds() -> list[bytes]:
    sps, pps = b"\x67\x42\xc0\x1f\xda\x01\x40\x16\xe8", b"\x68\xce\x3c\x80"
    idr, inter = b"\x65\x88\x84\x00\x33\xff", b"\x41\x9a\x02\x04"
    return [
        flv.avc_sequence_header(sps, pps),
        flv.avc_video_tag([idr], True),
        flv.avc_video_tag([inter], False, composition_ms=33),
        b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps + b"\x00\x00\x01" + idr,
        amf0.encode_all("connect", 1.0, {"app": "live", "tcUrl": "rtmp://x/live"}),
    ]


SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "messages": _message_seeds,
    "rtmp": lambda: [
        bytes([0]) + HANDSHAKE + UNTIL_PUBLISHING,
        bytes([1]) + UNTIL_PUBLISHING,
        bytes([2]) + UNTIL_PUBLISHING[-200:],
        bytes([3]) + SERVER_ANSWERS,
    ],
    "flv": _flv_seeds,
    "all": lambda: [
        bytes([i]) + seed
        for i, name in enumerate(("messages", "rtmp", "flv"))
        for seed in SEEDS[name]()
    ],
}


def write_seeds(target: str, corpus: Path) -> None:
    """Valid inputs of ``target`` into an empty ``corpus`` dir (libFuzzer reads them)."""
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    for i, seed in enumerate(SEEDS[target]()):
        (corpus / f"seed-{i:03d}").write_bytes(seed)


def fuzz_all(data: bytes) -> None:
    """Every target, the first byte choosing: one start-up (``instrument_all`` alone
    takes seconds) for a quick run of all of them, as the test suite does."""
    if data:
        ONE_BY_ONE[data[0] % len(ONE_BY_ONE)](data[1:])


ONE_BY_ONE: list[Callable[[bytes], None]] = [fuzz_messages, fuzz_rtmp, fuzz_flv]
TARGETS: dict[str, Callable[[bytes], None]] = {
    "messages": fuzz_messages,
    "rtmp": fuzz_rtmp,
    "flv": fuzz_flv,
    "all": fuzz_all,
}


def timed(target: Callable[[bytes], None]) -> Callable[[bytes], None]:
    def one_input(data: bytes) -> None:
        start = time.thread_time()
        target(data)
        took = time.thread_time() - start
        if took > SLOW_INPUT_S:
            raise SlowInput(f"{took * 1000:.1f} ms of CPU for {len(data)} bytes: {data[:64]!r}")

    return one_input


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--target", choices=sorted(TARGETS), required=True)
    parser.add_argument("--corpus", type=Path, help="corpus dir (seeded when empty)")
    args, libfuzzer_args = parser.parse_known_args(argv[1:])
    if args.corpus is not None:
        write_seeds(args.target, args.corpus)
        if not any(a.startswith("-artifact_prefix=") for a in libfuzzer_args):
            # Crashing inputs beside the corpus, not in the working directory.
            libfuzzer_args.append(f"-artifact_prefix={args.corpus.resolve()}-")
        libfuzzer_args = [*libfuzzer_args, str(args.corpus)]
    atheris.instrument_all()
    atheris.Setup([argv[0], *libfuzzer_args], timed(TARGETS[args.target]))
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
