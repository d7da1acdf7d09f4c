"""Background interaction load for the ``interaction`` scenario:
``python -m bench.load_gen --url URL --secret-file FILE --rate 2000 --users 100``.

Opens one WebSocket per user (viewer tokens minted with the node's secret; user ids
``load-0`` ...), opens a poll with an operator token, then sends ``--rate`` events per
second in all (msgpack binary frames), spread round-robin over the users, in the mix
of ``--mix`` (comments, likes, votes). Every reply is counted by code.

Danmaku on screen: the node exports no count of them, so this process runs the node's
own lane algorithm (``DanmakuBoard``, with the style of the node's config read from
the same ``EDGE_NODE_*`` environment) on the comments it sends, at their send time,
and samples how many are on that board every 0.25 s. That is a model of the node's
board (it differs by the network delay only), reported as such.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.stopping import stop_event

TICK_S = 0.01
BOARD_SAMPLE_S = 0.25
REPLY_WAIT_S = 3.0
DEFAULT_MIX = "comment=0.4,like=0.5,vote=0.1"
POLL_OPTIONS = ["red", "blue", "green", "gold"]


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


def _shadow_board() -> Any:
    from edge_node import config as config_mod
    from edge_node.overlay.lanes import DanmakuBoard
    from edge_node.overlay.measure import TextMeasure
    from edge_node.overlay.scene import Style
    from edge_node.overlay.text import find_font

    cfg = config_mod.load(None, base=config_mod.demo_config())
    font = find_font(cfg.overlay.font_path or None, config_key="overlay.font_path")
    style = Style.from_config(cfg.overlay)
    return DanmakuBoard(style, cfg.video.width, cfg.video.height, TextMeasure(font))


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
    import aiohttp
    import msgpack

    from bench.engine_alone import comment_text
    from edge_node.interaction.auth import load_or_create_secret, mint

    done = stop_event(stop_on_stdin_eof)

    rng = random.Random(seed)
    secret = load_or_create_secret(secret_file.parent, path=secret_file)
    ws_url = url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://") + "/ws"
    replies: dict[str, int] = {}
    by_type: dict[str, int] = {}
    on_screen: list[tuple[float, int]] = []
    result: dict[str, Any] = {
        "users": users,
        "target_per_s": rate,
        "sent": 0,
        "by_type": by_type,
        "replies": replies,
        "on_screen": on_screen,
        "error": None,
    }
    board = _shadow_board()

    async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:
            if frame.type is not aiohttp.WSMsgType.BINARY:
                continue
            reply = msgpack.unpackb(frame.data)
            kind = reply.get("t")
            if kind == "state":
                continue
            code = "ack" if kind == "ack" else str(reply.get("code"))
            replies[code] = replies.get(code, 0) + 1

    async def command(ws: aiohttp.ClientWebSocketResponse, cmd: str, args: dict[str, Any]) -> Any:
        await ws.send_bytes(
            msgpack.packb({"t": "command", "id": f"{cmd}-{time.time()}", "cmd": cmd, "args": args})
        )
        while True:
            frame = await asyncio.wait_for(ws.receive(), 10)
            # The node greets a new client with what is open, as JSON (it cannot know
            # the client's framing yet); replies to us come as msgpack.
            if frame.type is aiohttp.WSMsgType.TEXT:
                reply = json.loads(frame.data)
            elif frame.type is aiohttp.WSMsgType.BINARY:
                reply = msgpack.unpackb(frame.data)
            else:
                raise RuntimeError(f"operator socket: {frame.type}")
            if reply.get("t") != "state":
                return reply

    started = time.monotonic()
    readers: list[asyncio.Task[None]] = []
    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            who = f"{user_prefix}-load" if user_prefix else "load"
            op_token = mint(secret, f"{who}-operator", "operator", 3600, time.time())
            op = await http.ws_connect(ws_url, headers={"Authorization": f"Bearer {op_token}"})
            args = {"poll": poll, "question": "Which colour?", "options": POLL_OPTIONS}
            reply = await command(op, "poll.open", args)
            if reply.get("t") != "ack":
                await command(op, "poll.close", {"poll": poll})
                reply = await command(op, "poll.open", args)
            result["poll_open"] = reply

            async def connect(i: int) -> aiohttp.ClientWebSocketResponse:
                token = mint(secret, f"{who}-{i}", "viewer", 3600, time.time())
                return await http.ws_connect(ws_url, headers={"Authorization": f"Bearer {token}"})

            sockets = list(await asyncio.gather(*(connect(i) for i in range(users))))
            readers = [asyncio.create_task(read(ws)) for ws in sockets]
            _emit(events, "running", users=users)
            kinds = itertools.cycle(kind_cycle(mix, rng))
            targets = itertools.cycle(range(users))
            start = time.monotonic()
            result["started_at"] = start
            next_sample = start
            n = 0
            while not done.is_set():
                now = time.monotonic()
                if max_seconds is not None and now - start >= max_seconds:
                    break
                due = int((now - start) * rate) - n
                for _ in range(max(0, due)):
                    n += 1
                    kind = next(kinds)
                    mid = f"l{n}"
                    if kind == "comment":
                        text = comment_text(rng, n)
                        msg: dict[str, Any] = {"t": "comment", "id": mid, "text": text}
                        board.add(mid, text, now)
                    elif kind == "like":
                        msg = {"t": "like", "id": mid, "n": rng.randint(1, 5)}
                    else:
                        option = min(len(POLL_OPTIONS) - 1, int(rng.expovariate(1.2)))
                        msg = {"t": "vote", "id": mid, "poll": poll, "option": option}
                    await sockets[next(targets)].send_bytes(msgpack.packb(msg))
                    by_type[kind] = by_type.get(kind, 0) + 1
                result["sent"] = n
                if now >= next_sample:
                    board.tick(now)
                    on_screen.append((round(now, 4), len(board.items())))
                    next_sample += BOARD_SAMPLE_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), max(0.0, TICK_S - (time.monotonic() - now)))
            result["seconds"] = time.monotonic() - start
            deadline = time.monotonic() + REPLY_WAIT_S
            while sum(replies.values()) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            with contextlib.suppress(OSError, aiohttp.ClientError, TimeoutError, RuntimeError):
                result["poll_close"] = await command(op, "poll.close", {"poll": poll})
            for task in readers:
                task.cancel()
            for ws in (*sockets, op):
                await ws.close()
    except (OSError, aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for task in readers:
            task.cancel()
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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        mix = parse_mix(args.mix)
    except ValueError as exc:
        print(f"load_gen: {exc}", file=sys.stderr)
        return 2
    if args.user_prefix and not (args.user_prefix.isascii() and args.user_prefix.isalnum()):
        print("load_gen: --user-prefix must be letters and digits", file=sys.stderr)
        return 2
    if args.rate <= 0 or args.users < 1:
        print("load_gen: --rate must be > 0 and --users >= 1", file=sys.stderr)
        return 2
    result = asyncio.run(
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
        summary = {k: v for k, v in result.items() if k != "on_screen"}
        print(json.dumps(summary, indent=2))
    return 0 if result["sent"] and not result["error"] else 1


if __name__ == "__main__":
    sys.exit(main())
