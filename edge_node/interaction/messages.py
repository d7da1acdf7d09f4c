"""The interaction wire schema: client frames in, typed messages out; reply maps back.

Sans-I/O and pure: ``decode`` turns one WebSocket or data-channel frame into a frozen
message dataclass or raises ``WireError`` carrying the contract's error code, the
field at fault and the message's id when it could be read. ``encode_reply``, ``ack``
and ``err`` build the node's answers in the framing of the request.

Decoding is defensive because every byte here comes from the internet:
- the byte cap is checked before any parsing (a 10 MB frame costs a ``len``);
- msgpack limits every string, array and map to the (capped) frame length, so a
  forged length prefix cannot allocate more than the frame holds;
- nesting is bounded (``MAX_DEPTH``) by an iterative walk after decoding, which also
  rejects what JSON cannot carry (binary, ext types, non-finite numbers, non-string
  map keys, lone surrogates) and what msgpack cannot (integers beyond 64 bits), so
  both framings accept exactly the same messages;
- JSON's recursion and big-integer limits surface as ``bad_message``, not crashes.

What this module must never do: look anything up (polls, lotteries, users, roles),
read a clock, or log per message. Whether a poll exists (``unknown_target``), whether
the role may send the type (``forbidden``) and the limits (``rate_limited``) belong
to the engine; this module only says whether the frame is well formed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from itertools import chain, compress
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal, TypeAlias

import msgpack

from edge_node.errors import EdgeNodeError

DEFAULT_MAX_BYTES: Final = 64 * 1024
MAX_DEPTH: Final = 8
"""Deepest container nesting accepted; the top-level map is depth 1."""
MAX_ID_CHARS: Final = 64
MAX_NAME_CHARS: Final = 64
MAX_TEXT_CHARS: Final = 200
MAX_LIKES: Final = 100
MAX_GIFT_COUNT: Final = 10_000
MAX_PROBE_SEQ: Final = 0xFFFF
MAX_VOTE_OPTION: Final = 2**31 - 1
MAX_ARGS_KEYS: Final = 32
MAX_FIELDS: Final = 16
"""Most top-level keys a message may have (its own fields plus a client's extras)."""

ErrorCode: TypeAlias = Literal[
    "bad_message",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "blocked",
    "held",
    "unknown_target",
    "busy",
]

ERROR_CODES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "bad_message": (
            "The frame could not be parsed, or a field is missing or has the wrong type, "
            "length or range; msg names the field. The client's fault: the same frame "
            "will fail again. A frame whose id cannot be read is answered with id null."
        ),
        "unauthorized": (
            "No acceptable token: missing (and anonymous viewers are not allowed), "
            "malformed, forged, expired, for another audience, or of an unknown role."
        ),
        "forbidden": (
            "The token is valid but its role may not send this message type: a command "
            "from a viewer, a gift from an untrusted role, a probe from anyone but the "
            "bench role or while bench.probe is off."
        ),
        "rate_limited": (
            "The sender's (user's or address's) token bucket for this message type is "
            "empty; the message was dropped. Retry later, more slowly."
        ),
        "blocked": "Moderation refused the message (word list) or the user is muted.",
        "held": "Moderation holds the comment for operator review; it may appear later.",
        "unknown_target": (
            "The poll, lottery, PK or review item the message names does not exist or is "
            "closed (decided by the engine, never by the decoder)."
        ),
        "busy": (
            "The node is saturated and sheds this message instead of queueing it; retry "
            "with backoff."
        ),
    }
)
"""Every error code of the contract and what it means to the client."""


class WireError(EdgeNodeError):
    """A frame or message the node refuses, with the contract's reply code.

    ``code`` is one of ``ERROR_CODES``; ``msg`` names the field and what was wrong;
    ``id`` is the message's id when it could be read, else None (the reply then
    carries ``"id": null``); ``field`` is the field at fault, when there is one.
    """

    def __init__(
        self, code: ErrorCode, msg: str, id: str | None = None, *, field: str | None = None
    ) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown wire error code {code!r}")
        super().__init__(msg)
        self.code: ErrorCode = code
        self.msg = msg
        self.id = id
        self.field = field

    def reply(self) -> dict[str, Any]:
        """The ``err`` map answering the message that raised this."""
        return err(self.id, self.code, self.msg)


# --- messages (client -> node) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comment:
    TYPE: ClassVar[str] = "comment"
    id: str
    text: str


@dataclass(frozen=True, slots=True)
class Like:
    TYPE: ClassVar[str] = "like"
    id: str
    n: int


@dataclass(frozen=True, slots=True)
class Vote:
    TYPE: ClassVar[str] = "vote"
    id: str
    poll: str
    option: int


@dataclass(frozen=True, slots=True)
class Join:
    TYPE: ClassVar[str] = "join"
    id: str
    lottery: str


@dataclass(frozen=True, slots=True)
class Gift:
    TYPE: ClassVar[str] = "gift"
    id: str
    gift: str
    n: int


@dataclass(frozen=True, slots=True)
class Command:
    """An operator command; ``args`` is read-only (decode wraps it in a mapping proxy)."""

    TYPE: ClassVar[str] = "command"
    id: str
    cmd: str
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True, slots=True)
class Probe:
    TYPE: ClassVar[str] = "probe"
    id: str
    seq: int


Message: TypeAlias = Comment | Like | Vote | Join | Gift | Command | Probe
MESSAGE_TYPES: Final = ("comment", "like", "vote", "join", "gift", "command", "probe")


# --- decoding ---------------------------------------------------------------------------

_BAD: Final = "bad_message"

# Comments are drawn on the picture: C0/C1 controls go, whitespace controls become a
# space, and the bidi embedding/override/isolate controls go too (they let one comment
# reorder the text drawn after it). Emoji joiners (U+200D) and variation selectors stay.
_WHITESPACE_CONTROLS = (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0x2028, 0x2029)
_TEXT_TABLE: Final[dict[int, str | None]] = {
    **{cp: None for cp in (*range(0x00, 0x20), *range(0x7F, 0xA0))},
    **{cp: None for cp in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))},
    **{cp: " " for cp in _WHITESPACE_CONTROLS},
}
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_CONTROL_CHARS: Final = frozenset(chr(cp) for cp in (*range(0x00, 0x20), *range(0x7F, 0xA0)))

_WIRE_TYPE_NAMES: Final[Mapping[type, str]] = MappingProxyType(
    {
        dict: "map",
        list: "array",
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        type(None): "null",
        bytes: "binary",
    }
)


def _type_name(value: object) -> str:
    return _WIRE_TYPE_NAMES.get(type(value), type(value).__name__)


def _short(text: str, limit: int = 32) -> str:
    """A client string quoted for an error message, never longer than ``limit``."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _field_name(key: str) -> str:
    """A client's own key as an error names it: as is when short and printable, else
    quoted and cut (an empty key, or one of 60,000 characters, is named readably)."""
    if 0 < len(key) <= MAX_NAME_CHARS and key.isprintable():
        return key
    return _short(key)


def _bad(field_name: str, what: str, msg_id: str | None) -> WireError:
    return WireError(_BAD, f"{field_name}: {what}", msg_id, field=field_name)


def _encodable(text: str) -> bool:
    """False for strings holding lone surrogates (JSON "\\ud800" escapes allow them)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _load(
    frame: bytes | bytearray | memoryview | str, binary: bool, max_bytes: int
) -> tuple[Any, bool]:
    """Bytes -> (Python values, whether strings need a Unicode check); cap checked first."""
    if isinstance(frame, str):
        # A str holds at least one byte per character: the cheap check goes first.
        if len(frame) > max_bytes:
            raise _bad("frame", f"larger than {max_bytes} bytes", None)
        if binary:
            raise _bad("frame", "a binary frame must be bytes, got text", None)
        try:
            size = len(frame.encode("utf-8"))
        except UnicodeEncodeError:
            raise _bad("frame", "text is not valid Unicode (lone surrogate)", None) from None
        if size > max_bytes:
            raise _bad("frame", f"larger than {max_bytes} bytes ({size})", None)
        return _load_json(frame)
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise _bad("frame", f"expected bytes or text, got {type(frame).__name__}", None)
    size = frame.nbytes if isinstance(frame, memoryview) else len(frame)
    if size > max_bytes:
        raise _bad("frame", f"larger than {max_bytes} bytes ({size})", None)
    if binary:
        try:
            # unpackb has no max_buffer_size (the streaming Unpacker has): its buffer is
            # the frame, already capped. Every length prefix is bounded by the frame's
            # size too, so a forged 4 G array header cannot allocate past the frame.
            obj = msgpack.unpackb(
                frame,
                raw=False,
                strict_map_key=True,
                use_list=True,
                max_str_len=size,
                max_bin_len=size,
                max_array_len=size,
                max_map_len=size // 2,
                max_ext_len=size,
            )
        except msgpack.ExtraData:
            raise _bad("frame", "trailing data after the msgpack map", None) from None
        except UnicodeDecodeError:
            raise _bad("frame", "msgpack string is not valid UTF-8", None) from None
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise _bad("frame", f"not valid msgpack ({exc})", None) from None
        return obj, False
    try:
        text = bytes(frame).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad("frame", f"text frame is not valid UTF-8 (byte {exc.start})", None) from None
    return _load_json(text)


def json_object(text: str, where: str) -> dict[str, Any]:
    """A JSON object from a trusted-but-checked source (a cloud command's args, a
    platform event): NaN/Infinity, integers past the digit limit, nesting past Python's
    recursion limit and non-objects are a ValueError naming ``where``."""
    try:
        obj = json.loads(text or "{}", parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(f"{where}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, the int digit limit
        raise ValueError(f"{where}: not valid JSON ({str(exc)[:160]})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: must be a JSON object")
    return obj


def _load_json(text: str) -> tuple[Any, bool]:
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _bad("frame", f"not valid JSON ({exc.msg} at char {exc.pos})", None) from None
    except ValueError as exc:  # NaN/Infinity, or an integer past Python's digit limit
        raise _bad("frame", f"not valid JSON ({exc})", None) from None
    except RecursionError:
        raise _bad("frame", f"nested deeper than {MAX_DEPTH} levels", None) from None
    # Only a "\\uD800".."\\uDFFF" escape puts a lone surrogate into a decoded string.
    return obj, _SURROGATE_ESCAPE.search(text) is not None


_PLAIN_TYPES: Final = frozenset({int, bool, type(None)})
_STRING_TYPES: Final = _PLAIN_TYPES | {str}
_JUST_LISTS: Final = frozenset({list})
_ALLOWED_TYPES: Final = frozenset({dict, list, str, int, bool, float, type(None)})
_is_container: Final = frozenset({dict, list}).__contains__
_is_dict: Final = frozenset({dict}).__contains__
_is_list: Final = frozenset({list}).__contains__
_is_float: Final = frozenset({float}).__contains__
_is_str: Final = frozenset({str}).__contains__
_is_int: Final = frozenset({int}).__contains__
MIN_INT: Final = -(2**63)
MAX_INT: Final = 2**64 - 1
"""The integers msgpack carries; JSON's wider ones are refused so both framings accept
the same messages (and a command's ``float(seconds)`` cannot overflow)."""


def _check_subtree(value: Any, where: str, msg_id: str | None, check_strings: bool) -> None:
    """Check one top-level field's value, a whole nesting level per pass.

    Each pass gathers every value of every container of one level and checks them
    with C-level iteration (``map``, ``set``, ``compress``, ``chain``): a hostile
    64 KiB frame of 30,000 empty arrays costs about what one of 30,000 integers does,
    and there are at most ``MAX_DEPTH`` passes.
    """
    level: list[Any] = [value]
    depth = 1  # the depth of the containers holding ``level``; the top-level map is 1
    while level:
        kinds = set(map(type, level))
        if int in kinds:
            ints = list(compress(level, map(_is_int, map(type, level))))
            if min(ints) < MIN_INT or max(ints) > MAX_INT:
                raise _bad(where, "integers must fit in 64 bits", msg_id)
        if kinds <= _PLAIN_TYPES or (kinds <= _STRING_TYPES and not check_strings):
            return
        if not kinds <= _ALLOWED_TYPES:
            odd = next(t for t in kinds if t not in _ALLOWED_TYPES)
            name = _WIRE_TYPE_NAMES.get(odd, odd.__name__)
            raise _bad(where, f"{name} values are not allowed", msg_id)
        if kinds == _JUST_LISTS:  # a common shape (and a cheap attack): no sorting needed
            depth += 1
            if depth > MAX_DEPTH:
                raise _bad(where, f"nested deeper than {MAX_DEPTH} levels", msg_id)
            level = list(chain.from_iterable(level))
            continue
        types = list(map(type, level))
        if float in kinds and not all(map(math.isfinite, compress(level, map(_is_float, types)))):
            raise _bad(where, "numbers must be finite", msg_id)
        if (
            check_strings
            and str in kinds
            and not _encodable("".join(compress(level, map(_is_str, types))))
        ):
            raise _bad(where, "string is not valid Unicode", msg_id)
        if dict not in kinds and list not in kinds:
            return
        depth += 1
        if depth > MAX_DEPTH:
            raise _bad(where, f"nested deeper than {MAX_DEPTH} levels", msg_id)
        dicts = list(compress(level, map(_is_dict, types)))
        if dicts:
            if not set(map(type, chain.from_iterable(dicts))) <= {str}:
                raise _bad(where, "map keys must be strings", msg_id)
            if check_strings and not _encodable("".join(chain.from_iterable(dicts))):
                raise _bad(where, "map key is not valid Unicode", msg_id)
        level = list(
            chain(
                chain.from_iterable(map(dict.values, dicts)),
                chain.from_iterable(compress(level, map(_is_list, types))),
            )
        )


def _check_tree(root: dict[Any, Any], msg_id: str | None, check_strings: bool) -> None:
    """Field count, depth, key and value types of the whole message, without recursion.

    Only what both framings can carry passes: maps with string keys, arrays, strings,
    integers, finite numbers, booleans and null. Strings are checked for lone
    surrogates only when ``check_strings`` (JSON with a surrogate escape in it):
    msgpack strings and UTF-8 text frames cannot hold them otherwise.
    """
    if len(root) > MAX_FIELDS:
        raise _bad("message", f"at most {MAX_FIELDS} fields, got {len(root)}", msg_id)
    for key, value in root.items():  # field by field, so errors name the field
        if type(key) is not str:
            raise _bad("message", f"map keys must be strings, got {_type_name(key)}", msg_id)
        if check_strings and not _encodable(key):
            raise _bad("message", "map key is not valid Unicode", msg_id)
        _check_subtree(value, _field_name(key), msg_id, check_strings)


def _read_id(obj: dict[Any, Any]) -> str:
    if "id" not in obj:
        raise _bad("id", "required", None)
    value = obj["id"]
    if type(value) is not str:
        raise _bad("id", f"expected a string, got {_type_name(value)}", None)
    if not 1 <= len(value) <= MAX_ID_CHARS:
        raise _bad("id", f"must be 1 to {MAX_ID_CHARS} characters, got {len(value)}", None)
    if not _encodable(value):
        raise _bad("id", "is not valid Unicode", None)
    return value


def _str(obj: dict[Any, Any], name: str, msg_id: str, max_chars: int = MAX_NAME_CHARS) -> str:
    if name not in obj:
        raise _bad(name, "required", msg_id)
    value = obj[name]
    if type(value) is not str:
        raise _bad(name, f"expected a string, got {_type_name(value)}", msg_id)
    if not 1 <= len(value) <= max_chars:
        raise _bad(name, f"must be 1 to {max_chars} characters, got {len(value)}", msg_id)
    if not _CONTROL_CHARS.isdisjoint(value):
        raise _bad(name, "must not contain control characters", msg_id)
    return value


def _int(obj: dict[Any, Any], name: str, msg_id: str, lo: int, hi: int) -> int:
    if name not in obj:
        raise _bad(name, "required", msg_id)
    value = obj[name]
    if type(value) is not int:  # bool is a subclass of int, and not an integer here
        raise _bad(name, f"expected an integer, got {_type_name(value)}", msg_id)
    if not lo <= value <= hi:
        shown = value if abs(value) < 10**12 else "out-of-range value"
        raise _bad(name, f"must be {lo} to {hi}, got {shown}", msg_id)
    return value


def clean_text(text: str) -> str:
    """A comment as drawn: control characters removed, whitespace controls as spaces."""
    return text.translate(_TEXT_TABLE).strip()


def _comment(obj: dict[Any, Any], msg_id: str, commands: Collection[str] | None) -> Message:
    if "text" not in obj:
        raise _bad("text", "required", msg_id)
    raw = obj["text"]
    if type(raw) is not str:
        raise _bad("text", f"expected a string, got {_type_name(raw)}", msg_id)
    text = clean_text(raw)
    if not 1 <= len(text) <= MAX_TEXT_CHARS:
        raise _bad(
            "text",
            f"must be 1 to {MAX_TEXT_CHARS} characters after removing control characters, "
            f"got {len(text)}",
            msg_id,
        )
    return Comment(msg_id, text)


def _like(obj: dict[Any, Any], msg_id: str, commands: Collection[str] | None) -> Message:
    return Like(msg_id, _int(obj, "n", msg_id, 1, MAX_LIKES))


def _vote(obj: dict[Any, Any], msg_id: str, commands: Collection[str] | None) -> Message:
    return Vote(msg_id, _str(obj, "poll", msg_id), _int(obj, "option", msg_id, 0, MAX_VOTE_OPTION))


def _join(obj: dict[Any, Any], msg_id: str, commands: Collection[str] | None) -> Message:
    return Join(msg_id, _str(obj, "lottery", msg_id))


def _gift(obj: dict[Any, Any], msg_id: str, commands: Collection[str] | None) -> Message:
    return Gift(msg_id, _str(obj, "gift", msg_id), _int(obj, "n", msg_id, 1, MAX_GIFT_COUNT))


def _command(obj: dict[Any, Any], msg_id: str, commands: Collection[str] | None) -> Message:
    cmd = _str(obj, "cmd", msg_id)
    if commands is not None and cmd not in commands:
        known = ", ".join(sorted(commands))
        raise _bad("cmd", f"unknown command {_short(cmd)} (known: {known})", msg_id)
    args = obj.get("args", {})  # commands without arguments may leave "args" out
    if type(args) is not dict:
        raise _bad("args", f"expected a map, got {_type_name(args)}", msg_id)
    if len(args) > MAX_ARGS_KEYS:
        raise _bad("args", f"at most {MAX_ARGS_KEYS} keys, got {len(args)}", msg_id)
    return Command(msg_id, cmd, MappingProxyType(args))


def _probe(obj: dict[Any, Any], msg_id: str, commands: Collection[str] | None) -> Message:
    return Probe(msg_id, _int(obj, "seq", msg_id, 0, MAX_PROBE_SEQ))


_PARSERS: Final = MappingProxyType(
    {
        "comment": _comment,
        "like": _like,
        "vote": _vote,
        "join": _join,
        "gift": _gift,
        "command": _command,
        "probe": _probe,
    }
)


def decode(
    frame: bytes | bytearray | memoryview | str,
    *,
    binary: bool,
    max_bytes: int = DEFAULT_MAX_BYTES,
    commands: Collection[str] | None = None,
) -> Message:
    """One frame -> one message, or ``WireError`` (always ``bad_message`` here).

    ``binary`` is the frame's WebSocket/data-channel type: msgpack when True, JSON
    text when False. ``commands``, when given, is the set of command names the
    dispatcher knows; otherwise any well-formed name passes and the dispatcher decides.
    Keys the schema does not name are ignored (after the same depth and type checks),
    so clients may attach their own fields, e.g. a send timestamp.
    """
    obj, check_strings = _load(frame, binary, max_bytes)
    if type(obj) is not dict:
        raise _bad("message", f"top level must be a map, got {_type_name(obj)}", None)
    msg_id = _read_id(obj)
    _check_tree(obj, msg_id, check_strings)
    if "t" not in obj:
        raise _bad("t", "required", msg_id)
    kind = obj["t"]
    if type(kind) is not str:
        raise _bad("t", f"expected a string, got {_type_name(kind)}", msg_id)
    parser = _PARSERS.get(kind)
    if parser is None:
        known = ", ".join(MESSAGE_TYPES)
        raise _bad("t", f"unknown message type {_short(kind)} (known: {known})", msg_id)
    return parser(obj, msg_id, commands)


# --- encoding ---------------------------------------------------------------------------


def to_wire(msg: Message) -> dict[str, Any]:
    """A message as the map a client sends (the inverse of ``decode``)."""
    out: dict[str, Any] = {"t": msg.TYPE}
    for name in msg.__dataclass_fields__:
        value = getattr(msg, name)
        out[name] = dict(value) if isinstance(value, Mapping) else value
    return out


def encode_reply(msg: Mapping[str, Any], *, binary: bool) -> bytes | str:
    """A node->client map in the request's framing: msgpack bytes or JSON text.

    Raises TypeError/ValueError for values neither framing carries: that is our bug,
    not the client's, so it is not a ``WireError``.
    """
    if binary:
        packed: bytes = msgpack.packb(msg, use_bin_type=True)
        return packed
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode(msg: Message, *, binary: bool) -> bytes | str:
    """A client message as a frame (test clients, the simulated audience, benches)."""
    return encode_reply(to_wire(msg), binary=binary)


def ack(id: str, **extra: Any) -> dict[str, Any]:
    """``{"t":"ack","id":ID, ...}``: e.g. ``result={...}`` for commands, ``masked=True``."""
    if "t" in extra or "id" in extra:
        raise ValueError("ack extras must not replace 't' or 'id'")
    return {"t": "ack", "id": id, **extra}


def err(id: str | None, code: ErrorCode, msg: str) -> dict[str, Any]:
    """``{"t":"err","id":ID|null,"code":CODE,"msg":STR}``; ``code`` from ``ERROR_CODES``."""
    if code not in ERROR_CODES:
        raise ValueError(f"unknown wire error code {code!r}")
    return {"t": "err", "id": id, "code": code, "msg": msg}
