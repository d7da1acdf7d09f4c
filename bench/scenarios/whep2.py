"""``whep2``: two WHEP viewers at once on one encoder.

The figures of ``whep`` for each viewer (``viewer1_*``, ``viewer2_*``; ``viewer_*`` is
the worse of the two) and ``node_video_encoders_max``, which must stay 1: the node
encodes once and only packetizes per viewer.
"""

from __future__ import annotations

from bench import whep_run
from bench.scenarios import RunContext, RunResult, Scenario


class Whep2(Scenario):
    name = "whep2"
    description = (
        "test pattern -> two WHEP viewers at once: per-viewer fps and gaps, "
        "video encoders (must stay 1), node CPU and RSS"
    )
    default_seconds = 10.0
    default_runs = 3

    async def run_once(self, ctx: RunContext) -> RunResult:
        return await whep_run.measure(ctx, viewers=2)


SCENARIO = Whep2()
