"""The processes of a glass-to-glass run: receivers that report in JSON lines, the
publisher, the ffmpeg middle box, and CPU/RSS sampling of a process from /proc.

Every process is started here with its standard error in a log file and is stopped
by its owner in a ``finally``: a child that does not stop on end of standard input
(or SIGTERM) within a few seconds is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import procstat
from bench.sampler import INTERVAL_S, Sample

ROOT = Path(__file__).resolve().parent.parent  # so that ``bench`` imports in children
STOP_TIMEOUT_S = 5.0


class JsonChild:
    """A child that prints ``{"event": ...}`` lines; each event is kept (the last of
    each name) and can be awaited. Standard input is a pipe: closing it asks the
    child to stop (``--stdin``)."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.events: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, asyncio.Event] = {}
        self._exited = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name=f"child-{name}")

    @classmethod
    async def spawn(cls, name: str, argv: Sequence[str], log_path: Path) -> JsonChild:
        with open(log_path, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
            )
        return cls(name, proc)

    def _flag(self, event: str) -> asyncio.Event:
        return self._seen.setdefault(event, asyncio.Event())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            async for raw in self.proc.stdout:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(msg, dict) and isinstance(msg.get("event"), str):
                    self.events[msg["event"]] = msg
                    self._flag(msg["event"]).set()
        finally:
            self._exited.set()

    async def wait_event(self, event: str, timeout_s: float) -> dict[str, Any] | None:
        """The event's message once it came; None on timeout or when the child exited
        without it."""
        flag = self._flag(event)
        waiters = [
            asyncio.ensure_future(flag.wait()),
            asyncio.ensure_future(self._exited.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        return self.events.get(event)

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> dict[str, Any] | None:
        """Close standard input, wait for the child to exit (SIGTERM, then SIGKILL, when
        it does not); its ``result`` event, if it printed one."""
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
        await _reap(self.proc, timeout_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), 2.0)
        if not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        return self.events.get("result")


async def _reap(proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
        return
    except TimeoutError:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), 3.0)
            return
        except TimeoutError:
            continue


def receiver_argv(port: int, log: Path, expect: tuple[int, int]) -> list[str]:
    return [
        sys.executable, "-m", "bench.rtmp_receiver",
        "--port", str(port), "--log", str(log),
        "--expect", f"{expect[0]}:{expect[1]}", "--json", "--stdin",
    ]  # fmt: skip


def viewer_argv(url: str, log: Path, expect: tuple[int, int]) -> list[str]:
    return [
        sys.executable, "-m", "bench.glass_viewer", "--strip", "counter",
        "--url", url, "--log", str(log),
        "--expect", f"{expect[0]}:{expect[1]}", "--json", "--stdin",
    ]  # fmt: skip


def publisher_argv(
    url: str, seconds: float, start: int, size: str, fps: int, log: Path
) -> list[str]:
    return [
        sys.executable, "-m", "edge_node.clients.rtmp_publish",
        "--url", url, "--seconds", f"{seconds:g}", "--start", str(start),
        "--size", size, "--fps", str(fps), "--log", str(log),
    ]  # fmt: skip


class Publisher:
    """``edge_node.clients.rtmp_publish`` in its own process (PyAV's RTMP client must
    never share a process with an asyncio RTMP server)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.started_at = time.monotonic()

    @classmethod
    async def spawn(cls, argv: Sequence[str], stderr_log: Path) -> Publisher:
        with open(stderr_log, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        return cls(proc)

    async def wait(self, timeout_s: float) -> int | None:
        """Its exit status; None when it had to be killed after ``timeout_s``."""
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            await _reap(self.proc, 0.0)
            return None

    async def stop(self) -> None:
        if self.proc.returncode is None:
            await _reap(self.proc, 0.0)


def listening(port: int, host_hex: str = "0100007F") -> bool:
    """A TCP socket listens on 127.0.0.1:``port`` (or any address), from /proc/net/tcp;
    unlike a test connection, this does not use up a ``-listen 1`` server's one accept."""
    want = f"{port:04X}"
    try:
        with open("/proc/net/tcp") as fh:
            next(fh, None)
            for line in fh:
                fields = line.split()
                if len(fields) < 4 or fields[3] != "0A":  # 0A = LISTEN
                    continue
                addr, _, p = fields[1].partition(":")
                if p == want and addr in (host_hex, "00000000"):
                    return True
    except OSError:
        return False
    return False


async def wait_listening(port: int, timeout_s: float, alive: Any = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if listening(port):
            return True
        if alive is not None and not alive():
            return False
        await asyncio.sleep(0.02)
    return False


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine spent busy so far (every core, every process:
    user, nice, system, irq, softirq, steal from /proc/stat), to show what else ran."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / procstat.CLOCK_TICKS_PER_S


class BusyMeter:
    """Machine-wide busy cores between ``start()`` and ``stop()``."""

    def __init__(self) -> None:
        self._start: tuple[float, float] | None = None
        self.cores: float | None = None

    def start(self) -> None:
        busy = machine_busy_s()
        self._start = None if busy is None else (time.monotonic(), busy)

    def stop(self) -> float | None:
        busy = machine_busy_s()
        if self._start is not None and busy is not None:
            wall = time.monotonic() - self._start[0]
            self.cores = (busy - self._start[1]) / wall if wall > 0 else None
        return self.cores


class ProcSampler:
    """CPU time and VmRSS of some pids every ``interval_s``, as ``bench.sampler.Sample``s
    (no /metrics), so that ``bench.sampler.cpu_cores`` and ``rss_max_bytes`` apply."""

    def __init__(self, pids: Sequence[int], interval_s: float = INTERVAL_S) -> None:
        self.pids = list(pids)
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> Sample:
        t = time.monotonic()
        cpu: dict[int, float] = {}
        rss: dict[int, int] = {}
        for pid in self.pids:
            stat = procstat.read(pid)
            if stat is None:
                continue
            cpu[pid] = stat.cpu_s
            if stat.rss_bytes is not None:
                rss[pid] = stat.rss_bytes
        s = Sample(t=t, cpu_s=cpu, rss_bytes=rss, metrics=None)
        self.samples.append(s)
        return s

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="proc-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        next_at = time.monotonic()
        while True:
            self.sample()
            next_at += self.interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def between(self, start: Sample, end: Sample) -> list[Sample]:
        return [s for s in self.samples if start.t <= s.t <= end.t]


class SpawnedChild:
    """A plain child (the ffmpeg CLI) whose resource usage is read with ``os.wait4``
    when it exits: total CPU seconds and peak RSS (``ru_maxrss``)."""

    def __init__(self, argv: Sequence[str], log_path: Path) -> None:
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        ]
        self.started_at = time.monotonic()
        self.pid = os.posix_spawnp(argv[0], list(argv), dict(os.environ), file_actions=actions)
        self.exit_status: int | None = None
        self.usage: Any = None
        self.wall_s: float | None = None
        self.killed = False

    def poll(self) -> bool:
        """True once the child has exited (and was reaped here)."""
        if self.exit_status is not None:
            return True
        try:
            got, status, usage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.exit_status = -1
            return True
        if got != self.pid:
            return False
        self.exit_status = os.waitstatus_to_exitcode(status)
        self.usage = usage
        self.wall_s = time.monotonic() - self.started_at
        return True

    async def wait(self, timeout_s: float) -> bool:
        """Wait for the child to exit by itself; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not self.poll():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (ffmpeg then finishes its output), SIGKILL after ``timeout_s``."""
        if self.poll():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if await self.wait(timeout_s):
            return
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        await self.wait(5.0)
