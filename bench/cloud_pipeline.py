"""Summaries through the node's spool and link, for one spool durability (its own process):
``python -m bench.cloud_pipeline --durability fsync --seconds 5 --backlog 20000``.

Uses the node's own classes (``edge_node.cloud.spool.Spool``, ``edge_node.cloud.link
.CloudLink``) in this process, on uvloop like the node, against a real collector
process (``python -m edge_node collector``, SQLite synchronous=FULL as shipped), with
realistic ~600-byte summaries (``bench.cloud_payload``). Three phases:

1. spool alone: ``--producers`` tasks append flat out for ``--seconds``, each append
   awaited to its commit. Appends per second, append -> committed latency, and the
   event loop thread's CPU time per append (``time.thread_time`` of the loop thread:
   the writer thread's SQLite work and fsync are excluded; they are off the loop);
2. drain: ``--backlog`` summaries are spooled while no collector listens (the link
   retrying), then the collector starts; from its first ack to the last one: the
   link's catch-up rate;
3. sustained: producers append flat out while the link sends and the collector
   acks, for ``--seconds``: acked summaries per second.

Prints one JSON object (``{"event": "result", ...}``) on standard output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.cloud_figures import latency_summary
from bench.cloud_payload import pack, summary_payload

BOUNDS = (50_000_000, 1 << 40, 30 * 86400.0)  # never full within a run
COLLECTOR_START_TIMEOUT_S = 20.0
DRAIN_TIMEOUT_S = 120.0
PAYLOAD_VARIANTS = 256
# Sustained phase: appends wait while the spool holds this many (8 link windows).
SUSTAINED_DEPTH = 2048


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CollectorProcess:
    """``python -m edge_node collector`` on a given loopback port."""

    def __init__(self, port: int, db: Path) -> None:
        self.address = f"127.0.0.1:{port}"
        self.db = db
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge_node", "collector",
            "--listen", self.address, "--db", str(self.db),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), COLLECTOR_START_TIMEOUT_S)
        if b"listening on" not in line:
            raise RuntimeError(f"the collector did not start: {line!r}")

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class Pipeline:
    """The node's spool (and optionally its link) in this process."""

    def __init__(self, spool: Any, link: Any) -> None:
        self.spool = spool
        self.link = link

    @classmethod
    async def open(cls, path: Path, durability: str, target: str | None) -> Pipeline:
        from edge_node.backoff import Backoff
        from edge_node.cloud.link import CloudLink
        from edge_node.cloud.spool import Spool
        from edge_node.cloud.spool_state import Bounds
        from edge_node.config import CloudConfig
        from edge_node.metrics import Registry

        registry = Registry()
        spool = await Spool.open(
            path, bounds=Bounds(*BOUNDS), registry=registry, node_id="bench", durability=durability
        )
        link = None
        if target is not None:
            link = CloudLink(
                CloudConfig(target=target, connect_timeout_s=5.0),
                "bench-pipeline",
                spool,
                registry,
                apply_command=lambda cmd, args: {},
                platform_event=lambda kind, user, payload: None,
                backoff=Backoff(0.05, 0.3),
            )
            await link.start()
        return cls(spool, link)

    async def close(self) -> None:
        if self.link is not None:
            await self.link.stop()
        await self.spool.close()


def payloads(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    start = int(time.time())
    return [pack(summary_payload(start + i, rng)) for i in range(PAYLOAD_VARIANTS)]


async def flat_out(
    pipe: Pipeline,
    data: list[bytes],
    producers: int,
    stop: asyncio.Event,
    max_depth: int | None = None,
) -> tuple[int, list[float]]:
    """Producers append until ``stop``; (appends, append -> committed latencies in ms).

    With ``max_depth``, a producer waits while the spool holds that many records: the
    rate is then the pipeline's (spool, link and collector together), not the rate
    the loop can take appends at while the link starves."""
    latencies: list[float] = []
    count = 0
    room = asyncio.Event()
    room.set()

    async def gatekeeper() -> None:
        # One task polls the depth; the producers sleep on ``room`` meanwhile.
        assert max_depth is not None
        while not stop.is_set():
            if pipe.spool.state.depth >= max_depth:
                room.clear()
            else:
                room.set()
            await asyncio.sleep(0.002)
        room.set()

    async def produce(k: int) -> None:
        nonlocal count
        i = k
        while not stop.is_set():
            await room.wait()
            t = time.perf_counter()
            await pipe.spool.append("summary", data[i % len(data)])
            latencies.append((time.perf_counter() - t) * 1000)
            count += 1
            i += producers
            if pipe.link is not None:
                pipe.link.wake()

    gate = asyncio.create_task(gatekeeper()) if max_depth is not None else None
    await asyncio.gather(*(produce(k) for k in range(producers)))
    if gate is not None:
        await gate
    return count, latencies


async def spool_alone(tmp: Path, durability: str, seconds: float, producers: int) -> dict[str, Any]:
    pipe = await Pipeline.open(tmp / "alone.db", durability, None)
    data = payloads(1)
    stop = asyncio.Event()
    try:
        task = asyncio.create_task(flat_out(pipe, data, producers, stop))
        await asyncio.sleep(min(0.5, seconds / 4))  # the first batches
        cpu0, t0, n0 = time.thread_time(), time.monotonic(), pipe.spool.stats().appended
        await asyncio.sleep(seconds)
        cpu1, t1, n1 = time.thread_time(), time.monotonic(), pipe.spool.stats().appended
        stop.set()
        _, latencies = await task
    finally:
        await pipe.close()
    return {
        "appends": n1 - n0,
        "seconds": t1 - t0,
        "loop_cpu_s": cpu1 - cpu0,
        "commit_ms": latency_summary(latencies),
    }


async def wait_acked(pipe: Pipeline, seq: int, timeout_s: float) -> float | None:
    deadline = time.monotonic() + timeout_s
    while pipe.link.acked_seq < seq:
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.005)
    return time.monotonic()


async def through_link(
    tmp: Path, durability: str, seconds: float, backlog: int, producers: int
) -> dict[str, Any]:
    port = free_port()
    collector = CollectorProcess(port, tmp / "collector.db")
    pipe = await Pipeline.open(tmp / "linked.db", durability, collector.address)
    data = payloads(2)
    out: dict[str, Any] = {}
    try:
        # Drain: the backlog waits in the spool, then the collector appears.
        await asyncio.gather(
            *(pipe.spool.append("summary", data[i % len(data)]) for i in range(backlog))
        )
        await collector.start()
        t_listen = time.monotonic()
        first = await wait_acked(pipe, 1, DRAIN_TIMEOUT_S)
        done = await wait_acked(pipe, backlog, DRAIN_TIMEOUT_S)
        out["drain"] = {
            "summaries": backlog,
            "seconds": done - first if first is not None and done is not None else None,
            "reconnect_s": first - t_listen if first is not None else None,
        }
        # Sustained: appended and acked at the same time.
        stop = asyncio.Event()
        task = asyncio.create_task(flat_out(pipe, data, producers, stop, SUSTAINED_DEPTH))
        await asyncio.sleep(min(0.5, seconds / 4))
        a0, n0, t0 = pipe.link.acked_seq, pipe.spool.stats().appended, time.monotonic()
        await asyncio.sleep(seconds)
        a1, n1, t1 = pipe.link.acked_seq, pipe.spool.stats().appended, time.monotonic()
        stop.set()
        await task
        out["sustained"] = {
            "acked": a1 - a0,
            "appended": n1 - n0,
            "seconds": t1 - t0,
            "depth_end": pipe.spool.stats().depth,
        }
    finally:
        await pipe.close()
        await collector.stop()
    return out


async def run(
    durability: str, seconds: float, backlog: int, producers: int, workdir: Path | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-cloud-", dir=workdir) as d:
        tmp = Path(d)
        (tmp / "alone").mkdir()
        (tmp / "linked").mkdir()
        result: dict[str, Any] = {"durability": durability}
        result["spool"] = await spool_alone(tmp / "alone", durability, seconds, producers)
        result.update(await through_link(tmp / "linked", durability, seconds, backlog, producers))
        return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--durability", choices=("fsync", "os", "memory"), default="fsync")
    p.add_argument("--seconds", type=float, default=5.0, help="each measured phase")
    p.add_argument("--backlog", type=int, default=20_000, help="summaries for the drain")
    p.add_argument("--producers", type=int, default=1024, help="concurrent appending tasks")
    p.add_argument("--workdir", type=Path, default=None, help="where the temporary files go")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.seconds <= 0 or args.backlog < 1 or args.producers < 1:
        print("cloud_pipeline: --seconds > 0, --backlog >= 1, --producers >= 1", file=sys.stderr)
        return 2
    import uvloop

    error = None
    result: dict[str, Any] = {}
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(
                run(args.durability, args.seconds, args.backlog, args.producers, args.workdir)
            )
    except (OSError, RuntimeError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"event": "result", "error": error, **result}), flush=True)
    return 0 if error is None else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
