"""The durable spool's sequence logic, sans-I/O: inputs and ``now`` in, effects out.

What goes in: ``append`` (a record from the summaries pipeline), ``ack`` (the
collector's highest contiguous stored seq), ``next_batch``/``on_reconnect`` (the
link asking what to transmit), ``on_stored`` (the store saying a batch of effects is
durable). What comes out: ``take_effects()``, the changes the store must make
(``Store``, ``Delete``, ``AckThrough``, ``MarkSent``), applied in order, each group
in one transaction.
This module never reads a clock, touches a file, sleeps or logs.

Sequence numbers. Each record gets the next seq (1, 2, 3, ...), never reused across
restarts once stored (``restore`` continues after the highest seq the store knows).
The wire contract (proto/edge_node/v1/edge.proto) wants seqs **without gaps**: the
collector acks the highest *contiguous* seq it stored. So nothing here ever removes a
seq except an ack: the rows held are always exactly ``acked_through + 1 ..
next_seq - 1``. A record merged into another leaves a placeholder row
(``MERGED_KIND``, payload: msgpack int of the seq that now holds its data), and a
record the store lost (damaged file) is filled by a ``LOST_KIND`` placeholder, so the
link still sends *something* for every seq and the collector never waits for a gap.

Only stored records are transmitted: ``next_batch`` stops at the first record whose
latest version is not yet durable (``on_stored``), so the collector never holds a seq
whose content could still change or vanish in a crash. And nothing is transmitted on
a connection before its first ack (the collector sends one right after the hello):
if the store lost its tail, that ack is how the node learns which seqs the collector
already holds, and records that would reuse them are renumbered first (``ack``).

The sent mark. Before a record is handed to the link, a ``MarkSent`` covering it is
committed (write-ahead: ``next_batch`` emits it when the link first asks for the
record, and hands the record out once it is durable, one group commit later). After
a restart, records up to the mark may be at the collector: they are never merged or
renumbered. Records above it were certainly never transmitted (appended during an
outage, say), so they stay mergeable and can be renumbered safely. The mark covers
only seqs already assigned, and is written only when the link asks, so records
appended while the link is down stay mergeable whatever the link does.

When full (``Bounds``: data records, payload bytes, age), in this order:

1. Age: mergeable records older than ``max_age_s`` are merged into the oldest record
   of the same kind (one aggregate per kind).
2. Count/bytes: the oldest pair of mergeable records of one kind is merged (the newer
   into the older), repeatedly, until the spool fits.
3. Still full and the new record is mergeable: it goes into the single overflow
   aggregate (``OVERFLOW_KIND``, payload: msgpack map ``{kind: merged payload}``).
4. Still full and the new record is not mergeable (gifts, votes, lottery entries):
   it is kept beyond the bound. Nothing that is not mergeable is ever dropped.

Every merge, overflow and over-bound record is counted in ``stats()``.

Merging only touches records that were never transmitted: a record that may already
be at the collector (at or below the sent mark) is frozen, because the collector
dedups on (node, seq) and would never see the change. How payloads merge is the
caller's choice (``merge``): the default, ``merge_counters``, adds msgpack maps of
numbers key by key (nested maps too); a merge function raises ``MergeConflict`` when
two payloads cannot be merged, and the pair is then left as it is (counted), never
lost.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from edge_node.errors import EdgeNodeError, ProtocolError

MERGED_KIND = "spool.merged"
LOST_KIND = "spool.lost"
OVERFLOW_KIND = "spool.overflow"
PLACEHOLDER_KINDS = frozenset({MERGED_KIND, LOST_KIND})
RESERVED_KIND_PREFIX = "spool."
# Far below SQLite's signed 64-bit limit: an ack above this is the peer's bug, not a seq.
MAX_SEQ = 2**62


class SpoolError(EdgeNodeError):
    """The spool was used in a way it cannot honour; ``field`` names what was wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"spool {field}: {reason}")
        self.field = field
        self.reason = reason


class MergeConflict(SpoolError):
    """Two payloads of ``kind`` cannot be merged (raised by merge functions)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"merge of {kind!r}", reason)
        self.kind = kind


MergeFn = Callable[[str, bytes, bytes], bytes]
"""``merge(kind, older_payload, newer_payload) -> merged payload``; raises MergeConflict."""


@dataclass(frozen=True, slots=True)
class Record:
    """One row of the spool. ``created``: wall-clock seconds when appended."""

    seq: int
    kind: str
    created: float
    payload: bytes
    mergeable: bool

    @property
    def is_placeholder(self) -> bool:
        return self.kind in PLACEHOLDER_KINDS


@dataclass(frozen=True, slots=True)
class Bounds:
    """When the spool counts as full. ``max_records`` counts records holding data
    (placeholders excluded: they cost a few dozen bytes each)."""

    max_records: int
    max_bytes: int
    max_age_s: float

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_bytes < 1 or not self.max_age_s >= 0:
            raise SpoolError("bounds", f"must be positive, got {self!r}")


# --- effects: what the store must do, in order -----------------------------------------


@dataclass(frozen=True, slots=True)
class Store:
    """Insert the row, or replace the row with the same seq."""

    record: Record


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove the row (only when seqs are renumbered, see ``SpoolState.ack``)."""

    seq: int


@dataclass(frozen=True, slots=True)
class AckThrough:
    """Remove every row with seq <= ``seq`` and remember ``seq`` as acknowledged."""

    seq: int


@dataclass(frozen=True, slots=True)
class MarkSent:
    """Remember that records up to ``seq`` may be transmitted from now on."""

    seq: int


Effect = Store | Delete | AckThrough | MarkSent


@dataclass(frozen=True, slots=True)
class SpoolStats:
    depth: int  # rows held: everything not yet acked, placeholders included
    data_records: int
    placeholders: int
    bytes: int  # payload bytes of the data records
    next_seq: int
    acked_through: int
    sent_mark: int  # records up to here may be at the collector (frozen)
    appended: int  # counters from here on: since this state was created
    acked: int
    merged_bound: int
    merged_age: int
    overflowed: int
    over_bound: int
    merge_conflicts: int
    resequenced: int
    lost: int


# --- the default merge: msgpack maps of counters ---------------------------------------


def _unpack(kind: str, payload: bytes) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, TypeError) as exc:  # msgpack's decode errors are ValueErrors
        raise MergeConflict(kind, f"payload is not msgpack: {exc}") from None


def _add(kind: str, a: Any, b: Any, path: str) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for key, value in b.items():
            out[key] = _add(kind, out[key], value, f"{path}.{key}") if key in out else value
        return out
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers):
        if isinstance(a, bool) or isinstance(b, bool):
            raise MergeConflict(kind, f"{path or 'payload'} is a bool, not a count")
        total = a + b
        if isinstance(total, int) and not -(2**63) <= total < 2**64:
            return float(total)  # msgpack has no bigger int; a float keeps the magnitude
        return total
    raise MergeConflict(
        kind, f"{path or 'payload'}: cannot add {type(a).__name__} and {type(b).__name__}"
    )


def merge_counters(kind: str, older: bytes, newer: bytes) -> bytes:
    """Add two msgpack maps of numbers key by key (nested maps recursively)."""
    a, b = _unpack(kind, older), _unpack(kind, newer)
    if not isinstance(a, dict) or not isinstance(b, dict):
        raise MergeConflict(kind, "payload is not a msgpack map")
    return msgpack.packb(_add(kind, a, b, ""), use_bin_type=True)  # type: ignore[no-any-return]


def merged_into(record: Record) -> int | None:
    """For a MERGED_KIND placeholder: the seq of the record holding its data."""
    if record.kind != MERGED_KIND:
        return None
    target = msgpack.unpackb(record.payload)
    return int(target)


def overflow_contents(record: Record) -> dict[str, bytes]:
    """For an OVERFLOW_KIND record: the merged payload of each kind it holds."""
    contents = msgpack.unpackb(record.payload, raw=False)
    return {str(k): bytes(v) for k, v in contents.items()}


# --- the state machine -----------------------------------------------------------------


class _Entry:
    """One held row; mutable, owned by the state (only frozen Records leave it)."""

    __slots__ = ("gen", "record", "sent")

    def __init__(self, record: Record, gen: int, sent: bool) -> None:
        self.record = record
        self.gen = gen  # effect generation of the latest Store of this row
        self.sent = sent  # covered by the sent mark: frozen from then on


class SpoolState:
    """Per-node sequence numbers, bounds and retransmission for the durable spool."""

    def __init__(self, bounds: Bounds, merge: MergeFn = merge_counters) -> None:
        self.bounds = bounds
        self._merge = merge
        self._entries: dict[int, _Entry] = {}  # keys: acked_through+1 .. next_seq-1
        self._next_seq = 1
        self._acked = 0
        self._sent_mark = 0  # the highest MarkSent emitted (durable or not)
        self._durable_mark = 0  # ... and the highest known to be committed
        self._pending_mark: tuple[int, int] | None = None  # (mark, its generation)
        self._send_from = 1
        self._awaiting_ack = True  # no transmission on a connection before its first ack
        # Unsent mergeable data records per kind, oldest first: the merge candidates.
        self._mergeable: dict[str, deque[int]] = {}
        self._overflow: int | None = None  # the unsent overflow aggregate
        self._data = 0
        self._bytes = 0
        self._effects: list[Effect] = []
        self._generation = 0
        self._durable_gen = 0
        self._deferred: int | None = None  # the record being appended: stored once, at the end
        self._appended = self._acked_count = 0
        self._merged_bound = self._merged_age = self._overflowed = self._over_bound = 0
        self._merge_conflicts = self._resequenced = self._lost = 0

    @classmethod
    def restore(
        cls,
        bounds: Bounds,
        records: Iterable[Record],
        acked_through: int,
        last_seq: int = 0,
        sent_mark: int | None = None,
        merge: MergeFn = merge_counters,
    ) -> SpoolState:
        """The state after a restart, from what the store holds.

        ``last_seq``: the highest seq the store remembers assigning (its meta row); seqs
        continue after it, after ``acked_through`` and after every record. A seq missing
        between ``acked_through`` and the top (a record the store lost) is filled with a
        LOST_KIND placeholder, stored like any append. ``sent_mark``: the store's
        durable sent mark; None (unknown) treats every record as possibly transmitted.
        """
        state = cls(bounds, merge)
        state._acked = acked_through
        by_seq = {r.seq: r for r in records if r.seq > acked_through}
        top = max([last_seq, acked_through, *by_seq])
        mark = top if sent_mark is None else max(min(sent_mark, top), acked_through)
        for seq in range(acked_through + 1, top + 1):
            record = by_seq.get(seq)
            if record is None:
                state._lost += 1
                record = Record(seq, LOST_KIND, 0.0, b"", False)
                entry = _Entry(record, 0, seq <= mark)
                state._entries[seq] = entry
                state._emit_store(entry)
                continue
            sent = seq <= mark
            state._entries[seq] = _Entry(record, 0, sent)
            if record.is_placeholder:
                continue
            state._data += 1
            state._bytes += len(record.payload)
            if not sent and record.kind == OVERFLOW_KIND:
                state._overflow = seq
            elif not sent and record.mergeable:
                state._mergeable.setdefault(record.kind, deque()).append(seq)
        state._next_seq = top + 1
        state._sent_mark = state._durable_mark = mark
        state._send_from = acked_through + 1
        return state

    # --- inputs ---------------------------------------------------------------------

    def append(self, kind: str, payload: bytes, mergeable: bool, now: float) -> int:
        """Add a record; returns its seq. ``now``: wall-clock seconds (it is persisted).

        The seq is the record's until it is acked; if the bounds force a merge, the seq
        becomes a placeholder that names the record now holding the data.
        """
        if kind.startswith(RESERVED_KIND_PREFIX):
            raise SpoolError("kind", f"{kind!r}: kinds starting with 'spool.' are reserved")
        seq = self._next_seq
        self._next_seq += 1
        self._appended += 1
        entry = _Entry(Record(seq, kind, now, payload, mergeable), 0, False)
        self._entries[seq] = entry
        self._data += 1
        self._bytes += len(payload)
        self._deferred = seq
        try:
            if mergeable:
                self._mergeable.setdefault(kind, deque()).append(seq)
            self._compact_age(now)
            if self._full():
                self._compact_bound()
                if self._full():
                    if entry.record.kind == kind and mergeable and self._alone(kind, seq):
                        self._into_overflow(seq)
                    elif not entry.record.is_placeholder:
                        self._over_bound += 1
        finally:
            # Whatever happened above, the store sees the record's final version.
            self._deferred = None
            self._emit_store(self._entries[seq])
        return seq

    def ack(self, highest_contiguous_seq: int) -> None:
        """The collector stored every seq up to ``highest_contiguous_seq``.

        Stale acks (not above the last one) change nothing, except that the first ack
        of a connection starts transmission. An ack above the sent mark means the
        collector holds seqs this node lost (a damaged store, or power loss at
        durability "os"): records never transmitted are then renumbered after the ack
        (counted in ``resequenced``), because the collector would discard them as
        duplicates of what it already holds.
        """
        n = highest_contiguous_seq
        if n > MAX_SEQ:
            raise ProtocolError("ack", f"{n} is not a plausible sequence number")
        self._awaiting_ack = False
        if n <= self._acked:
            return
        if n > self._sent_mark:
            self._renumber_after(n)
        for seq in range(self._acked + 1, min(n, self._next_seq - 1) + 1):
            entry = self._entries.pop(seq, None)
            if entry is not None:
                self._acked_count += 1
                if not entry.record.is_placeholder:
                    self._data -= 1
                    self._bytes -= len(entry.record.payload)
        self._acked = n
        self._emit(AckThrough(n))
        self._send_from = max(self._send_from, n + 1)
        self._sent_mark = max(self._sent_mark, n)
        self._durable_mark = max(self._durable_mark, n)
        if self._overflow is not None and self._overflow <= n:
            self._overflow = None

    def on_stored(self, generation: int) -> None:
        """Every effect up to ``generation`` (see ``generation``) is durable."""
        if generation > self._durable_gen:
            self._durable_gen = generation
        pending = self._pending_mark
        if pending is not None and pending[1] <= generation:
            self._durable_mark = max(self._durable_mark, pending[0])
            self._pending_mark = None

    def on_reconnect(self) -> None:
        """A new connection: transmit again from the lowest unacked seq, once the
        connection's first ack has arrived."""
        self._send_from = self._acked + 1
        self._awaiting_ack = True

    def on_disconnect(self) -> None:
        """The connection is gone: nothing is handed out until the next one's first ack."""
        self._awaiting_ack = True

    # --- outputs --------------------------------------------------------------------

    def take_effects(self) -> list[Effect]:
        """The row changes since the last call, in order; apply them as one group."""
        effects, self._effects = self._effects, []
        return effects

    @property
    def generation(self) -> int:
        """How many effects were produced so far; pass to ``on_stored`` once durable."""
        return self._generation

    def next_batch(self, limit: int) -> list[Record]:
        """Up to ``limit`` stored records to transmit next, in seq order.

        Stops at the first record whose latest version is not durable yet. Records
        handed out are frozen (never merged) from then on. Empty until the first ack
        of the connection (see the module docstring).
        """
        out: list[Record] = []
        if self._awaiting_ack:
            return out
        seq, end = self._send_from, self._next_seq
        while seq < end and len(out) < limit:
            entry = self._entries[seq]
            if entry.gen > self._durable_gen:
                break
            if seq > self._durable_mark:
                if seq > self._sent_mark:
                    # Write the mark ahead of transmitting; it covers every seq assigned
                    # so far, and the next call goes on once it is committed.
                    self._mark_through(end - 1)
                break
            out.append(entry.record)
            seq += 1
        self._send_from = seq
        return out

    def has_sendable(self) -> bool:
        """True when ``next_batch`` would return records, or start the write of the
        sent mark they wait for."""
        seq = self._send_from
        if self._awaiting_ack or seq >= self._next_seq:
            return False
        if self._entries[seq].gen > self._durable_gen:
            return False
        return seq <= self._durable_mark or seq > self._sent_mark

    def unacked(self) -> list[Record]:
        """Every row held, placeholders included, in seq order (stored or not yet)."""
        return [self._entries[s].record for s in range(self._acked + 1, self._next_seq)]

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def acked_through(self) -> int:
        return self._acked

    @property
    def depth(self) -> int:
        return len(self._entries)

    @property
    def counted_events(self) -> int:
        """Changes of any counter in ``stats()`` other than ``appended``: a cheap check
        for adapters that mirror the counters into metrics."""
        return (
            self._acked_count
            + self._merged_bound
            + self._merged_age
            + self._overflowed
            + self._over_bound
            + self._merge_conflicts
            + self._resequenced
            + self._lost
        )

    @property
    def bytes(self) -> int:
        return self._bytes

    def stats(self) -> SpoolStats:
        return SpoolStats(
            depth=len(self._entries),
            data_records=self._data,
            placeholders=len(self._entries) - self._data,
            bytes=self._bytes,
            next_seq=self._next_seq,
            acked_through=self._acked,
            sent_mark=self._sent_mark,
            appended=self._appended,
            acked=self._acked_count,
            merged_bound=self._merged_bound,
            merged_age=self._merged_age,
            overflowed=self._overflowed,
            over_bound=self._over_bound,
            merge_conflicts=self._merge_conflicts,
            resequenced=self._resequenced,
            lost=self._lost,
        )

    # --- internals ------------------------------------------------------------------

    def _emit(self, effect: Effect) -> None:
        self._generation += 1
        self._effects.append(effect)

    def _emit_store(self, entry: _Entry) -> None:
        if entry.record.seq == self._deferred:
            return
        self._emit(Store(entry.record))
        entry.gen = self._generation

    def _replace(self, entry: _Entry, record: Record) -> None:
        old = entry.record
        if not old.is_placeholder:
            self._data -= 1
            self._bytes -= len(old.payload)
        if not record.is_placeholder:
            self._data += 1
            self._bytes += len(record.payload)
        entry.record = record
        self._emit_store(entry)

    def _full(self) -> bool:
        return self._data > self.bounds.max_records or self._bytes > self.bounds.max_bytes

    def _alone(self, kind: str, seq: int) -> bool:
        dq = self._mergeable.get(kind)
        return dq is not None and len(dq) == 1 and dq[0] == seq

    def _emit_mark(self, seq: int) -> None:
        self._sent_mark = max(self._sent_mark, seq)
        self._emit(MarkSent(self._sent_mark))
        self._pending_mark = (self._sent_mark, self._generation)

    def _mark_through(self, top: int) -> None:
        """Freeze every record up to ``top`` and write the mark that covers them.

        Invariant: every record at or below the sent mark is frozen."""
        for seq in range(self._sent_mark + 1, top + 1):
            entry = self._entries.get(seq)
            if entry is not None and not entry.sent:
                self._freeze(entry)
        self._emit_mark(top)

    def _freeze(self, entry: _Entry) -> None:
        entry.sent = True
        record = entry.record
        if record.seq == self._overflow:
            self._overflow = None
        dq = self._mergeable.get(record.kind)
        if dq and dq[0] == record.seq:  # frozen in seq order: it is the oldest candidate
            dq.popleft()

    def _compact_age(self, now: float) -> None:
        cutoff = now - self.bounds.max_age_s
        for kind, dq in self._mergeable.items():
            while len(dq) >= 2 and self._entries[dq[1]].record.created <= cutoff:
                self._merge_front(kind, dq, "age")

    def _compact_bound(self) -> None:
        while self._full():
            best: tuple[int, str, deque[int]] | None = None
            for kind, dq in self._mergeable.items():
                if len(dq) >= 2 and (best is None or dq[1] < best[0]):
                    best = (dq[1], kind, dq)
            if best is None:
                return
            self._merge_front(best[1], best[2], "bound")

    def _merge_front(self, kind: str, dq: deque[int], reason: str) -> None:
        """Merge the second-oldest candidate of ``kind`` into the oldest."""
        older, newer = self._entries[dq[0]], self._entries[dq[1]]
        try:
            payload = self._merge(kind, older.record.payload, newer.record.payload)
        except MergeConflict:
            # Leave both as they are; the older one stops being a candidate so the
            # loop moves on. Nothing is lost, the conflict is counted.
            self._merge_conflicts += 1
            dq.popleft()
            return
        self._replace(older, dataclasses.replace(older.record, payload=payload))
        self._replace(newer, self._placeholder(newer.record, older.record.seq))
        del dq[1]
        if reason == "age":
            self._merged_age += 1
        else:
            self._merged_bound += 1

    def _placeholder(self, record: Record, target: int) -> Record:
        return Record(record.seq, MERGED_KIND, record.created, msgpack.packb(target), False)

    def _into_overflow(self, seq: int) -> None:
        entry = self._entries[seq]
        record = entry.record
        overflow = self._entries[self._overflow] if self._overflow is not None else None
        if overflow is None:
            contents = {record.kind: record.payload}
            aggregate = Record(
                seq, OVERFLOW_KIND, record.created, msgpack.packb(contents, use_bin_type=True), True
            )
            self._replace(entry, aggregate)
            self._overflow = seq
        else:
            contents = overflow_contents(overflow.record)
            held = contents.get(record.kind)
            try:
                merged = record.payload
                if held is not None:
                    merged = self._merge(record.kind, held, record.payload)
            except MergeConflict:
                self._merge_conflicts += 1
                self._over_bound += 1
                self._mergeable[record.kind].clear()
                return
            contents[record.kind] = merged
            packed = msgpack.packb(contents, use_bin_type=True)
            self._replace(overflow, dataclasses.replace(overflow.record, payload=packed))
            self._replace(entry, self._placeholder(record, overflow.record.seq))
        self._mergeable[record.kind].clear()
        self._overflowed += 1

    def _renumber_after(self, n: int) -> None:
        """Give the never-transmitted records seqs n+1, n+2, ... (order kept)."""
        first = self._sent_mark + 1
        old_seqs = list(range(first, self._next_seq))
        if not old_seqs:
            self._next_seq = max(self._next_seq, n + 1)
            return
        mapping = {old: n + 1 + i for i, old in enumerate(old_seqs)}
        moved = [self._entries.pop(old) for old in old_seqs]
        for old in old_seqs:
            self._emit(Delete(old))
        for entry in moved:
            record = entry.record
            target = merged_into(record)
            if target is not None and target in mapping:
                record = self._placeholder(record, mapping[target])
            entry.record = dataclasses.replace(record, seq=mapping[record.seq])
            self._entries[entry.record.seq] = entry
            self._emit_store(entry)
        for dq in self._mergeable.values():
            remapped = [mapping.get(s, s) for s in dq]
            dq.clear()
            dq.extend(remapped)
        if self._overflow is not None:
            self._overflow = mapping.get(self._overflow, self._overflow)
        self._resequenced += len(old_seqs)
        self._next_seq = n + 1 + len(old_seqs)
