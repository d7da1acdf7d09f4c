"""``soak``: the whole 720p show for hours, by hand, to see what drifts.

``python -m bench run --scenario soak --seconds 14400 --out reports/soak`` runs
``show-720p``'s run once for four hours, sampling the node's CPU, RSS and open file
descriptors every 10 s (every ``seconds / 12`` for a run shorter than two minutes,
so that a short run still has a trend), and reports the drift: the RSS slope
(least squares, MiB per hour), and the open fds, CPU and probe p99 of the run's
first tenth against its last. Latency over time is one p50/p99 point per minute of
send time (per ``seconds / 12`` for a short run). There is no peer: the ffmpeg CLI
runs for the show, not for hours. The default ``--seconds`` (60) is a smoke run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from bench import show, show_run
from bench.scenarios import Peer
from bench.scenarios._show import Show
from bench.series_plots import runs_series_chart

if TYPE_CHECKING:
    from bench.report import Suite

SAMPLE_S = 10.0
SLICE_S = 60.0
SHORT_SLICES = 12  # a run shorter than SLICE_S x this gets this many slices


class Soak(Show):
    name = "soak"
    description = (
        "show-720p for as long as --seconds (hours, by hand): CPU, RSS and open fds every "
        "10 s; drift: RSS slope (MiB/h), fds, CPU and probe p99 first vs last tenth; "
        "latency over time"
    )
    size = show.SIZES["720p"]
    default_seconds = 60.0
    default_runs = 1
    peer: ClassVar[Peer | None] = None

    def spec(self, seconds: float) -> show_run.ShowSpec:
        return show_run.ShowSpec(
            size=self.size,
            sample_interval_s=min(SAMPLE_S, max(0.5, seconds / SHORT_SLICES)),
            slice_s=min(SLICE_S, max(1.0, seconds / SHORT_SLICES)),
            fds=True,
            ramp_s=self.ramp_s,
        )

    def write_plots(self, suite: Suite, out_dir: Path) -> list[str]:
        written = super().write_plots(suite, out_dir)
        written += runs_series_chart(
            suite, out_dir, "fds.png", "node_fds", "node open file descriptors", "fds"
        )
        return written


SCENARIO = Soak()
