"""The prober: probe events over the node's WebSocket at a steady rate, each logged with
its send time: ``python -m bench.probe_sender --url URL --secret-file FILE --log FILE``.

Connects to ``/ws`` with a ``bench``-role token minted with the node's secret, then
sends ``{"t":"probe","id":ID,"seq":SEQ}`` (msgpack, binary frames) once in every
``1/--rate`` seconds, ``seq`` counting up from ``--seq-start`` modulo 2**16, each
delayed by a random part of ``--jitter`` (one frame interval) so that the probes do
not lock to the video's frame clock, and
writes ``seq monotonic_s`` per probe (the time is taken just before the frame is
written). It also times each probe's ack (send -> ack at this process).

With ``--json``: ``{"event": "connected"}`` once the socket is open, then
``{"event": "result", ...}`` (sent, replies by code, ack latency) at the end. It
stops after ``--count`` probes (waiting up to 5 s for the last acks), at end of
standard input (``--stdin``), or on SIGTERM/SIGINT. Its own process, so that its
timing shares a GIL with nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.stopping import stop_event

SEQ_MODULO = 1 << 16
ACK_WAIT_S = 5.0


def _emit(enabled: bool, event: str, **data: Any) -> None:
    if enabled:
        print(json.dumps({"event": event, **data}), flush=True)


def _quantile_ms(values: list[float], q: float) -> float | None:
    from bench.interaction import percentile

    v = percentile(values, q)
    return v * 1000 if v is not None else None


async def probe(
    url: str,
    secret_file: Path,
    log_path: Path,
    count: int,
    rate: float,
    seq_start: int,
    jitter_s: float,
    user: str,
    events: bool,
    stop_on_stdin_eof: bool,
) -> dict[str, Any]:
    import aiohttp
    import msgpack

    from edge_node.interaction.auth import load_or_create_secret, mint

    done = stop_event(stop_on_stdin_eof)

    token = mint(
        load_or_create_secret(secret_file.parent, path=secret_file),
        user,
        "bench",
        3600,
        time.time(),
    )
    ws_url = url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://") + "/ws"
    sent_at: dict[str, float] = {}
    ack_s: list[float] = []
    replies: dict[str, int] = {}
    result: dict[str, Any] = {"sent": 0, "replies": replies, "error": None}

    async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:
            if frame.type is not aiohttp.WSMsgType.BINARY:
                continue
            t = time.monotonic()
            reply = msgpack.unpackb(frame.data)
            if reply.get("t") == "state":
                continue
            code = "ack" if reply.get("t") == "ack" else str(reply.get("code"))
            replies[code] = replies.get(code, 0) + 1
            t0 = sent_at.pop(str(reply.get("id")), None)
            if t0 is not None and code == "ack":
                ack_s.append(t - t0)

    rng = random.Random(seq_start)
    nonce = f"{os.getpid()}.{time.time_ns() % 10**9}"
    started = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(
                ws_url, headers={"Authorization": f"Bearer {token}"}, max_msg_size=1 << 20
            ) as ws,
        ):
            _emit(events, "connected")
            reader = asyncio.create_task(read(ws))
            with open(log_path, "w") as log:
                start = time.monotonic()
                for i in range(count):
                    # A random offset of up to one frame interval: a fixed period would be
                    # phase-locked to the 30 fps frame clock (100 ms = 3 frames), and every
                    # probe would wait the same part of a frame for its picture. Probes stay
                    # at least 1/rate - jitter apart, so each gets its own pictures.
                    next_at = start + i / rate + rng.random() * jitter_s
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(done.wait(), delay)
                    if done.is_set():
                        break
                    seq = (seq_start + i) % SEQ_MODULO
                    msg_id = f"probe-{nonce}-{i}"  # unique: the node dedups by (user, id)
                    frame = msgpack.packb({"t": "probe", "id": msg_id, "seq": seq})
                    t = time.monotonic()
                    sent_at[msg_id] = t
                    await ws.send_bytes(frame)
                    log.write(f"{seq} {t:.6f}\n")
                    result["sent"] += 1
            deadline = time.monotonic() + ACK_WAIT_S
            while sent_at and time.monotonic() < deadline and not reader.done():
                await asyncio.sleep(0.05)
            reader.cancel()
    except (OSError, aiohttp.ClientError, ValueError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["seconds"] = time.monotonic() - started
    result["unanswered"] = len(sent_at)
    result["ack_p50_ms"] = _quantile_ms(ack_s, 50)
    result["ack_p99_ms"] = _quantile_ms(ack_s, 99)
    result["ack_max_ms"] = max(ack_s) * 1000 if ack_s else None
    return result


def _parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(prog="python -m bench.probe_sender", description=doc.split("\n")[0])
    p.add_argument("--url", required=True, help="the node's base URL")
    p.add_argument("--secret-file", required=True, type=Path, help="the node's token secret")
    p.add_argument("--log", required=True, type=Path, help="write 'seq monotonic_s' per probe")
    p.add_argument("--count", type=int, default=1000, help="probes to send")
    p.add_argument("--rate", type=float, default=10.0, help="probes per second")
    p.add_argument("--seq-start", type=int, default=1000)
    p.add_argument(
        "--jitter",
        type=float,
        default=1 / 30,
        metavar="SECONDS",
        help="random delay added to each probe's slot (default one 30 fps frame interval)",
    )
    p.add_argument("--user", default="bench-prober")
    p.add_argument("--json", action="store_true", help="JSON lines for the bench")
    p.add_argument(
        "--stdin", action="store_true", help="stop when standard input reaches end of file"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.rate <= 0 or args.count < 0 or not 0 <= args.jitter < 1 / args.rate:
        print(
            "probe_sender: --rate must be > 0, --count >= 0, 0 <= --jitter < 1/rate",
            file=sys.stderr,
        )
        return 2
    result = asyncio.run(
        probe(
            args.url,
            args.secret_file,
            args.log,
            args.count,
            args.rate,
            args.seq_start,
            args.jitter,
            args.user,
            args.json,
            args.stdin,
        )
    )
    if args.json:
        _emit(True, "result", **result)
    else:
        print(json.dumps(result, indent=2))
    return 0 if result["sent"] and not result["error"] else 1


if __name__ == "__main__":
    sys.exit(main())
