"""Many simulated nodes from one process, for the collector's capacity (its own process):
``python -m bench.cloud_nodes --target 127.0.0.1:50051 --steps 100,250,500,1000``.

Each simulated node is what the collector sees of a real one: its own connection
(a grpc.aio channel with a local subchannel pool, so no two nodes share a TCP
connection), one ``EdgeLink.Sync`` stream, a Hello, then one ~600-byte summary a
second (``bench.cloud_payload``) at its own phase within the second, and acks back.
Ack latency = the ack covering a summary's seq received - the summary written, both
on this process's CLOCK_MONOTONIC.

The fleet grows in steps (nodes are added, never dropped). Per step, after
``--settle-seconds``: over ``--step-seconds``, the latency of every summary sent in
the window (p50/p90/p99/max), summaries sent and acked (acks waited for up to
``GRACE_S`` after the window), streams that failed, this process's CPU and its event
loop's lag (how late it sent: near a full core it, not the collector, is the
limit), and with ``--collector-pid`` the collector's CPU from /proc. Stepping stops
after the first step that fails (``bench.cloud_figures.judge_step``: ack p99 above
``--limit-ms``, streams lost, or summaries unacked).

With ``--json``: ``{"event": "step", ...}`` per step and ``{"event": "result",
"steps": [...]}`` at the end; ``--stdin`` stops at end of standard input.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import random
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench import procstat
from bench.cloud_figures import ACK_P99_LIMIT_MS, judge_step, latency_summary
from bench.cloud_payload import pack, summary_payload

GRACE_S = 1.0  # after a step's window, acks of its summaries are still awaited this long
CONNECT_BATCH = 50  # nodes connecting at once while the fleet grows
CONNECT_TIMEOUT_S = 20.0
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),  # one TCP connection per node, as in the field
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass
class Window:
    """What the current step measures: summaries sent between ``start`` and ``end``."""

    start: float = 0.0
    end: float = float("inf")
    latencies_ms: list[float] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)
    sent: int = 0
    acked: int = 0

    def holds(self, t: float) -> bool:
        return self.start <= t < self.end


class SimNode:
    """One simulated node: a channel, a Sync stream, a summary a second."""

    def __init__(self, index: int, target: str, rng: random.Random, fleet: Fleet) -> None:
        import grpc

        from edge_node.cloud._proto import edge_pb2_grpc

        self.node_id = f"sim-{index:05d}"
        self.fleet = fleet
        self.phase = rng.random()
        self.payload = pack(summary_payload(int(time.time()), rng))
        self.channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.stub = edge_pb2_grpc.EdgeLinkStub(self.channel)  # type: ignore[no-untyped-call]
        self.call: Any = None
        self.pending: collections.deque[tuple[int, float, Window | None]] = collections.deque()
        self.welcomed = asyncio.Event()
        self.failed: str | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        from edge_node.cloud._proto import edge_pb2 as pb

        self.call = self.stub.Sync()
        self.tasks.append(asyncio.create_task(self._read()))
        await self.call.write(
            pb.NodeMessage(
                hello=pb.Hello(
                    node_id=self.node_id, boot_id="bench", version="bench", proto_version=1
                )
            )
        )
        await asyncio.wait_for(self.welcomed.wait(), CONNECT_TIMEOUT_S)
        self.tasks.append(asyncio.create_task(self._send()))

    async def _send(self) -> None:
        from edge_node.cloud._proto import edge_pb2 as pb

        seq = 0
        due = time.monotonic() + self.phase
        start_ms = int(time.time()) * 1000
        try:
            while True:
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                seq += 1
                now = time.monotonic()
                window = self.fleet.window if self.fleet.window.holds(now) else None
                if window is not None:
                    window.sent += 1
                    window.lags_ms.append((now - due) * 1000)
                self.pending.append((seq, now, window))
                summary = pb.Summary(
                    seq=seq,
                    window_start_unix_ms=start_ms + (seq - 1) * 1000,
                    window_s=1,
                    payload=self.payload,
                )
                await self.call.write(pb.NodeMessage(summary=summary))
                due += 1.0
        except Exception as exc:  # the stream ended: say how, stop sending
            self.failed = self.failed or f"send: {type(exc).__name__}: {exc}"

    async def _read(self) -> None:
        try:
            async for msg in self.call:
                if msg.WhichOneof("kind") != "ack":
                    continue
                self.welcomed.set()
                highest, now = msg.ack.highest_contiguous_seq, time.monotonic()
                while self.pending and self.pending[0][0] <= highest:
                    _, sent_at, window = self.pending.popleft()
                    if window is not None:
                        window.acked += 1
                        window.latencies_ms.append((now - sent_at) * 1000)
            self.failed = self.failed or "the collector ended the stream"
        except Exception as exc:
            self.failed = self.failed or f"read: {type(exc).__name__}: {exc}"

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.call is not None:
            self.call.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.channel.close()


class Fleet:
    def __init__(self, target: str, seed: int) -> None:
        self.target = target
        self.rng = random.Random(seed)
        self.nodes: list[SimNode] = []
        self.window = Window(end=0.0)  # measures nothing until a step opens one

    async def grow(self, count: int) -> int:
        """Connect nodes until there are ``count``; returns how many are connected."""
        while len(self.nodes) < count:
            batch = [
                SimNode(len(self.nodes) + i, self.target, self.rng, self)
                for i in range(min(CONNECT_BATCH, count - len(self.nodes)))
            ]
            self.nodes.extend(batch)
            results = await asyncio.gather(*(n.connect() for n in batch), return_exceptions=True)
            for node, res in zip(batch, results, strict=True):
                if isinstance(res, BaseException):
                    node.failed = node.failed or f"connect: {type(res).__name__}: {res}"
        return sum(1 for n in self.nodes if n.failed is None)

    def errors(self) -> int:
        return sum(1 for n in self.nodes if n.failed is not None)

    async def close(self) -> None:
        await asyncio.gather(*(n.close() for n in self.nodes), return_exceptions=True)


def _cpu_s(pid: int | None) -> float | None:
    if pid is None:
        return None
    stat = procstat.read(pid)
    return stat.cpu_s if stat is not None else None


async def measure_step(
    fleet: Fleet, nodes: int, settle_s: float, step_s: float, collector_pid: int | None
) -> dict[str, Any]:
    t = time.monotonic()
    connected = await fleet.grow(nodes)
    connect_s = time.monotonic() - t
    await asyncio.sleep(settle_s)
    window = Window(start=time.monotonic(), end=time.monotonic() + step_s)
    fleet.window = window
    c0, l0 = _cpu_s(collector_pid), time.process_time()
    await asyncio.sleep(step_s)
    c1, l1, wall = _cpu_s(collector_pid), time.process_time(), time.monotonic() - window.start
    await asyncio.sleep(GRACE_S)
    lat = latency_summary(window.latencies_ms)
    lag = latency_summary(window.lags_ms)
    return {
        "nodes": nodes,
        "connected": connected,
        "connect_s": round(connect_s, 3),
        "seconds": round(wall, 3),
        "sent": window.sent,
        "acked": window.acked,
        "errors": fleet.errors(),
        "ack_p50_ms": lat["p50"],
        "ack_p90_ms": lat["p90"],
        "ack_p99_ms": lat["p99"],
        "ack_max_ms": lat["max"],
        "load_lag_p99_ms": lag["p99"],
        "load_cpu_cores": (l1 - l0) / wall,
        "collector_cpu_cores": (c1 - c0) / wall if c0 is not None and c1 is not None else None,
        "first_error": next((n.failed for n in fleet.nodes if n.failed), None),
    }


async def run(
    target: str,
    steps: Sequence[int],
    settle_s: float,
    step_s: float,
    limit_ms: float = ACK_P99_LIMIT_MS,
    collector_pid: int | None = None,
    emit: bool = False,
    stop: asyncio.Event | None = None,
    seed: int = 1,
) -> list[dict[str, Any]]:
    fleet = Fleet(target, seed)
    done: list[dict[str, Any]] = []
    try:
        for n in steps:
            if stop is not None and stop.is_set():
                break
            step = await measure_step(fleet, n, settle_s, step_s, collector_pid)
            verdict = judge_step(step, limit_ms)
            step["passed"], step["verdict"] = verdict.passed, verdict.why
            done.append(step)
            if emit:
                _emit("step", **step)
            if not verdict.passed:
                break
    finally:
        await fleet.close()
    return done


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(
            f"--steps: {text!r} is not a comma-separated list of node counts"
        ) from None
    if not steps or any(s < 1 for s in steps) or steps != sorted(set(steps)):
        raise ValueError(f"--steps: {text!r} must be increasing positive node counts")
    return steps


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="the collector, HOST:PORT")
    p.add_argument("--steps", default="100,250,500,1000,1500,2000,3000,4000")
    p.add_argument("--step-seconds", type=float, default=20.0)
    p.add_argument("--settle-seconds", type=float, default=3.0)
    p.add_argument("--limit-ms", type=float, default=ACK_P99_LIMIT_MS)
    p.add_argument("--collector-pid", type=int, default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="JSON lines on standard output")
    p.add_argument("--stdin", action="store_true", help="stop at end of standard input")
    return p


async def _main(args: argparse.Namespace, steps: list[int]) -> list[dict[str, Any]]:
    stop = asyncio.Event()
    if args.stdin:
        loop = asyncio.get_running_loop()

        def watch() -> None:
            sys.stdin.read()
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch, name="stdin-watch", daemon=True).start()
    return await run(
        args.target, steps, args.settle_seconds, args.step_seconds, args.limit_ms,
        args.collector_pid, args.json, stop, args.seed,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        steps = parse_steps(args.steps)
    except ValueError as exc:
        print(f"cloud_nodes: {exc}", file=sys.stderr)
        return 2
    if args.step_seconds <= 0 or args.settle_seconds < 0 or args.limit_ms <= 0:
        print("cloud_nodes: --step-seconds and --limit-ms > 0, --settle-seconds >= 0",
              file=sys.stderr)  # fmt: skip
        return 2
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        done = runner.run(_main(args, steps))
    if args.json:
        _emit("result", steps=done)
    else:
        print(json.dumps(done, indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
