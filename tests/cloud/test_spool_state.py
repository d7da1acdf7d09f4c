"""The spool's sequence logic: plain calls with fake time, and a model-based test."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from edge_node.cloud.spool_state import (
    LOST_KIND,
    MERGED_KIND,
    OVERFLOW_KIND,
    AckThrough,
    Bounds,
    Delete,
    Effect,
    MarkSent,
    MergeConflict,
    Record,
    SpoolError,
    SpoolState,
    Store,
    merge_counters,
    merged_into,
    overflow_contents,
)
from edge_node.errors import ProtocolError

BIG = Bounds(max_records=1_000_000, max_bytes=10**9, max_age_s=10**9)


def counts(**kw: Any) -> bytes:
    return msgpack.packb(kw)  # type: ignore[no-any-return]


def unpack(payload: bytes) -> Any:
    return msgpack.unpackb(payload, strict_map_key=False)


def store_all(state: SpoolState) -> list[Effect]:
    """Pretend the store committed everything: the adapter's job."""
    effects = state.take_effects()
    state.on_stored(state.generation)
    return effects


def transmit(state: SpoolState, limit: int = 100) -> list[Record]:
    """What the link does: ask; if the sent mark must be written first, commit, ask again."""
    for _ in range(3):  # records to commit, then their sent mark
        batch = state.next_batch(limit)
        if batch:
            return batch
        store_all(state)
    return []


# --- merge_counters ---------------------------------------------------------------------


def test_merge_counters_adds_keywise_and_nested() -> None:
    merged = merge_counters("likes", counts(n=2, by={"a": 1}), counts(n=3, by={"b": 4}, x=1.5))
    assert unpack(merged) == {"n": 5, "by": {"a": 1, "b": 4}, "x": 1.5}


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        (counts(n=1), counts(n={"a": 1})),
        (counts(n=1), counts(n="x")),
        (counts(n=True), counts(n=1)),
        (b"\xc1", counts(n=1)),
        (msgpack.packb([1, 2]), counts(n=1)),
    ],
)
def test_merge_counters_refuses_what_it_cannot_add(older: bytes, newer: bytes) -> None:
    with pytest.raises(MergeConflict) as exc:
        merge_counters("likes", older, newer)
    assert exc.value.kind == "likes"


def test_merge_counters_never_overflows_msgpack() -> None:
    merged = merge_counters("k", counts(n=2**63), counts(n=2**63))
    assert unpack(merged)["n"] == float(2**64)


# --- sequence numbers, storage, transmission --------------------------------------------


def test_seqs_start_at_one_and_only_stored_records_are_sent() -> None:
    s = SpoolState(BIG)
    s.ack(0)  # the collector's ack after the hello: nothing stored there yet
    assert [s.append("gift", b"g%d" % i, False, 1.0) for i in range(3)] == [1, 2, 3]
    assert s.next_batch(10) == []  # nothing is durable yet
    effects = s.take_effects()
    assert effects == [Store(r) for r in s.unacked()]
    s.on_stored(s.generation)
    # The sent mark is written ahead of the first transmission, then records go out.
    assert s.next_batch(2) == [] and s.take_effects() == [MarkSent(3)]
    assert not s.has_sendable()
    s.on_stored(s.generation)
    assert [r.seq for r in s.next_batch(2)] == [1, 2]
    assert [r.seq for r in s.next_batch(10)] == [3]
    assert s.next_batch(10) == [] and not s.has_sendable()


def test_ack_removes_through_seq_and_reconnect_resends_the_rest() -> None:
    s = SpoolState(BIG)
    for i in range(5):
        s.append("gift", b"%d" % i, False, 0.0)
    store_all(s)
    s.ack(0)
    assert len(transmit(s, 10)) == 5
    s.ack(2)
    assert s.take_effects() == [AckThrough(2)]
    s.ack(1)  # stale: nothing happens
    assert s.take_effects() == []
    s.on_reconnect()
    assert s.next_batch(10) == []  # not before the new connection's first ack
    s.ack(2)
    assert [r.seq for r in transmit(s, 10)] == [3, 4, 5]
    assert [r.seq for r in s.unacked()] == [3, 4, 5]
    assert s.stats().acked == 2


def test_restore_continues_after_the_highest_seq_and_fills_gaps() -> None:
    rows = [Record(4, "gift", 1.0, b"a", False), Record(6, "gift", 2.0, b"b", False)]
    s = SpoolState.restore(BIG, rows, acked_through=2, last_seq=8)
    assert s.next_seq == 9
    kinds = {r.seq: r.kind for r in s.unacked()}
    assert kinds == {3: LOST_KIND, 4: "gift", 5: LOST_KIND, 6: "gift", 7: LOST_KIND, 8: LOST_KIND}
    assert s.stats().lost == 4
    # The placeholders are stored like any record before they go out.
    assert {e.record.seq for e in s.take_effects() if isinstance(e, Store)} == {3, 5, 7, 8}
    s.ack(2)
    assert s.next_batch(10) == []
    s.on_stored(s.generation)
    assert [r.seq for r in s.next_batch(10)] == [3, 4, 5, 6, 7, 8]


def test_nothing_is_sent_before_the_connections_first_ack() -> None:
    s = SpoolState(BIG)
    s.append("gift", b"g", False, 0.0)
    store_all(s)
    assert not s.has_sendable() and s.next_batch(10) == []
    s.ack(0)  # stale, but it is the connection's first: transmission may start
    assert s.has_sendable()
    # The record was stored while disconnected: its sent mark is written first.
    assert s.next_batch(10) == [] and not s.has_sendable()
    assert s.take_effects() == [MarkSent(1)]
    s.on_stored(s.generation)
    assert [r.seq for r in s.next_batch(10)] == [1]


def test_records_above_the_sent_mark_stay_mergeable_after_a_restart() -> None:
    rows = [Record(seq, "likes", float(seq), counts(n=1), True) for seq in range(1, 6)]
    s = SpoolState.restore(
        Bounds(max_records=3, max_bytes=10**6, max_age_s=10**6), rows, 0, 5, sent_mark=2
    )
    s.append("likes", counts(n=1), True, 9.0)  # full: 3..6 are candidates, 1..2 are not
    held = {r.seq: r for r in s.unacked()}
    assert held[1] == rows[0] and held[2] == rows[1]
    assert unpack(held[3].payload) == {"n": 4}
    assert [merged_into(held[seq]) for seq in (4, 5, 6)] == [3, 3, 3]


def test_records_above_the_sent_mark_are_renumbered_when_the_collector_has_their_seqs() -> None:
    rows = [Record(seq, "gift", 0.0, b"%d" % seq, False) for seq in range(1, 5)]
    s = SpoolState.restore(BIG, rows, 0, 4, sent_mark=2)
    s.ack(3)  # the collector holds 1..3: 3 is someone else's record, 4 never left
    assert [(r.seq, r.payload) for r in s.unacked()] == [(4, b"3"), (5, b"4")]
    assert s.stats().resequenced == 2


def test_reserved_kinds_are_refused() -> None:
    with pytest.raises(SpoolError) as exc:
        SpoolState(BIG).append(OVERFLOW_KIND, b"", True, 0.0)
    assert exc.value.field == "kind"


def test_absurd_ack_is_the_peers_error() -> None:
    with pytest.raises(ProtocolError):
        SpoolState(BIG).ack(2**63)


def test_ack_beyond_anything_sent_renumbers_the_unsent_tail() -> None:
    # The store lost its tail (say, power loss at durability "os"): it restarts at 5
    # while the collector already holds 1..7. New records must not reuse 5..7.
    s = SpoolState.restore(BIG, [Record(4, "gift", 0.0, b"old", False)], acked_through=3)
    a, b = s.append("gift", b"new-a", False, 1.0), s.append("gift", b"new-b", False, 1.0)
    assert (a, b) == (5, 6)
    store_all(s)
    s.on_reconnect()
    s.ack(7)  # the collector's first ack after the hello
    effects = s.take_effects()
    assert effects[:2] == [Delete(5), Delete(6)]
    assert AckThrough(7) in effects
    assert [(r.seq, r.payload) for r in s.unacked()] == [(8, b"new-a"), (9, b"new-b")]
    assert s.next_seq == 10 and s.stats().resequenced == 2
    assert [r.seq for r in transmit(s, 10)] == [8, 9]


# --- bounds and the policy when full ---------------------------------------------------


def test_full_merges_oldest_mergeable_first_and_keeps_every_gift() -> None:
    s = SpoolState(Bounds(max_records=3, max_bytes=10**6, max_age_s=10**6))
    for i in range(3):
        s.append("likes", counts(n=1), True, float(i))  # seqs 1-3
    for i in range(4):
        s.append("gift", counts(id=i), False, 10.0 + i)  # seqs 4-7
    for i in range(2):
        s.append("likes", counts(n=1), True, 20.0 + i)  # seqs 8-9
    held = s.unacked()
    gifts = [r for r in held if r.kind == "gift"]
    likes = [r for r in held if r.kind == "likes"]
    assert [unpack(r.payload)["id"] for r in gifts] == [0, 1, 2, 3]  # never dropped
    assert len(likes) == 1 and likes[0].seq == 1  # the oldest absorbs the newer ones
    assert unpack(likes[0].payload) == {"n": 5}  # merged, nothing lost
    placeholders = [r for r in held if r.kind == MERGED_KIND]
    assert [(r.seq, merged_into(r)) for r in placeholders] == [(2, 1), (3, 1), (8, 1), (9, 1)]
    stats = s.stats()
    assert (stats.merged_bound, stats.over_bound, stats.overflowed) == (4, 2, 0)
    assert stats.data_records == 5 and stats.placeholders == 4
    # The seq stream stays free of gaps.
    assert [r.seq for r in held] == list(range(1, 10))


def test_when_only_unmergeable_records_remain_new_counts_go_to_one_overflow() -> None:
    s = SpoolState(Bounds(max_records=2, max_bytes=10**6, max_age_s=10**6))
    s.append("gift", b"g1", False, 0.0)
    s.append("vote", b"v1", False, 0.0)
    s.append("likes", counts(n=2), True, 1.0)
    s.append("shares", counts(n=1), True, 2.0)
    s.append("likes", counts(n=3), True, 3.0)
    held = {r.seq: r for r in s.unacked()}
    assert held[3].kind == OVERFLOW_KIND
    contents = overflow_contents(held[3])
    assert {k: unpack(v) for k, v in contents.items()} == {"likes": {"n": 5}, "shares": {"n": 1}}
    assert merged_into(held[4]) == 3 and merged_into(held[5]) == 3
    assert s.stats().overflowed == 3
    s.append("gift", b"g2", False, 4.0)  # still kept, beyond the bound
    assert s.unacked()[-1].payload == b"g2"
    assert s.stats().over_bound == 1


def test_records_older_than_max_age_merge_per_kind() -> None:
    s = SpoolState(Bounds(max_records=100, max_bytes=10**6, max_age_s=60.0))
    for t in range(0, 50, 10):
        s.append("likes", counts(n=1), True, float(t))  # seqs 1-5
    s.append("gift", b"g", False, 45.0)  # 6
    s.append("likes", counts(n=1), True, 41.0)  # 7: just inside max_age at t=100
    s.append("likes", counts(n=1), True, 100.0)  # 8: cutoff 40, so 2..5 merge into 1
    held = s.unacked()
    data = [(r.seq, r.kind) for r in held if r.kind != MERGED_KIND]
    assert data == [(1, "likes"), (6, "gift"), (7, "likes"), (8, "likes")]
    assert unpack(held[0].payload) == {"n": 5}
    assert held[0].created == 0.0  # the aggregate keeps the age of its oldest part
    assert s.stats().merged_age == 4


def test_transmitted_records_are_never_merged() -> None:
    s = SpoolState(Bounds(max_records=3, max_bytes=10**6, max_age_s=10**6))
    s.append("likes", counts(n=1), True, 0.0)
    s.append("likes", counts(n=1), True, 1.0)
    store_all(s)
    s.ack(0)
    sent = transmit(s, 10)
    s.append("likes", counts(n=1), True, 2.0)
    s.append("likes", counts(n=1), True, 3.0)
    held = {r.seq: r for r in s.unacked()}
    assert held[1] == sent[0] and held[2] == sent[1]  # untouched
    assert unpack(held[3].payload) == {"n": 2} and merged_into(held[4]) == 3


def test_merge_conflict_keeps_both_records() -> None:
    s = SpoolState(Bounds(max_records=1, max_bytes=10**6, max_age_s=10**6))
    s.append("likes", b"\xc1not msgpack", True, 0.0)
    s.append("likes", counts(n=1), True, 1.0)
    payloads = [r.payload for r in s.unacked()]
    assert b"\xc1not msgpack" in payloads
    assert s.stats().merge_conflicts == 1


def test_a_merge_function_that_raises_still_leaves_the_record_stored() -> None:
    def broken(kind: str, a: bytes, b: bytes) -> bytes:
        raise KeyError("bug")

    s = SpoolState(Bounds(max_records=1, max_bytes=10**6, max_age_s=10**6), merge=broken)
    s.append("likes", counts(n=1), True, 0.0)
    s.take_effects()
    with pytest.raises(KeyError):
        s.append("likes", counts(n=1), True, 1.0)
    # The store still hears about the record the state now holds.
    assert [e.record.seq for e in s.take_effects() if isinstance(e, Store)] == [2]


# --- the model-based test ----------------------------------------------------------------

MERGEABLE_KINDS = ("likes", "shares")
OTHER_KINDS = ("gift", "vote", "lottery")
by_key = st.dictionaries(st.sampled_from("ab"), st.integers(0, 9))
mergeable_payloads = st.fixed_dictionaries({"n": st.integers(0, 50)}, optional={"by": by_key})


def _durable(log: list[tuple[list[Effect], Any]]) -> tuple[dict[int, Record], int, int, int]:
    """What the store holds after applying the committed groups in order."""
    rows: dict[int, Record] = {}
    acked = last = mark = 0
    for effects, _info in log:
        for e in effects:
            if isinstance(e, Store):
                rows[e.record.seq] = e.record
                last = max(last, e.record.seq)
            elif isinstance(e, Delete):
                rows.pop(e.seq, None)
            elif isinstance(e, MarkSent):
                mark = max(mark, e.seq)
            else:
                for seq in [s for s in rows if s <= e.seq]:
                    del rows[seq]
                acked = max(acked, e.seq)
                last = max(last, e.seq)
    return rows, acked, last, mark


def _flatten(prefix: str, value: Any, out: Counter[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] += value


def _expected(log: list[tuple[list[Effect], Any]]) -> tuple[Counter[str], Counter[bytes]]:
    """The data of every append whose group is committed."""
    numbers: Counter[str] = Counter()
    others: Counter[bytes] = Counter()
    for _, info in log:
        if info is None:
            continue
        if info[0] == "counts":
            _flatten(info[1], info[2], numbers)
        else:
            others[info[2]] += 1
    return numbers, others


def _found(records: list[Record]) -> tuple[Counter[str], Counter[bytes]]:
    """The data held by ``records``: counts (overflow unpacked) and the other payloads."""
    numbers: Counter[str] = Counter()
    others: Counter[bytes] = Counter()
    for record in records:
        if record.kind in MERGEABLE_KINDS:
            _flatten(record.kind, unpack(record.payload), numbers)
        elif record.kind == OVERFLOW_KIND:
            for kind, payload in overflow_contents(record).items():
                _flatten(kind, unpack(payload), numbers)
        elif record.kind in OTHER_KINDS:
            others[record.payload] += 1
    return numbers, others


class SpoolMachine(RuleBasedStateMachine):
    """Spool + a model of its durable store + a model collector (dedup on seq, acks
    the highest contiguous seq). Crashes lose what is not committed; power loss (only
    at durability "os") loses committed groups at the tail."""

    def __init__(self) -> None:
        super().__init__()
        self.bounds = Bounds(max_records=4, max_bytes=120, max_age_s=50.0)
        self.now = 1000.0
        self.state: SpoolState | None = SpoolState(self.bounds)
        self.log: list[tuple[list[Effect], Any]] = []  # committed groups
        self.pending: list[tuple[int, list[Effect], Any]] = []  # (generation, effects, info)
        self.collector: dict[int, Record] = {}
        self.contiguous = 0
        self.ack_floor: int | None = None  # the connection's first ack; None: not yet
        self.last_seq_this_life = 0
        self.unique = 0
        self.power_lost = False
        self.paths: Counter[str] = Counter()  # policy paths taken, over every life

    def _note_paths(self) -> None:
        assert self.state is not None
        s = self.state.stats()
        for name, n in (
            ("merged", s.merged_bound + s.merged_age),
            ("overflowed", s.overflowed),
            ("over bound", s.over_bound),
            ("renumbered", s.resequenced),
        ):
            self.paths[name] += n

    # --- helpers ---

    def _take(self, info: Any) -> None:
        assert self.state is not None
        self.pending.append((self.state.generation, self.state.take_effects(), info))

    def _receive(self, records: list[Record]) -> None:
        for r in records:
            held = self.collector.get(r.seq)
            if held is None:
                self.collector[r.seq] = r
            elif not self.power_lost:
                # Exactly once in storage: a retransmission is the same record.
                assert held == r, (held, r)
        while self.contiguous + 1 in self.collector:
            self.contiguous += 1

    # --- rules ---

    @precondition(lambda self: self.state is not None)
    @rule(kind=st.sampled_from(MERGEABLE_KINDS), data=mergeable_payloads)
    def append_counts(self, kind: str, data: dict[str, Any]) -> None:
        assert self.state is not None
        durable_last = _durable(self.log)[2]
        seq = self.state.append(kind, msgpack.packb(data), True, self.now)
        assert seq > self.last_seq_this_life and seq > durable_last
        self.last_seq_this_life = seq
        self._take(("counts", kind, data))

    @precondition(lambda self: self.state is not None)
    @rule(kind=st.sampled_from(OTHER_KINDS))
    def append_other(self, kind: str) -> None:
        assert self.state is not None
        durable_last = _durable(self.log)[2]
        self.unique += 1
        payload = msgpack.packb({"id": self.unique})
        seq = self.state.append(kind, payload, False, self.now)
        assert seq > self.last_seq_this_life and seq > durable_last
        self.last_seq_this_life = seq
        self._take(("other", kind, payload))

    @rule(dt=st.floats(0.0, 30.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @precondition(lambda self: self.state is not None and self.pending)
    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        assert self.state is not None
        k = data.draw(st.integers(1, len(self.pending)))
        done, self.pending = self.pending[:k], self.pending[k:]
        self.log += [(effects, info) for _, effects, info in done]
        self.state.on_stored(done[-1][0])

    @precondition(lambda self: self.state is not None)
    @rule(limit=st.integers(1, 8))
    def transmit(self, limit: int) -> None:
        assert self.state is not None
        self._receive(self.state.next_batch(limit))
        self._take(None)  # the sent mark, when one had to be written first

    @precondition(lambda self: self.state is not None)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        assert self.state is not None
        if self.ack_floor is None:
            # The collector's first ack on a stream says what it holds right now.
            self.ack_floor = self.contiguous
            self.state.ack(self.contiguous)
        else:
            # Later acks lag, repeat or go missing, but never go below the first one.
            self.state.ack(data.draw(st.integers(self.ack_floor, self.contiguous)))
        self._take(None)

    @precondition(lambda self: self.state is not None)
    @rule()
    def crash(self) -> None:
        assert self.state is not None
        self._note_paths()
        self.state = None
        self.pending = []  # never committed: never reported stored

    @precondition(lambda self: self.state is None and self.log)
    @rule(data=st.data())
    def power_loss(self, data: st.DataObject) -> None:
        k = data.draw(st.integers(1, min(3, len(self.log))))
        self.log = self.log[:-k]
        self.power_lost = True

    @precondition(lambda self: self.state is None)
    @rule()
    def restart(self) -> None:
        rows, acked, last, mark = _durable(self.log)
        self.state = SpoolState.restore(self.bounds, rows.values(), acked, last, mark)
        self.last_seq_this_life = 0
        self.ack_floor = None
        self._take(None)

    @precondition(lambda self: self.state is not None)
    @rule()
    def replay(self) -> None:
        """Reconnect: the collector acks what it holds, everything unacked is resent."""
        assert self.state is not None
        self.state.on_reconnect()
        self.ack_floor = self.contiguous
        self.state.ack(self.contiguous)
        while True:
            self._take(None)
            self.log += [(effects, info) for _, effects, info in self.pending]
            self.state.on_stored(self.state.generation)
            self.pending = []
            generation = self.state.generation
            batch = self.state.next_batch(5)
            if batch:
                self._receive(batch)
            elif self.state.generation == generation:
                break  # nothing left, and no sent mark to commit first
        # Everything held went out, and the collector saw no gap.
        assert self.contiguous == self.state.next_seq - 1
        rows = _durable(self.log)[0]
        assert set(rows) <= set(self.collector)
        # End to end: every stored append is at the collector now, none lost to a
        # reused seq (even after power loss at durability "os").
        numbers, others = _expected(self.log)
        got_numbers, got_others = _found(list(self.collector.values()))
        assert numbers - got_numbers == Counter()
        assert others - got_others == Counter()

    def teardown(self) -> None:
        # Coverage of the interesting paths (pytest --hypothesis-show-statistics).
        if self.state is not None:
            self._note_paths()
        for name in ("merged", "overflowed", "over bound", "renumbered"):
            event(f"{name}: {self.paths[name] > 0}")
        event(f"power lost: {self.power_lost}")

    # --- invariants ---

    @invariant()
    def stored_data_is_acked_or_held(self) -> None:
        rows, acked, last, _ = _durable(self.log)
        assert all(acked < seq <= last for seq in rows)
        assert len(rows) == last - acked  # no gaps in what the store holds
        # What is stored locally and not (identically) at the collector yet. After a power
        # loss a row may differ from the collector's copy of the same seq: a reused seq,
        # renumbered at the next ack, or a merge that was undone. Count both then.
        local = [r for seq, r in rows.items() if self.collector.get(seq) != r]
        found_counts, found_other = _found([*self.collector.values(), *local])
        expected_counts, expected_other = _expected(self.log)
        # Gifts, votes and lottery entries: every one stored is held or delivered, once.
        assert expected_other - found_other == Counter()
        # Merged counts add up.
        assert expected_counts - found_counts == Counter()
        if not self.power_lost:
            assert found_other == expected_other
            assert +found_counts == +expected_counts

    @invariant()
    def stats_agree(self) -> None:
        if self.state is None:
            return
        s = self.state.stats()
        assert s.depth == s.next_seq - 1 - s.acked_through
        assert s.data_records + s.placeholders == s.depth
        held = self.state.unacked()
        assert [r.seq for r in held] == list(range(s.acked_through + 1, s.next_seq))
        assert s.bytes == sum(len(r.payload) for r in held if not r.is_placeholder)


SpoolMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    database=None,  # no example files left in the shared working tree
    suppress_health_check=[HealthCheck.too_slow],
)
TestSpoolModel = SpoolMachine.TestCase
