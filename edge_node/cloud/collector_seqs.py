"""Which seqs of one node the collector holds: the highest contiguous one is the ack.

Sans-I/O: plain integers in, plain integers out; the store owns one tracker per node
on its database thread and persists what it says.
"""

from __future__ import annotations

from edge_node.cloud.collector_records import SeqGap


class ContiguousSeqs:
    """Tracks which seqs of one node are stored; ``highest`` is the largest n such
    that 1..n are all accounted for (stored, or acknowledged elsewhere: see
    ``skip_through``). Seqs stored beyond a gap wait in ``above``."""

    __slots__ = ("above", "highest")

    def __init__(self, highest: int = 0, above: set[int] | None = None) -> None:
        self.highest = highest
        self.above: set[int] = set(above or ())

    def add(self, seq: int) -> bool:
        """Record ``seq``; False when it was already recorded."""
        if seq <= self.highest or seq in self.above:
            return False
        if seq != self.highest + 1:
            self.above.add(seq)
            return True
        self.highest = seq
        self._extend()
        return True

    def skip_through(self, acked_through: int) -> list[SeqGap]:
        """The node says every seq up to ``acked_through`` was acknowledged already
        (its spool no longer holds them): count them as accounted for, so the ack
        moves on instead of waiting for seqs that will never come. Returns the runs of
        seqs that were *not* stored here (the gaps to record), in order; nothing when
        ``acked_through`` is not above ``highest``."""
        if acked_through <= self.highest:
            return []
        gaps: list[SeqGap] = []
        start = self.highest + 1
        for seq in sorted(s for s in self.above if s <= acked_through):
            if seq > start:
                gaps.append(SeqGap(start, seq - 1))
            start = seq + 1
            self.above.discard(seq)
        if start <= acked_through:
            gaps.append(SeqGap(start, acked_through))
        self.highest = acked_through
        self._extend()
        return gaps

    def copy(self) -> ContiguousSeqs:
        return ContiguousSeqs(self.highest, self.above)

    def _extend(self) -> None:
        while self.highest + 1 in self.above:
            self.above.remove(self.highest + 1)
            self.highest += 1
