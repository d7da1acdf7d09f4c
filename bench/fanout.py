"""The WHEP fan-out ramp's arithmetic (sans-I/O): one step's figures from the viewers'
windows and the node's samples, the CPU and memory each viewer costs (slopes), and
whether a step's viewers held 30 fps.

A step holds N WHEP sessions (``bench.fanout_viewer`` processes) for a window; every
viewer reports frames completed, kbit and packets lost over that window, and the
first session of the first process also decodes and checks the frame counter. The
node's CPU and RSS over the same window come from /proc.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.figures import Figure, Figures
from bench.trend import linear_fit

STEPS: tuple[int, ...] = (1, 10, 50, 100)
VIEWERS_PER_PROCESS = 50
TARGET_VIEWERS = 50  # issue 8: 50 WHEP viewers at 720p30 on the two cores
MIN_FPS = 28.5  # "holds 30 fps": 95% of it


@dataclass(frozen=True, slots=True)
class StepResult:
    viewers: int
    rows: list[dict[str, Any]]  # one per viewer, ``bench.fanout_viewer``'s window rows
    node_cpu_cores: float | None
    node_rss_mib: float | None
    setup_s: float | None = None  # from the first POST to every session playing

    @property
    def playing(self) -> int:
        return sum(1 for r in self.rows if r.get("playing") and (r.get("fps") or 0) > 0)

    def fps(self) -> list[float]:
        """Every viewer's fps; a viewer that never played counts as 0."""
        out = [float(r.get("fps") or 0.0) for r in self.rows]
        return out + [0.0] * max(0, self.viewers - len(out))

    def holds(self, min_fps: float = MIN_FPS) -> bool:
        fps = self.fps()
        decoded = [r["decoded_fps"] for r in self.rows if r.get("decoded_fps") is not None]
        return bool(fps) and min(fps) >= min_fps and all(d >= min_fps for d in decoded)


def step_figures(step: StepResult) -> Figures:
    key = f"fanout_{step.viewers}"
    fps = step.fps()
    decoded = next((r for r in step.rows if r.get("decoded_fps") is not None), {})
    lost = [int(r.get("lost") or 0) for r in step.rows]
    kbps = [float(r["kbps"]) for r in step.rows if r.get("kbps") is not None]
    gaps = [float(r["max_interval_ms"]) for r in step.rows if r.get("max_interval_ms")]
    per = (
        step.node_cpu_cores / step.viewers
        if step.node_cpu_cores is not None and step.viewers
        else None
    )
    return {
        f"{key}_viewers_playing": Figure(float(step.playing), "viewers", "higher"),
        f"{key}_fps_min": Figure(min(fps) if fps else None, "frames/s", "higher", "slowest viewer"),
        f"{key}_fps_median": Figure(statistics.median(fps) if fps else None, "frames/s", "higher"),
        f"{key}_decoded_fps": Figure(
            decoded.get("decoded_fps"), "frames/s", "higher", "the one decoding viewer"
        ),
        f"{key}_decoded_missed_frames": Figure(
            decoded.get("decoded_missed"), "frames", "lower", "frame counters skipped"
        ),
        f"{key}_kbps_median": Figure(statistics.median(kbps) if kbps else None, "kbit/s"),
        f"{key}_packets_lost": Figure(float(sum(lost)), "packets", "lower", "all viewers"),
        f"{key}_max_frame_interval_ms": Figure(max(gaps) if gaps else None, "ms", "lower"),
        f"{key}_node_cpu_cores": Figure(step.node_cpu_cores, "cores", "lower"),
        f"{key}_node_cpu_per_viewer_cores": Figure(per, "cores", "lower", "step CPU / viewers"),
        f"{key}_node_rss_max_mib": Figure(step.node_rss_mib, "MiB", "lower"),
        f"{key}_setup_s": Figure(step.setup_s, "s", "lower", "POSTs to every session playing"),
    }


def slope_figures(steps: Sequence[StepResult]) -> Figures:
    """CPU and RSS per viewer: least-squares slopes over the steps."""
    cpu = linear_fit([(s.viewers, s.node_cpu_cores) for s in steps if s.node_cpu_cores is not None])
    rss = linear_fit([(s.viewers, s.node_rss_mib) for s in steps if s.node_rss_mib is not None])
    held = [s.viewers for s in steps if s.holds()]
    return {
        "fanout_cpu_per_viewer_cores": Figure(
            cpu[0] if cpu else None,
            "cores",
            "lower",
            "slope of node CPU (control + worker) over viewers, least squares over the steps",
        ),
        "fanout_cpu_base_cores": Figure(
            cpu[1] if cpu else None, "cores", "lower", "the fit's intercept: CPU at 0 viewers"
        ),
        "fanout_rss_per_viewer_mib": Figure(
            rss[0] if rss else None, "MiB", "lower", "slope of node RSS over viewers"
        ),
        "fanout_max_viewers_at_30fps": Figure(
            float(max(held)) if held else 0.0,
            "viewers",
            "higher",
            f"largest step whose every viewer held {MIN_FPS:g} fps",
        ),
    }


def target_step(steps: Sequence[StepResult]) -> StepResult | None:
    return next((s for s in steps if s.viewers == TARGET_VIEWERS), None)


def rows_of(windows: Sequence[Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """Every viewer row of the processes' ``window`` events."""
    out: list[dict[str, Any]] = []
    for w in windows:
        out += list((w or {}).get("viewers") or [])
    return out
