"""Counters, gauges and histograms rendered as Prometheus text (exposition format 0.0.4).

One histogram type for every latency in the project. Updates are plain attribute
arithmetic (no locks): each metric is written from one thread (the control loop).
"""

from __future__ import annotations

import bisect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

# Seconds; fine at the low end, where a frame stage lives (0.1 ms .. 1 s).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.033,
    0.066,
    0.1,
    0.2,
    0.5,
    1.0,
)

LabelKey = tuple[tuple[str, str], ...]


def _escape(text: str, quote: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


def _fmt_labels(labels: LabelKey) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v, quote=True)}"' for k, v in labels) + "}"


def _fmt_value(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


class _Metric(ABC):
    kind = ""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text

    @abstractmethod
    def samples(self) -> Iterable[str]:
        """The sample lines of this metric."""

    def render(self) -> str:
        head = [
            f"# HELP {self.name} {_escape(self.help, quote=False)}",
            f"# TYPE {self.name} {self.kind}",
        ]
        return "\n".join([*head, *self.samples()])


class Counter(_Metric):
    """A monotonically increasing count, optionally split by labels."""

    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self._values: dict[LabelKey, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if not amount >= 0:  # also refuses NaN
            raise ValueError(f"a counter only goes up (got {amount!r})")
        key = tuple(sorted(labels.items()))
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def samples(self) -> Iterable[str]:
        if not self._values:
            yield f"{self.name} 0"
        for key, v in sorted(self._values.items()):
            yield f"{self.name}{_fmt_labels(key)} {_fmt_value(v)}"


class Gauge(_Metric):
    """A value that goes up and down; either set, or read from a function at render time."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float] | None = None) -> None:
        super().__init__(name, help_text)
        self._value = 0.0
        self._read = read

    def set(self, value: float) -> None:
        self._value = float(value)

    @property
    def value(self) -> float:
        return float(self._read()) if self._read is not None else self._value

    def samples(self) -> Iterable[str]:
        yield f"{self.name} {_fmt_value(self.value)}"


class Histogram(_Metric):
    """Cumulative buckets, sum and count, as Prometheus expects."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS_S
    ) -> None:
        super().__init__(name, help_text)
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (for reports, not exactness)."""
        if self.count == 0:
            return math.nan
        rank = q * self.count
        seen = 0
        for bound, n in zip((*self.buckets, math.inf), self._counts, strict=True):
            seen += n
            if seen >= rank:
                return bound
        return math.inf

    def samples(self) -> Iterable[str]:
        cumulative = 0
        for bound, n in zip((*self.buckets, math.inf), self._counts, strict=True):
            cumulative += n
            yield f'{self.name}_bucket{{le="{_fmt_value(bound)}"}} {cumulative}'
        yield f"{self.name}_sum {_fmt_value(self.sum)}"
        yield f"{self.name}_count {self.count}"


class Registry:
    """The set of metrics a process exposes at ``/metrics``."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> None:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics[metric.name] = metric

    def counter(self, name: str, help_text: str) -> Counter:
        m = Counter(name, help_text)
        self._add(m)
        return m

    def gauge(self, name: str, help_text: str, read: Callable[[], float] | None = None) -> Gauge:
        m = Gauge(name, help_text, read)
        self._add(m)
        return m

    def histogram(
        self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS_S
    ) -> Histogram:
        m = Histogram(name, help_text, buckets)
        self._add(m)
        return m

    def render(self) -> str:
        return "\n".join(m.render() for m in self._metrics.values()) + "\n"


class RateMeter:
    """Events (and bytes) per second over a sliding one-second window, fed with ``now``."""

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self._events: list[tuple[float, float]] = []
        self._head = 0

    def add(self, now: float, amount: float = 1.0) -> None:
        self._events.append((now, amount))

    def rate(self, now: float) -> float:
        cutoff = now - self.window_s
        while self._head < len(self._events) and self._events[self._head][0] <= cutoff:
            self._head += 1
        if self._head > 1024:
            del self._events[: self._head]
            self._head = 0
        return sum(a for _, a in self._events[self._head :]) / self.window_s
