"""Background interaction load for the ``interaction`` scenario:
``python -m bench.load_gen --url URL --secret-file FILE --rate 2000 --users 100``.

Opens one WebSocket per user (viewer tokens minted with the node's secret; user ids
``load-0`` ...), opens a poll with an operator token, then sends ``--rate`` events per
second in all (msgpack binary frames) in the mix of ``--mix``: comments (Chinese and
Latin), likes, votes and lottery entries (``join``), the weights being shares of the
events sent. The sending goes in turns, round-robin over the users; a turn is one
message, but a like turn is ``--like-burst`` like messages back to back from its user
(a viewer tapping the heart), each one event towards the rate; the other kinds get
``--like-burst`` times as many turns, so the shares stay those of ``--mix``.

With ``join`` in the mix the operator socket opens the lottery ``--lottery`` (keyword
``抽奖``, 3 winners, no deadline) at the start and draws it at the end. A user enters
once, on their first ``join`` turn; their later ``join`` turns send the keyword as a
comment, as viewers spam it in the chat (the node acks it as a comment; it enters no
one twice). ``by_type`` counts those as ``keyword``, the entries as ``join``. Which
users have ``join`` turns is the round robin's (like every kind's): when the users
divide the turns of the mix's cycle, the same ones every cycle, so not every user
need enter (nor does every viewer of a real show).

Every reply is counted by code; text frames (what the node pushes before a client
has sent a binary frame) are not replies.

The WebSockets are a lean RFC 6455 client of this module's own (``WsClient``, an
asyncio protocol on uvloop when it is installed): the opening handshake with its
``Sec-WebSocket-Accept`` check, no extension, and every frame to the node masked with
a fresh key from ``os.urandom``. A frame is written to the socket as soon as it is
built, without an await, and a reply is counted as it is parsed: an ack (a msgpack
map whose first entry is ``"t": "ack"``) from its first bytes, anything else after a
full ``msgpack.unpackb``. On the 2-core bench box that is about 33 us of CPU per
event at 3,000 events/s (58 us with aiohttp's WebSocket client and a model of the
danmaku board, which the node now counts itself: ``edge_node_danmaku_on_screen``),
nearly half of it the kernel sending and receiving the frames.

With ``--json``: ``{"event": "running"}`` once every socket is open and the poll (and
lottery) is up, then ``{"event": "result", ...}`` at the end (``lottery_draw``: the
draw's ack with its entrant list replaced by their count). It stops at end of standard input
(``--stdin``), on SIGTERM/SIGINT or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import sys
import time
from collections.abc import Awaitable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack

from bench.stopping import stop_event
from bench.ws_client import (
    OP_BINARY,
    OP_TEXT,
    Masks,
    WsClient,
    WsError,
    WsUrl,
    reply_code,
    ws_connect,
)

TICK_S = 0.01
REPLY_WAIT_S = 3.0
COMMAND_TIMEOUT_S = 10.0
DEFAULT_MIX = "comment=0.4,like=0.5,vote=0.1"
POLL_OPTIONS = ["red", "blue", "green", "gold"]
KINDS = ("comment", "like", "vote", "join")
LOTTERY_KEYWORD = "抽奖"  # "lottery": what viewers type to enter
LOTTERY_WINNERS = 3
MAX_LOTTERY_CHARS = 64  # the node's limit on an id argument

# ---- the load -----------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, float]:
    """``comment=0.4,like=0.5,vote=0.1,join=0.05`` -> weights (normalised to sum to 1)."""
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in KINDS:
            raise ValueError(f"mix: unknown event type {name!r} ({', '.join(KINDS)})")
        try:
            w = float(weight)
        except ValueError:
            raise ValueError(f"mix: {part!r} is not name=weight") from None
        if w < 0:
            raise ValueError(f"mix: negative weight for {name}")
        out[name] = w
    total = sum(out.values())
    if total <= 0:
        raise ValueError("mix: the weights sum to zero")
    return {k: v / total for k, v in out.items()}


def kind_cycle(
    mix: dict[str, float], rng: random.Random, length: int = 1000, like_burst: int = 1
) -> list[str]:
    """A shuffled list of turns holding each kind in proportion, cycled through while
    sending (exact proportions over every ``length * like_burst`` events, no clumps).

    A like turn sends ``like_burst`` messages, so every other kind gets ``like_burst``
    times its turns: the mix stays the share of the events whatever the burst.
    """
    kinds: list[str] = []
    for name, w in mix.items():
        turns = round(w * length)
        kinds += [name] * (turns if name == "like" else turns * like_burst)
    rng.shuffle(kinds)
    return kinds or ["like"]


def messages(
    mix: dict[str, float],
    rng: random.Random,
    poll: str,
    users: int = 1,
    lottery: str = "bench-load",
    like_burst: int = 1,
) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """The load's messages in sending order, ``(user, kind, message)``: the seeded mix
    of turns, turn ``i`` by user ``i % users``, the seeded contents, message ids ``l1``,
    ``l2``, ... (one a message).

    A like turn is ``like_burst`` like messages from its user, consecutive. A ``join``
    turn enters the user in ``lottery`` the first time; a later one sends the keyword
    as a comment (kind ``keyword``). Without joins and bursts: the messages of the
    load generator before either existed, seed for seed.
    """
    from bench.engine_alone import comment_text

    if users < 1 or like_burst < 1:
        raise ValueError(f"users and like_burst must be >= 1, got {users}, {like_burst}")
    kinds = itertools.cycle(kind_cycle(mix, rng, like_burst=like_burst))
    last_option = len(POLL_OPTIONS) - 1
    entered = bytearray(users)  # 1: the user has sent their join
    n = 0
    for turn in itertools.count():
        user = turn % users
        kind = next(kinds)
        if kind == "like":
            for _ in range(like_burst):
                n += 1
                yield user, kind, {"t": "like", "id": f"l{n}", "n": rng.randint(1, 5)}
            continue
        n += 1
        mid = f"l{n}"
        if kind == "comment":
            msg: dict[str, Any] = {"t": "comment", "id": mid, "text": comment_text(rng, n)}
        elif kind == "vote":
            option = min(last_option, int(rng.expovariate(1.2)))
            msg = {"t": "vote", "id": mid, "poll": poll, "option": option}
        elif entered[user]:
            kind = "keyword"
            msg = {"t": "comment", "id": mid, "text": LOTTERY_KEYWORD}
        else:
            entered[user] = 1
            msg = {"t": "join", "id": mid, "lottery": lottery}
        yield user, kind, msg


def default_lottery(user_prefix: str = "") -> str:
    """The lottery a load process opens and draws: one of its own per ``--user-prefix``
    (two processes drawing one lottery would close it under each other)."""
    return f"{user_prefix}-bench-load" if user_prefix else "bench-load"


def draw_summary(reply: dict[str, Any]) -> dict[str, Any]:
    """A ``lottery.draw`` reply for the result: its entrant list replaced by the count."""
    res = reply.get("result")
    if isinstance(res, dict) and isinstance(res.get("entrants"), list):
        return {**reply, "result": {**res, "entrants": len(res["entrants"])}}
    return reply


async def load(
    url: str,
    secret_file: Path,
    rate: float,
    users: int,
    mix: dict[str, float],
    poll: str,
    events: bool,
    stop_on_stdin_eof: bool,
    max_seconds: float | None,
    seed: int,
    user_prefix: str = "",
    like_burst: int = 1,
    lottery: str | None = None,
) -> dict[str, Any]:
    """``user_prefix``: the node deduplicates on (user, message id) and every load
    process numbers its messages alike, so two processes (or two runs on one node)
    need users of their own: ``P-load-N``. ``lottery``: ``default_lottery`` when None;
    opened and drawn only when the mix has ``join``."""
    from edge_node.interaction.auth import load_or_create_secret, mint

    done = stop_event(stop_on_stdin_eof)

    rng = random.Random(seed)
    lottery = default_lottery(user_prefix) if lottery is None else lottery
    secret = load_or_create_secret(secret_file.parent, path=secret_file)
    target = WsUrl.of(url)
    masks = Masks()
    replies: dict[str, int] = {}
    by_type: dict[str, int] = {}
    result: dict[str, Any] = {
        "users": users,
        "target_per_s": rate,
        "like_burst": like_burst,
        "sent": 0,
        "by_type": by_type,
        "replies": replies,
        "error": None,
    }

    def count(opcode: int, payload: bytes) -> None:
        if opcode == OP_BINARY:
            code = reply_code(payload)
            if code is not None:
                replies[code] = replies.get(code, 0) + 1

    operator_inbox: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    closed_mark = (-1, b"")  # queued when the operator socket closes, after its messages

    def to_operator(opcode: int, payload: bytes) -> None:
        operator_inbox.put_nowait((opcode, payload))

    async def command(ws: WsClient, cmd: str, args: dict[str, Any]) -> Any:
        ws.send_binary(
            msgpack.packb({"t": "command", "id": f"{cmd}-{time.time()}", "cmd": cmd, "args": args})
        )
        while True:
            item = await asyncio.wait_for(operator_inbox.get(), COMMAND_TIMEOUT_S)
            if item is closed_mark:
                operator_inbox.put_nowait(closed_mark)  # for the next command
                raise WsError(f"operator socket: {ws.close_reason}")
            opcode, payload = item
            # The node greets a new client with what is open, as JSON (it cannot know
            # the client's framing yet); replies to us come as msgpack.
            reply = json.loads(payload) if opcode == OP_TEXT else msgpack.unpackb(payload)
            if not isinstance(reply, dict):
                raise WsError(f"operator socket: {reply!r} is not a map")
            if reply.get("t") != "state":
                return reply

    async def close_all(sockets: Sequence[WsClient]) -> None:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    started = time.monotonic()
    sockets: list[WsClient] = []
    op: WsClient | None = None
    try:
        who = f"{user_prefix}-load" if user_prefix else "load"
        op_token = mint(secret, f"{who}-operator", "operator", 3600, time.time())
        op = await ws_connect(target, {"Authorization": f"Bearer {op_token}"}, to_operator, masks)
        op.closed.add_done_callback(lambda _: operator_inbox.put_nowait(closed_mark))
        args = {"poll": poll, "question": "Which colour?", "options": POLL_OPTIONS}
        reply = await command(op, "poll.open", args)
        if reply.get("t") != "ack":
            await command(op, "poll.close", {"poll": poll})
            reply = await command(op, "poll.open", args)
        result["poll_open"] = reply
        if mix.get("join"):
            largs = {"lottery": lottery, "keyword": LOTTERY_KEYWORD, "winners": LOTTERY_WINNERS}
            reply = await command(op, "lottery.open", largs)
            if reply.get("t") != "ack":
                # One of that name left open (a load stopped before its draw): draw it.
                await command(op, "lottery.draw", {"lottery": lottery})
                reply = await command(op, "lottery.open", largs)
            result["lottery_open"] = reply

        def connect(i: int) -> Awaitable[WsClient]:
            token = mint(secret, f"{who}-{i}", "viewer", 3600, time.time())
            return ws_connect(target, {"Authorization": f"Bearer {token}"}, count, masks)

        connecting = await asyncio.gather(*(connect(i) for i in range(users)),
                                          return_exceptions=True)  # fmt: skip
        sockets = [ws for ws in connecting if isinstance(ws, WsClient)]
        failed = [exc for exc in connecting if isinstance(exc, BaseException)]
        if failed:
            raise failed[0]
        _emit(events, "running", users=users)
        outgoing = messages(mix, rng, poll, users, lottery, like_burst)
        pack = msgpack.Packer().pack  # the same bytes as msgpack.packb, one packer
        start = time.monotonic()
        result["started_at"] = start
        n = 0
        while not done.is_set():
            now = time.monotonic()
            if max_seconds is not None and now - start >= max_seconds:
                break
            for _ in range(int((now - start) * rate) - n):
                n += 1
                user, kind, msg = next(outgoing)
                ws = sockets[user]
                ws.send_binary(pack(msg))
                by_type[kind] = by_type.get(kind, 0) + 1
                if ws.paused:
                    await ws.drain()
            result["sent"] = n
            await asyncio.sleep(max(0.0, TICK_S - (time.monotonic() - now)))
        result["seconds"] = time.monotonic() - start
        deadline = time.monotonic() + REPLY_WAIT_S
        while sum(replies.values()) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            result["poll_close"] = await command(op, "poll.close", {"poll": poll})
        if result.get("lottery_open", {}).get("t") == "ack":  # drawn only if ours
            with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                reply = await command(op, "lottery.draw", {"lottery": lottery})
                result["lottery_draw"] = draw_summary(reply)
    except (OSError, RuntimeError, TimeoutError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await close_all([*sockets, *([op] if op is not None else [])])
    result.setdefault("seconds", time.monotonic() - started)
    return result


def _emit(enabled: bool, event: str, **data: Any) -> None:
    if enabled:
        print(json.dumps({"event": event, **data}), flush=True)


def _parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(prog="python -m bench.load_gen", description=doc.split("\n")[0])
    p.add_argument("--url", required=True, help="the node's base URL")
    p.add_argument("--secret-file", required=True, type=Path, help="the node's token secret")
    p.add_argument("--rate", type=float, default=2000.0, help="events per second, all users")
    p.add_argument("--users", type=int, default=100, help="users, one WebSocket each")
    p.add_argument(
        "--mix",
        default=DEFAULT_MIX,
        help=f"weights of comment, like, vote, join (default {DEFAULT_MIX})",
    )
    p.add_argument("--poll", default="bench-load", help="the poll the votes go to")
    p.add_argument(
        "--lottery",
        default=None,
        help="the lottery the joins go to, opened and drawn by this process when the mix "
        "has join (default bench-load, PREFIX-bench-load with --user-prefix)",
    )
    p.add_argument(
        "--like-burst",
        type=int,
        default=1,
        help="like messages per like turn, back to back from one user (default 1)",
    )
    p.add_argument("--seed", type=int, default=5)
    p.add_argument(
        "--user-prefix",
        default="",
        help="letters and digits: users are PREFIX-load-N (one prefix per process and run; "
        "the node deduplicates on (user, message id))",
    )
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--json", action="store_true", help="JSON lines for the bench")
    p.add_argument(
        "--stdin", action="store_true", help="stop when standard input reaches end of file"
    )
    return p


def run(coro: Any) -> Any:
    """``asyncio.run`` on uvloop when it is installed (a project dependency)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        mix = parse_mix(args.mix)
        WsUrl.of(args.url)
    except ValueError as exc:
        print(f"load_gen: {exc}", file=sys.stderr)
        return 2
    if args.user_prefix and not (args.user_prefix.isascii() and args.user_prefix.isalnum()):
        print("load_gen: --user-prefix must be letters and digits", file=sys.stderr)
        return 2
    if args.rate <= 0 or args.users < 1 or args.like_burst < 1:
        print("load_gen: --rate must be > 0, --users and --like-burst >= 1", file=sys.stderr)
        return 2
    lottery = default_lottery(args.user_prefix) if args.lottery is None else args.lottery
    if not lottery.strip() or len(lottery) > MAX_LOTTERY_CHARS:
        print(f"load_gen: --lottery: 1..{MAX_LOTTERY_CHARS} characters", file=sys.stderr)
        return 2
    result = run(
        load(
            args.url,
            args.secret_file,
            args.rate,
            args.users,
            mix,
            args.poll,
            args.json,
            args.stdin,
            args.max_seconds,
            args.seed,
            args.user_prefix,
            args.like_burst,
            lottery,
        )
    )
    if args.json:
        _emit(True, "result", **result)
    else:
        print(json.dumps(result, indent=2))
    return 0 if result["sent"] and not result["error"] else 1


if __name__ == "__main__":
    sys.exit(main())
