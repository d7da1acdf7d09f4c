"""The collector's PostgreSQL store, against a real PostgreSQL server started here.

``PgServer`` runs ``initdb`` into a temporary directory and ``pg_ctl start`` on a free
loopback port (password authentication over TCP), as an unprivileged user when the
tests run as root (PostgreSQL refuses root: the system user ``edgepg`` is created if
missing), and stops and removes it at the end. The tests skip only when no PostgreSQL
server binaries exist (``pg_ctl``/``initdb`` on PATH or under
/usr/lib/postgresql/*/bin); CI installs them (Debian: ``apt-get install postgresql``).

- the store contract, run against both stores (SQLite and PostgreSQL): group commit,
  dedup on (node, seq), the contiguous ack, ``acked_elsewhere`` gaps, state across
  reopening, paged queries in window order, command results; and a differential
  property test (random hellos, batches and reopenings give the same answers from both);
- PostgreSQL's own: the DSN never shown with its password, a restarted server
  reconnected without a failed call, an unreachable one unhealthy until it returns,
  NUL characters, two collectors sharing one database;
- the gRPC tests of ``test_collector.py`` that go through the store, again with a
  PostgreSQL collector;
- a real ``edge-node collector --db postgresql://...`` process fed by a node's real
  spool and link: the server stopped mid-stream (health NOT_SERVING, the node spools),
  restarted (acks resume, nothing lost, ``edge-node summaries`` reads every window
  once), and ``--db-dsn-file``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_node.cloud import collector as col
from edge_node.cloud.collector_store import QUERY_PAGE_ROWS
from edge_node.cloud.collector_store_pg import PgCollectorStore, redact_dsn
from edge_node.errors import ProtocolError
from tests.cloud.test_collector import (  # noqa: F401 - fixtures and tests run again below
    REPO,
    T0_MS,
    LinkedNode,
    cli_env,
    client,
    edge_node,
    nodes,
    payload,
    test_a_repeated_command_id_returns_the_stored_result,
    test_a_second_node_is_independent,
    test_command_timeout_is_deadline_exceeded,
    test_duplicates_and_gaps_store_each_seq_once,
    test_query_by_node_and_time_range,
    test_send_command_round_trip,
    test_summaries_are_stored_and_acked,
)
from tests.cloud.test_collector_health import check
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(60)

PG_USER = "edgepg"  # runs the server when the tests run as root
PG_INSTALL = "apt-get install -y postgresql (binaries in /usr/lib/postgresql/<version>/bin)"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# -- a real PostgreSQL server -------------------------------------------------------------


def pg_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: from PATH, else the newest
    /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("pg_ctl")
    candidates = [Path(found).resolve().parent] if found else []
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(
        versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True
    )
    for d in candidates:
        if all((d / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def server_owner() -> tuple[int, int] | None:
    """(uid, gid) to run the server as when we are root (creating the user if
    missing); None when we may run it ourselves."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        entry = pwd.getpwnam(PG_USER)
        return entry.pw_uid, entry.pw_gid
    done = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", PG_USER],
        capture_output=True, timeout=30,
    )  # fmt: skip
    if done.returncode not in (0, 9):  # 9: created meanwhile by another run
        raise AssertionError(f"useradd {PG_USER} failed: {done.stderr.decode()}")
    entry = pwd.getpwnam(PG_USER)
    return entry.pw_uid, entry.pw_gid


class PgServer:
    """One throwaway cluster: superuser ``postgres`` with a random password, TCP on
    127.0.0.1 only (scram-sha-256), its socket and data in a temporary directory;
    ``fsync`` off unless asked for (commits still wait for the WAL write)."""

    def __init__(self, bindir: Path, *, fsync: bool = False) -> None:
        self.bindir = bindir
        self.owner = server_owner()
        self.base = Path(tempfile.mkdtemp(prefix="edge-pg-"))
        self.data = self.base / "data"
        self.password = secrets.token_urlsafe(18)
        self.port = free_port()
        self._databases = itertools.count(1)
        if self.owner is not None:
            os.chown(self.base, *self.owner)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.owner is not None:
            os.chown(pwfile, *self.owner)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--pwfile", str(pwfile),
            "--auth-host=scram-sha-256", "--auth-local=trust", "--no-locale", "-E", "UTF8",
            "--no-sync", timeout_s=120,
        )  # fmt: skip
        pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.base}'\n"
                "shared_buffers = 16MB\nmax_connections = 40\n"
                # Tests need no power-loss safety; the bench (fsync=True) does.
                f"fsync = {'on' if fsync else 'off'}\n"
            )

    def _run(
        self, tool: str, *args: str, timeout_s: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        # As the owner through setpriv, not Popen(user=...): that forks without exec
        # right away, and gRPC's fork handlers crash a child of a process using gRPC.
        as_owner = (
            []
            if self.owner is None
            else ["setpriv", f"--reuid={self.owner[0]}", f"--regid={self.owner[1]}",
                  "--clear-groups", "--"]
        )  # fmt: skip
        done = subprocess.run(
            [*as_owner, str(self.bindir / tool), *args],
            cwd=self.base,
            capture_output=True,
            timeout=timeout_s,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
        )
        if done.returncode != 0:
            log = (
                (self.base / "log").read_text(errors="replace")[-2000:]
                if (self.base / "log").exists()
                else ""
            )
            raise AssertionError(f"{tool} {' '.join(args)} failed: {done.stderr.decode()}\n{log}")
        return done

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.base / "log"),
            "-w",
            "-t",
            "30",
            "start",
            timeout_s=40,
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop", timeout_s=40
        )

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        """Stop (fast, else immediate, else SIGKILL) and delete everything."""
        for mode in ("fast", "immediate"):
            if not self.running():
                break
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self.stop(mode)
        if self.running():
            with contextlib.suppress(OSError, ValueError):
                pid = int((self.data / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)

    def dsn(self, dbname: str = "postgres", password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://postgres:{secret}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its DSN. Its default collation is a
        linguistic one (ICU en-US, as production databases tend to have), where the
        server has ICU, so that the store has to ask for byte order itself."""
        name = f"t{next(self._databases)}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as admin:
            try:
                admin.execute(
                    f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
                    "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'"
                )
            except psycopg.Error:  # built without ICU, or older than 15
                admin.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PgServer]:
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries (pg_ctl, initdb) on PATH or under "
            f"/usr/lib/postgresql/*/bin; install them: {PG_INSTALL}"
        )
    server = PgServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    yield pg_server.new_database()
    if not pg_server.running():  # a test that stopped it and failed before restarting it
        pg_server.start()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a store keeps its data: a SQLite file, or a fresh PostgreSQL database
    (the server is started only for these)."""
    if request.param == "sqlite":
        return tmp_path / "collector.db"
    dsn: str = request.getfixturevalue("pg_dsn")
    return dsn


@contextlib.asynccontextmanager
async def opened(db: str | Path, **options: Any) -> AsyncIterator[col.GroupCommitStore]:
    store = col.open_store(db, **options)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def hello(node_id: str = "venue-1", acked_through: int = 0) -> col.Hello:
    return col.Hello(node_id, "boot-1", "test", col.PROTO_VERSION, acked_through)


def summary(seq: int, start_ms: int | None = None, data: bytes | None = None) -> col.WindowSummary:
    start = T0_MS + (seq - 1) * 1000 if start_ms is None else start_ms
    return col.WindowSummary(seq, start, 1, payload(seq) if data is None else data, False)


async def add(
    store: col.GroupCommitStore, node_id: str, *seqs: int, data: bytes | None = None
) -> list[int]:
    """Queue ``seqs`` together (one group commit); their acks."""
    return list(
        await asyncio.gather(
            *(store.add_summary(node_id, summary(s, data=data), T0_MS) for s in seqs)
        )
    )


async def seqs_in(store: col.GroupCommitStore, node_id: str = "venue-1") -> list[int]:
    return [s.seq async for s in store.query_summaries(node_id)]


# -- the contract, on both stores ---------------------------------------------------------


async def test_rows_arriving_within_the_commit_delay_share_one_commit(db: str | Path) -> None:
    async with opened(db, commit_delay_s=0.5) as store:
        futures = []
        for seq in range(1, 21):
            futures.append(store.add_summary("venue-1", summary(seq), T0_MS))
            await asyncio.sleep(0.005)  # one every 5 ms: 100 ms in all
        acks = await asyncio.gather(*futures)
    assert acks == [20] * 20  # each answered after the one commit that holds them all
    assert store.commits == 1 and store.stored == 20


async def test_each_seq_is_stored_once_and_the_ack_is_the_contiguous_prefix(db: str | Path) -> None:
    async with opened(db) as store:
        assert await store.note_hello(hello(), T0_MS) == 0
        assert await add(store, "venue-1", 1, 2) == [2, 2]
        assert await add(store, "venue-1", 5, 4) == [2, 2]  # stored, but 3 is missing
        assert await add(store, "venue-1", 3) == [5]
        # Retransmissions, two copies of 5 in one batch among them: acked, not stored.
        assert await add(store, "venue-1", 2, 4, 5, 5, data=b"\x80") == [5] * 4
        assert (store.stored, store.duplicates) == (5, 4)
        # Two copies of a new seq in one batch: the first is kept.
        acks = await asyncio.gather(
            store.add_summary("venue-1", summary(6, data=b"first"), T0_MS),
            store.add_summary("venue-1", summary(6, data=b"second"), T0_MS),
        )
        assert acks == [6, 6] and (store.stored, store.duplicates) == (6, 5)
        rows = [s async for s in store.query_summaries("venue-1")]
        assert [r.seq for r in rows] == [1, 2, 3, 4, 5, 6]
        assert all(r.payload != b"\x80" for r in rows) and rows[5].payload == b"first"
        assert rows[0] == col.StoredSummary("venue-1", 1, T0_MS, 1, payload(1), False, T0_MS)
        assert store.healthy and store.failures == 0


async def test_acks_survive_reopening_the_store(db: str | Path) -> None:
    async with opened(db) as store:
        await store.note_hello(hello(), T0_MS)
        assert await add(store, "venue-1", 1, 2, 4) == [2, 2, 2]
    async with opened(db) as store:
        assert await store.note_hello(hello(), T0_MS + 5) == 2  # what is already stored
        assert await add(store, "venue-1", 3) == [4]  # fills the gap left before
        (info,) = await store.list_nodes({"venue-1"})
        assert info == col.NodeInfo("venue-1", "boot-1", "test", T0_MS + 5, True, 4, 0)


async def test_seqs_acknowledged_elsewhere_are_recorded_once_as_gaps(db: str | Path) -> None:
    async with opened(db) as store:
        # A fresh database: the node's spool starts after seq 3.
        assert await store.note_hello(hello(acked_through=3), T0_MS) == 3
        assert await add(store, "venue-1", 4, 5, 8) == [5, 5, 5]
    async with opened(db) as store:
        for claim in (0, 3, 5):  # older or equal claims add nothing
            assert await store.note_hello(hello(acked_through=claim), T0_MS) == 5
        # 6 acked elsewhere meanwhile; 8 was stored beyond it, 7 is still to come.
        assert await store.note_hello(hello(acked_through=6), T0_MS) == 6
        assert await store.acked_elsewhere("venue-1") == [col.SeqGap(1, 3), col.SeqGap(6, 6)]
        assert await add(store, "venue-1", 7) == [8]
        assert await seqs_in(store) == [4, 5, 7, 8]
        (info,) = await store.list_nodes()
        assert (info.highest_contiguous_seq, info.acked_elsewhere, info.connected) == (8, 4, False)
        assert await store.acked_elsewhere("nobody") == []


async def test_queries_come_in_window_order_in_pages(db: str | Path) -> None:
    # Ids whose order differs between a byte order and a linguistic collation.
    node_ids = ["a-venue", "B-venue", "é-venue", "Z"]
    per_node = QUERY_PAGE_ROWS // 4 + 30  # more rows than one page
    async with opened(db) as store:
        for node_id in node_ids:
            await store.note_hello(hello(node_id), T0_MS)
            await add(store, node_id, *range(1, per_node + 1))
        everything = [s async for s in store.query_summaries()]
        expected = sorted(
            (T0_MS + (q - 1) * 1000, n, q) for n in node_ids for q in range(1, per_node + 1)
        )
        assert [(s.window_start_unix_ms, s.node_id, s.seq) for s in everything] == expected
        assert [s.node_id for s in everything[:4]] == ["B-venue", "Z", "a-venue", "é-venue"]
        window = [s.seq async for s in store.query_summaries("Z", T0_MS + 2000, T0_MS + 5000)]
        assert window == [3, 4, 5]
        limited = [s async for s in store.query_summaries(limit=QUERY_PAGE_ROWS + 3)]
        assert limited == everything[: QUERY_PAGE_ROWS + 3]
        since = [s async for s in store.query_summaries(since_ms=T0_MS + (per_node - 1) * 1000)]
        assert [(s.node_id, s.seq) for s in since] == [(n, per_node) for n in sorted(node_ids)]
        assert await seqs_in(store, "nobody") == []
        assert {n.node_id for n in await store.list_nodes()} == set(node_ids)
        assert [n.node_id for n in await store.list_nodes()] == sorted(node_ids)


async def test_the_first_command_result_wins(db: str | Path) -> None:
    async with opened(db) as store:
        first = col.CommandResult("venue-1", "c-1", True, '{"echo": {}}')
        assert await store.add_command_result(first, "announce", T0_MS) == first
        later = col.CommandResult("venue-1", "c-1", False, "{}", "boom", "late copy")
        assert await store.add_command_result(later, "announce", T0_MS + 1) == first
        assert await store.command_result("venue-1", "c-1") == first
        assert await store.command_result("venue-1", "c-2") is None
        assert await store.command_result("venue-2", "c-1") is None
        await store.probe(T0_MS)
        assert store.healthy and store.failures == 0 and store.last_write_ok > 0


# A differential test: the SQLite store is the reference, the PostgreSQL store must
# answer every call the same way, whatever the order of hellos, batches and restarts.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("hello"), st.integers(0, 14)),
        st.tuples(st.just("add"), st.lists(st.integers(1, 14), min_size=1, max_size=5)),
        st.tuples(st.just("reopen"), st.just(0)),
    ),
    max_size=14,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_both_stores_answer_alike(ops: list[tuple[str, Any]], pg_dsn: str, tmp_path: Path) -> None:
    node_id = f"venue-{uuid.uuid4().hex[:8]}"  # one node per example, same databases

    async def run(db: str | Path) -> list[Any]:
        answers: list[Any] = []
        store = col.open_store(db)
        await store.open()
        try:
            answers.append(await store.note_hello(hello(node_id), T0_MS))
            for op, arg in ops:
                if op == "hello":
                    answers.append(await store.note_hello(hello(node_id, arg), T0_MS))
                elif op == "add":
                    answers.append(await add(store, node_id, *arg))
                else:
                    await store.close()
                    store = col.open_store(db)
                    await store.open()
            answers.append(await seqs_in(store, node_id))
            answers.append(await store.acked_elsewhere(node_id))
            answers.append([n for n in await store.list_nodes() if n.node_id == node_id])
        finally:
            await store.close()
        return answers

    sqlite_answers = asyncio.run(run(tmp_path / "reference.db"))
    assert asyncio.run(run(pg_dsn)) == sqlite_answers


# -- PostgreSQL's own ----------------------------------------------------------------------


def test_a_dsn_is_never_shown_with_its_password() -> None:
    assert redact_dsn("postgresql://edge:s3cr%40t@db.example:5433/cloud?sslmode=require") == (
        "postgresql://edge@db.example:5433/cloud"
    )
    assert (
        redact_dsn("postgres://db.example/cloud?password=s3cret") == "postgresql://db.example/cloud"
    )
    assert (
        redact_dsn("postgresql:///cloud?host=/run/postgresql")
        == "postgresql:///cloud?host=/run/postgresql"
    )
    # Unparseable (libpq would echo it whole): anything like a password is masked.
    assert "s3cret" not in redact_dsn("postgresql://edge:s3cret@[::1/cloud")
    assert "s3cret" not in redact_dsn("postgresql://edge@h/cloud?password=s3cret&x=[")
    store = PgCollectorStore("postgresql://edge:s3cret@127.0.0.1:1/cloud")
    public = {k: v for k, v in vars(store).items() if not k.startswith("_")}
    assert "s3cret" not in repr(store) + repr(public)
    assert col.is_dsn("postgresql://h/db") and col.is_dsn("POSTGRES://h/db")
    assert not col.is_dsn(Path("postgresql://h/db")) and not col.is_dsn("collector.db")
    for bad in ("postgresql://edge:s3cret@[::1/cloud", "postgresql://edge:s3cret@h/db?nope=1"):
        with pytest.raises(col.CollectorError) as info:
            col.open_store(bad)
        assert "s3cret" not in str(info.value) and "DSN" in str(info.value)


async def test_a_wrong_password_names_the_server_not_the_password(pg_server: PgServer) -> None:
    store = col.open_store(pg_server.dsn(password="not-the-Passw0rd"))
    with pytest.raises(col.StorageError) as info:
        await store.open()
    text = str(info.value)
    assert f"postgresql://postgres@127.0.0.1:{pg_server.port}/postgres" in text
    assert "password authentication failed" in text
    assert "not-the-Passw0rd" not in text + str(store.last_error)
    assert not store.healthy


async def test_a_restarted_server_is_reconnected_without_a_failed_call(
    pg_server: PgServer, pg_dsn: str
) -> None:
    async with opened(pg_dsn) as store:
        assert isinstance(store, PgCollectorStore)
        await store.note_hello(hello(), T0_MS)
        assert await add(store, "venue-1", 1) == [1]
        await asyncio.to_thread(pg_server.stop, "fast")
        await asyncio.to_thread(pg_server.start)
        assert await add(store, "venue-1", 2) == [2]  # the lost connection is replaced
        assert store.reconnects == 1 and store.failures == 0 and store.healthy
        assert await seqs_in(store) == [1, 2]


async def test_an_unreachable_server_is_unhealthy_until_it_returns(
    pg_server: PgServer, pg_dsn: str
) -> None:
    changes: list[tuple[bool, str]] = []
    async with opened(pg_dsn) as store:
        store.on_health_change = lambda healthy, reason: changes.append((healthy, reason))
        await store.note_hello(hello(), T0_MS)
        assert await add(store, "venue-1", 1) == [1]
        await asyncio.to_thread(pg_server.stop, "immediate")
        try:
            with pytest.raises(col.StorageError) as info:
                await add(store, "venue-1", 2)
            assert f"postgresql://postgres@127.0.0.1:{pg_server.port}/" in str(info.value)
            with pytest.raises(col.StorageError):
                await store.probe(T0_MS)
            assert not store.healthy and changes == [(False, changes[0][1])]
            assert pg_server.password not in changes[0][1]
        finally:
            await asyncio.to_thread(pg_server.start)
        await store.probe(T0_MS)  # what the health checker does every few seconds
        assert store.healthy and [h for h, _ in changes] == [False, True]
        # Nothing was acknowledged that is not stored; the retransmission goes in.
        assert await add(store, "venue-1", 2) == [2]
        assert await seqs_in(store) == [1, 2]


async def test_nul_characters_are_refused_or_replaced_without_failing_the_database(
    pg_dsn: str,
) -> None:
    async with opened(pg_dsn) as store:
        with pytest.raises(ProtocolError) as info:
            await store.note_hello(hello("venue\x001"), T0_MS)
        assert info.value.field == "hello.node_id"
        with pytest.raises(ProtocolError):
            await store.command_result("venue-1", "c\x00")
        assert await store.command_result("venue\x00", "c-1") is None
        assert await seqs_in(store, "venue\x00") == []
        assert await store.acked_elsewhere("venue\x00") == []
        stored = await store.add_command_result(
            col.CommandResult("venue-1", "c-1", False, "{}", "bad\x00code", "no\x00pe"),
            "x\x00",
            T0_MS,
        )
        assert (stored.error_code, stored.error) == ("bad\ufffdcode", "no\ufffdpe")
        assert store.healthy and store.failures == 0


async def test_two_collectors_sharing_one_database_hand_a_node_over(pg_dsn: str) -> None:
    first, second = col.open_store(pg_dsn), col.open_store(pg_dsn)
    await asyncio.gather(first.open(), second.open())  # the schema is created once
    try:
        await first.note_hello(hello(), T0_MS)
        assert await add(first, "venue-1", 1, 2, 3) == [3, 3, 3]
        # The node moves to the other collector, then back: each reads what the
        # other stored at the Hello, so nothing is taken for a gap.
        assert await second.note_hello(hello(acked_through=3), T0_MS) == 3
        assert await add(second, "venue-1", 4, 5) == [5, 5]
        assert await first.note_hello(hello(acked_through=5), T0_MS) == 5
        assert await add(first, "venue-1", 6) == [6]
        assert await first.acked_elsewhere("venue-1") == []
        assert await seqs_in(second) == [1, 2, 3, 4, 5, 6]
    finally:
        await asyncio.gather(first.close(), second.close())


# -- the gRPC tests of test_collector.py that go through the store, on PostgreSQL ----------
# The tests imported above run here with this module's ``collector``: theirs is SQLite.


@pytest.fixture
async def collector(pg_dsn: str) -> AsyncIterator[col.Collector]:
    c = await col.serve("127.0.0.1:0", pg_dsn)
    yield c
    await c.stop(grace_s=0.5)


# -- the collector process on PostgreSQL -----------------------------------------------------


async def health(address: str) -> Any:
    with contextlib.suppress(Exception):
        return await check(address)
    return None


async def wait_for(what: str, predicate: Any, timeout_s: float) -> None:
    """Until ``await predicate()`` (or ``predicate()``) is true."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.05)


class CollectorProcess:
    """``python -m edge_node collector --listen 127.0.0.1:PORT <db flags>``."""

    def __init__(self, tmp: Path, *db_flags: str) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.out = tmp / "collector.out"
        self.err = tmp / "collector.err"
        with open(self.out, "wb") as fo, open(self.err, "wb") as fe:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_node", "collector",
                 "--listen", self.address, *db_flags],
                stdout=fo, stderr=fe, env=cli_env(), cwd=REPO,
            )  # fmt: skip

    async def listening(self) -> str:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"collector exited {self.proc.returncode}: {self.err.read_text()}"
                )
            return b"listening on" in self.out.read_bytes()

        await wait_for("the collector to listen", up, 20)
        return self.out.read_text()

    def stop(self) -> tuple[int, str]:
        """SIGINT; (exit status, everything it printed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode, self.out.read_text() + self.err.read_text()


@pytest.mark.timeout(120)
async def test_collector_process_on_postgresql_rides_out_a_database_outage(
    tmp_path: Path, pg_server: PgServer, pg_dsn: str
) -> None:
    collector = CollectorProcess(tmp_path, "--db", pg_dsn)
    node: LinkedNode | None = None
    try:
        banner = await collector.listening()
        assert f"(db postgresql://postgres@127.0.0.1:{pg_server.port}/" in banner
        node = await LinkedNode.start(tmp_path, collector.address)
        await node.append(5)
        await wait_for("the first summaries to be acked", lambda: node.caught_up(5), 20)
        assert await health(collector.address) == SERVING

        await asyncio.to_thread(pg_server.stop, "fast")
        try:
            await node.append(5)
            await wait_for("NOT_SERVING", lambda: _is(health(collector.address), NOT_SERVING), 20)
            await node.append(5)  # the show goes on: the node spools
            await asyncio.sleep(0.5)
            assert node.link.acked_seq == 5, "nothing may be acked while the database is down"
            assert node.spool.stats().depth == 10
        finally:
            await asyncio.to_thread(pg_server.start)
        await wait_for("the node to catch up", lambda: node.caught_up(15), 40)
        await wait_for("SERVING", lambda: _is(health(collector.address), SERVING), 20)
        await node.append(2)
        await wait_for("the summaries after the outage", lambda: node.caught_up(17), 20)

        code, out, err = await edge_node(
            "summaries", "--collector", collector.address, "--node", "venue-1", "--json"
        )
        assert code == 0, err
        rows = [json.loads(line) for line in out.splitlines()]
        assert [r["seq"] for r in rows] == list(range(1, 18))  # each once, none missing
        assert [r["start"] for r in rows] == [T0_MS // 1000 + s for s in range(17)]
        code, out, err = await edge_node("summaries", "--collector", collector.address)
        assert code == 0 and len(out.splitlines()) == 17, err
    finally:
        if node is not None:
            await node.stop()
        code, printed = await asyncio.to_thread(collector.stop)
    assert code == 0, printed
    assert "Traceback" not in printed
    assert "the database failed" in printed and "the database works again" in printed
    assert pg_server.password not in printed


async def _is(status: Any, expected: Any) -> bool:
    return bool(await status == expected)


async def test_collector_reads_its_dsn_from_a_file_and_refuses_bad_ones(
    tmp_path: Path, pg_server: PgServer, pg_dsn: str
) -> None:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(f"  {pg_dsn}\n")
    dsn_file.chmod(0o600)
    collector = CollectorProcess(tmp_path, "--db-dsn-file", str(dsn_file))
    try:
        banner = await collector.listening()
        assert f"(db postgresql://postgres@127.0.0.1:{pg_server.port}/" in banner
        assert await health(collector.address) == SERVING
    finally:
        code, printed = await asyncio.to_thread(collector.stop)
    assert code == 0 and pg_server.password not in printed, printed

    dsn_file.write_text(f"host=127.0.0.1 password={pg_server.password}\n")  # not a URI
    code, out, err = await edge_node(
        "collector", "--listen", "127.0.0.1:0", "--db-dsn-file", str(dsn_file)
    )
    assert code == 2 and "--db-dsn-file" in err and pg_server.password not in out + err
    code, out, err = await edge_node(
        "collector", "--listen", "127.0.0.1:0", "--db-dsn-file", str(tmp_path / "none")
    )
    assert code == 2 and "cannot read" in err and "Traceback" not in err
    wrong = pg_server.dsn(password="Wrong-pass-9")
    code, out, err = await edge_node("collector", "--listen", "127.0.0.1:0", "--db", wrong)
    assert code == 2 and "Traceback" not in err, err
    assert "cannot open the database postgresql://postgres@127.0.0.1" in err
    assert "password authentication failed" in err and "Wrong-pass-9" not in out + err
    code, _, err = await edge_node(
        "collector", "--listen", "127.0.0.1:0", "--db", "x.db", "--db-dsn-file", str(dsn_file)
    )
    assert code == 2 and "not allowed with" in err
