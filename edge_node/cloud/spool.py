"""The durable spool: SQLite (WAL) store, group-commit writer thread, asyncio adapter.

A summary counts as stored only when the transaction holding it is committed (and
fsynced at durability "fsync"); it leaves the spool only when the collector's ack
covers it. Three layers:

- ``load(path)``: start-up. Reads every intact row, checks each row's crc32, reports
  (count + reason) and drops what is damaged, and rewrites a damaged file into a
  clean one (the damaged file is kept beside it as ``spool.db.corrupt-<ts>``). A
  file SQLite cannot open at all is moved aside the same way and the spool starts
  empty, loudly. It never raises on a damaged file, so a bad disk cannot make the
  node crash-loop.
- ``SpoolWriter``: owns the one write connection, on a dedicated thread. Effects
  from the sequence logic are grouped: a batch is committed ~``commit_interval_s``
  after its first record or at ``commit_records`` records, whichever comes first, so
  an fsync is paid per batch, not per record, and never on the event loop. A commit
  that fails (disk full, I/O error) marks the writer unhealthy (status, counter,
  error log), fails the batch's futures, keeps its effects and retries them with
  backoff, so the file never skips a change the in-memory state has made.
- ``Spool``: the asyncio adapter over ``spool_state.SpoolState`` and the writer.
  ``await append(...)`` returns once the record is committed; ``next_batch``,
  ``ack`` and ``on_reconnect`` serve the cloud link.

Tables: ``spool(seq INTEGER PRIMARY KEY, kind, created, mergeable, payload, crc32)``
and ``meta(key, value)`` with node_id, acked_through, last_seq and sent_mark (see
spool_state: records up to it may be at the collector). Rows always cover
exactly ``acked_through + 1 .. last_seq`` (see spool_state: placeholders keep the seq
stream free of gaps).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import shutil
import sqlite3
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edge_node.backoff import Backoff
from edge_node.cloud.spool_state import (
    LOST_KIND,
    AckThrough,
    Bounds,
    Delete,
    Effect,
    MarkSent,
    MergeFn,
    Record,
    SpoolError,
    SpoolState,
    SpoolStats,
    Store,
    merge_counters,
)
from edge_node.config import Config
from edge_node.metrics import Registry

log = logging.getLogger(__name__)

DURABILITY_SYNCHRONOUS = {"fsync": "FULL", "os": "NORMAL", "memory": "OFF"}
SCHEMA_VERSION = 1
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024  # the WAL shrinks back to this after checkpoints
# While commits fail, pending effects are compacted to one row image per seq beyond this.
RETRY_COMPACT_EFFECTS = 10_000
# A file cut short is read through a zero-padded copy, when it lacks at most this much.
MAX_PADDING_BYTES = 256 * 1024 * 1024
COMMIT_SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.033, 0.066, 0.1, 0.25)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    created REAL NOT NULL,
    mergeable INTEGER NOT NULL,
    payload BLOB NOT NULL,
    crc32 INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
"""
_INSERT = (
    "INSERT OR REPLACE INTO spool (seq, kind, created, mergeable, payload, crc32)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_SELECT = "SELECT seq, kind, created, mergeable, payload, crc32 FROM spool"

T = TypeVar("T")


class SpoolWriteError(SpoolError):
    """A commit failed: the records of that batch are not stored (yet)."""

    def __init__(self, reason: str) -> None:
        super().__init__("commit", reason)


class SpoolClosedError(SpoolError):
    def __init__(self) -> None:
        super().__init__("writer", "closed")


def row_crc32(seq: int, kind: str, created: float, mergeable: bool, payload: bytes) -> int:
    """Checksum of every column of a row, so a flipped seq or kind is caught too."""
    head = struct.pack("<qd?", seq, created, mergeable) + kind.encode("utf-8")
    return zlib.crc32(payload, zlib.crc32(head))


def _row(record: Record) -> tuple[int, str, float, int, bytes, int]:
    r = record
    crc = row_crc32(r.seq, r.kind, r.created, r.mergeable, r.payload)
    return (r.seq, r.kind, r.created, int(r.mergeable), r.payload, crc)


class SpoolMetrics:
    """The spool's metrics in a Registry. Each is written from one thread only: the
    commit figures from the writer thread, the rest from the event loop."""

    def __init__(self, registry: Registry) -> None:
        r = registry
        self.state: SpoolState | None = None  # the gauges read it when rendered
        self.depth = r.gauge(
            "edge_node_spool_depth",
            "Records held until the cloud acks them (placeholders included).",
            lambda: self.state.depth if self.state else 0,
        )
        self.bytes = r.gauge(
            "edge_node_spool_bytes",
            "Payload bytes held in the spool.",
            lambda: self.state.bytes if self.state else 0,
        )
        self.appended = r.counter(
            "edge_node_spool_appended_total", "Records appended and committed to the spool."
        )
        self.acked = r.counter("edge_node_spool_acked_total", "Records removed after a cloud ack.")
        self.merged = r.counter(
            "edge_node_spool_merged_total",
            "Records merged into another because the spool was full, by reason "
            "(bound, age, overflow).",
        )
        self.over_bound = r.counter(
            "edge_node_spool_over_bound_total",
            "Records that are not mergeable, kept beyond the spool's bounds (never dropped).",
        )
        self.merge_conflicts = r.counter(
            "edge_node_spool_merge_conflicts_total",
            "Merges refused by the merge function; both records were kept.",
        )
        self.resequenced = r.counter(
            "edge_node_spool_resequenced_total",
            "Records renumbered because the cloud already held their seqs (lost local tail).",
        )
        self.commit_seconds = r.histogram(
            "edge_node_spool_commit_seconds",
            "Time to commit one batch (fsync included).",
            COMMIT_SECONDS_BUCKETS,
        )
        self.commit_errors = r.counter(
            "edge_node_spool_commit_errors_total", "Failed commits (disk full, I/O error)."
        )
        self.discarded = r.counter(
            "edge_node_spool_discarded_total",
            "Records found damaged or missing at start-up, by reason.",
        )
        self.moved_aside = r.counter(
            "edge_node_spool_moved_aside_total",
            "Spool files that could not be used and were moved aside at start-up.",
        )


# --- start-up: load and repair ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadReport:
    path: str
    records: int  # intact rows kept
    discarded: Mapping[str, int]  # reason -> rows (or seqs) that could not be kept
    wal_frames_ignored: int  # WAL frames SQLite ignored: a torn last commit, or damage
    rebuilt: bool  # the damaged file was rewritten from the intact rows
    moved_aside: str | None  # where the unusable or damaged file now is
    error: str | None  # what was wrong with the file, if anything
    previous_node_id: str | None  # the node id the file was written by, when different
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "records": self.records,
            "discarded": dict(self.discarded),
            "wal_frames_ignored": self.wal_frames_ignored,
            "rebuilt": self.rebuilt,
            "moved_aside": self.moved_aside,
            "error": self.error,
            "previous_node_id": self.previous_node_id,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class Loaded:
    records: tuple[Record, ...]
    acked_through: int
    last_seq: int
    sent_mark: int | None  # None: unknown (every record counts as possibly sent)
    report: LoadReport


@dataclass(slots=True)
class _Scan:
    records: list[Record] = field(default_factory=list)
    discarded: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def discard(self, reason: str, n: int = 1) -> None:
        self.discarded[reason] = self.discarded.get(reason, 0) + n


def _wal_header_ok(header: bytes) -> bool:
    magic = int.from_bytes(header[0:4], "big")
    if magic not in (0x377F0682, 0x377F0683):
        return False
    words = struct.unpack(">6I" if magic & 1 else "<6I", header[:24])
    s0 = s1 = 0
    for i in range(0, 6, 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return (s0, s1) == struct.unpack(">2I", header[24:32])


def _wal_frames_present(wal: Path) -> int:
    """Frames of the WAL's current generation physically present (a torn one included)."""
    try:
        with open(wal, "rb") as fh:
            header = fh.read(32)
            size = os.fstat(fh.fileno()).st_size
            if len(header) < 32:
                return 0
            page_size = int.from_bytes(header[8:12], "big")
            if page_size == 1:
                page_size = 65536
            frame = 24 + page_size
            if not _wal_header_ok(header) or page_size < 512 or page_size & (page_size - 1):
                # SQLite ignores the whole WAL: every frame in it is lost.
                valid_size = page_size >= 512 and not page_size & (page_size - 1)
                return max(1, (size - 32) // frame) if valid_size and size > 32 else 1
            count = 0
            while True:
                head = fh.read(24)
                if len(head) < 24 or head[8:16] != header[16:24]:
                    return count + (1 if 0 < len(head) < 24 else 0)
                count += 1
                fh.seek(page_size, os.SEEK_CUR)
                if fh.tell() > size:
                    return count
    except FileNotFoundError:
        return 0


def _scan(conn: sqlite3.Connection, scan: _Scan) -> None:
    """Read every intact row into ``scan``; raises only if the file cannot be read at all."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "spool" not in tables:
        if tables - {"meta"}:
            raise sqlite3.DatabaseError(f"not a spool database (tables: {sorted(tables)})")
        return
    try:
        scan.meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as exc:
        scan.problems.append(f"meta unreadable: {exc}")
    try:
        check = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        if check != ["ok"]:
            scan.problems.append(f"quick_check: {'; '.join(map(str, check[:5]))}")
    except sqlite3.DatabaseError as exc:
        scan.problems.append(f"quick_check failed: {exc}")
    last = 0
    try:
        for row in conn.execute(f"{_SELECT} ORDER BY seq"):
            _take_row(row, scan)
            last = row[0] if isinstance(row[0], int) else last
        return
    except sqlite3.DatabaseError as exc:
        scan.problems.append(f"rows unreadable after seq {last}: {exc}")
    # The table is damaged past ``last``: look every further seq up on its own, so rows
    # on intact pages are still found.
    top = _int(scan.meta.get("last_seq"))
    with contextlib.suppress(sqlite3.DatabaseError):
        top = max(top, conn.execute("SELECT max(seq) FROM spool").fetchone()[0] or 0)
    for seq in range(last + 1, top + 1):
        try:
            row = conn.execute(f"{_SELECT} WHERE seq = ?", (seq,)).fetchone()
        except sqlite3.DatabaseError:
            scan.discard("unreadable")
            continue
        if row is not None:
            _take_row(row, scan)


def _take_row(row: tuple[Any, ...], scan: _Scan) -> None:
    seq, kind, created, mergeable, payload, crc = row
    if not (
        isinstance(seq, int)
        and isinstance(kind, str)
        and isinstance(created, (int, float))
        and isinstance(mergeable, int)
        and isinstance(payload, bytes)
        and isinstance(crc, int)
    ):
        scan.discard("malformed")
        return
    if row_crc32(seq, kind, float(created), bool(mergeable), payload) != crc:
        scan.discard("crc")
        return
    scan.records.append(Record(seq, kind, float(created), payload, bool(mergeable)))


def _seq(record: Record) -> int:
    return record.seq


def _open_and_scan(path: Path, scan: _Scan) -> int:
    """Scan the file; returns the WAL frames SQLite found valid. Raises DatabaseError
    only when the file cannot be read at all."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        _scan(conn, scan)
        if mode != "wal":
            return 0
        return max(0, int(conn.execute("PRAGMA wal_checkpoint").fetchone()[1]))
    finally:
        conn.close()


def _scan_padded_copy(path: Path, scan: _Scan) -> bool:
    """SQLite refuses a file shorter than its header's page count. Scan a copy padded
    with zero pages instead (the rows on them are then reported unreadable)."""
    with open(path, "rb") as fh:
        header = fh.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return False
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    want = int.from_bytes(header[28:32], "big") * page_size
    size = path.stat().st_size
    if not size < want <= size + MAX_PADDING_BYTES:
        return False
    copy = path.with_name(path.name + ".salvage")
    extras = (Path(f"{copy}-wal"), Path(f"{copy}-shm"))
    try:
        shutil.copyfile(path, copy)
        if Path(f"{path}-wal").exists():
            shutil.copyfile(f"{path}-wal", extras[0])
        with open(copy, "r+b") as fh:
            fh.truncate(want)
        _open_and_scan(copy, scan)
        return True
    except (sqlite3.DatabaseError, OSError):
        return False
    finally:
        for leftover in (copy, *extras):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _int(value: Any) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _aside_name(path: Path, now: float) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    dest = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    return dest


def _move_aside(path: Path, now: float) -> Path:
    """Rename the file (and its WAL, so the pair still opens) out of the way."""
    dest = _aside_name(path, now)
    os.replace(path, dest)
    wal = Path(f"{path}-wal")
    if wal.exists():
        os.replace(wal, Path(f"{dest}-wal"))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{path}-shm")
    _fsync_dir(path.parent)
    return dest


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(_SCHEMA)


def _rebuild(path: Path, scan: _Scan, meta: Mapping[str, Any], now: float) -> Path:
    """Write the intact rows to a fresh file and swap it in; returns the damaged file."""
    tmp = path.with_name(path.name + ".rebuild")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        _create_schema(conn)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT, [_row(r) for r in scan.records])
        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
        conn.execute("COMMIT")
    finally:
        conn.close()  # the last connection checkpoints the WAL into the file
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    damaged = _move_aside(path, now)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return damaged


def load(
    path: str | Path,
    node_id: str = "",
    metrics: SpoolMetrics | None = None,
    now: float | None = None,
) -> Loaded:
    """Read the spool file at start-up. Never raises because of what is in the file.

    Damaged rows are dropped and counted by reason (``crc``: checksum mismatch;
    ``malformed``: wrong column types; ``unreadable``: SQLite could not read the page;
    ``missing``: a seq the file should hold and does not). The sequence logic fills
    the seqs of dropped rows with placeholders, so the cloud learns of the loss.
    """
    started = time.perf_counter()
    path = Path(path)
    now = time.time() if now is None else now
    scan = _Scan()
    frames_present = _wal_frames_present(Path(f"{path}-wal"))
    frames_valid = 0
    moved: Path | None = None
    error: str | None = None
    rebuilt = unusable = False

    if path.exists():
        try:
            frames_valid = _open_and_scan(path, scan)
        except sqlite3.DatabaseError as exc:
            scan = _Scan()
            if _scan_padded_copy(path, scan):
                # A file cut short: SQLite refuses it whole, the copy still reads.
                scan.problems.insert(0, f"file shorter than its header says ({exc})")
            else:
                error = f"cannot open: {exc}"
                unusable = True
                try:
                    moved = _move_aside(path, now)
                except OSError as move_exc:
                    raise SpoolError(
                        "path", f"{path} is unusable ({exc}); moving it aside failed ({move_exc})"
                    ) from None
                log.error(
                    "spool file unusable, moved aside; starting with an empty spool",
                    extra={"path": str(path), "moved_to": str(moved), "error": str(exc)},
                )
                if metrics is not None:
                    metrics.moved_aside.inc()
    elif Path(f"{path}-wal").exists():
        # A WAL without its database belongs to nothing: keep it for forensics only.
        os.replace(f"{path}-wal", _aside_name(Path(f"{path}-wal"), now))

    acked = _int(scan.meta.get("acked_through"))
    seqs = [r.seq for r in scan.records]
    if seqs and "acked_through" not in scan.meta:
        acked = min(seqs) - 1  # meta lost: rows start right after the acked ones
    last_seq = max([_int(scan.meta.get("last_seq")), acked, *seqs])
    kept = [r for r in scan.records if r.seq > acked]
    accounted = sum(scan.discarded.values())
    missing = (last_seq - acked) - len(kept) - accounted
    if missing > 0:
        scan.discard("missing", missing)
    mark = _int(scan.meta["sent_mark"]) if "sent_mark" in scan.meta else None
    if scan.discarded or scan.problems:
        error = "; ".join(scan.problems) or "damaged rows"
        meta = {"schema": SCHEMA_VERSION, "node_id": node_id, "acked_through": acked}
        meta |= {"last_seq": last_seq} | ({} if mark is None else {"sent_mark": mark})
        # The rewritten file holds a LOST_KIND placeholder for each seq it lost, so it
        # is complete: the next start finds nothing to report.
        present = {r.seq for r in kept}
        fill = [
            Record(seq, LOST_KIND, 0.0, b"", False)
            for seq in range(acked + 1, last_seq + 1)
            if seq not in present
        ]
        try:
            moved = _rebuild(path, _Scan(records=sorted(kept + fill, key=_seq)), meta, now)
            rebuilt = True
            kept = sorted(kept + fill, key=_seq)
        except (sqlite3.Error, OSError) as exc:
            error += f"; rebuild failed: {exc}"  # the placeholders are stored later
    previous = scan.meta.get("node_id")
    previous_node_id = str(previous) if previous and node_id and previous != node_id else None
    report = LoadReport(
        path=str(path),
        records=sum(1 for r in kept if r.kind != LOST_KIND),
        discarded=dict(scan.discarded),
        wal_frames_ignored=0 if unusable else max(0, frames_present - frames_valid),
        rebuilt=rebuilt,
        moved_aside=str(moved) if moved else None,
        error=error,
        previous_node_id=previous_node_id,
        seconds=time.perf_counter() - started,
    )
    _log_report(report, metrics)
    return Loaded(tuple(kept), acked, last_seq, mark, report)


def _log_report(report: LoadReport, metrics: SpoolMetrics | None) -> None:
    fields = report.to_dict()
    if report.discarded or report.rebuilt:
        log.error("spool damaged: dropped what could not be read, kept the rest", extra=fields)
    elif report.wal_frames_ignored:
        log.warning("spool WAL had frames SQLite ignored (a torn last commit)", extra=fields)
    if report.previous_node_id:
        log.warning("spool was written by another node id; keeping its records", extra=fields)
    log.info("spool loaded", extra=fields)
    if metrics is not None:
        for reason, n in report.discarded.items():
            metrics.discarded.inc(n, reason=reason)


# --- the writer thread -----------------------------------------------------------------


class _Batch:
    __slots__ = ("appends", "effects", "first_at", "force", "futures", "tag")

    def __init__(self, first_at: float) -> None:
        self.effects: list[Effect] = []
        self.futures: list[concurrent.futures.Future[int]] = []
        self.tag = 0
        self.appends = 0
        self.first_at = first_at
        self.force = False

    def new_future(self) -> concurrent.futures.Future[int]:
        fut: concurrent.futures.Future[int] = concurrent.futures.Future()
        fut.set_running_or_notify_cancel()  # a shared future: no caller may cancel it
        self.futures.append(fut)
        return fut

    def absorb(self, other: _Batch) -> None:
        self.effects.extend(other.effects)
        self.futures.extend(other.futures)
        self.tag = max(self.tag, other.tag)
        self.appends += other.appends
        self.force = self.force or other.force


def compact_effects(effects: Sequence[Effect]) -> list[Effect]:
    """The same end state in fewer effects: the last image of each row, one ack."""
    acked = mark = 0
    rows: dict[int, Store | Delete] = {}
    for effect in effects:
        if isinstance(effect, AckThrough):
            acked = max(acked, effect.seq)
            for seq in [s for s in rows if s <= effect.seq]:
                del rows[seq]
        elif isinstance(effect, MarkSent):
            mark = max(mark, effect.seq)
        elif isinstance(effect, Store):
            rows[effect.record.seq] = effect
        else:
            rows[effect.seq] = effect
    out: list[Effect] = [AckThrough(acked)] if acked else []
    out += [MarkSent(mark)] if mark else []
    out += [rows[s] for s in sorted(rows) if isinstance(rows[s], Delete)]
    out += [rows[s] for s in sorted(rows) if isinstance(rows[s], Store)]
    return out


_Call = tuple[Callable[[sqlite3.Connection], Any], concurrent.futures.Future[Any]]


class SpoolWriter:
    """The spool's one write connection, on its own thread, committing in batches.

    ``submit``/``submit_effects`` return a future shared by every submission of the
    same batch; it resolves (with the batch's highest tag) only after the batch is
    committed, or fails with SpoolWriteError when the commit fails. Nothing here runs
    on, or blocks, the caller's thread beyond a short lock.
    """

    def __init__(
        self,
        path: str | Path,
        durability: str = "fsync",
        *,
        commit_interval_s: float = 0.05,
        commit_records: int = 1000,
        node_id: str = "",
        metrics: SpoolMetrics | None = None,
        on_commit: Callable[[int], None] | None = None,
        connect_hook: Callable[[sqlite3.Connection], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if durability not in DURABILITY_SYNCHRONOUS:
            raise SpoolError("durability", f"{durability!r} is not one of fsync, os, memory")
        self.path = Path(path)
        self.durability = durability
        self.commit_interval_s = commit_interval_s
        self.commit_records = commit_records
        self.node_id = node_id
        self.metrics = metrics
        self.on_commit = on_commit
        self._connect_hook = connect_hook
        self._clock = clock
        self._cond = threading.Condition()
        self._sealed: deque[_Batch] = deque()  # full batches, committed before _open
        self._open: _Batch | None = None
        self._inflight: _Batch | None = None
        self._closing = False
        self._conn: sqlite3.Connection | None = None
        self._last_seq = 0
        self._calls: list[_Call] = []
        # Status, written by the writer thread only.
        self.healthy = True
        self.last_error: str | None = None
        self.commits = 0
        self.commit_failures = 0
        self.committed_tag = 0
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._thread.start()

    # --- caller side ----------------------------------------------------------------

    def submit(self, record: Record) -> concurrent.futures.Future[int]:
        """Store one record (insert or replace); resolves with a tag >= its seq."""
        return self.submit_effects((Store(record),), tag=record.seq, appends=1)

    def submit_effects(
        self, effects: Sequence[Effect], tag: int, appends: int = 0
    ) -> concurrent.futures.Future[int]:
        """Apply ``effects`` in order, in one transaction with whatever shares the batch.

        ``tag`` comes back as the future's result (the highest tag of the batch; the
        spool passes the state's effect generation); ``appends`` counts new records.
        """
        with self._cond:
            if self._closing:
                raise SpoolClosedError()
            batch = self._open
            if batch is None:
                batch = self._open = _Batch(self._clock())
                fut = batch.new_future()
                self._cond.notify()
            else:
                fut = batch.futures[-1]
            batch.effects.extend(effects)
            batch.tag = max(batch.tag, tag)
            batch.appends += appends
            if len(batch.effects) >= self.commit_records:
                # Full: it is committed as it is; later submissions start a new batch.
                self._sealed.append(batch)
                self._open = None
                self._cond.notify()
            return fut

    def ack(self, seq: int) -> concurrent.futures.Future[int]:
        """Delete every row up to ``seq`` (batched with the next commit)."""
        return self.submit_effects((AckThrough(seq),), tag=0)

    def flush(self) -> concurrent.futures.Future[int]:
        """Commit what is pending now; resolves when everything submitted so far is."""
        with self._cond:
            if self._open is not None:
                self._open.force = True
                self._cond.notify()
                return self._open.futures[-1]
            if self._sealed:
                return self._sealed[-1].futures[-1]
            if self._inflight is not None and self._inflight.futures:
                return self._inflight.futures[-1]
        done: concurrent.futures.Future[int] = concurrent.futures.Future()
        done.set_result(self.committed_tag)
        return done

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        """Run ``fn(connection)`` on the writer thread between two commits."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cond:
            if self._closing:
                raise SpoolClosedError()
            self._calls.append((fn, fut))
            self._cond.notify()
        return fut

    def close(self, timeout: float | None = None) -> None:
        """Commit what is pending, then stop the thread and close the file."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        with self._cond:
            pending = sum(len(b.effects) for b in self._sealed)
            pending += len(self._open.effects) if self._open else 0
        return {
            "healthy": self.healthy,
            "error": self.last_error,
            "durability": self.durability,
            "commits": self.commits,
            "commit_failures": self.commit_failures,
            "pending_effects": pending,
        }

    # --- writer thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                batch, calls = self._take()
                self._run_calls(calls)
                if batch is not None:
                    self._commit_until_done(batch)
                elif not calls:
                    break
        except Exception as exc:
            # A bug, not an I/O error (those are handled in _commit). Fail every waiting
            # future so no caller hangs, and say so as loudly as a commit error.
            log.exception("spool writer thread crashed")
            self.healthy = False
            self.last_error = f"writer crashed: {exc!r}"
            with self._cond:
                self._closing = True
                stranded = [*self._sealed, self._open, self._inflight]
                self._sealed.clear()
                self._open = None
            for batch in stranded:
                for fut in batch.futures if batch else ():
                    if not fut.done():
                        fut.set_exception(SpoolWriteError(self.last_error))
        finally:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None

    def _take(self) -> tuple[_Batch | None, list[_Call]]:
        """The next batch when it is due, or calls to run; (None, []) when closed."""
        with self._cond:
            while True:
                if self._calls:
                    calls, self._calls = self._calls, []
                    return None, calls
                if self._sealed:
                    self._inflight = self._sealed.popleft()
                    return self._inflight, []
                batch = self._open
                if batch is not None:
                    now = self._clock()
                    due = batch.first_at + self.commit_interval_s
                    if (
                        self._closing
                        or batch.force
                        or now >= due
                        or len(batch.effects) >= self.commit_records
                    ):
                        self._open = None
                        self._inflight = batch
                        return batch, []
                    self._cond.wait(due - now)
                elif self._closing:
                    return None, []
                else:
                    self._cond.wait()

    def _run_calls(self, calls: list[_Call]) -> None:
        for fn, fut in calls:
            try:
                fut.set_result(fn(self._connect()))
            except (sqlite3.Error, OSError) as exc:
                fut.set_exception(exc)

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={DURABILITY_SYNCHRONOUS[self.durability]}")
                conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
                _create_schema(conn)
                conn.execute("BEGIN IMMEDIATE")
                for key, value in (("schema", SCHEMA_VERSION), ("acked_through", 0)):
                    conn.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('last_seq', 0)")
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('sent_mark', 0)")
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('node_id', ?)", (self.node_id,))
                conn.execute("COMMIT")
                row = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
                self._last_seq = _int(row[0]) if row else 0
                if self._connect_hook is not None:
                    self._connect_hook(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _commit_until_done(self, batch: _Batch) -> None:
        backoff = Backoff(initial_s=0.05, max_s=2.0)
        while not self._commit(batch):
            for fut in batch.futures:
                fut.set_exception(SpoolWriteError(self.last_error or "commit failed"))
            batch.futures = []
            with self._cond:
                if self._closing:
                    self._inflight = None
                    log.error(
                        "spool closed with uncommitted changes",
                        extra={"effects": len(batch.effects), "error": self.last_error},
                    )
                    return
                deadline = self._clock() + backoff.next_delay()
                while not self._closing and (left := deadline - self._clock()) > 0:
                    if self._calls:
                        break
                    self._cond.wait(left)  # new submissions notify too: keep waiting
                calls, self._calls = self._calls, []
                # Later changes must not overtake these: retry them all as one batch.
                while self._sealed:
                    batch.absorb(self._sealed.popleft())
                if self._open is not None:
                    batch.absorb(self._open)
                    self._open = None
            self._run_calls(calls)  # e.g. an operator's fix, between two attempts
            if len(batch.effects) > RETRY_COMPACT_EFFECTS:
                batch.effects = compact_effects(batch.effects)
        with self._cond:
            self._inflight = None

    def _commit(self, batch: _Batch) -> bool:
        started = time.perf_counter()
        try:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                top = self._apply(conn, batch.effects)
                if top > self._last_seq:
                    conn.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (top,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            self._on_failure(exc)
            return False
        elapsed = time.perf_counter() - started
        self._last_seq = max(self._last_seq, top)
        self.commits += 1
        self.committed_tag = max(self.committed_tag, batch.tag)
        if self.metrics is not None:
            self.metrics.commit_seconds.observe(elapsed)
            self.metrics.appended.inc(batch.appends)
        if not self.healthy:
            log.warning(
                "spool commits work again",
                extra={"path": str(self.path), "failed_commits": self.commit_failures},
            )
            self.healthy = True
            self.last_error = None
        if self.on_commit is not None:
            self.on_commit(batch.tag)
        for fut in batch.futures:
            fut.set_result(batch.tag)
        return True

    def _apply(self, conn: sqlite3.Connection, effects: Sequence[Effect]) -> int:
        top = 0
        rows: list[tuple[int, str, float, int, bytes, int]] = []
        for effect in effects:
            if isinstance(effect, Store):
                rows.append(_row(effect.record))
                top = max(top, effect.record.seq)
                continue
            if rows:
                conn.executemany(_INSERT, rows)
                rows = []
            if isinstance(effect, Delete):
                conn.execute("DELETE FROM spool WHERE seq = ?", (effect.seq,))
            elif isinstance(effect, MarkSent):
                conn.execute(
                    "UPDATE meta SET value = max(value, ?) WHERE key = 'sent_mark'", (effect.seq,)
                )
            else:
                conn.execute("DELETE FROM spool WHERE seq <= ?", (effect.seq,))
                conn.execute(
                    "UPDATE meta SET value = max(value, ?) WHERE key = 'acked_through'",
                    (effect.seq,),
                )
                top = max(top, effect.seq)
        if rows:
            conn.executemany(_INSERT, rows)
        return top

    def _on_failure(self, exc: BaseException) -> None:
        self.commit_failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.metrics is not None:
            self.metrics.commit_errors.inc()
        # Loud at the transition, then every 10th failure (retries run up to 2 s apart).
        if self.healthy or self.commit_failures % 10 == 0:
            log.error(
                "spool commit failed: records are NOT stored; retrying",
                extra={
                    "path": str(self.path),
                    "error": self.last_error,
                    "failed_commits": self.commit_failures,
                },
            )
        self.healthy = False
        if self._conn is not None and not isinstance(exc, sqlite3.OperationalError):
            # Anything but "disk full"/"locked"-style errors: reopen before retrying.
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None


# --- the asyncio adapter ---------------------------------------------------------------


def spool_path(cfg: Config) -> Path:
    """``spool.path``, or <node.data_dir>/spool.db when it is empty."""
    return Path(cfg.spool.path) if cfg.spool.path else Path(cfg.node.data_dir) / "spool.db"


class Spool:
    """The durable spool as the event loop sees it. All methods run on the loop."""

    def __init__(
        self,
        state: SpoolState,
        writer: SpoolWriter,
        metrics: SpoolMetrics,
        loaded: Loaded,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.writer = writer
        self.metrics = metrics
        self.loaded = loaded
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._sendable = asyncio.Event()
        self._batch_cf: concurrent.futures.Future[int] | None = None
        self._batch_af: asyncio.Future[int] | None = None
        self._seen = state.stats()
        self._seen_events = state.counted_events
        metrics.state = state
        writer.on_commit = self._committed_threadsafe
        self._submit(0)  # placeholders for what the store lost, if anything
        self._sync_metrics()

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        bounds: Bounds,
        registry: Registry,
        node_id: str = "",
        durability: str = "fsync",
        commit_interval_s: float = 0.05,
        commit_records: int = 1000,
        merge: MergeFn = merge_counters,
        clock: Callable[[], float] = time.time,
    ) -> Spool:
        """Load (off the loop), restore the sequence logic, start the writer."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        metrics = SpoolMetrics(registry)
        loaded = await asyncio.to_thread(load, path, node_id, metrics, clock())
        state = SpoolState.restore(
            bounds,
            loaded.records,
            loaded.acked_through,
            loaded.last_seq,
            sent_mark=loaded.sent_mark,
            merge=merge,
        )
        writer = SpoolWriter(
            path,
            durability,
            commit_interval_s=commit_interval_s,
            commit_records=commit_records,
            node_id=node_id,
            metrics=metrics,
        )
        return cls(state, writer, metrics, loaded, clock)

    @classmethod
    async def from_config(
        cls, cfg: Config, registry: Registry, merge: MergeFn = merge_counters
    ) -> Spool:
        sc = cfg.spool
        return await cls.open(
            spool_path(cfg),
            bounds=Bounds(sc.max_records, sc.max_bytes, sc.max_age_s),
            registry=registry,
            node_id=cfg.node.id,
            durability=sc.durability,
            commit_interval_s=sc.commit_interval_ms / 1000,
            commit_records=sc.commit_records,
            merge=merge,
        )

    async def append(self, kind: str, payload: bytes, mergeable: bool = False) -> int:
        """Add a record; returns its seq once it is committed.

        Raises SpoolWriteError when the commit failed: the record is then not stored
        (it stays in memory and is retried; ``status()`` says the spool is unhealthy).
        If the caller is cancelled while waiting, the record is still committed.
        """
        seq = self.state.append(kind, payload, mergeable, self._clock())
        waiter = self._submit(1)
        self._sync_metrics()
        await asyncio.shield(waiter)
        return seq

    def next_batch(self, limit: int) -> list[Record]:
        """Stored records to transmit next, in seq order (see SpoolState.next_batch).

        Call it after the connection's first ack; it may return nothing while the sent
        mark that covers the next records is written (``wait_sendable`` says when)."""
        batch = self.state.next_batch(limit)
        self._submit(0)
        if not self.state.has_sendable():
            self._sendable.clear()
        return batch

    async def wait_sendable(self) -> None:
        """Return when ``next_batch`` has something."""
        while not self.state.has_sendable():
            self._sendable.clear()
            await self._sendable.wait()

    def ack(self, highest_contiguous_seq: int) -> None:
        """The collector's ack: rows up to it are deleted with the next commit."""
        self.state.ack(highest_contiguous_seq)
        self._submit(0)
        self._sync_metrics()
        if self.state.has_sendable():
            self._sendable.set()

    def on_reconnect(self) -> None:
        """A new connection: after its first ``ack``, everything unacked is resent."""
        self.state.on_reconnect()
        self._sendable.clear()

    def on_disconnect(self) -> None:
        self.state.on_disconnect()
        self._sendable.clear()

    def stats(self) -> SpoolStats:
        return self.state.stats()

    def status(self) -> dict[str, Any]:
        s = self.state.stats()
        return {
            **self.writer.status(),
            "path": str(self.writer.path),
            "depth": s.depth,
            "data_records": s.data_records,
            "placeholders": s.placeholders,
            "bytes": s.bytes,
            "next_seq": s.next_seq,
            "acked_through": s.acked_through,
            "merged": s.merged_bound + s.merged_age,
            "overflowed": s.overflowed,
            "over_bound": s.over_bound,
            "resequenced": s.resequenced,
            "lost": s.lost,
            "load": self.loaded.report.to_dict(),
        }

    async def close(self) -> None:
        """Commit what is pending and close the file (off the loop)."""
        await asyncio.to_thread(self.writer.close)

    # --- internals ------------------------------------------------------------------

    def _submit(self, appends: int) -> asyncio.Future[int]:
        effects = self.state.take_effects()
        if not effects:
            done = self._loop.create_future()
            done.set_result(self.state.generation)
            return done
        cf = self.writer.submit_effects(effects, self.state.generation, appends)
        if cf is not self._batch_cf or self._batch_af is None:
            # One asyncio wrapper per batch, shared by every append waiting on it.
            af = asyncio.wrap_future(cf, loop=self._loop)
            af.add_done_callback(_retrieve)
            self._batch_cf, self._batch_af = cf, af
        return self._batch_af

    def _committed_threadsafe(self, tag: int) -> None:
        # A loop that is already closed has nobody left to tell.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._committed, tag)

    def _committed(self, tag: int) -> None:
        self.state.on_stored(tag)
        if self.state.has_sendable():
            self._sendable.set()

    def _sync_metrics(self) -> None:
        if self.state.counted_events == self._seen_events:
            return  # the common case, once per append: nothing was merged or acked
        self._seen_events = self.state.counted_events
        s, seen, m = self.state.stats(), self._seen, self.metrics
        for reason, now_n, then_n in (
            ("bound", s.merged_bound, seen.merged_bound),
            ("age", s.merged_age, seen.merged_age),
            ("overflow", s.overflowed, seen.overflowed),
        ):
            if now_n > then_n:
                m.merged.inc(now_n - then_n, reason=reason)
        for counter, now_n, then_n in (
            (m.acked, s.acked, seen.acked),
            (m.over_bound, s.over_bound, seen.over_bound),
            (m.merge_conflicts, s.merge_conflicts, seen.merge_conflicts),
            (m.resequenced, s.resequenced, seen.resequenced),
        ):
            if now_n > then_n:
                counter.inc(now_n - then_n)
        self._seen = s


def _retrieve(fut: asyncio.Future[int]) -> None:
    # The writer already logged and counted a failed commit; mark the exception seen so
    # asyncio does not log it again when nobody awaited this batch.
    if not fut.cancelled():
        fut.exception()


def iter_rows(path: str | Path) -> Iterator[Record]:
    """Every row of a spool file, for tools and tests (read-only, no repair)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for seq, kind, created, mergeable, payload, _crc in conn.execute(f"{_SELECT} ORDER BY seq"):
            yield Record(seq, kind, created, payload, bool(mergeable))
    finally:
        conn.close()
