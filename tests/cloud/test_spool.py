"""The durable spool on real SQLite: group commit, kill -9, damaged files, failed commits."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_node.cloud.spool import (
    Spool,
    SpoolMetrics,
    SpoolWriteError,
    SpoolWriter,
    iter_rows,
    load,
    spool_path,
)
from edge_node.cloud.spool_state import LOST_KIND, Bounds, Record, SpoolState
from edge_node.config import Config, NodeConfig, SpoolConfig
from edge_node.metrics import Registry

BIG = Bounds(max_records=10**6, max_bytes=10**9, max_age_s=10**9)


async def open_spool(
    path: Path,
    registry: Registry | None = None,
    *,
    durability: str = "os",
    commit_interval_s: float = 0.005,
) -> Spool:
    return await Spool.open(
        path,
        bounds=BIG,
        registry=registry or Registry(),
        node_id="n1",
        durability=durability,
        commit_interval_s=commit_interval_s,
    )


async def transmit_all(spool: Spool) -> list[Record]:
    """What the link does after the connection's first ack, until everything went out."""
    out: list[Record] = []
    last = spool.state.acked_through
    while last < spool.state.next_seq - 1:
        await asyncio.wait_for(spool.wait_sendable(), 2.0)
        out += spool.next_batch(100)
        last = out[-1].seq if out else last
    return out


def meta(path: Path) -> dict[str, object]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())


# --- append, ack, reload -----------------------------------------------------------------


async def test_append_ack_reload_continues_the_seqs(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = await open_spool(path)
    seqs = [await spool.append("gift", b"g%d" % i) for i in range(10)]
    assert seqs == list(range(1, 11))
    spool.on_reconnect()
    spool.ack(0)  # the collector's first ack: it holds nothing yet
    sent = await transmit_all(spool)
    assert [r.seq for r in sent] == seqs
    spool.ack(4)
    await spool.close()

    loaded = load(path, "n1")
    assert (loaded.acked_through, loaded.last_seq, loaded.sent_mark) == (4, 10, 10)
    assert [(r.seq, r.payload) for r in loaded.records] == [(s, b"g%d" % (s - 1)) for s in seqs[4:]]
    assert loaded.report.discarded == {} and not loaded.report.rebuilt

    again = await open_spool(path)
    assert await again.append("vote", b"v") == 11
    again.on_reconnect()
    again.ack(4)
    assert [r.seq for r in await transmit_all(again)] == list(range(5, 12))
    await again.close()


async def test_records_wait_for_their_commit_before_they_are_sent(tmp_path: Path) -> None:
    spool = await open_spool(tmp_path / "spool.db", commit_interval_s=0.2)
    spool.on_reconnect()
    spool.ack(0)
    task = asyncio.ensure_future(spool.append("gift", b"g"))
    await asyncio.sleep(0.05)
    assert not task.done() and spool.next_batch(10) == []  # not committed yet
    assert await task == 1
    assert [r.seq for r in await transmit_all(spool)] == [1]
    await spool.close()


async def test_spool_from_config_uses_the_data_dir(tmp_path: Path) -> None:
    cfg = Config(node=NodeConfig(id="box", data_dir=str(tmp_path)), spool=SpoolConfig())
    assert spool_path(cfg) == tmp_path / "spool.db"
    spool = await Spool.from_config(cfg, Registry())
    assert await spool.append("gift", b"g") == 1
    assert spool.status()["durability"] == "fsync"
    await spool.close()
    assert meta(tmp_path / "spool.db")["node_id"] == "box"


@pytest.mark.parametrize(("durability", "synchronous"), [("fsync", 2), ("os", 1), ("memory", 0)])
def test_durability_sets_sqlite_synchronous(
    tmp_path: Path, durability: str, synchronous: int
) -> None:
    writer = SpoolWriter(tmp_path / "spool.db", durability)
    try:

        def pragmas(conn: sqlite3.Connection) -> tuple[str, int]:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            return mode, conn.execute("PRAGMA synchronous").fetchone()[0]

        assert writer.call(pragmas).result(5) == ("wal", synchronous)
    finally:
        writer.close()


# --- group commit ------------------------------------------------------------------------


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    registry = Registry()
    spool = await open_spool(tmp_path / "spool.db", registry, durability="fsync")
    seqs = await asyncio.gather(*(spool.append("summary", b"x" * 100) for _ in range(3000)))
    assert sorted(seqs) == list(range(1, 3001))
    commits = spool.writer.commits
    assert 3 <= commits <= 30, commits  # at most 1,000 records a batch; far fewer than 3,000
    metrics = spool.metrics
    assert metrics.appended.value() == 3000
    assert metrics.commit_seconds.count == commits
    assert metrics.depth.value == 3000 and metrics.bytes.value == 300_000
    await spool.close()
    assert len(list(iter_rows(tmp_path / "spool.db"))) == 3000


def test_writer_futures_resolve_only_after_the_commit(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    writer = SpoolWriter(path, "os", commit_interval_s=0.05, commit_records=1000)
    futures: list[concurrent.futures.Future[int]] = []
    lock = threading.Lock()

    def submitter(first: int) -> None:
        for seq in range(first, first + 250):
            fut = writer.submit(Record(seq, "gift", 0.0, b"p%d" % seq, False))
            with lock:
                futures.append(fut)

    threads = [threading.Thread(target=submitter, args=(1 + 250 * i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    concurrent.futures.wait(futures, timeout=5)
    assert all(f.done() and f.exception() is None for f in futures)
    assert writer.commits < len(futures) / 10  # group commit: 2,000 records, a few commits
    # A resolved future means the row is visible to any other reader.
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM spool").fetchone()[0] == 2000
    slow = SpoolWriter(tmp_path / "slow.db", "os", commit_interval_s=0.3)
    fut = slow.submit(Record(1, "gift", 0.0, b"p", False))
    time.sleep(0.05)
    assert not fut.done()  # still inside its 300 ms batch window
    assert fut.result(2) >= 1
    writer.close()
    slow.close()


def test_a_full_batch_commits_before_its_interval(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path / "spool.db", "os", commit_interval_s=30.0, commit_records=100)
    started = time.monotonic()
    futures = [writer.submit(Record(s, "gift", 0.0, b"p", False)) for s in range(1, 101)]
    assert futures[-1].result(5) == 100
    assert time.monotonic() - started < 5
    writer.close()


# --- kill -9 -----------------------------------------------------------------------------

CHILD = r"""
import asyncio, sys
from edge_node.cloud.spool import Spool
from edge_node.cloud.spool_state import Bounds
from edge_node.metrics import Registry

async def main(path, tag):
    spool = await Spool.open(path, bounds=Bounds(10**6, 10**9, 10**9), registry=Registry(),
                             node_id="k9", durability="fsync", commit_interval_s=0.005)
    out = sys.stdout
    out.write(f"start {spool.state.next_seq}\n")
    out.flush()
    spool.on_reconnect()
    spool.ack(spool.state.acked_through)  # the collector's first ack

    async def one(n):
        seq = await spool.append("summary", f"{tag}:{n}".encode())
        out.write(f"stored {seq} {tag}:{n}\n")  # only once the commit is done
        out.flush()

    i = 0
    while True:
        await asyncio.gather(*(one(i + j) for j in range(16)))
        i += 16
        batch = spool.next_batch(64)
        if batch:  # pretend the collector stored half of what went out
            spool.ack(batch[len(batch) // 2].seq)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError(f"child said nothing for {timeout} s (got {line!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            raise EOFError(f"child exited early (got {line!r})")
        line += chunk
    return line


@pytest.mark.timeout(60)
def test_kill_9_never_loses_a_stored_record(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    rng = random.Random(7)
    stored: dict[int, bytes] = {}  # seq -> payload, for every append reported stored
    rounds = 0
    started = time.monotonic()
    while rounds < 20 or (rounds < 40 and time.monotonic() - started < 10):
        with open(tmp_path / "stderr.txt", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(path), str(rounds)],
                stdout=subprocess.PIPE,
                stderr=err,
            )
        try:
            first = _read_line(proc, 20).split()
            assert first[0] == b"start"
            # Seqs continue after every seq ever reported stored.
            assert int(first[1]) > max(stored, default=0)
            time.sleep(rng.uniform(0.01, 0.2))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.stdout is not None
        rest = proc.stdout.read()
        proc.stdout.close()
        for line in rest.split(b"\n"):
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"stored":
                stored[int(parts[1])] = parts[2]
        rounds += 1

        loaded = load(path, "k9")
        report = loaded.report
        assert report.discarded == {} and not report.rebuilt and report.moved_aside is None
        held = {r.seq: r.payload for r in loaded.records}
        for seq, payload in stored.items():
            if seq > loaded.acked_through:
                assert held.get(seq) == payload, (
                    rounds,
                    seq,
                    (tmp_path / "stderr.txt").read_text(),
                )
    assert rounds >= 20
    assert len(stored) > 100, "the kills came too early to test anything"


# --- damaged files -----------------------------------------------------------------------


def payload(i: int) -> bytes:
    return b"payload-%05d|" % i * 5


def write_records(
    path: Path, n: int = 200, per_commit: int = 20
) -> tuple[list[Record], SpoolWriter]:
    """n records in commits of ``per_commit``; the writer is left open."""
    writer = SpoolWriter(path, "os", commit_interval_s=0.001)
    records = [Record(i, "gift", 1000.0 + i, payload(i), False) for i in range(1, n + 1)]
    for first in range(0, n, per_commit):
        for record in records[first : first + per_commit]:
            writer.submit(record)
        writer.flush().result(5)
    return records, writer


def check_salvage(path: Path, records: list[Record]) -> list[Record]:
    """Load a damaged file: never raises, keeps only intact records, accounts for all."""
    loaded = load(path, "n1")
    report = loaded.report
    originals = {r.seq: r for r in records}
    intact = [r for r in loaded.records if r.kind != LOST_KIND]
    for kept in intact:
        assert kept == originals[kept.seq]  # intact, byte for byte
    assert report.records == len(intact)
    assert len(intact) + sum(report.discarded.values()) == len(records)
    # Every seq is accounted for: what was lost is a placeholder, not a gap.
    assert [r.seq for r in loaded.records] == [r.seq for r in records]
    if report.discarded:
        assert report.rebuilt and report.moved_aside and Path(report.moved_aside).exists()
        # The rewritten file loads clean: no crash loop, same records.
        again = load(path, "n1")
        assert again.report.discarded == {} and not again.report.rebuilt
        assert again.records == loaded.records
    return intact


@pytest.mark.parametrize("cut", [100, 1500, 4096 + 300])
def test_truncated_database_keeps_every_intact_record(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "spool.db"
    records, writer = write_records(path)
    writer.close()  # the WAL is folded into the database file
    assert not Path(f"{path}-wal").exists()
    os.truncate(path, path.stat().st_size - cut)
    kept = check_salvage(path, records)
    assert len(kept) < len(records) and len(kept) >= len(records) // 2


@pytest.mark.parametrize("offset_from_end", [40, 700, 2500, 4000])
def test_flipped_bytes_near_the_end_of_the_database(tmp_path: Path, offset_from_end: int) -> None:
    path = tmp_path / "spool.db"
    records, writer = write_records(path)
    writer.close()
    data = bytearray(path.read_bytes())
    for i in range(8):
        data[len(data) - offset_from_end + i] ^= 0x5A
    path.write_bytes(bytes(data))
    check_salvage(path, records)


async def test_a_damaged_record_is_reported_and_its_seq_filled(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    records, writer = write_records(path)
    writer.close()
    data = bytearray(path.read_bytes())
    at = data.index(payload(150))
    data[at + 3] ^= 0x01
    path.write_bytes(bytes(data))
    registry = Registry()
    spool = await open_spool(path, registry)
    report = spool.loaded.report
    assert report.discarded == {"crc": 1} and report.rebuilt
    held = {r.seq: r for r in spool.state.unacked()}
    assert held[150].kind == LOST_KIND  # the collector hears of the loss, no gap
    assert all(held[r.seq] == r for r in records if r.seq != 150)
    assert await spool.append("gift", b"new") == 201
    assert spool.metrics.discarded.value(reason="crc") == 1
    assert 'edge_node_spool_discarded_total{reason="crc"} 1' in registry.render()
    assert spool.status()["load"]["discarded"] == {"crc": 1}
    await spool.close()


def _snapshot_with_wal(tmp_path: Path) -> tuple[Path, list[Record]]:
    """A spool file whose records are still in the WAL (copied while the writer idles)."""
    live = tmp_path / "live" / "spool.db"
    live.parent.mkdir()
    records, writer = write_records(live)
    copy = tmp_path / "spool.db"
    shutil.copy(live, copy)
    shutil.copy(f"{live}-wal", f"{copy}-wal")
    writer.close()
    return copy, records


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_wal_tail_keeps_the_earlier_commits(tmp_path: Path, damage: str) -> None:
    path, records = _snapshot_with_wal(tmp_path)
    wal = Path(f"{path}-wal")
    size = wal.stat().st_size
    if damage == "truncate":
        os.truncate(wal, size - 1000)  # the last frame is torn
    else:
        data = bytearray(wal.read_bytes())
        data[size - 1000] ^= 0xFF  # inside the last frame's page: its checksum fails
        wal.write_bytes(bytes(data))
    loaded = load(path, "n1")
    # The last commit (20 records) is gone, as after a power loss; everything before
    # it is there, intact, and the ignored WAL frames are reported.
    assert list(loaded.records) == records[:180]
    assert loaded.report.wal_frames_ignored >= 1
    assert loaded.last_seq == 180


@pytest.mark.parametrize("content", ["garbage", "foreign"])
async def test_an_unusable_file_is_moved_aside_and_the_spool_starts_empty(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.db"
    if content == "garbage":
        path.write_bytes(random.Random(1).randbytes(8192))
    else:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE photos (id INTEGER)")
    registry = Registry()
    with caplog.at_level(logging.ERROR, logger="edge_node.cloud.spool"):
        spool = await open_spool(path, registry)
    load_status = spool.status()["load"]
    assert load_status["moved_aside"] and Path(load_status["moved_aside"]).exists()
    assert ".corrupt-" in load_status["moved_aside"]
    assert load_status["error"]
    assert spool.metrics.moved_aside.value() == 1
    assert any("moved aside" in r.getMessage() for r in caplog.records)
    assert await spool.append("gift", b"g") == 1  # and the node goes on
    await spool.close()
    assert [r.payload for r in iter_rows(path)] == [b"g"]


# --- failed commits ----------------------------------------------------------------------


async def test_a_failed_commit_is_loud_and_nothing_is_reported_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spool.db"
    registry = Registry()
    metrics = SpoolMetrics(registry)

    def disk_full(conn: sqlite3.Connection) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # no room to grow: SQLITE_FULL

    writer = SpoolWriter(
        path, "os", commit_interval_s=0.005, metrics=metrics, connect_hook=disk_full
    )
    spool = Spool(SpoolState(BIG), writer, metrics, load(path))
    spool.on_reconnect()
    spool.ack(0)
    with (
        caplog.at_level(logging.ERROR, logger="edge_node.cloud.spool"),
        pytest.raises(SpoolWriteError),
    ):
        await spool.append("gift", b"x" * 20_000)
    status = spool.status()
    assert status["healthy"] is False and "full" in status["error"]
    assert metrics.commit_errors.value() >= 1
    assert any("NOT stored" in r.getMessage() for r in caplog.records)
    assert spool.next_batch(10) == []  # never sent: it is not stored
    assert metrics.appended.value() == 0

    # The disk has room again: the kept change is retried and lands, in order.
    grow = writer.call(lambda conn: conn.execute("PRAGMA max_page_count = 1000000"))
    await asyncio.wrap_future(grow)
    deadline = time.monotonic() + 5
    while not writer.healthy and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert spool.status()["healthy"] is True
    assert await spool.append("gift", b"y") == 2
    assert [r.payload[:1] for r in await transmit_all(spool)] == [b"x", b"y"]
    await spool.close()
    assert [r.seq for r in iter_rows(path)] == [1, 2]
    assert meta(path)["sent_mark"] == 2
