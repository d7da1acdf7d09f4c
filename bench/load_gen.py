"""Background interaction load for the ``interaction`` scenario:
``python -m bench.load_gen --url URL --secret-file FILE --rate 2000 --users 100``.

Opens one WebSocket per user (viewer tokens minted with the node's secret; user ids
``load-0`` ...), opens a poll with an operator token, then sends ``--rate`` events per
second in all (msgpack binary frames), spread round-robin over the users, in the mix
of ``--mix`` (comments, likes, votes). Every reply is counted by code; text frames
(what the node pushes before a client has sent a binary frame) are not replies.

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

With ``--json``: ``{"event": "running"}`` once every socket is open and the poll is
up, then ``{"event": "result", ...}`` at the end. It stops at end of standard input
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

# ---- the load -----------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, float]:
    """``comment=0.4,like=0.5,vote=0.1`` -> weights (normalised to sum to 1)."""
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in ("comment", "like", "vote"):
            raise ValueError(f"mix: unknown event type {name!r} (comment, like, vote)")
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


def kind_cycle(mix: dict[str, float], rng: random.Random, length: int = 1000) -> list[str]:
    """A shuffled list holding each kind in proportion, cycled through while sending
    (exact proportions over every ``length`` events, no clumps)."""
    kinds: list[str] = []
    for name, w in mix.items():
        kinds += [name] * round(w * length)
    rng.shuffle(kinds)
    return kinds or ["like"]


def messages(
    mix: dict[str, float], rng: random.Random, poll: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The load's messages in sending order, ``(kind, message)``: the seeded mix and
    the seeded contents, message ids ``l1``, ``l2``, ..."""
    from bench.engine_alone import comment_text

    kinds = itertools.cycle(kind_cycle(mix, rng))
    last_option = len(POLL_OPTIONS) - 1
    for n in itertools.count(1):
        kind = next(kinds)
        mid = f"l{n}"
        if kind == "comment":
            msg: dict[str, Any] = {"t": "comment", "id": mid, "text": comment_text(rng, n)}
        elif kind == "like":
            msg = {"t": "like", "id": mid, "n": rng.randint(1, 5)}
        else:
            option = min(last_option, int(rng.expovariate(1.2)))
            msg = {"t": "vote", "id": mid, "poll": poll, "option": option}
        yield kind, msg


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
) -> dict[str, Any]:
    """``user_prefix``: the node deduplicates on (user, message id) and every load
    process numbers its messages alike, so two processes (or two runs on one node)
    need users of their own: ``P-load-N``."""
    from edge_node.interaction.auth import load_or_create_secret, mint

    done = stop_event(stop_on_stdin_eof)

    rng = random.Random(seed)
    secret = load_or_create_secret(secret_file.parent, path=secret_file)
    target = WsUrl.of(url)
    masks = Masks()
    replies: dict[str, int] = {}
    by_type: dict[str, int] = {}
    result: dict[str, Any] = {
        "users": users,
        "target_per_s": rate,
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
        outgoing = messages(mix, rng, poll)
        pack = msgpack.Packer().pack  # the same bytes as msgpack.packb, one packer
        targets = itertools.cycle(sockets)
        start = time.monotonic()
        result["started_at"] = start
        n = 0
        while not done.is_set():
            now = time.monotonic()
            if max_seconds is not None and now - start >= max_seconds:
                break
            for _ in range(int((now - start) * rate) - n):
                n += 1
                kind, msg = next(outgoing)
                ws = next(targets)
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
    p.add_argument("--mix", default=DEFAULT_MIX, help=f"weights (default {DEFAULT_MIX})")
    p.add_argument("--poll", default="bench-load", help="the poll the votes go to")
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
    if args.rate <= 0 or args.users < 1:
        print("load_gen: --rate must be > 0 and --users >= 1", file=sys.stderr)
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
        )
    )
    if args.json:
        _emit(True, "result", **result)
    else:
        print(json.dumps(result, indent=2))
    return 0 if result["sent"] and not result["error"] else 1


if __name__ == "__main__":
    sys.exit(main())
