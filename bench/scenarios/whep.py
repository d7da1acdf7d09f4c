"""``whep``: the test pattern to one WHEP viewer.

Frames per second delivered, missed and duplicate frame counters, time to the first
frame, the node's CPU and RSS, and per-stage latency from its histograms; the ffmpeg
CLI encoding the same picture size and rate in real time is the peer.
"""

from __future__ import annotations

from typing import ClassVar

from bench import whep_run
from bench.peer import FfmpegEncodePeer
from bench.scenarios import Peer, RunContext, RunResult, Scenario


class Whep(Scenario):
    name = "whep"
    description = (
        "test pattern -> one WHEP viewer: fps, counter gaps, time to first frame, "
        "per-stage p50/p99, node CPU and RSS; ffmpeg x264 encode as the peer"
    )
    default_seconds = 10.0
    default_runs = 3
    peer: ClassVar[Peer | None] = FfmpegEncodePeer()

    async def run_once(self, ctx: RunContext) -> RunResult:
        return await whep_run.measure(ctx, viewers=1)


SCENARIO = Whep()
