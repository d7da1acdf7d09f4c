"""``ContiguousSeqs``, the collector's ack logic, against a plain model (pure, fast).

The model: a set of seqs accounted for (stored, or skipped because a Hello said they
were acknowledged before); the ack is the longest prefix 1..n inside it, and the gaps
a skip records are exactly the seqs it adds that were not stored.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.cloud.collector_records import SeqGap
from edge_node.cloud.collector_seqs import ContiguousSeqs

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(min_value=1, max_value=60)),
        st.tuples(st.just("skip"), st.integers(min_value=0, max_value=60)),
    ),
    max_size=80,
)


def prefix(accounted: set[int]) -> int:
    n = 0
    while n + 1 in accounted:
        n += 1
    return n


@settings(max_examples=300)
@given(ops)
def test_adds_and_skips_follow_the_model(steps: list[tuple[str, int]]) -> None:
    tracker = ContiguousSeqs()
    stored: set[int] = set()
    accounted: set[int] = set()
    for op, n in steps:
        if op == "add":
            new = tracker.add(n)
            assert new == (n not in accounted)
            stored.add(n)
            accounted.add(n)
        else:
            before = prefix(accounted)
            gaps = tracker.skip_through(n)
            if n <= before:
                assert gaps == []
            else:
                skipped = {s for g in gaps for s in range(g.first, g.last + 1)}
                assert skipped == set(range(before + 1, n + 1)) - accounted
                assert all(a.last + 1 < b.first for a, b in itertools.pairwise(gaps))
                accounted |= set(range(1, n + 1))
        assert tracker.highest == prefix(accounted)
        assert tracker.above == {s for s in accounted if s > tracker.highest}


def test_a_fresh_collector_skips_what_the_node_had_acked() -> None:
    tracker = ContiguousSeqs()
    assert tracker.skip_through(499) == [SeqGap(1, 499)]
    assert tracker.highest == 499
    assert tracker.add(500) and tracker.highest == 500
    assert tracker.skip_through(300) == []  # an older claim changes nothing


def test_seqs_stored_beyond_the_claim_are_kept_and_joined() -> None:
    # A database restored from a copy: 1..3 and 9 are there, the node acked up to 7.
    tracker = ContiguousSeqs(3, {6, 9})
    assert tracker.skip_through(7) == [SeqGap(4, 5), SeqGap(7, 7)]
    assert tracker.highest == 7 and tracker.above == {9}
    tracker.add(8)
    assert tracker.highest == 9 and not tracker.above
    assert SeqGap(4, 5).count == 2
