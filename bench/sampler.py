"""Sampling the node while a run goes: CPU time and RSS of its processes from /proc,
and its /metrics, every ``interval_s`` (0.5 s) and on demand at a window's edges.

CPU in cores over a window = (CPU seconds at the end - at the start), summed over the
node's processes, divided by the wall seconds between the two samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from bench import procstat, prom

INTERVAL_S = 0.5


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # time.monotonic()
    cpu_s: dict[int, float]  # pid -> user + system seconds so far
    rss_bytes: dict[int, int]  # pid -> VmRSS
    metrics: prom.Samples | None  # None when /metrics did not answer


class Sampler:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        metrics_url: str,
        pids: Sequence[int],
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.http = http
        self.metrics_url = metrics_url
        self.pids = list(pids)
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._task: asyncio.Task[None] | None = None

    async def scrape(self) -> prom.Samples | None:
        try:
            async with self.http.get(self.metrics_url) as resp:
                if resp.status != 200:
                    return None
                return prom.parse(await resp.text())
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None

    async def sample(self) -> Sample:
        """Take one sample now (and keep it)."""
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
        s = Sample(t=t, cpu_s=cpu, rss_bytes=rss, metrics=await self.scrape())
        self.samples.append(s)
        return s

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="bench-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        next_at = time.monotonic()
        while True:
            await self.sample()
            next_at += self.interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def between(self, start: Sample, end: Sample) -> list[Sample]:
        return [s for s in self.samples if start.t <= s.t <= end.t]


def cpu_cores(start: Sample, end: Sample, pid: int | None = None) -> float | None:
    """Cores used between two samples by ``pid`` (or all sampled pids present in both)."""
    wall = end.t - start.t
    if wall <= 0:
        return None
    pids = [pid] if pid is not None else list(end.cpu_s)
    used = [end.cpu_s[p] - start.cpu_s[p] for p in pids if p in start.cpu_s and p in end.cpu_s]
    if not used:
        return None
    return sum(used) / wall


def cpu_series(
    samples: Sequence[Sample], min_interval_s: float = INTERVAL_S * 0.8
) -> list[tuple[float, float]]:
    """(seconds since the first sample, cores since the point before) for plots.

    Samples closer together than ``min_interval_s`` (the on-demand ones at a window's
    edges) are merged into the next interval: at 100 clock ticks a second, a 10 ms
    interval reads as 0 or 1 whole core.
    """
    out: list[tuple[float, float]] = []
    if not samples:
        return out
    anchor = samples[0]
    for cur in samples[1:]:
        if cur.t - anchor.t < min_interval_s:
            continue
        cores = cpu_cores(anchor, cur)
        if cores is not None:
            out.append((cur.t - samples[0].t, cores))
        anchor = cur
    return out


def rss_max_bytes(samples: Sequence[Sample], pid: int | None = None) -> int | None:
    """Largest RSS of ``pid``, or of the sum over the sampled pids, over the samples."""
    values = [
        (s.rss_bytes.get(pid) if pid is not None else sum(s.rss_bytes.values()) or None)
        for s in samples
    ]
    present = [v for v in values if v is not None]
    return max(present) if present else None


def gauge_values(samples: Sequence[Sample], name: str) -> list[float]:
    out: list[float] = []
    for s in samples:
        if s.metrics is None:
            continue
        v = prom.value(s.metrics, name)
        if v is not None:
            out.append(v)
    return out
