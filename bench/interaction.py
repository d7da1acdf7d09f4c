"""Event -> pixels latency from two logs, the prober's and a viewer's (sans-I/O).

The prober (``bench.probe_sender``) writes ``seq monotonic_s`` for every probe event
it sends over the WebSocket (the time is taken just before the frame is written).
The viewer (``bench.glass_viewer --strip probe``) writes ``seq monotonic_s`` for every
picture it decodes, ``seq`` being what the top-left probe strip reads. Both clocks are the
machine's CLOCK_MONOTONIC, so for each probe: latency = time of the first decoded
picture showing its ``seq`` at or after it was sent - time it was sent.

``join`` matches the logs. Values are taken modulo 2**16 (the strip holds 16 bits);
when the prober's ``seq`` wraps within a run, a later probe with the same ``seq`` is
a different probe, and a picture counts for the latest probe sent before it. A probe
never seen is lost. Before any probe is on screen the strip shows whatever the
picture has there, so reads are judged only after the first probe was seen: a value
no probe had is ``foreign`` (a misread strip), a value seen before its probe was sent
is ``early`` (a misread that happened to match); both are counted, neither is a
latency.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import prom
from bench.figures import Figure, Figures
from bench.glass import COUNTER_MODULO
from bench.glass import parse_log as parse_log  # re-exported: the probe logs' parser
from bench.glass import percentile as percentile
from bench.glass import read_log as read_log

SEQ_MODULO = COUNTER_MODULO
QUANTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0))
HISTOGRAM_NOTE = "upper bound of the histogram bucket holding it (node /metrics)"

# Issue 5's figure for a bare aiortc sender that draws the probe into the next frame
# and VP8-encodes it per viewer, measured on this box before the node existed. Not
# rebuilt or measured by this bench: quoted as the bar the node should beat.
FIELD_REFERENCE_MS = {"p50": 56.0, "p99": 73.0}
FIELD_REFERENCE_NOTE = (
    "reference from issue 5 (bare aiortc sender drawing the probe, VP8 per viewer, "
    "same box): NOT measured in this run"
)

# The probe strip and the frame counter are the same 16-bit barcode, logged the same
# way (``value monotonic_s`` lines): one parser and one percentile for both.
Entry = tuple[int, float]  # (seq, monotonic seconds)


@dataclass
class ProbeJoin:
    sent: int = 0
    seen: int = 0
    lost: int = 0
    foreign: int = 0  # reads, after the first probe was seen, of a value never sent
    early: int = 0  # reads of a sent value before that probe was sent
    frames: int = 0  # pictures in the viewer's log
    latencies_ms: list[float] = field(default_factory=list)  # in send order
    lost_seqs: list[int] = field(default_factory=list)

    def quantile(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    @property
    def lost_percent(self) -> float | None:
        return 100.0 * self.lost / self.sent if self.sent else None


def join(sent: Sequence[Entry], frames: Sequence[Entry]) -> ProbeJoin:
    """Match the viewer's pictures to the prober's probes (see the module doc)."""
    result = ProbeJoin(sent=len(sent), frames=len(frames))
    sends_by_seq: dict[int, list[float]] = {}
    for seq, t in sorted(sent, key=lambda e: e[1]):
        sends_by_seq.setdefault(seq % SEQ_MODULO, []).append(t)
    frames_by_seq: dict[int, list[float]] = {}
    for seq, t in frames:
        frames_by_seq.setdefault(seq % SEQ_MODULO, []).append(t)
    for times in frames_by_seq.values():
        times.sort()

    first_seen: float | None = None
    order = sorted(range(len(sent)), key=lambda i: sent[i][1])
    for i in order:
        seq, t_sent = sent[i][0] % SEQ_MODULO, sent[i][1]
        sends = sends_by_seq[seq]
        k = bisect.bisect_right(sends, t_sent)  # the next send of the same seq, if any
        t_next = sends[k] if k < len(sends) else math.inf
        times = frames_by_seq.get(seq, [])
        j = bisect.bisect_left(times, t_sent)
        if j < len(times) and times[j] < t_next:
            result.latencies_ms.append((times[j] - t_sent) * 1000.0)
            first_seen = times[j] if first_seen is None else min(first_seen, times[j])
        else:
            result.lost_seqs.append(seq)
    result.seen = len(result.latencies_ms)
    result.lost = result.sent - result.seen
    if first_seen is not None:
        for seq, t in frames:
            if t < first_seen:
                continue
            first_send = sends_by_seq.get(seq % SEQ_MODULO)
            if first_send is None:
                result.foreign += 1
            elif t < first_send[0]:
                result.early += 1
    return result


def join_files(sent_log: Path, viewer_log: Path) -> ProbeJoin:
    return join(read_log(sent_log), read_log(viewer_log))


def latency_figures(prefix: str, j: ProbeJoin | None, reason: str = "") -> Figures:
    """``<prefix>_latency_{p50,p90,p99,max,mean}_ms`` and the probe counts; all None
    (with ``reason`` as their note) when there is no join."""
    lat = j.latencies_ms if j is not None else []
    note = reason if not lat else ""
    out: Figures = {}
    for label, q in QUANTILES:
        out[f"{prefix}_latency_{label}_ms"] = Figure(percentile(lat, q), "ms", "lower", note)
    out[f"{prefix}_latency_max_ms"] = Figure(max(lat) if lat else None, "ms", "lower", note)
    out[f"{prefix}_latency_mean_ms"] = Figure(
        math.fsum(lat) / len(lat) if lat else None, "ms", "lower", note
    )
    out[f"{prefix}_probes_sent"] = Figure(j.sent if j else None, "probes", None, note)
    out[f"{prefix}_probes_seen"] = Figure(j.seen if j else None, "probes", "higher", note)
    out[f"{prefix}_probes_lost"] = Figure(
        j.lost if j else None, "probes", "lower", note or "sent, never read back"
    )
    out[f"{prefix}_lost_percent"] = Figure(j.lost_percent if j else None, "%", "lower", note)
    out[f"{prefix}_misreads"] = Figure(
        (j.foreign + j.early) if j else None,
        "frames",
        "lower",
        note or "strip reads matching no probe sent so far (after the first probe was seen)",
    )
    return out


def histogram_figures(
    prefix: str, start: prom.Samples | None, end: prom.Samples | None, metric: str
) -> Figures:
    """p50/p99 (bucket upper bounds), mean and count of a node histogram over a window."""
    hist = None
    if start is not None and end is not None:
        hist = prom.histogram(prom.diff(end, start), metric)
    out: Figures = {}
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        v = hist.quantile(q) if hist is not None else None
        out[f"{prefix}_{label}_ms"] = Figure(
            v * 1000 if v is not None else None, "ms", "lower", HISTOGRAM_NOTE
        )
    mean = hist.mean if hist is not None else None
    out[f"{prefix}_mean_ms"] = Figure(mean * 1000 if mean is not None else None, "ms", "lower")
    out[f"{prefix}_observations"] = Figure(hist.count if hist is not None else None, "count")
    return out


def events_by_outcome(
    start: prom.Samples | None, end: prom.Samples | None
) -> dict[tuple[str, str], float]:
    """Increase of ``edge_node_interaction_events_total`` per (type, outcome)."""
    if start is None or end is None:
        return {}
    out: dict[tuple[str, str], float] = {}
    for (name, labels), v in prom.diff(end, start).items():
        if name != "edge_node_interaction_events_total" or v <= 0:
            continue
        lab = dict(labels)
        key = (lab.get("type", "?"), lab.get("outcome", "?"))
        out[key] = out.get(key, 0.0) + v
    return out


def event_rate_figures(outcomes: Mapping[tuple[str, str], float], seconds: float) -> Figures:
    """Events the node handled per second over the window, all and by outcome class."""
    total = sum(outcomes.values())
    accepted = sum(v for (_, o), v in outcomes.items() if o == "accepted")
    refused = sum(v for (_, o), v in outcomes.items() if o not in ("accepted", "duplicate"))

    def per_s(n: float) -> float | None:
        return n / seconds if seconds > 0 else None

    return {
        "node_events_per_second": Figure(
            per_s(total), "events/s", None, "every interaction message the engine handled"
        ),
        "node_events_accepted_per_second": Figure(per_s(accepted), "events/s", None),
        "node_events_refused": Figure(
            refused, "events", "lower", "rate_limited, busy, forbidden, ... over the window"
        ),
    }


def load_figures(result: Mapping[str, Any] | None, target_per_s: float) -> Figures:
    """The load generator's own account: what it sent and what came back (the danmaku
    on screen are the node's gauge: ``bench.show.danmaku_figures``)."""
    if not result:
        return {
            "load_events_per_second": Figure(None, "events/s", None, "no result from the load"),
        }
    seconds = float(result.get("seconds") or 0.0)
    sent = int(result.get("sent") or 0)
    replies: Mapping[str, int] = result.get("replies") or {}
    errors = sum(n for code, n in replies.items() if code != "ack")
    return {
        "load_events_per_second": Figure(
            sent / seconds if seconds > 0 else None,
            "events/s",
            None,
            f"sent by the load process over its life (target {target_per_s:g})",
        ),
        "load_events_sent": Figure(sent, "events"),
        "load_errors": Figure(errors, "events", "lower", "replies other than ack"),
        "load_unanswered": Figure(
            max(0, sent - sum(replies.values())), "events", "lower", "no reply by the end"
        ),
        "load_users": Figure(result.get("users"), "users"),
    }


def cdf_points(values: Sequence[float], points: int = 201) -> list[tuple[float, float]]:
    """(latency, fraction at or below it) at evenly spaced fractions, for plots."""
    if not values:
        return []
    return [
        (v, i / (points - 1))
        for i in range(points)
        if (v := percentile(values, 100.0 * i / (points - 1))) is not None
    ]
