"""The client processes the ``ramp``, ``fanout``, ``show-*`` and ``soak`` scenarios
start: WebSocket load (``bench.load_gen``), the prober (``bench.probe_sender``), the
measuring viewer (``bench.glass_viewer``) and the many-session viewers
(``bench.fanout_viewer``); each its own process, so that none shares a GIL or CPU
accounting with the node or the bench.

Every child is a ``JsonChild`` (JSON-lines events, standard input a pipe whose end
asks it to stop) with its standard error in the run's log directory; its owner stops
it in a ``finally``. ``ClientGroup`` keeps a run's children together so that one
call stops them all and their CPU time can be read at a window's edges.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from bench import procstat
from bench.glass_procs import ROOT, JsonChild

LOAD_RATE_PER_PROCESS = 4000.0  # what one load_gen process sends steadily on this box
LOAD_STOP_TIMEOUT_S = 15.0


async def spawn(name: str, argv: Sequence[str], log: Path, env: Mapping[str, str]) -> JsonChild:
    """Start ``argv`` with ``env`` added to the bench's environment."""
    with open(log, "wb") as fh:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=fh,
            cwd=ROOT,
            env={**os.environ, **env},
        )
    return JsonChild(name, proc)


def split_rate(rate: float, per_process: float = LOAD_RATE_PER_PROCESS) -> list[float]:
    """``rate`` events/s shared evenly by as few load processes as can send it."""
    if rate <= 0:
        raise ValueError(f"rate: {rate} events/s is not > 0")
    n = max(1, math.ceil(rate / per_process))
    return [rate / n] * n


def split_count(count: int, per_process: int) -> list[int]:
    """``count`` viewers shared evenly by as few processes as hold ``per_process`` each."""
    if count < 1 or per_process < 1:
        raise ValueError(f"count {count} and per_process {per_process} must be >= 1")
    n = math.ceil(count / per_process)
    base, extra = divmod(count, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def load_prefix(run_index: int, *parts: int) -> str:
    """A user-id prefix unique to this bench process, run and load process: the node
    deduplicates on (user, message id), and every load_gen numbers its messages alike."""
    return f"b{os.getpid()}r{run_index}" + "".join(f"x{p}" for p in parts)


def load_argv(
    url: str,
    secret: Path,
    rate: float,
    users: int,
    poll: str,
    seed: int,
    prefix: str,
    mix: str | None = None,
    like_burst: int = 1,
) -> list[str]:
    """One load process (``bench.load_gen`` with users of its own under ``prefix``);
    ``mix`` None is load_gen's default mix."""
    argv = [
        sys.executable, "-m", "bench.load_gen", "--user-prefix", prefix,
        "--url", url, "--secret-file", str(secret),
        "--rate", f"{rate:g}", "--users", str(users), "--poll", poll, "--seed", str(seed),
        "--like-burst", str(like_burst), "--json", "--stdin",
    ]  # fmt: skip
    if mix is not None:
        argv += ["--mix", mix]
    return argv


def prober_argv(
    url: str, secret: Path, log: Path, count: int, rate: float, seq_start: int
) -> list[str]:
    return [
        sys.executable, "-m", "bench.probe_sender", "--url", url,
        "--secret-file", str(secret), "--log", str(log), "--count", str(count),
        "--rate", f"{rate:g}", "--seq-start", str(seq_start), "--json", "--stdin",
    ]  # fmt: skip


def viewer_argv(
    url: str,
    strip: str,
    log: Path,
    probe_log: Path | None = None,
    expect: tuple[int, int] | None = None,
) -> list[str]:
    argv = [sys.executable, "-m", "bench.glass_viewer", "--url", url, "--strip", strip]
    argv += ["--log", str(log)]
    if probe_log is not None:
        argv += ["--probe-log", str(probe_log)]
    if expect is not None:
        argv += ["--expect", f"{expect[0]}:{expect[1]}"]
    return [*argv, "--json", "--stdin"]


def fanout_argv(url: str, count: int, decode: int, seconds: float) -> list[str]:
    return [
        sys.executable, "-m", "bench.fanout_viewer", "--url", url, "--count", str(count),
        "--decode", str(decode), "--seconds", f"{seconds:g}", "--json",
    ]  # fmt: skip


class ClientGroup:
    """A run's client processes, stopped together; their CPU seconds on demand."""

    def __init__(self) -> None:
        self.children: list[JsonChild] = []
        self.results: dict[str, dict[str, Any] | None] = {}

    def add(self, child: JsonChild) -> JsonChild:
        self.children.append(child)
        return child

    def cpu_s(self) -> float:
        """User + system seconds of every child still running or not yet reaped."""
        total = 0.0
        for child in self.children:
            stat = procstat.read(child.proc.pid)
            total += stat.cpu_s if stat is not None else 0.0
        return total

    async def stop(self, *children: JsonChild, timeout_s: float = LOAD_STOP_TIMEOUT_S) -> None:
        """Stop ``children`` (all when none named), at once; keep their results. A load
        process waits up to 3 s for its last replies, then closes its poll: it gets
        ``timeout_s`` before it is killed."""
        chosen = list(children) or list(self.children)
        results = await asyncio.gather(*(child.stop(timeout_s) for child in chosen))
        for child, result in zip(chosen, results, strict=True):
            if child in self.children:
                self.children.remove(child)
            self.results[child.name] = result

    async def send_line(self, child: JsonChild, line: str) -> None:
        stdin = child.proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.write(line.encode() + b"\n")
            await stdin.drain()


def children_cpu_s(exclude: Sequence[int] = ()) -> dict[int, float]:
    """CPU seconds of every direct child of this process but ``exclude`` (the node):
    the bench's clients, including ones started elsewhere (the publisher)."""
    me = os.getpid()
    out: dict[int, float] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for entry in entries:
        if not entry.isdigit() or int(entry) in exclude:
            continue
        stat = procstat.read(int(entry))
        if stat is not None and stat.ppid == me:
            out[stat.pid] = stat.cpu_s
    return out


def cpu_cores_between(start: Mapping[int, float], end: Mapping[int, float], wall: float) -> float:
    """Cores the processes of ``end`` used since ``start`` (a process that started in
    between counts from 0; one gone by ``end`` is left out)."""
    if wall <= 0:
        raise ValueError(f"wall: {wall} s is not > 0")
    return sum(v - start.get(pid, 0.0) for pid, v in end.items()) / wall


async def close_polls(
    http: aiohttp.ClientSession, url: str, secret: Path, polls: Sequence[str]
) -> dict[str, str]:
    """Close ``polls`` as an operator; each poll's outcome (``ack`` or the error code).

    A load process opens a poll and closes it when it stops; one stopped the hard way
    (killed on a timeout, which a busy box makes likely) leaves its poll open, the
    demo audience keeps voting on it, and the node pushes its tallies to every client
    for the rest of the session. So a run closes its polls itself.
    """
    from edge_node.interaction.auth import load_or_create_secret, mint

    token = mint(load_or_create_secret(secret.parent, path=secret), "bench-ops", "operator",
                 600, time.time())  # fmt: skip
    ws_url = url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://") + "/ws"
    out: dict[str, str] = {}
    try:
        async with http.ws_connect(ws_url, headers={"Authorization": f"Bearer {token}"}) as ws:
            for poll in polls:
                msg_id = f"close-{poll}-{time.monotonic_ns()}"
                await ws.send_str(
                    json.dumps({"t": "command", "id": msg_id, "cmd": "poll.close",
                                "args": {"poll": poll}})
                )  # fmt: skip
                out[poll] = await _reply_code(ws, msg_id)
    except (OSError, aiohttp.ClientError, TimeoutError) as exc:
        for poll in polls:
            out.setdefault(poll, f"{type(exc).__name__}: {exc}")
    return out


async def _reply_code(ws: aiohttp.ClientWebSocketResponse, msg_id: str) -> str:
    """The code of the reply to ``msg_id`` (``ack`` or the ``err`` code), pushes skipped."""
    while True:
        frame = await asyncio.wait_for(ws.receive(), 10.0)
        if frame.type is not aiohttp.WSMsgType.TEXT:
            raise aiohttp.ClientError(f"operator socket: {frame.type.name}")
        reply = json.loads(frame.data)
        if isinstance(reply, dict) and reply.get("id") == msg_id:
            return "ack" if reply.get("t") == "ack" else str(reply.get("code"))
