"""The project's one token bucket, a bounded per-key limiter built on it, and dedup.

Sans-I/O: every method takes ``now`` (seconds on a monotonic clock, e.g.
``time.monotonic()`` read once per event by the adapter) and nothing here reads a
clock, sleeps or logs. Memory is bounded everywhere: per-key state is capped and
evicted oldest-first, so a flood of distinct users or addresses costs a fixed amount.

Guarantee (tested as a property): over any window of length T, a bucket admits at
most ``burst + rate_per_s * T`` cost. ``now`` must not go backwards; if it does, the
step is treated as no time passing (no refill), never as extra budget.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate_per_s``; a request spends ``cost``.

    Starts full. A request costing more than ``burst`` is never admitted.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: float) -> None:
        if not rate_per_s >= 0:
            raise ValueError(f"rate_per_s must be >= 0, got {rate_per_s!r}")
        if not burst > 0:
            raise ValueError(f"burst must be > 0, got {burst!r}")
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self._tokens = self.burst
        self._last: float | None = None

    def _refill(self, now: float) -> None:
        last = self._last
        if last is None:
            self._last = now
        elif now > last:
            self._tokens = min(self.burst, self._tokens + (now - last) * self.rate_per_s)
            self._last = now

    def allow(self, now: float, cost: float = 1) -> bool:
        """Spend ``cost`` tokens if there are enough at ``now``; True when admitted."""
        self._refill(now)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (spends nothing)."""
        self._refill(now)
        return self._tokens

    def is_full(self, now: float) -> bool:
        """True once the bucket has refilled to ``burst``: it remembers nothing useful."""
        return self.tokens(now) >= self.burst

    def retry_after_s(self, now: float, cost: float = 1) -> float:
        """Seconds until ``cost`` would be admitted (inf if never: cost > burst or rate 0)."""
        missing = cost - self.tokens(now)
        if missing <= 0:
            return 0.0
        if cost > self.burst or self.rate_per_s == 0:
            return float("inf")
        return missing / self.rate_per_s


class KeyedLimiter(Generic[K]):
    """One ``TokenBucket`` per key (a user, an address), at most ``max_keys`` of them.

    Buckets are kept in least-recently-used order. A new key first forgets the oldest
    buckets that have refilled to ``burst`` (idle: forgetting them changes nothing);
    if the table is still full it evicts the least recently used bucket anyway, so
    memory stays bounded under a flood of distinct keys. That key then starts over with
    a full bucket: ``evicted_active`` counts such evictions (a metric worth watching;
    raise ``max_keys`` if it grows).
    """

    __slots__ = ("_buckets", "burst", "evicted_active", "max_keys", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: float, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        TokenBucket(rate_per_s, burst)  # validates the parameters once, here
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self.evicted_active = 0
        self._buckets: OrderedDict[K, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def allow(self, key: K, now: float, cost: float = 1) -> bool:
        """Spend ``cost`` from ``key``'s bucket; True when admitted."""
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = self._buckets[key] = TokenBucket(self.rate_per_s, self.burst)
        else:
            self._buckets.move_to_end(key)
        return bucket.allow(now, cost)

    def _make_room(self, now: float) -> None:
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets.values()))
            idle = oldest.is_full(now)
            if not idle and len(buckets) < self.max_keys:
                return
            if not idle:
                self.evicted_active += 1
            buckets.popitem(last=False)


class Dedup:
    """Remembers the last ``window`` distinct ``(user, id)`` pairs, first in first out.

    ``seen`` is exact (no hashing tricks): a pair never seen is never reported as seen,
    and a pair is reported as a repeat as long as fewer than ``window`` distinct pairs
    arrived after it. Repeats do not refresh a pair's place in the queue.
    """

    __slots__ = ("_pairs", "window")

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window!r}")
        self.window = window
        self._pairs: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pairs)

    def seen(self, user: str, id: str) -> bool:
        """True if ``(user, id)`` is remembered (a repeat); otherwise remember it, False."""
        pair = (user, id)
        if pair in self._pairs:
            return True
        self._pairs[pair] = None
        if len(self._pairs) > self.window:
            self._pairs.popitem(last=False)
        return False
