"""Glass-to-glass latency from two logs: the publisher's and a receiver's (sans-I/O).

The publisher (``edge_node.clients.rtmp_publish --log``, or over WHIP
``bench.whip_publisher --frames-log``) writes ``counter monotonic_s`` for every frame
it sends (the time is taken just before the frame goes to its encoder); a receiver
(``bench.rtmp_receiver``, ``bench.glass_viewer``) writes ``counter monotonic_s`` for
every frame it decodes. Both clocks are the machine's
CLOCK_MONOTONIC, so the difference of the two times for the same counter is that
frame's glass-to-glass latency.

``join`` matches the logs: frames sent in the first ``discard_s`` seconds are left
out (encoder start-up, the switch from the test pattern to the live picture); of the
rest, every counter the receiver never read is lost. A counter read again is a
duplicate (only its first arrival counts); a counter the publisher never sent in
this run (the node's own test pattern, or a misread barcode) is foreign and ignored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.figures import Figure, Figures

COUNTER_MODULO = 1 << 16
# The publisher's picture and counters (720p30, counters from 40000: far from the
# node's own test pattern, whose counter starts at 0 with the node).
SIZE, FPS, START = "1280x720", 30, 40000
# The WHIP publisher's counters: another range, so that a viewer of the node never
# takes a frame of one publisher for the other's.
WHIP_START = 50000
STREAM_KEY = "demo"  # the demo node's stream key (RTMP: rtmp://HOST:PORT/live/demo)
DISCARD_S = 1.0  # the first second of every path is start-up, not steady state
GRACE_S = 1.0  # receivers keep listening this long after the publisher is done
TARGET_P99_MS = 35.0  # issue 3: the node's p99, at most one frame above the ~4 ms floor
QUANTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0))

Entry = tuple[int, float]  # (frame counter, monotonic seconds)


def parse_log(lines: Iterable[str]) -> list[Entry]:
    """``counter monotonic_s`` lines; blank, short or malformed lines are skipped (a
    process killed mid-write leaves half a line)."""
    out: list[Entry] = []
    for line in lines:
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            counter, t = int(parts[0]), float(parts[1])
        except ValueError:
            continue
        if not math.isfinite(t):
            continue
        out.append((counter % COUNTER_MODULO, t))
    return out


def read_log(path: Path) -> list[Entry]:
    """A log file's entries; none when it does not exist."""
    try:
        with open(path, errors="replace") as fh:
            return parse_log(fh)
    except FileNotFoundError:
        return []


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between the closest
    ranks (numpy's default, "linear"); None for no values."""
    if not values:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is not within 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    frac = rank - lo
    return ordered[lo] + (ordered[hi] - ordered[lo]) * frac


@dataclass
class Join:
    """One path's frames matched between the publisher's log and a receiver's."""

    sent: int = 0  # frames sent after the discarded start
    delivered: int = 0  # of those, frames the receiver read
    lost: int = 0  # sent - delivered
    duplicates: int = 0  # a counter read again (after its first arrival)
    foreign: int = 0  # counters the publisher did not send (test pattern, misreads)
    early: int = 0  # read before they were sent: misread barcodes, left out
    discarded: int = 0  # frames sent during the first discard_s seconds
    latencies_ms: list[float] = field(default_factory=list)  # in send order

    def quantile(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    @property
    def lost_percent(self) -> float | None:
        return 100.0 * self.lost / self.sent if self.sent else None


def join(sent: Sequence[Entry], received: Sequence[Entry], discard_s: float = 1.0) -> Join:
    """Match a receiver's frames to the publisher's by counter (see the module doc)."""
    result = Join()
    if not sent:
        result.foreign = len(received)
        return result
    t_first = min(t for _, t in sent)
    sent_at: dict[int, float] = {}
    counted: set[int] = set()  # sent after the discarded start
    for counter, t in sent:
        if counter in sent_at:
            continue  # the counter wrapped within one run: keep the first
        sent_at[counter] = t
        if t - t_first >= discard_s:
            counted.add(counter)
        else:
            result.discarded += 1
    result.sent = len(counted)
    arrived: dict[int, float] = {}
    for counter, t in received:
        t_sent = sent_at.get(counter)
        if t_sent is None:
            result.foreign += 1
        elif counter in arrived:
            result.duplicates += 1
        elif t < t_sent:
            result.early += 1
        else:
            arrived[counter] = t
    ordered = sorted(counted, key=sent_at.__getitem__)
    result.latencies_ms = [(arrived[c] - sent_at[c]) * 1000.0 for c in ordered if c in arrived]
    result.delivered = len(result.latencies_ms)
    result.lost = result.sent - result.delivered
    return result


def join_files(publisher_log: Path, receiver_log: Path, discard_s: float = 1.0) -> Join:
    return join(read_log(publisher_log), read_log(receiver_log), discard_s)


def latency_figures(prefix: str, j: Join | None, reason: str = "") -> Figures:
    """``<prefix>_latency_{p50,p90,p99,max,mean}_ms``, frames sent/delivered/lost; all
    None (with ``reason`` as the note) when the path did not run."""
    out: Figures = {}
    lat = j.latencies_ms if j is not None else []
    note = reason if j is None or not lat else ""
    for label, q in QUANTILES:
        v = percentile(lat, q)
        out[f"{prefix}_latency_{label}_ms"] = Figure(v, "ms", "lower", note)
    out[f"{prefix}_latency_max_ms"] = Figure(max(lat) if lat else None, "ms", "lower", note)
    out[f"{prefix}_latency_mean_ms"] = Figure(
        math.fsum(lat) / len(lat) if lat else None, "ms", "lower", note
    )
    if j is None:
        for name, unit in (
            ("frames_sent", "frames"),
            ("frames_delivered", "frames"),
            ("frames_lost", "frames"),
            ("lost_percent", "%"),
        ):
            out[f"{prefix}_{name}"] = Figure(None, unit, "lower" if "lost" in name else None, note)
        return out
    out[f"{prefix}_frames_sent"] = Figure(j.sent, "frames", None, "after the discarded start")
    out[f"{prefix}_frames_delivered"] = Figure(j.delivered, "frames", "higher")
    out[f"{prefix}_frames_lost"] = Figure(j.lost, "frames", "lower", "sent, never read back")
    out[f"{prefix}_lost_percent"] = Figure(j.lost_percent, "%", "lower")
    out[f"{prefix}_duplicate_frames"] = Figure(j.duplicates, "frames", "lower")
    return out


def cdf_points(values: Sequence[float], points: int = 201) -> list[tuple[float, float]]:
    """(latency, fraction of frames at or below it) at ``points`` evenly spaced
    fractions from 0 to 1, for plots."""
    if not values:
        return []
    return [
        (v, i / (points - 1))
        for i in range(points)
        if (v := percentile(values, 100.0 * i / (points - 1))) is not None
    ]
