"""The token bucket, the keyed limiter and dedup: budgets, bounded memory, exactness."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.interaction.ratelimit import Dedup, KeyedLimiter, TokenBucket

# --- TokenBucket ------------------------------------------------------------------------


def test_bucket_starts_full_then_refills_at_rate() -> None:
    b = TokenBucket(rate_per_s=2.0, burst=3)
    assert [b.allow(10.0) for _ in range(4)] == [True, True, True, False]
    assert not b.allow(10.4)
    assert b.allow(10.5)  # one token after 0.5 s at 2/s
    assert not b.allow(10.5)
    assert b.retry_after_s(10.5) == pytest.approx(0.5)
    assert b.tokens(100.0) == 3  # never above burst


def test_bucket_costs() -> None:
    b = TokenBucket(rate_per_s=10.0, burst=20)
    assert b.allow(0.0, cost=15)
    assert not b.allow(0.0, cost=6)
    assert b.allow(0.0, cost=5)
    assert not b.allow(1000.0, cost=21)  # more than burst: never
    assert b.retry_after_s(1000.0, cost=21) == float("inf")
    assert b.retry_after_s(1000.0, cost=20) == 0.0


def test_clock_stepping_back_grants_nothing() -> None:
    b = TokenBucket(rate_per_s=1.0, burst=1)
    assert b.allow(100.0)
    assert not b.allow(50.0)  # backwards: no refill
    assert not b.allow(100.5)  # and the step back did not move the refill origin
    assert b.allow(101.0)


def test_bucket_rejects_impossible_parameters() -> None:
    for rate, burst in ((-1.0, 1), (1.0, 0), (float("nan"), 1), (1.0, float("nan"))):
        with pytest.raises(ValueError):
            TokenBucket(rate, burst)


def test_zero_rate_is_a_fixed_allowance() -> None:
    b = TokenBucket(rate_per_s=0.0, burst=2)
    assert [b.allow(t) for t in (0.0, 1e6, 2e6)] == [True, True, False]


@settings(max_examples=400, deadline=None)
@given(
    rate=st.floats(min_value=0.01, max_value=1000.0),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=150),
    costs=st.lists(st.integers(min_value=1, max_value=5), min_size=150, max_size=150),
    start=st.floats(min_value=0.0, max_value=1e6),
)
def test_bucket_never_admits_more_than_burst_plus_rate_times_window(
    rate: float, burst: int, gaps: list[float], costs: list[int], start: float
) -> None:
    b = TokenBucket(rate, burst)
    times, admitted = [], []
    now = start
    for gap, cost in zip(gaps, costs, strict=False):
        now += gap
        if b.allow(now, cost):
            times.append(now)
            admitted.append(cost)
    # Every window that can hold the most is bounded by two admitted requests.
    for i in range(len(times)):
        spent = 0
        for j in range(i, len(times)):
            spent += admitted[j]
            window = times[j] - times[i]
            assert spent <= burst + rate * window + 1e-6 * max(1.0, rate * window), (i, j)


@settings(deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=100.0),
    burst=st.integers(min_value=2, max_value=20),
    seconds=st.integers(min_value=1, max_value=20),
)
def test_bucket_admits_its_whole_budget_to_a_steady_sender(
    rate: float, burst: int, seconds: int
) -> None:
    # Not only safe but useful: sending one request every tenth of a token, a sender
    # gets the whole burst + rate * T (less one for float rounding at the very end),
    # or every request when it sends fewer than that.
    b = TokenBucket(rate, burst)
    dt = 0.1 / rate
    polls = int(seconds / dt)
    got = sum(b.allow(k * dt) for k in range(polls + 1))
    assert got >= min(polls + 1, int(burst + rate * polls * dt) - 1)


# --- KeyedLimiter ------------------------------------------------------------------------


def test_keys_are_independent() -> None:
    lim: KeyedLimiter[str] = KeyedLimiter(rate_per_s=1.0, burst=2, max_keys=100)
    assert [lim.allow("flood", 0.0) for _ in range(5)] == [True, True, False, False, False]
    assert lim.allow("calm", 0.0) and lim.allow("calm", 0.0)


def test_memory_is_bounded_under_a_flood_of_keys() -> None:
    lim: KeyedLimiter[str] = KeyedLimiter(rate_per_s=1.0, burst=5, max_keys=100)
    for i in range(100_000):
        lim.allow(f"ip-{i}", 0.0)
        assert len(lim) <= 100
    assert lim.evicted_active > 0  # all were busy (not full): evictions are counted


def test_idle_keys_are_forgotten_first_and_for_free() -> None:
    lim: KeyedLimiter[str] = KeyedLimiter(rate_per_s=1.0, burst=2, max_keys=3)
    for key in ("a", "b", "c"):
        lim.allow(key, 0.0)
    lim.allow("a", 0.5)  # a: recently used, and half a token short at t = 1
    lim.allow("d", 1.0)  # b and c have refilled by now: idle, forgotten
    assert "d" in lim and "a" in lim and "b" not in lim and "c" not in lim
    assert lim.evicted_active == 0


def test_active_key_keeps_its_state_while_others_come_and_go() -> None:
    lim: KeyedLimiter[str] = KeyedLimiter(rate_per_s=0.001, burst=3, max_keys=10)
    now = 0.0
    spent = 0
    for i in range(1000):
        spent += lim.allow("flooder", now)  # used every round: never the LRU key
        lim.allow(f"viewer-{i % 5}", now)
        now += 0.001
    assert spent == 3  # the flooder never got its bucket reset by eviction


def test_lru_eviction_order_when_full() -> None:
    lim: KeyedLimiter[str] = KeyedLimiter(rate_per_s=0.001, burst=1, max_keys=2)
    lim.allow("a", 0.0)
    lim.allow("b", 0.0)
    lim.allow("a", 0.0)  # a is now the most recent
    lim.allow("c", 0.0)  # evicts b
    assert "a" in lim and "c" in lim and "b" not in lim
    assert lim.evicted_active == 1


@given(
    ops=st.lists(
        st.tuples(st.integers(0, 30), st.floats(min_value=0.0, max_value=2.0)), max_size=300
    ),
    max_keys=st.integers(1, 10),
)
def test_keyed_limiter_bounded_for_any_sequence(
    ops: list[tuple[int, float]], max_keys: int
) -> None:
    lim: KeyedLimiter[int] = KeyedLimiter(rate_per_s=1.0, burst=2, max_keys=max_keys)
    now = 0.0
    for key, gap in ops:
        now += gap
        lim.allow(key, now)
        assert len(lim) <= max_keys
        assert key in lim


# --- Dedup ------------------------------------------------------------------------------


def test_dedup_basics() -> None:
    d = Dedup(window=3)
    assert not d.seen("u1", "a")
    assert d.seen("u1", "a")
    assert not d.seen("u2", "a")  # ids are per user
    assert not d.seen("u1", "b")
    assert not d.seen("u1", "c")  # evicts (u1, a): FIFO
    assert len(d) == 3
    assert not d.seen("u1", "a")
    with pytest.raises(ValueError):
        Dedup(0)


@settings(max_examples=300)
@given(
    window=st.integers(1, 20),
    pairs=st.lists(
        st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.integers(0, 30)), max_size=400
    ),
)
def test_dedup_matches_an_exact_fifo_model(window: int, pairs: list[tuple[str, int]]) -> None:
    d = Dedup(window)
    model: list[tuple[str, str]] = []  # the distinct pairs, oldest first
    for user, n in pairs:
        pair = (user, str(n))
        remembered = pair in model[-window:]
        assert d.seen(*pair) == remembered
        if not remembered:
            model.append(pair)
        assert len(d) <= window


@given(ids=st.lists(st.text(min_size=1, max_size=64), unique=True, max_size=200))
def test_dedup_never_drops_a_distinct_id_within_capacity(ids: list[str]) -> None:
    d = Dedup(window=200)
    assert not any(d.seen("u", i) for i in ids)  # all distinct: none reported as seen
    assert all(d.seen("u", i) for i in ids)  # all within capacity: every repeat caught
