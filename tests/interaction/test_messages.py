"""The interaction wire schema: every message type, every malformed case, and properties."""

from __future__ import annotations

import json
import time
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.interaction import messages as m
from edge_node.interaction.messages import (
    ERROR_CODES,
    Command,
    Comment,
    Gift,
    Join,
    Like,
    Probe,
    Vote,
    WireError,
    ack,
    decode,
    encode,
    encode_reply,
    err,
    to_wire,
)

BOTH = pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])


def frame(obj: Any, binary: bool) -> bytes | str:
    if binary:
        packed: bytes = msgpack.packb(obj, use_bin_type=True)
        return packed
    return json.dumps(obj, ensure_ascii=False)


def bad(obj: Any, binary: bool, **kw: Any) -> WireError:
    with pytest.raises(WireError) as exc:
        decode(frame(obj, binary), binary=binary, **kw)
    assert exc.value.code == "bad_message"
    return exc.value


def bad_raw(data: bytes | str, binary: bool, **kw: Any) -> WireError:
    with pytest.raises(WireError) as exc:
        decode(data, binary=binary, **kw)
    assert exc.value.code == "bad_message"
    assert exc.value.id is None
    return exc.value


# --- every message type, valid ---------------------------------------------------------

VALID: list[tuple[dict[str, Any], m.Message]] = [
    ({"t": "comment", "id": "c1", "text": "hello 世界 🎉"}, Comment("c1", "hello 世界 🎉")),
    ({"t": "like", "id": "l1", "n": 1}, Like("l1", 1)),
    ({"t": "like", "id": "l2", "n": 100}, Like("l2", 100)),
    ({"t": "vote", "id": "v1", "poll": "p1", "option": 0}, Vote("v1", "p1", 0)),
    ({"t": "join", "id": "j1", "lottery": "lot-1"}, Join("j1", "lot-1")),
    ({"t": "gift", "id": "g1", "gift": "rocket", "n": 10000}, Gift("g1", "rocket", 10000)),
    (
        {"t": "command", "id": "k1", "cmd": "poll.open", "args": {"poll": "p", "options": ["a"]}},
        Command("k1", "poll.open", {"poll": "p", "options": ["a"]}),
    ),
    ({"t": "command", "id": "k2", "cmd": "review.list"}, Command("k2", "review.list", {})),
    ({"t": "probe", "id": "p1", "seq": 0}, Probe("p1", 0)),
    ({"t": "probe", "id": "p2", "seq": 65535}, Probe("p2", 65535)),
]


@BOTH
@pytest.mark.parametrize(("obj", "expected"), VALID, ids=[o["id"] for o, _ in VALID])
def test_valid_messages_decode(obj: dict[str, Any], expected: m.Message, binary: bool) -> None:
    msg = decode(frame(obj, binary), binary=binary)
    assert msg == expected
    assert type(msg) is type(expected)
    assert obj["t"] == msg.TYPE


def test_bytes_text_frame_and_bytes_like_inputs() -> None:
    obj = {"t": "like", "id": "a", "n": 3}
    text = json.dumps(obj)
    assert decode(text.encode(), binary=False) == Like("a", 3)
    assert decode(bytearray(text.encode()), binary=False) == Like("a", 3)
    packed = msgpack.packb(obj)
    assert decode(memoryview(packed), binary=True) == Like("a", 3)


@BOTH
def test_unknown_fields_are_ignored(binary: bool) -> None:
    msg = decode(frame({"t": "like", "id": "a", "n": 2, "sent_ms": 123.5}, binary), binary=binary)
    assert msg == Like("a", 2)


@BOTH
def test_comment_text_loses_control_characters_keeps_emoji_and_cjk(binary: bool) -> None:
    raw = "\u202eab\x00c\n\td\x7f\x85 👩\u200d👩\u200d👧 中文\ufe0f  "
    msg = decode(frame({"t": "comment", "id": "c", "text": raw}, binary), binary=binary)
    assert isinstance(msg, Comment)
    assert msg.text == "abc  d  👩\u200d👩\u200d👧 中文\ufe0f"


def test_command_args_are_read_only() -> None:
    msg = decode(
        frame({"t": "command", "id": "k", "cmd": "x", "args": {"a": 1}}, False), binary=False
    )
    assert isinstance(msg, Command)
    with pytest.raises(TypeError):
        msg.args["a"] = 2  # type: ignore[index]
    hash(msg)  # hashable despite the args map


def test_known_command_set() -> None:
    cmds = {"announce", "mute"}
    ok = decode(
        frame({"t": "command", "id": "k", "cmd": "mute"}, False), binary=False, commands=cmds
    )
    assert isinstance(ok, Command) and ok.cmd == "mute"
    e = bad({"t": "command", "id": "k", "cmd": "rm -rf"}, False, commands=cmds)
    assert e.field == "cmd" and "announce" in e.msg and e.id == "k"


# --- malformed fields -> bad_message naming the field ---------------------------------

L65 = "x" * 65
MALFORMED = [
    # (message, field at fault, id echoed)
    ({"t": "comment", "text": "hi"}, "id", None),
    ({"t": "comment", "id": 5, "text": "hi"}, "id", None),
    ({"t": "comment", "id": True, "text": "hi"}, "id", None),
    ({"t": "comment", "id": "", "text": "hi"}, "id", None),
    ({"t": "comment", "id": L65, "text": "hi"}, "id", None),
    ({"t": "comment", "id": None, "text": "hi"}, "id", None),
    ({"id": "a", "text": "hi"}, "t", "a"),
    ({"t": 1, "id": "a"}, "t", "a"),
    ({"t": "nope", "id": "a"}, "t", "a"),
    ({"t": "ack", "id": "a"}, "t", "a"),
    ({"t": "comment", "id": "a"}, "text", "a"),
    ({"t": "comment", "id": "a", "text": 7}, "text", "a"),
    ({"t": "comment", "id": "a", "text": ""}, "text", "a"),
    ({"t": "comment", "id": "a", "text": " \n\x00\u202e "}, "text", "a"),
    ({"t": "comment", "id": "a", "text": "x" * 201}, "text", "a"),
    ({"t": "comment", "id": "a", "text": ["hi"]}, "text", "a"),
    ({"t": "like", "id": "a"}, "n", "a"),
    ({"t": "like", "id": "a", "n": 0}, "n", "a"),
    ({"t": "like", "id": "a", "n": 101}, "n", "a"),
    ({"t": "like", "id": "a", "n": -1}, "n", "a"),
    ({"t": "like", "id": "a", "n": True}, "n", "a"),
    ({"t": "like", "id": "a", "n": 1.0}, "n", "a"),
    ({"t": "like", "id": "a", "n": "1"}, "n", "a"),
    ({"t": "like", "id": "a", "n": 2**64 - 1}, "n", "a"),
    ({"t": "vote", "id": "a", "option": 1}, "poll", "a"),
    ({"t": "vote", "id": "a", "poll": "", "option": 1}, "poll", "a"),
    ({"t": "vote", "id": "a", "poll": L65, "option": 1}, "poll", "a"),
    ({"t": "vote", "id": "a", "poll": "p\x00", "option": 1}, "poll", "a"),
    ({"t": "vote", "id": "a", "poll": "p"}, "option", "a"),
    ({"t": "vote", "id": "a", "poll": "p", "option": -1}, "option", "a"),
    ({"t": "vote", "id": "a", "poll": "p", "option": False}, "option", "a"),
    ({"t": "vote", "id": "a", "poll": 3, "option": 1}, "poll", "a"),
    ({"t": "join", "id": "a"}, "lottery", "a"),
    ({"t": "join", "id": "a", "lottery": L65}, "lottery", "a"),
    ({"t": "join", "id": "a", "lottery": {"x": 1}}, "lottery", "a"),
    ({"t": "gift", "id": "a", "n": 1}, "gift", "a"),
    ({"t": "gift", "id": "a", "gift": "rose"}, "n", "a"),
    ({"t": "gift", "id": "a", "gift": "rose", "n": 0}, "n", "a"),
    ({"t": "gift", "id": "a", "gift": "rose", "n": 10001}, "n", "a"),
    ({"t": "gift", "id": "a", "gift": "rose", "n": True}, "n", "a"),
    ({"t": "command", "id": "a", "args": {}}, "cmd", "a"),
    ({"t": "command", "id": "a", "cmd": "", "args": {}}, "cmd", "a"),
    ({"t": "command", "id": "a", "cmd": L65, "args": {}}, "cmd", "a"),
    ({"t": "command", "id": "a", "cmd": "x", "args": []}, "args", "a"),
    ({"t": "command", "id": "a", "cmd": "x", "args": "k=v"}, "args", "a"),
    ({"t": "command", "id": "a", "cmd": "x", "args": None}, "args", "a"),
    ({"t": "command", "id": "a", "cmd": "x", "args": {str(i): i for i in range(33)}}, "args", "a"),
    ({"t": "probe", "id": "a"}, "seq", "a"),
    ({"t": "probe", "id": "a", "seq": 65536}, "seq", "a"),
    ({"t": "probe", "id": "a", "seq": -1}, "seq", "a"),
    ({"t": "probe", "id": "a", "seq": True}, "seq", "a"),
    ({"t": "probe", "id": "a", "seq": 1.5}, "seq", "a"),
]


@BOTH
@pytest.mark.parametrize(("obj", "field", "msg_id"), MALFORMED)
def test_malformed_fields_are_bad_message_naming_the_field(
    obj: dict[str, Any], field: str, msg_id: str | None, binary: bool
) -> None:
    e = bad(obj, binary)
    assert e.field == field
    assert e.msg.startswith(f"{field}: ")
    assert e.id == msg_id
    assert e.reply() == {"t": "err", "id": msg_id, "code": "bad_message", "msg": e.msg}


def test_long_id_is_not_echoed() -> None:
    e = bad({"t": "like", "id": "z" * 5000, "n": 1}, False)
    assert e.id is None and "z" * 50 not in e.msg


def test_unknown_type_message_is_short_and_lists_the_types() -> None:
    e = bad({"t": "q" * 10000, "id": "a"}, False)
    assert len(e.msg) < 200 and "comment" in e.msg


@BOTH
@pytest.mark.parametrize("top", [[1, 2], "str", 3, None, True, 1.5])
def test_top_level_must_be_a_map(top: Any, binary: bool) -> None:
    e = bad(top, binary)
    assert e.field == "message" and "map" in e.msg


# --- frames that do not parse ----------------------------------------------------------


def test_oversize_frame_rejected_before_decoding() -> None:
    huge = b"\xff" * (10 * 1024 * 1024)  # not even valid: proves nothing was parsed
    for binary in (True, False):
        start = time.perf_counter()
        e = bad_raw(huge, binary)
        assert time.perf_counter() - start < 0.01
        assert e.field == "frame" and "65536" in e.msg
    text = "[" * (10 * 1024 * 1024)
    start = time.perf_counter()
    bad_raw(text, False)
    assert time.perf_counter() - start < 0.01


def test_byte_cap_counts_utf8_bytes_and_is_configurable() -> None:
    obj = {"t": "comment", "id": "a", "text": "字" * 200}  # 600 bytes of text
    text = json.dumps(obj, ensure_ascii=False)
    assert len(text) < 300 < len(text.encode())
    assert decode(text, binary=False) == Comment("a", "字" * 200)
    e = bad_raw(text, False, max_bytes=300)
    assert e.field == "frame"
    assert decode(text, binary=False, max_bytes=len(text.encode())) == Comment("a", "字" * 200)
    packed = msgpack.packb(obj)
    bad_raw(packed, True, max_bytes=len(packed) - 1)
    assert decode(packed, binary=True, max_bytes=len(packed)) == Comment("a", "字" * 200)


@BOTH
def test_deep_nesting_rejected(binary: bool) -> None:
    nested: Any = 1
    for _ in range(7):  # args map is depth 2; 7 more lists reach depth 9
        nested = [nested]
    e = bad({"t": "command", "id": "a", "cmd": "x", "args": {"k": nested}}, binary)
    assert e.field == "args" and "nested" in e.msg and e.id == "a"
    nested = nested[0]  # depth 8: fine
    msg = decode(
        frame({"t": "command", "id": "a", "cmd": "x", "args": {"k": nested}}, binary), binary=binary
    )
    assert isinstance(msg, Command)
    e = bad({"t": "like", "id": "a", "n": 1, "junk": [[[[[[[[[]]]]]]]]]}, binary)
    assert e.field == "junk"


def test_pathological_nesting_is_bad_message_not_a_crash() -> None:
    bad_raw("[" * 60000, False)
    bad_raw("[" * 30000 + "]" * 30000, False)
    bad_raw(b"\x91" * 60000 + b"\x01", True)  # msgpack fixarray(1) x 60000


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"t":"like","id":"\xc3\x28","n":1}', "UTF-8"),
        (b'{"t":"like"', "JSON"),
        (b"", "JSON"),
        (b'{"t":"like","id":"a","n":1} {}', "JSON"),
        (b'{"t":"like","id":"a","n":NaN}', "JSON"),
        (b'{"t":"like","id":"a","n":Infinity}', "JSON"),
        (b'{"t":"like","id":"a","n":' + b"9" * 5000 + b"}", "JSON"),
        (b"\xef\xbb\xbf{}", "JSON"),
    ],
)
def test_invalid_text_frames(data: bytes, what: str) -> None:
    e = bad_raw(data, False)
    assert e.field == "frame" and what in e.msg


def test_str_frame_with_a_lone_surrogate() -> None:
    e = bad_raw('{"t":"comment","id":"a","text":"\ud800"}', False)
    assert e.field == "frame"


def test_lone_surrogate_escapes_are_rejected() -> None:
    with pytest.raises(WireError) as exc:
        decode('{"t":"comment","id":"a","text":"\\ud800x"}', binary=False)
    assert exc.value.field == "text" and exc.value.id == "a"
    with pytest.raises(WireError) as exc:
        decode('{"t":"comment","id":"\\udfff","text":"x"}', binary=False)
    assert exc.value.field == "id" and exc.value.id is None


def test_huge_float_is_rejected() -> None:
    with pytest.raises(WireError) as exc:
        decode('{"t":"command","id":"a","cmd":"x","args":{"v":1e999}}', binary=False)
    assert exc.value.field == "args" and "finite" in exc.value.msg


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"\xc1", "msgpack"),  # never-used type byte
        (b"\x83\xa1t", "msgpack"),  # truncated map
        (b"", "msgpack"),
        (msgpack.packb({"t": "like", "id": "a", "n": 1}) + b"\x00", "trailing"),
        (b"\x81\xa1t\xa2\xc3\x28", "UTF-8"),  # {"t": <invalid utf-8>}
        (b"\xdd\xff\xff\xff\xff", "msgpack"),  # array32 claiming 4 G items
        (b"\xdb\xff\xff\xff\xff", "msgpack"),  # str32 claiming 4 GB
    ],
)
def test_invalid_binary_frames(data: bytes, what: str) -> None:
    e = bad_raw(data, True)
    assert e.field == "frame" and what in e.msg


def test_text_given_as_binary_frame() -> None:
    bad_raw('{"t":"like","id":"a","n":1}', True)


@pytest.mark.parametrize(
    "obj",
    [
        {"t": "like", "id": "a", "n": 1, b"k": 1},  # bytes key at the top
        {"t": "command", "id": "a", "cmd": "x", "args": {b"k": 1}},
        {"t": "command", "id": "a", "cmd": "x", "args": {"k": b"\x00"}},  # binary value
        {"t": "command", "id": "a", "cmd": "x", "args": {"k": msgpack.ExtType(5, b"x")}},
        {"t": "command", "id": "a", "cmd": "x", "args": {"k": float("nan")}},
    ],
)
def test_msgpack_values_json_cannot_carry_are_rejected(obj: dict[Any, Any]) -> None:
    e = bad(obj, True)
    assert e.id == "a"


def test_msgpack_integer_map_key_rejected() -> None:
    e = bad_raw(msgpack.packb({1: 2}), True)
    assert e.field == "frame"


# --- replies -----------------------------------------------------------------------------


def test_reply_helpers_and_framing() -> None:
    assert ack("x") == {"t": "ack", "id": "x"}
    assert ack("x", masked=True) == {"t": "ack", "id": "x", "masked": True}
    assert ack("x", result={"poll": "p"}) == {"t": "ack", "id": "x", "result": {"poll": "p"}}
    assert err(None, "busy", "try later") == {
        "t": "err",
        "id": None,
        "code": "busy",
        "msg": "try later",
    }
    with pytest.raises(ValueError):
        err("x", "nope", "m")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ack("x", t="err")
    reply = err("x", "rate_limited", "comment: slow down 慢")
    text = encode_reply(reply, binary=False)
    assert isinstance(text, str) and json.loads(text) == reply and "慢" in text
    packed = encode_reply(reply, binary=True)
    assert isinstance(packed, bytes) and msgpack.unpackb(packed) == reply


def test_every_contract_code_is_documented() -> None:
    contract = {"bad_message", "unauthorized", "forbidden", "rate_limited", "blocked", "held",
                "unknown_target", "busy"}  # fmt: skip
    assert set(ERROR_CODES) == contract
    assert all(len(doc) > 20 for doc in ERROR_CODES.values())
    with pytest.raises(ValueError):
        WireError("nope", "x")  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------------------


@settings(max_examples=500)
@given(data=st.binary(max_size=512), binary=st.booleans())
def test_random_bytes_only_ever_raise_wire_error(data: bytes, binary: bool) -> None:
    try:
        decode(data, binary=binary)
    except WireError as exc:
        assert exc.code == "bad_message"


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=80)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
field_values = (
    st.sampled_from(
        ["comment", "like", "vote", "join", "gift", "command", "probe", "a", "", "x" * 65]
    )
    | json_values
)
messageish = (
    st.dictionaries(
        st.sampled_from(
            ["t", "id", "text", "n", "poll", "option", "lottery", "gift", "cmd", "args", "seq"]
        ),
        field_values,
        max_size=6,
    )
    | json_values
)


@settings(max_examples=500)
@given(obj=messageish, binary=st.booleans())
def test_random_jsonish_values_decode_or_raise_wire_error(obj: Any, binary: bool) -> None:
    try:
        data = frame(obj, binary)
    except (ValueError, OverflowError):  # e.g. msgpack cannot pack ints beyond 64 bits
        return
    try:
        msg = decode(data, binary=binary)
    except WireError as exc:
        assert exc.code == "bad_message" and exc.msg and exc.field
        return
    # Whatever decodes re-encodes in both framings and decodes to the same message.
    for out_binary in (False, True):
        assert decode(encode(msg, binary=out_binary), binary=out_binary) == msg


ids = st.text(min_size=1, max_size=64).filter(m._encodable)
names = st.text(min_size=1, max_size=64).filter(
    lambda s: m._encodable(s) and not any(c in m._CONTROL_CHARS for c in s)
)
texts = (
    st.text(min_size=1, max_size=200)
    .map(m.clean_text)
    .filter(lambda s: len(s) >= 1 and m._encodable(s))
)
arg_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20).filter(m._encodable)
)
arg_values = st.recursive(
    arg_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
valid_messages = st.one_of(
    st.builds(Comment, ids, texts),
    st.builds(Like, ids, st.integers(1, 100)),
    st.builds(Vote, ids, names, st.integers(0, 2**31 - 1)),
    st.builds(Join, ids, names),
    st.builds(Gift, ids, names, st.integers(1, 10000)),
    st.builds(Command, ids, names, st.dictionaries(st.text(max_size=8), arg_values, max_size=32)),
    st.builds(Probe, ids, st.integers(0, 65535)),
)


@settings(max_examples=500)
@given(msg=valid_messages, binary=st.booleans())
def test_valid_messages_round_trip(msg: m.Message, binary: bool) -> None:
    wire = to_wire(msg)
    assert wire["t"] == msg.TYPE
    assert decode(encode(msg, binary=binary), binary=binary) == msg


def test_decode_is_fast_for_a_typical_comment() -> None:
    data = json.dumps({"t": "comment", "id": "abc123", "text": "好看！主播加油 🎉"})
    start = time.perf_counter()
    for _ in range(10000):
        decode(data, binary=False)
    per_message_us = (time.perf_counter() - start) / 10000 * 1e6
    assert per_message_us < 100, per_message_us
