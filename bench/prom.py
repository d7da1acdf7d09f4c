"""Reading the node's /metrics (Prometheus text format 0.0.4) from the outside.

Only what the bench needs: sample lines into a dict, histograms as cumulative
buckets, the difference of two scrapes (the node's histograms and counters are
cumulative since it started, so a run's figures are end minus start), and quantiles
as the upper bound of the bucket that holds them (the node's own ``quantile`` does
the same; exact enough to compare runs, not to quote to a microsecond).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# name{labels} value  (timestamps are never sent by the node)
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Labels = tuple[tuple[str, str], ...]
SampleKey = tuple[str, Labels]
Samples = dict[SampleKey, float]


def _parse_value(text: str) -> float:
    if text == "+Inf":
        return math.inf
    if text == "-Inf":
        return -math.inf
    return float(text)


def parse(text: str) -> Samples:
    """Every sample line as ``{(name, sorted labels): value}``; comments are skipped."""
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            continue
        name, label_text, value = m.groups()
        labels: Labels = ()
        if label_text:
            labels = tuple(
                sorted(
                    (k, v.replace('\\"', '"').replace("\\\\", "\\"))
                    for k, v in _LABEL.findall(label_text)
                )
            )
        try:
            samples[(name, labels)] = _parse_value(value)
        except ValueError:
            continue
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """All samples of ``name`` keyed by the value of ``label`` (e.g. stage -> count)."""
    out: dict[str, float] = {}
    for (n, labels), v in samples.items():
        if n != name:
            continue
        for k, lv in labels:
            if k == label:
                out[lv] = v
    return out


def diff(end: Samples, start: Samples | None) -> Samples:
    """``end - start`` per sample (for counters and histograms); missing start = 0."""
    if start is None:
        return dict(end)
    return {k: v - start.get(k, 0.0) for k, v in end.items()}


@dataclass(frozen=True, slots=True)
class HistogramData:
    bounds: tuple[float, ...]  # upper bounds, ascending, ending with +Inf
    cumulative: tuple[float, ...]  # observations <= bound
    sum: float
    count: float

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding quantile ``q``; None without observations,
        +Inf when it lies above the largest finite bucket."""
        if self.count <= 0:
            return None
        rank = q * self.count
        for bound, seen in zip(self.bounds, self.cumulative, strict=True):
            if seen >= rank:
                return bound
        return math.inf

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


def histogram(samples: Samples, name: str) -> HistogramData | None:
    buckets: list[tuple[float, float]] = []
    for (n, labels), v in samples.items():
        if n != f"{name}_bucket":
            continue
        le = dict(labels).get("le")
        if le is None:
            continue
        buckets.append((_parse_value(le), v))
    if not buckets:
        return None
    buckets.sort()
    total = samples.get((f"{name}_count", ()), buckets[-1][1])
    return HistogramData(
        bounds=tuple(b for b, _ in buckets),
        cumulative=tuple(c for _, c in buckets),
        sum=samples.get((f"{name}_sum", ()), 0.0),
        count=total,
    )
