"""The event-throughput ramp's arithmetic (sans-I/O): one step's outcome, when to stop,
the knee and the figures.

A step holds the WebSocket load at one rate while probes time event -> pixels; the
ramp climbs until a step's probe p99 is over ``TARGET_P99_MS``, the node answers
``busy``, or most probes are lost. The **knee** is the event rate at which p99
crosses ``TARGET_P99_MS``, interpolated linearly between the last step under it and
the first over it, on the rate the node actually handled (``/metrics``), not the
rate asked of the load. The **busy rate** is the handled rate of the first step in
which the node refused events with ``busy`` (its admission control).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.figures import Figure, Figures

# From below 1k: on a busy 2-core box the knee can be there, and a ramp that stops at
# its first step finds none.
STEPS_PER_S: tuple[float, ...] = (250, 500, 1000, 2000, 3000, 5000, 7000, 10000, 14000, 20000)
TARGET_P99_MS = 100.0  # issue 8: p99 under 100 ms ...
TARGET_KNEE_PER_S = 5000.0  # ... up to at least 5,000 events/s
MAX_LOST_PERCENT = 50.0  # a step losing more probes than this ends the ramp


@dataclass(frozen=True, slots=True)
class Step:
    """One step's measured outcome (``None``: not measured)."""

    target_per_s: float
    handled_per_s: float | None  # every interaction message the node handled, /s
    busy: int  # messages the node answered with ``busy`` in the window
    p50_ms: float | None
    p99_ms: float | None
    lost_percent: float | None
    load_per_s: float | None = None  # what the load processes sent, /s
    node_cpu_cores: float | None = None

    @property
    def x(self) -> float:
        """The step's position on the rate axis: handled when known, else asked."""
        return self.handled_per_s if self.handled_per_s is not None else self.target_per_s


def stop_reason(step: Step) -> str | None:
    """Why the ramp ends after ``step``; None to go on."""
    if step.p99_ms is None:
        return "no probe latency (no probe seen)"
    if step.p99_ms > TARGET_P99_MS:
        return f"probe p99 {step.p99_ms:.0f} ms > {TARGET_P99_MS:g} ms"
    if step.busy > 0:
        return f"the node answered busy ({step.busy} events)"
    if step.lost_percent is not None and step.lost_percent > MAX_LOST_PERCENT:
        return f"{step.lost_percent:.0f}% of the probes lost"
    return None


def knee(steps: Sequence[Step], bound_ms: float = TARGET_P99_MS) -> float | None:
    """The rate at which p99 first crosses ``bound_ms`` (linear between the two steps
    around the crossing); None when no step is over it, or the first one already is."""
    below: Step | None = None
    for step in steps:
        if step.p99_ms is None:
            continue
        if step.p99_ms > bound_ms:
            if below is None or below.p99_ms is None:
                return None
            x0, y0, x1, y1 = below.x, below.p99_ms, step.x, step.p99_ms
            if x1 <= x0:
                return x0  # the node handled no more at the higher step
            return x0 + (x1 - x0) * (bound_ms - y0) / (y1 - y0)
        below = step
    return None


def max_ok(steps: Sequence[Step]) -> float | None:
    """The highest handled rate of a step with p99 within bound and no ``busy``."""
    ok = [s.x for s in steps if s.p99_ms is not None and s.p99_ms <= TARGET_P99_MS and not s.busy]
    return max(ok) if ok else None


def busy_rate(steps: Sequence[Step]) -> float | None:
    """The handled rate of the first step with a ``busy`` answer; None when none had."""
    return next((s.x for s in steps if s.busy > 0), None)


def step_key(target_per_s: float) -> str:
    """Figure-name part of a step: ``ramp_5000_...``."""
    return f"ramp_{target_per_s:.0f}"


def step_figures(step: Step) -> Figures:
    key = step_key(step.target_per_s)
    return {
        f"{key}_handled_events_per_second": Figure(
            step.handled_per_s, "events/s", None, "node /metrics over the step's window"
        ),
        f"{key}_load_events_per_second": Figure(
            step.load_per_s, "events/s", None, "sent by the load processes"
        ),
        f"{key}_probe_p50_ms": Figure(step.p50_ms, "ms", "lower"),
        f"{key}_probe_p99_ms": Figure(step.p99_ms, "ms", "lower"),
        f"{key}_probe_lost_percent": Figure(step.lost_percent, "%", "lower"),
        f"{key}_busy_events": Figure(float(step.busy), "events", "lower"),
        f"{key}_node_cpu_cores": Figure(step.node_cpu_cores, "cores", "lower"),
    }


def figures(steps: Sequence[Step]) -> Figures:
    """Every step's figures and the ramp's own: knee, busy rate, highest good rate."""
    out: Figures = {}
    top = max((s.x for s in steps), default=None)
    crossing = knee(steps)
    note = "events/s handled where probe p99 crosses 100 ms (linear between steps)"
    if crossing is None and steps:
        first = next((s for s in steps if s.p99_ms is not None), None)
        if first is not None and first.p99_ms is not None and first.p99_ms > TARGET_P99_MS:
            note = f"p99 already over {TARGET_P99_MS:g} ms at the first step"
        else:
            note = f"p99 never crossed {TARGET_P99_MS:g} ms up to {top or 0:.0f} events/s"
    out["ramp_knee_events_per_second"] = Figure(crossing, "events/s", "higher", note)
    busy = busy_rate(steps)
    out["ramp_busy_events_per_second"] = Figure(
        busy,
        "events/s",
        "higher",
        "handled rate of the first step with a busy answer"
        if busy is not None
        else f"no busy answer up to {top or 0:.0f} events/s",
    )
    out["ramp_max_ok_events_per_second"] = Figure(
        max_ok(steps),
        "events/s",
        "higher",
        f"highest handled rate with probe p99 <= {TARGET_P99_MS:g} ms and no busy",
    )
    out["ramp_steps"] = Figure(float(len(steps)), "steps")
    for step in steps:
        out.update(step_figures(step))
    return out
