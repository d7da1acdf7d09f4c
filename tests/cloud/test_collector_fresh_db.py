"""A collector that lost its database must not stop acking a node.

The node's Hello carries ``acked_through`` (everything below its spool was acked
by someone); the collector records the seqs it lacks below it as acknowledged
elsewhere (a gap, not data) and acks from there. Tested with the node's real spool
and link against real collectors on loopback, and with the bare protocol.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_node.cloud import collector as col
from tests.cloud.test_collector import FakeNode, LinkedNode, until

pytestmark = pytest.mark.timeout(40)


async def seqs_of(c: col.Collector, node_id: str = "venue-1") -> list[int]:
    return [s.seq async for s in c.store.query_summaries(node_id)]


async def test_a_collector_restarted_on_an_empty_database_resumes_acking(
    tmp_path: Path,
) -> None:
    first = await col.serve("127.0.0.1:0", tmp_path / "first.db")
    address = first.address
    node = await LinkedNode.start(tmp_path, address)
    second: col.Collector | None = None
    try:
        await node.append(5)
        await until(lambda: node.caught_up(5), 10)
        await first.stop(grace_s=0.5)
        stored_first = await _stored_in(tmp_path / "first.db")
        assert stored_first == [1, 2, 3, 4, 5]

        # The database is gone (a new disk): the node's spool goes on at 6.
        await node.append(3)
        second = await col.serve(address, tmp_path / "second.db")
        await until(lambda: node.caught_up(8), 15)
        await node.append(2)
        await until(lambda: node.caught_up(10), 10)

        assert await seqs_of(second) == [6, 7, 8, 9, 10]
        assert await second.store.acked_elsewhere("venue-1") == [col.SeqGap(1, 5)]
        (info,) = await second.list_nodes()
        assert info.highest_contiguous_seq == 10 and info.acked_elsewhere == 5
        # Nothing the node had not seen acked is lost: the two databases hold every seq.
        assert sorted({*stored_first, *await seqs_of(second)}) == list(range(1, 11))
        assert node.spool.stats().resequenced == 0  # no seq was renumbered either
    finally:
        await node.stop()
        if second is not None:
            await second.stop(grace_s=0.5)


async def _stored_in(db: Path) -> list[int]:
    c = col.CollectorStore(db)
    await c.open()
    try:
        return [s.seq async for s in c.query_summaries("venue-1")]
    finally:
        await c.close()


async def test_unacked_summaries_are_delivered_again_to_the_fresh_database(
    tmp_path: Path,
) -> None:
    """The old collector stored 1..5 but its acks for 4 and 5 never reached the node
    (acked_through 3): the new one records 1..3 only and stores 4, 5 again."""
    c = await col.serve("127.0.0.1:0", tmp_path / "fresh.db")
    try:
        node = await FakeNode(c.address, "venue-1", acked_through=3).connect()
        await node.wait_ack(3)
        assert node.acks[0] == 3  # the Hello's ack already covers the gap
        for seq in (4, 5, 6):
            await node.summary(seq)
        await node.wait_ack(6)
        assert await seqs_of(c) == [4, 5, 6]
        assert await c.store.acked_elsewhere("venue-1") == [col.SeqGap(1, 3)]
        await node.close()
    finally:
        await c.stop(grace_s=0.5)


async def test_the_gap_is_recorded_once_and_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "keep.db"
    c = await col.serve("127.0.0.1:0", db)
    node = await FakeNode(c.address, "venue-1", acked_through=499).connect()
    await node.summary(500)
    await node.wait_ack(500)
    await node.close()
    await c.stop(grace_s=0.5)

    c = await col.serve("127.0.0.1:0", db)
    try:
        # A later Hello with an older or equal claim adds nothing.
        for claim in (0, 499, 500):
            node = await FakeNode(c.address, "venue-1", acked_through=claim).connect()
            await node.wait_ack(500)
            assert node.acks[0] == 500
            await node.close()
        assert await c.store.acked_elsewhere("venue-1") == [col.SeqGap(1, 499)]
        assert await seqs_of(c) == [500]
    finally:
        await c.stop(grace_s=0.5)


async def test_stored_seqs_beyond_the_claim_join_the_ack(tmp_path: Path) -> None:
    """A database restored from an old copy holds 1, 2 and 6; the node acked 1..4
    elsewhere meanwhile: the gap is 3..4 and the ack waits for 5 only."""
    c = await col.serve("127.0.0.1:0", tmp_path / "restored.db")
    try:
        node = await FakeNode(c.address, "venue-1").connect()
        for seq in (1, 2, 6):
            await node.summary(seq)
        await until(lambda: c.store.stored == 3)
        await node.wait_ack(2)
        await node.close()

        node = await FakeNode(c.address, "venue-1", acked_through=4).connect()
        await node.wait_ack(4)
        await node.summary(5)
        await node.wait_ack(6)
        assert await c.store.acked_elsewhere("venue-1") == [col.SeqGap(3, 4)]
        assert await seqs_of(c) == [1, 2, 5, 6]
        await node.close()
    finally:
        await c.stop(grace_s=0.5)


async def test_an_absurd_claim_is_invalid_argument(tmp_path: Path) -> None:
    c = await col.serve("127.0.0.1:0", tmp_path / "absurd.db")
    try:
        node = await FakeNode(c.address, "venue-1", acked_through=2**64 - 1).connect()
        code = await node.wait_ended()
        assert code.name == "INVALID_ARGUMENT", node.error
        assert node.error is not None and "acked_through" in (node.error.details() or "")
        await node.close()
        assert await c.list_nodes() == []
    finally:
        await c.stop(grace_s=0.5)
