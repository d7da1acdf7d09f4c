"""The cloud link end to end (issue 7): a real node process (``edge-node demo``) dialling
a real collector process (``python -m edge_node collector``), both on loopback.

- outage: the collector down for ~8 s under a steady event load; afterwards every
  one-second window is at the collector exactly once, in order, none missing;
- crash: the node kill -9'd (with its worker) 20 times at random moments, restarted on
  the same data dir: every summary its spool had stored reaches the collector unchanged, seqs
  run 1..N without a gap and are never reused;
- commands from the collector's API to the engine and back, with malformed, unknown
  and duplicate commands (deduplicated by the collector, and by the node itself when
  a collector lost its database);
- quick collector restarts: the first command afterwards is answered and the
  summaries catch up at once (the ended stream takes nothing with it);
- TLS and mTLS with certificates made here; a client certificate from another CA and a
  wrong bearer token are refused;
- a stalled (SIGSTOPped) collector: the video of a WHEP viewer never stalls, the node's
  memory stays bounded, and the summaries catch up afterwards.

The model-based test of the spool and a kill -9 loop of a bare spooling process live
with the spool's own tests (tests/cloud); these tests check the real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import ipaddress
import itertools
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from edge_node.cloud import collector as col
from tests.conftest import NodeProcess, free_port, start_node

REPO = Path(__file__).resolve().parents[2]
NODE_ID = "demo"  # the demo's node id


# --- helpers: processes ----------------------------------------------------------------


def cli_env() -> dict[str, str]:
    """The environment of the CLI verbs and the collector: no node settings leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EDGE_NODE_")}


def wait_until(
    predicate: Callable[[], Any], timeout_s: float, what: str, step_s: float = 0.2
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(step_s)


class CollectorProcess:
    """``python -m edge_node collector`` on a fixed loopback port, restartable."""

    def __init__(self, tmp: Path, db: Path, *extra: str, port: int | None = None) -> None:
        self.tmp = tmp
        self.db = db
        self.extra = extra
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout_s: float = 15.0) -> CollectorProcess:
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        stem = f"collector-{self.db.stem}-{self.port}-{self.starts}"
        out = self.tmp / f"{stem}.out"
        self.err_path = self.tmp / f"{stem}.err"
        with open(out, "wb") as fo, open(self.err_path, "wb") as fe:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "edge_node", "collector",
                    "--listen", self.address, "--db", str(self.db), *self.extra,
                ],
                stdout=fo,
                stderr=fe,
                env=cli_env(),
                cwd=REPO,
            )  # fmt: skip
        proc = self.proc

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"collector exited ({proc.returncode}): {self.err_path.read_text()}"
                )
            return b"listening on" in out.read_bytes()

        wait_until(listening, timeout_s, "the collector to listen", 0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop it (a stopped process is continued first); returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")


@pytest.fixture
def cleanup() -> Iterator[list[Callable[[], Any]]]:
    """Stop everything a test started, whatever happened."""
    stops: list[Callable[[], Any]] = []
    yield stops
    for stop in reversed(stops):
        with contextlib.suppress(Exception):
            stop()


def collector_proc(
    tmp: Path, cleanup: list[Callable[[], Any]], *extra: str, db: str = "collector.db"
) -> CollectorProcess:
    c = CollectorProcess(tmp, tmp / db, *extra)
    cleanup.append(c.stop)
    return c.start()


def node_env(target: str, settings: Mapping[str, str]) -> dict[str, str]:
    """A demo node dialling an external collector instead of its embedded one;
    ``settings``: "section__key" -> value (EDGE_NODE_SECTION__KEY)."""
    env = {"EDGE_NODE_CLOUD__EMBEDDED_COLLECTOR": "", "EDGE_NODE_CLOUD__TARGET": target}
    env.update({f"EDGE_NODE_{k.upper()}": v for k, v in settings.items()})
    return env


def node_proc(
    tmp: Path,
    cleanup: list[Callable[[], Any]],
    target: str,
    settings: Mapping[str, str] | None = None,
    audience: int = 20,
) -> NodeProcess:
    node = start_node(tmp, "--audience", str(audience), env=node_env(target, settings or {}))
    cleanup.append(lambda: hard_kill(node))
    cleanup.append(node.stop)
    return node


def hard_kill(node: NodeProcess) -> None:
    """kill -9 the node and its media worker (the worker's pid from /healthz)."""
    worker_pid = None
    with contextlib.suppress(Exception):
        worker_pid = node.health()["worker"]["pid"]
    if node.proc.poll() is None:
        node.proc.kill()
    node.proc.wait()
    if worker_pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker_pid, signal.SIGKILL)


def cloud(node: NodeProcess) -> dict[str, Any]:
    status: dict[str, Any] = node.health()["cloud"]
    return status


def caught_up(node: NodeProcess, at_least: int = 1) -> bool:
    """Connected, nothing left in the spool, and the collector acked ``at_least``."""
    c = cloud(node)
    return bool(c["connected"] and c["spool_depth"] == 0 and c["acked_seq"] >= at_least)


def edge_node(*args: str, timeout_s: float = 30) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "edge_node", *args],
        capture_output=True,
        env=cli_env(),
        cwd=REPO,
        timeout=timeout_s,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def summaries(address: str, *tls_flags: str, node: str = NODE_ID) -> list[dict[str, Any]]:
    """``edge-node summaries --json`` for one node, oldest window first."""
    code, out, err = edge_node(
        "summaries", "--collector", address, "--node", node, "--json", *tls_flags
    )
    assert code == 0, err
    assert "Traceback" not in err, err
    return [json.loads(line) for line in out.splitlines()]


def assert_contiguous(rows: list[dict[str, Any]]) -> None:
    """Seqs 1..N with no gap and no duplicate, each a real one-second window."""
    seqs = [r["seq"] for r in rows]
    assert seqs == list(range(1, len(rows) + 1)), seqs
    assert all(r["window_s"] == 1 for r in rows), rows
    # Every seq is a window (no placeholder for a lost or merged record) ...
    assert all(r["start"] > 1_000_000_000 for r in rows), [r["start"] for r in rows]


def subdir(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    return tmp / name


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


# --- 1. outage -------------------------------------------------------------------------


@pytest.mark.timeout(75)
def test_collector_outage_every_window_arrives_once_in_order(
    tmp_path: Path, cleanup: list[Callable[[], Any]]
) -> None:
    collector = collector_proc(tmp_path, cleanup)
    node = node_proc(tmp_path, cleanup, collector.address, audience=20)
    wait_until(lambda: caught_up(node, 3), 20, "the first summaries to be acked")

    t_down = time.time()
    assert collector.stop(signal.SIGTERM) == 0, collector.stderr()
    wait_until(lambda: not cloud(node)["connected"], 5, "the node to see the link drop")
    time.sleep(8)
    during = node.health()
    assert during["cloud"]["connected"] is False and during["cloud"]["last_error"]
    assert during["spool"]["depth"] >= 5, during["spool"]  # windows wait in the spool
    assert during["status"] == "ok", during  # the show goes on
    spooled_through = during["spool"]["next_seq"] - 1

    t_up = time.time()
    collector.start()
    wait_until(
        lambda: caught_up(node, spooled_through), 25, "the node to catch up after the outage"
    )
    # ... and a few windows more, so that every window of the outage has closed.
    wait_until(lambda: caught_up(node, spooled_through + 4), 15, "the windows after the outage")
    rows = summaries(collector.address)
    assert_contiguous(rows)
    starts = [r["start"] for r in rows]
    assert all(b - a == 1 for a, b in itertools.pairwise(starts)), starts
    # The windows of the outage are there, delivered late from the spool (their
    # receipt is after the restart), and they carry the events of those seconds.
    outage = [r for r in rows if t_down <= r["start"] and r["start"] + 1 <= t_up]
    assert len(outage) >= 6, (t_down, t_up, starts)
    assert all(r["received"] >= t_up - 0.5 for r in outage), outage
    assert sum(sum(o.values()) for r in outage for o in r["events"].values()) > 0, outage
    # Counts are in every window, so the empty flag agrees with the events.
    assert all(r["empty"] == (not r["events"]) for r in rows), rows
    assert node.proc.poll() is None
    assert node.stop() == 0


# --- 2. node crash ---------------------------------------------------------------------


def spool_snapshot(data_dir: Path, dest: Path) -> tuple[dict[int, bytes], int]:
    """The rows a kill -9'd node's spool holds (its summaries' seq -> payload), and
    the highest seq it ever assigned, read from a copy of the files."""
    dest.mkdir()
    for suffix in ("", "-wal"):
        src = data_dir / f"spool.db{suffix}"
        if src.exists():
            shutil.copy(src, dest / f"spool.db{suffix}")
    if not (dest / "spool.db").exists():
        return {}, 0
    conn = sqlite3.connect(dest / "spool.db")
    try:
        rows = {
            int(seq): bytes(payload)
            for seq, kind, payload in conn.execute("SELECT seq, kind, payload FROM spool")
            if kind == "summary"
        }
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.OperationalError:  # killed before the schema was written
        return {}, 0
    finally:
        conn.close()
    return rows, max([int(meta.get("last_seq", 0)), int(meta.get("acked_through", 0)), *rows])


@pytest.mark.timeout(400)  # 20 lives; a node start takes seconds on a loaded CI box
def test_node_killed_repeatedly_loses_no_stored_summary_and_never_reuses_a_seq(
    tmp_path: Path, cleanup: list[Callable[[], Any]]
) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    collector = collector_proc(tmp_path, cleanup)
    stored: dict[int, bytes] = {}  # every summary a dead node's spool held
    highest_assigned = 0
    kills = 20  # the issue asks for at least 20 kills in a loop
    # Windows close 0.5 s after their end, so each life spools a few of them.
    more = {"cloud__window_lateness_s": "0.5"}
    for life in range(kills):
        node = node_proc(tmp_path, cleanup, collector.address, more)
        spool = node.health()["spool"]
        assert spool["load"]["discarded"] == {}, (seed, spool["load"])
        assert spool["lost"] == 0, (seed, spool)
        # Seqs go on after everything the previous lives assigned.
        assert spool["next_seq"] > highest_assigned, (seed, spool, highest_assigned)
        # Every other life, the collector is frozen so that the spool fills and the
        # kill lands with an unacknowledged tail (some of it already sent).
        frozen = life % 2 == 1
        if frozen:
            os.kill(collector.pid, signal.SIGSTOP)
        time.sleep(rng.uniform(0.7, 3.0))
        hard_kill(node)
        if frozen:
            os.kill(collector.pid, signal.SIGCONT)
        rows, top = spool_snapshot(node.data_dir, tmp_path / f"snapshot-{life}")
        for seq, payload in rows.items():
            assert stored.setdefault(seq, payload) == payload, (seed, seq)  # never reused
        highest_assigned = max(highest_assigned, top)

    node = node_proc(tmp_path, cleanup, collector.address, more)
    assert node.health()["spool"]["next_seq"] > highest_assigned
    wait_until(
        lambda: caught_up(node, highest_assigned + 1), 30, "the last life to deliver everything"
    )
    rows_at_collector = summaries(collector.address)
    assert_contiguous(rows_at_collector)
    # Seq order is window order, across every restart (a reused seq would break it).
    starts = [r["start"] for r in rows_at_collector]
    assert all(a < b for a, b in itertools.pairwise(starts)), (seed, starts)
    # Every summary a spool had stored (committed) is at the collector, unchanged.
    assert stored, seed
    assert max(stored) <= len(rows_at_collector), seed
    by_seq = {r["seq"]: r for r in rows_at_collector}
    for seq, payload in stored.items():
        decoded = col.decode_payload(payload)
        got = by_seq[seq]
        assert got["start"] == decoded["start"], (seed, seq)
        assert got["events"] == decoded["events"], (seed, seq)
    # Exactly once in storage: one row per (node, seq) in the collector's database.
    conn = sqlite3.connect(f"file:{collector.db}?mode=ro", uri=True)
    try:
        n, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT seq) FROM summaries WHERE node_id = ?", (NODE_ID,)
        ).fetchone()
    finally:
        conn.close()
    assert n == distinct >= len(rows_at_collector)
    assert node.stop() == 0


# --- 3. commands -----------------------------------------------------------------------


def command(address: str, cmd: str, args: str = "{}", *flags: str) -> tuple[int, Any, str]:
    code, out, err = edge_node(
        "command", "--collector", address, "--node", NODE_ID, "--cmd", cmd, "--args", args,
        "--timeout", "10", *flags,
    )  # fmt: skip
    assert "Traceback" not in err, err
    return code, json.loads(out) if out.strip() else None, err


def commands_metric(node: NodeProcess, outcome: str) -> float:
    text = node.get("/metrics")[1].decode()
    for line in text.splitlines():
        if line.startswith("edge_node_cloud_commands_total{") and f'outcome="{outcome}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def send_when_connected(
    client: col.CollectorClient, cmd: str, args: str, command_id: str = ""
) -> col.CommandResult:
    """Send once the node's stream has reached the collector (UNAVAILABLE before).
    A node that does not answer in 5 s fails the test (DEADLINE_EXCEEDED)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return await client.send_command(NODE_ID, cmd, args, command_id, timeout_s=5)
        except col.CollectorCallError as exc:
            if exc.code != "UNAVAILABLE" or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


@pytest.mark.timeout(75)
def test_commands_round_trip_through_the_collector(
    tmp_path: Path, cleanup: list[Callable[[], Any]]
) -> None:
    collector = collector_proc(tmp_path, cleanup)
    node = node_proc(tmp_path, cleanup, collector.address, audience=0)
    wait_until(lambda: cloud(node)["connected"], 15, "the link to come up")
    addr = collector.address

    poll = '{"poll":"p","question":"q","options":["a","b"]}'
    code, shown, err = command(addr, "poll.open", poll)
    assert code == 0, err
    assert shown["ok"] is True and shown["result"] == {"poll": "p"}, shown
    assert shown["node"] == NODE_ID and shown["command_id"]
    # Applied to the engine: a second poll.open of the same poll (a new command) is busy.
    code, shown, err = command(addr, "poll.open", poll)
    assert code == 1, err
    assert shown["ok"] is False and shown["error_code"] == "busy", shown

    code, shown, err = command(addr, "announce", '{"text":"hello venue","seconds":5}')
    assert code == 0, err
    assert shown["ok"] is True and shown["result"] == {}, shown

    # Malformed and unknown commands: an error result from the node, exit 1.
    for cmd, args, error_code in (
        ("no.such.command", "{}", "unknown_target"),
        ("poll.open", '{"poll":5,"question":"q","options":["a","b"]}', "bad_message"),
        ("poll.open", '{"poll":"x","question":"q","options":"ab"}', "bad_message"),
        ("announce", '{"text":""}', "bad_message"),
        ("announce", "{}", "bad_message"),
        ("poll.close", '{"poll":"never-opened"}', "unknown_target"),
    ):
        code, shown, err = command(addr, cmd, args)
        assert code == 1, (cmd, args, err)
        assert shown["ok"] is False and shown["error_code"] == error_code, (cmd, args, shown)
        assert shown["error"], shown
    # Args that are not a JSON object never leave the CLI (exit 2, no traceback).
    code, shown, err = command(addr, "announce", "[1]")
    assert code == 2 and shown is None and "--args" in err, err

    async def through_the_api() -> None:
        async with col.CollectorClient(addr) as client:
            # ... nor pass the collector's API.
            with pytest.raises(col.CollectorCallError) as info:
                await client.send_command(NODE_ID, "announce", "[1]")
            assert info.value.code == "INVALID_ARGUMENT"
            args = '{"poll":"d","question":"q","options":["a","b"]}'
            first = await client.send_command(NODE_ID, "poll.open", args, command_id="dup-1")
            assert first.ok and json.loads(first.result_json) == {"poll": "d"}, first
            # The same command id again: the stored answer, not a second application
            # (which would be "busy": the poll is open).
            again = await client.send_command(NODE_ID, "poll.open", args, command_id="dup-1")
            assert again == first
            # Two concurrent sends of one new command id share one application.
            args_e = '{"poll":"e","question":"q","options":["a","b"]}'
            both = await asyncio.gather(
                client.send_command(NODE_ID, "poll.open", args_e, command_id="dup-2"),
                client.send_command(NODE_ID, "poll.open", args_e, command_id="dup-2"),
            )
            assert both[0] == both[1] and both[0].ok, both

    ok_before = commands_metric(node, "ok")
    asyncio.run(through_the_api())
    assert commands_metric(node, "ok") == ok_before + 2  # "d" and "e", once each

    # The node remembers answered command ids itself: a collector that lost its
    # database resends "dup-1" and gets the node's remembered answer (ok), not "busy".
    collector.stop()
    fresh = CollectorProcess(tmp_path, tmp_path / "fresh.db", port=collector.port)
    cleanup.append(fresh.stop)
    fresh.start()
    wait_until(lambda: cloud(node)["connected"], 20, "the link to the fresh collector")

    async def resend() -> col.CommandResult:
        async with col.CollectorClient(addr) as client:
            args = '{"poll":"d","question":"q","options":["a","b"]}'
            return await send_when_connected(client, "poll.open", args, "dup-1")

    dup_before = commands_metric(node, "duplicate")
    replayed = asyncio.run(resend())
    assert replayed.ok and json.loads(replayed.result_json) == {"poll": "d"}, replayed
    assert commands_metric(node, "duplicate") == dup_before + 1
    health = node.health()
    assert node.proc.poll() is None and health["status"] == "ok", health
    assert node.stop() == 0


@pytest.mark.timeout(75)
def test_quick_collector_restarts_lose_no_command_result_and_do_not_stall(
    tmp_path: Path, cleanup: list[Callable[[], Any]]
) -> None:
    """The collector restarted at once (a deploy): the stream that ended must not take
    the next command result or summaries with it, so the cloud's first command is
    answered and the summaries catch up without waiting for the ack watchdog."""
    collector = collector_proc(tmp_path, cleanup)
    node = node_proc(tmp_path, cleanup, collector.address, audience=20)
    wait_until(lambda: caught_up(node, 3), 20, "the first summaries to be acked")
    for i in range(3):
        assert collector.stop() == 0, collector.stderr()
        collector.start()

        async def first_command(i: int = i) -> col.CommandResult:
            async with col.CollectorClient(collector.address) as client:
                return await send_when_connected(client, "announce", f'{{"text":"deploy {i}"}}')

        result = asyncio.run(first_command())
        assert result.ok, result
        through = node.health()["spool"]["next_seq"] - 1
        # Well within the ack watchdog's 15 s: nothing was lost on the old stream.
        wait_until(functools.partial(caught_up, node, through), 8, f"catch-up {i}")
    rows = summaries(collector.address)
    assert_contiguous(rows)
    starts = [r["start"] for r in rows]
    assert all(b - a == 1 for a, b in itertools.pairwise(starts)), starts
    assert node.stop() == 0


# --- 4. TLS and mTLS -------------------------------------------------------------------


def make_pki(tmp: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and a
    client certificate from another CA ("rogue"); returns file name -> path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    pki = tmp / "pki"
    pki.mkdir()

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def issue(
        cn: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
        usage: x509.ObjectIdentifier | None = None,
    ) -> x509.Certificate:
        issuer_name, issuer_key = issuer or (name(cn), key)
        b = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
        )
        if usage is not None:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            san: list[x509.GeneralName] = [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]
            b = b.add_extension(x509.SubjectAlternativeName(san), False)
        return b.sign(issuer_key, hashes.SHA256())

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (pki / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (pki / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    ca_key, other_key = key(), key()
    ca, other = issue("test-ca", ca_key, None), issue("other-ca", other_key, None)
    write("ca", ca, ca_key)
    write("other-ca", other, other_key)
    k = key()
    write("server", issue("collector", k, (ca.subject, ca_key), ExtendedKeyUsageOID.SERVER_AUTH), k)
    k = key()
    write("client", issue("demo", k, (ca.subject, ca_key), ExtendedKeyUsageOID.CLIENT_AUTH), k)
    k = key()
    rogue = issue("demo", k, (other.subject, other_key), ExtendedKeyUsageOID.CLIENT_AUTH)
    write("rogue", rogue, k)
    return {p.name: str(p) for p in pki.iterdir()}


def tls_env(pki: dict[str, str], client: str | None = None, **more: str) -> dict[str, str]:
    env = {"cloud__tls": "true", "cloud__tls_ca": pki["ca.crt"], "cloud__connect_timeout_s": "3"}
    if client is not None:
        env |= {"cloud__tls_cert": pki[f"{client}.crt"], "cloud__tls_key": pki[f"{client}.key"]}
    return env | more


def refused(node: NodeProcess, error_has: str = "") -> bool:
    c = cloud(node)
    return bool(
        not c["connected"]
        and c["last_error"]
        and error_has in c["last_error"]
        and c["acked_seq"] == 0
        and c["spool_depth"] >= 2  # summaries are made, and wait
    )


@pytest.mark.timeout(60)
def test_summaries_arrive_over_tls(tmp_path: Path, cleanup: list[Callable[[], Any]]) -> None:
    pki = make_pki(tmp_path)
    collector = collector_proc(
        tmp_path, cleanup, "--tls-cert", pki["server.crt"], "--tls-key", pki["server.key"]
    )
    node = node_proc(tmp_path, cleanup, collector.address, tls_env(pki))
    wait_until(lambda: caught_up(node, 2), 20, "summaries over TLS")
    rows = summaries(collector.address, "--tls-ca", pki["ca.crt"])
    assert len(rows) >= 2
    assert_contiguous(rows)
    # Plaintext does not reach a TLS collector.
    code, out, err = edge_node("summaries", "--collector", collector.address, "--json")
    assert code == 2 and out == "" and "UNAVAILABLE" in err, err
    assert node.stop() == 0


@pytest.mark.timeout(75)
def test_mtls_accepts_our_client_certificate_and_refuses_another_cas(
    tmp_path: Path, cleanup: list[Callable[[], Any]]
) -> None:
    pki = make_pki(tmp_path)
    collector = collector_proc(
        tmp_path, cleanup,
        "--tls-cert", pki["server.crt"], "--tls-key", pki["server.key"],
        "--client-ca", pki["ca.crt"],
    )  # fmt: skip
    mtls = ["--tls-ca", pki["ca.crt"], "--tls-cert", pki["client.crt"]]
    mtls += ["--tls-key", pki["client.key"]]
    rogue = node_proc(
        subdir(tmp_path, "rogue-node"),
        cleanup,
        collector.address,
        tls_env(pki, "rogue", node__id="rogue"),
    )
    no_cert = node_proc(
        subdir(tmp_path, "no-cert-node"),
        cleanup,
        collector.address,
        tls_env(pki, None, node__id="no-cert"),
    )
    good = node_proc(tmp_path, cleanup, collector.address, tls_env(pki, "client"))
    wait_until(lambda: caught_up(good, 2), 20, "summaries over mTLS")
    assert_contiguous(summaries(collector.address, *mtls))
    for bad in (rogue, no_cert):
        wait_until(functools.partial(refused, bad), 15, "the link without a valid client cert")
    # Nothing of theirs is stored; the collector never even heard their Hello.
    for node_id in ("rogue", "no-cert"):
        assert summaries(collector.address, *mtls, node=node_id) == []

    async def known_nodes() -> list[str]:
        tls = col.TlsFiles(pki["client.crt"], pki["client.key"], pki["ca.crt"])
        async with col.CollectorClient(collector.address, tls=tls) as client:
            return [n.node_id for n in await client.list_nodes()]

    assert asyncio.run(known_nodes()) == [NODE_ID]
    # The CLI with the other CA's certificate is refused too.
    code, out, err = edge_node(
        "summaries", "--collector", collector.address, "--json", "--tls-ca", pki["ca.crt"],
        "--tls-cert", pki["rogue.crt"], "--tls-key", pki["rogue.key"],
    )  # fmt: skip
    assert code == 2 and out == "" and "UNAVAILABLE" in err, err
    for n in (good, rogue, no_cert):
        assert n.proc.poll() is None
        assert n.stop() == 0


@pytest.mark.timeout(60)
def test_a_wrong_bearer_token_is_refused(tmp_path: Path, cleanup: list[Callable[[], Any]]) -> None:
    collector = collector_proc(tmp_path, cleanup, "--token", "right-token")
    node = node_proc(tmp_path, cleanup, collector.address, {"cloud__token": "wrong-token"})
    wait_until(lambda: refused(node, "UNAUTHENTICATED"), 20, "the wrong token to be refused")
    assert summaries(collector.address, "--token", "right-token") == []
    code, _, err = edge_node(
        "summaries", "--collector", collector.address, "--json", "--token", "wrong-token"
    )
    assert code == 2 and "UNAUTHENTICATED" in err, err
    assert node.stop() == 0
    # The same node with the right token delivers what it spooled meanwhile.
    node = node_proc(tmp_path, cleanup, collector.address, {"cloud__token": "right-token"})
    wait_until(lambda: caught_up(node, 3), 20, "summaries with the right token")
    assert_contiguous(summaries(collector.address, "--token", "right-token"))
    assert node.stop() == 0


# --- 5. a stalled collector ------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_stalled_collector_neither_stalls_video_nor_grows_memory(
    tmp_path: Path, cleanup: list[Callable[[], Any]]
) -> None:
    from edge_node.clients.whep import WhepViewer, frame_counter

    collector = await asyncio.to_thread(collector_proc, tmp_path, cleanup)
    node = await asyncio.to_thread(
        functools.partial(node_proc, tmp_path, cleanup, collector.address, audience=20)
    )

    async def health() -> dict[str, Any]:
        return await asyncio.to_thread(node.health)

    deadline = time.monotonic() + 20
    while not (await health())["cloud"]["acked_seq"] >= 2:
        assert time.monotonic() < deadline, "no summaries acked"
        await asyncio.sleep(0.2)

    viewer = WhepViewer(node.url)
    await viewer.connect()
    frames: list[tuple[float, int]] = []  # (arrival, test pattern counter)
    stop_reading = asyncio.Event()

    async def read() -> None:
        while not stop_reading.is_set():
            f = await viewer.frame(timeout=5)
            frames.append((time.monotonic(), frame_counter(f)))

    reader = asyncio.create_task(read())
    try:
        await asyncio.sleep(3)  # the viewer plays, the node settles
        assert len(frames) > 30, frames
        rss_before = rss_kib(node.proc.pid)
        os.kill(collector.pid, signal.SIGSTOP)
        t_stop = time.monotonic()
        stalled_max_depth = 0
        while time.monotonic() - t_stop < 6:
            await asyncio.sleep(0.5)
            h = await health()  # the node answers promptly meanwhile
            stalled_max_depth = max(stalled_max_depth, h["spool"]["depth"])
            assert h["status"] == "ok", h
        t_cont = time.monotonic()
        rss_stalled = rss_kib(node.proc.pid)
        os.kill(collector.pid, signal.SIGCONT)
        await asyncio.sleep(1)
    finally:
        stop_reading.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader, 6)
        await viewer.close()
    assert reader.done() and reader.exception() is None, reader
    # The summaries waited in the spool while the collector was frozen.
    assert stalled_max_depth >= 3, stalled_max_depth
    # Video never stalled: frames every few tens of ms, the counter at ~30 fps.
    during = [(t, c) for t, c in frames if t_stop <= t <= t_cont]
    arrivals = [t for t, _ in frames if t_stop - 0.5 <= t <= t_cont + 0.5]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert max(gaps) < 0.5, max(gaps)
    rate = (during[-1][1] - during[0][1]) / (during[-1][0] - during[0][0])
    assert 20 < rate < 40, rate
    assert len(during) >= 20 * (t_cont - t_stop), len(during)
    # Memory stayed bounded (generous: the viewer's session and allocator noise).
    assert rss_stalled - rss_before < 50 * 1024, (rss_before, rss_stalled)

    # And the summaries catch up, every window exactly once.
    deadline = time.monotonic() + 25
    while True:
        c = (await health())["cloud"]
        if c["connected"] and c["spool_depth"] == 0 and c["acked_seq"] >= 10:
            break
        assert time.monotonic() < deadline, c
        await asyncio.sleep(0.2)
    rows = await asyncio.to_thread(summaries, collector.address)
    assert_contiguous(rows)
    starts = [r["start"] for r in rows]
    assert all(b - a == 1 for a, b in itertools.pairwise(starts)), starts
    assert await asyncio.to_thread(node.stop) == 0
