"""The reference collector over real gRPC on loopback.

``FakeNode`` is a real grpc.aio client speaking ``EdgeLink.Sync`` (the node-side link
comes later); the collector runs in-process (``serve``) or, for the CLI verbs, as a
``python -m edge_node collector`` subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_node.backoff import Backoff
from edge_node.cloud import collector as col
from edge_node.cloud._proto import edge_pb2 as pb
from edge_node.cloud._proto import edge_pb2_grpc as pb_grpc
from edge_node.cloud.link import CloudLink
from edge_node.cloud.spool import Spool
from edge_node.cloud.spool_state import Bounds
from edge_node.config import CloudConfig
from edge_node.metrics import Registry

REPO = Path(__file__).resolve().parents[2]
T0_MS = 1_700_000_000_000  # a window start, whole seconds

pytestmark = pytest.mark.timeout(30)


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def payload(comments: int = 1, likes: int = 0) -> bytes:
    data = {
        "v": 1,
        "events": {"comment": {"accepted": comments, "blocked": 1}},
        "unique_users": comments,
        "top_words": [["666", comments]],
        "likes": likes,
        "flags": [],
    }
    return bytes(msgpack.packb(data))


class FakeNode:
    """A node as far as the collector can tell: Hello, summaries, command results."""

    def __init__(
        self,
        target: str,
        node_id: str,
        *,
        token: str | None = None,
        credentials: Any = None,
        proto_version: int = 1,
        acked_through: int = 0,
    ) -> None:
        self.node_id = node_id
        self.proto_version = proto_version
        self.acked_through = acked_through
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(target)
        else:
            self.channel = grpc.aio.secure_channel(target, credentials)
        self.stub = pb_grpc.EdgeLinkStub(self.channel)
        self.acks: list[int] = []
        self.commands: list[pb.Command] = []
        self.events: list[pb.PlatformEvent] = []
        self.error: grpc.aio.AioRpcError | None = None
        self.ended = asyncio.Event()
        # Answers a command (None = stay silent).
        self.answer: Callable[[pb.Command], pb.CommandResult | None] | None = None
        self._write_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, hello: bool = True) -> FakeNode:
        self.call = self.stub.Sync(metadata=self.metadata)
        self._reader = asyncio.create_task(self._read())
        if hello:
            hello_msg = pb.Hello(
                node_id=self.node_id,
                boot_id="boot-1",
                version="test",
                proto_version=self.proto_version,
                acked_through=self.acked_through,
            )
            # Refused at once (a wrong token, say)? The reader records why.
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self.write(pb.NodeMessage(hello=hello_msg))
        return self

    async def write(self, msg: pb.NodeMessage) -> None:
        async with self._write_lock:
            await self.call.write(msg)

    async def _read(self) -> None:
        try:
            async for msg in self.call:
                kind = msg.WhichOneof("kind")
                if kind == "ack":
                    self.acks.append(msg.ack.highest_contiguous_seq)
                elif kind == "command":
                    self.commands.append(msg.command)
                    result = self.answer(msg.command) if self.answer else None
                    if result is not None:
                        await self.write(pb.NodeMessage(command_result=result))
                elif kind == "platform_event":
                    self.events.append(msg.platform_event)
        except grpc.aio.AioRpcError as exc:
            self.error = exc
        finally:
            self.ended.set()

    async def summary(
        self, seq: int, start_ms: int | None = None, data: bytes | None = None, empty: bool = False
    ) -> None:
        await self.write(
            pb.NodeMessage(
                summary=pb.Summary(
                    seq=seq,
                    window_start_unix_ms=T0_MS + (seq - 1) * 1000 if start_ms is None else start_ms,
                    window_s=1,
                    payload=payload(seq) if data is None else data,
                    empty=empty,
                )
            )
        )

    async def welcomed(self) -> None:
        """The collector answers a Hello with an Ack: from then on it knows the node."""
        await until(lambda: bool(self.acks))

    async def wait_ack(self, seq: int, timeout_s: float = 5.0) -> None:
        await until(lambda: bool(self.acks) and self.acks[-1] >= seq, timeout_s)

    async def wait_ended(self, timeout_s: float = 5.0) -> grpc.StatusCode:
        await asyncio.wait_for(self.ended.wait(), timeout_s)
        return self.error.code() if self.error else grpc.StatusCode.OK

    async def close(self) -> None:
        self.call.cancel()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.channel.close()


class LinkedNode:
    """The node's real cloud side, in this process: its durable spool and its link
    (``CloudLink``), dialling ``target``; summaries are appended as the app does."""

    def __init__(self, spool: Spool, link: CloudLink) -> None:
        self.spool = spool
        self.link = link

    @classmethod
    async def start(
        cls, data_dir: Path, target: str, node_id: str = "venue-1", **cloud: Any
    ) -> LinkedNode:
        registry = Registry()
        spool = await Spool.open(
            data_dir / f"{node_id}-spool.db",
            bounds=Bounds(100_000, 1 << 30, 86_400.0),
            registry=registry,
            node_id=node_id,
            durability="memory",
            commit_interval_s=0.005,
        )
        cfg = CloudConfig(target=target, **{"connect_timeout_s": 3.0, **cloud})
        link = CloudLink(
            cfg,
            node_id,
            spool,
            registry,
            apply_command=lambda cmd, args: {},
            platform_event=lambda kind, user, payload: None,
            backoff=Backoff(0.05, 0.3),
        )
        await link.start()
        return cls(spool, link)

    async def append(self, count: int) -> list[int]:
        """``count`` one-second summaries, each returned once committed."""
        seqs = []
        for _ in range(count):
            start_s = T0_MS // 1000 + self.spool.stats().next_seq - 1
            data = {"v": 1, "start": start_s, "window_s": 1, "empty": False, "events": {}}
            seqs.append(await self.spool.append("summary", bytes(msgpack.packb(data))))
            self.link.wake()
        return seqs

    def caught_up(self, seq: int) -> bool:
        return self.link.acked_seq >= seq and self.spool.stats().depth == 0

    async def stop(self) -> None:
        await self.link.stop()
        await self.spool.close()


@pytest.fixture
async def collector(tmp_path: Path) -> AsyncIterator[col.Collector]:
    c = await col.serve("127.0.0.1:0", tmp_path / "collector.db")
    yield c
    await c.stop(grace_s=0.5)


@pytest.fixture
async def nodes(collector: col.Collector) -> AsyncIterator[Callable[..., Any]]:
    made: list[FakeNode] = []

    async def make(node_id: str = "venue-1", **kw: Any) -> FakeNode:
        node = await FakeNode(collector.address, node_id, **kw).connect()
        made.append(node)
        await node.welcomed()
        return node

    yield make
    for node in made:
        await node.close()


@pytest.fixture
async def client(collector: col.Collector) -> AsyncIterator[col.CollectorClient]:
    async with col.CollectorClient(collector.address) as c:
        yield c


async def stored(client: col.CollectorClient, **kw: Any) -> list[col.StoredSummary]:
    return [s async for s in client.query_summaries(**kw)]


# -- sequence tracking (pure) -------------------------------------------------------


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=120))
def test_contiguous_seqs_is_the_longest_stored_prefix(seqs: list[int]) -> None:
    tracker = col.ContiguousSeqs()
    for seq in seqs:
        tracker.add(seq)
    expected = 0
    while expected + 1 in set(seqs):
        expected += 1
    assert tracker.highest == expected
    assert tracker.above == {s for s in seqs if s > expected + 1}


async def test_rows_arriving_within_the_commit_delay_share_one_commit(tmp_path: Path) -> None:
    store = col.CollectorStore(tmp_path / "batch.db", commit_delay_s=0.5)
    await store.open()
    try:
        futures = []
        for seq in range(1, 21):
            summary = col.WindowSummary(seq, T0_MS + seq * 1000, 1, payload(seq), False)
            futures.append(store.add_summary("venue-1", summary, T0_MS))
            await asyncio.sleep(0.005)  # one every 5 ms: 100 ms in all
        acks = await asyncio.gather(*futures)
    finally:
        await store.close()
    assert acks == [20] * 20  # each answered after the one commit that holds them all
    assert store.commits == 1 and store.stored == 20


def test_summary_json_view_decodes_the_payload_and_flags_garbage() -> None:
    row = col.StoredSummary("n", 7, T0_MS + 500, 1, payload(2, likes=5), False, T0_MS + 2000)
    view = col.summary_as_json(row)
    assert view["node"] == "n" and view["seq"] == 7
    assert view["start"] == T0_MS / 1000 + 0.5 and view["received"] == T0_MS // 1000 + 2
    assert view["events"] == {"comment": {"accepted": 2, "blocked": 1}} and view["likes"] == 5
    for bad in (b"\xc1", bytes(msgpack.packb([1, 2])), bytes(msgpack.packb({"events": 3}))):
        view = col.summary_as_json(col.StoredSummary("n", 1, T0_MS, 1, bad, False, T0_MS))
        assert view["events"] == {} and view["payload_error"]
    empty = col.summary_as_json(col.StoredSummary("n", 1, T0_MS, 1, b"", True, T0_MS))
    assert empty["events"] == {} and empty["empty"] is True and "payload_error" not in empty


# -- EdgeLink.Sync ------------------------------------------------------------------


async def test_summaries_are_stored_and_acked(
    collector: col.Collector, nodes: Any, client: col.CollectorClient
) -> None:
    node = await nodes()
    await node.wait_ack(0)  # right after Hello: nothing stored yet
    assert node.acks == [0]
    for seq in range(1, 6):
        await node.summary(seq)
    await node.wait_ack(5)
    assert node.acks == sorted(node.acks)  # never goes back
    rows = await stored(client)
    assert [(r.node_id, r.seq) for r in rows] == [("venue-1", s) for s in range(1, 6)]
    assert msgpack.unpackb(rows[2].payload)["events"]["comment"]["accepted"] == 3
    assert rows[0].window_start_unix_ms == T0_MS and rows[0].window_s == 1


async def test_duplicates_and_gaps_store_each_seq_once(
    collector: col.Collector, nodes: Any, client: col.CollectorClient
) -> None:
    node = await nodes()
    await node.summary(1)
    await node.summary(2)
    await node.wait_ack(2)
    # 5 and 4 arrive before 3: stored, but the ack stays at 2 until 3 is stored.
    await node.summary(5)
    await node.summary(4)
    await until(lambda: collector.store.stored == 4)
    await asyncio.sleep(0.1)
    assert max(node.acks) == 2
    await node.summary(3)
    await node.wait_ack(5)
    # Retransmissions (a reconnect's unacknowledged tail) are acked, not stored again.
    for seq in (2, 4, 5, 5):
        await node.summary(seq, data=b"\x80")
    await until(lambda: collector.store.duplicates == 4)
    await node.wait_ack(5)
    rows = await stored(client)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert all(r.payload != b"\x80" for r in rows)  # the first copy is kept


async def test_ack_state_survives_a_collector_restart(tmp_path: Path) -> None:
    db = tmp_path / "restart.db"
    c = await col.serve("127.0.0.1:0", db)
    node = await FakeNode(c.address, "venue-1").connect()
    for seq in (1, 2, 4):
        await node.summary(seq)
    await until(lambda: c.store.stored == 3)
    await node.wait_ack(2)
    await node.close()
    await c.stop(grace_s=0.5)

    c = await col.serve("127.0.0.1:0", db)
    try:
        node = await FakeNode(c.address, "venue-1").connect()
        await node.wait_ack(2)  # the Hello's ack: what is already stored
        await node.summary(3)  # fills the gap left before the restart
        await node.wait_ack(4)
        await node.close()
    finally:
        await c.stop(grace_s=0.5)


async def test_a_second_node_is_independent(
    collector: col.Collector, nodes: Any, client: col.CollectorClient
) -> None:
    a = await nodes("venue-a")
    b = await nodes("venue-b")
    for seq in (1, 2, 3):
        await a.summary(seq)
    await b.summary(1)
    await a.wait_ack(3)
    await b.wait_ack(1)
    assert max(b.acks) == 1
    rows = await stored(client, node_id="venue-b")
    assert [(r.node_id, r.seq) for r in rows] == [("venue-b", 1)]
    listed = {n.node_id: n for n in await client.list_nodes()}
    assert listed["venue-a"].highest_contiguous_seq == 3
    assert listed["venue-b"].highest_contiguous_seq == 1
    assert listed["venue-a"].connected and listed["venue-a"].version == "test"
    await b.close()
    await until(lambda: collector.connected_nodes() == ["venue-a"])
    listed = {n.node_id: n for n in await client.list_nodes()}
    assert not listed["venue-b"].connected


async def test_query_by_node_and_time_range(nodes: Any, client: col.CollectorClient) -> None:
    a = await nodes("venue-a")
    b = await nodes("venue-b")
    for seq in range(1, 7):
        await a.summary(seq)
        await b.summary(seq, start_ms=T0_MS + (seq - 1) * 1000 + 500)
    await a.wait_ack(6)
    await b.wait_ack(6)
    everything = await stored(client)
    assert len(everything) == 12
    starts = [(r.window_start_unix_ms, r.node_id) for r in everything]
    assert starts == sorted(starts)  # oldest window first
    window = await stored(client, node_id="venue-a", since_ms=T0_MS + 2000, until_ms=T0_MS + 5000)
    assert [r.seq for r in window] == [3, 4, 5]
    assert [r.seq for r in await stored(client, node_id="venue-b", limit=2)] == [1, 2]
    assert await stored(client, node_id="nobody") == []
    with pytest.raises(col.CollectorCallError) as info:
        await stored(client, since_ms=T0_MS, until_ms=T0_MS)
    assert info.value.code == "INVALID_ARGUMENT"


async def test_stream_without_hello_is_invalid_argument(collector: col.Collector) -> None:
    node = await FakeNode(collector.address, "venue-1").connect(hello=False)
    await node.summary(1)
    assert await node.wait_ended() == grpc.StatusCode.INVALID_ARGUMENT
    assert node.error is not None and "Hello" in (node.error.details() or "")
    await node.close()
    assert collector.store.stored == 0


async def test_unsupported_proto_version_is_refused(collector: col.Collector) -> None:
    node = await FakeNode(collector.address, "venue-1", proto_version=2).connect()
    assert await node.wait_ended() == grpc.StatusCode.FAILED_PRECONDITION
    await node.close()


async def test_a_newer_stream_replaces_the_older(collector: col.Collector, nodes: Any) -> None:
    old = await nodes("venue-1")
    await old.wait_ack(0)
    new = await nodes("venue-1")
    assert await old.wait_ended() == grpc.StatusCode.ABORTED
    await new.summary(1)
    await new.wait_ack(1)
    assert collector.connected_nodes() == ["venue-1"]


# -- SendCommand ----------------------------------------------------------------------


def answer_ok(command: pb.Command) -> pb.CommandResult:
    args = json.loads(command.args_json)
    return pb.CommandResult(
        command_id=command.command_id, ok=True, result_json=json.dumps({"echo": args})
    )


async def test_send_command_round_trip(nodes: Any, client: col.CollectorClient) -> None:
    node = await nodes()
    node.answer = answer_ok
    result = await client.send_command("venue-1", "announce", '{"text": "hi"}', timeout_s=5)
    assert result.ok and result.node_id == "venue-1" and result.command_id
    assert json.loads(result.result_json) == {"echo": {"text": "hi"}}
    assert [c.cmd for c in node.commands] == ["announce"]

    node.answer = lambda c: pb.CommandResult(
        command_id=c.command_id, ok=False, error_code="unknown_command", error="no such command"
    )
    result = await client.send_command("venue-1", "nope", timeout_s=5)
    assert not result.ok and result.error_code == "unknown_command"


async def test_a_repeated_command_id_returns_the_stored_result(
    nodes: Any, client: col.CollectorClient
) -> None:
    node = await nodes()
    node.answer = answer_ok
    first = await client.send_command("venue-1", "poll.open", '{"poll": "p1"}', command_id="c-1")
    node.answer = None  # a re-sent command would now time out
    again = await client.send_command("venue-1", "poll.open", '{"poll": "p1"}', command_id="c-1")
    assert again == first
    assert [c.command_id for c in node.commands] == ["c-1"]  # sent once


async def test_concurrent_calls_with_one_command_id_send_it_once(
    nodes: Any, client: col.CollectorClient
) -> None:
    node = await nodes()
    answered = asyncio.Event()

    def answer_later(command: pb.Command) -> None:
        async def reply() -> None:
            await asyncio.sleep(0.2)
            await node.write(pb.NodeMessage(command_result=answer_ok(command)))
            answered.set()

        asyncio.get_running_loop().create_task(reply())

    node.answer = answer_later
    results = await asyncio.gather(
        *(client.send_command("venue-1", "announce", "{}", command_id="c-9") for _ in range(3))
    )
    assert all(r == results[0] and r.ok for r in results)
    assert len(node.commands) == 1


async def test_command_to_a_node_not_connected_is_unavailable(
    client: col.CollectorClient,
) -> None:
    with pytest.raises(col.CollectorCallError) as info:
        await client.send_command("nobody", "announce", '{"text": "hi"}')
    assert info.value.code == "UNAVAILABLE"
    assert "not connected" in info.value.details


async def test_command_timeout_is_deadline_exceeded(
    collector: col.Collector, nodes: Any, client: col.CollectorClient
) -> None:
    node = await nodes()  # never answers
    with pytest.raises(col.CollectorCallError) as info:
        await client.send_command("venue-1", "announce", "{}", timeout_s=0.3)
    assert info.value.code == "DEADLINE_EXCEEDED"
    assert len(node.commands) == 1
    # A late answer is still stored: the retry with the same id gets it, not a re-send.
    cid = node.commands[0].command_id
    await node.write(pb.NodeMessage(command_result=answer_ok(node.commands[0])))
    for _ in range(500):
        if await collector.store.command_result("venue-1", cid) is not None:
            break
        await asyncio.sleep(0.01)
    result = await client.send_command("venue-1", "announce", "{}", command_id=cid)
    assert result.ok and len(node.commands) == 1


async def test_node_leaving_before_it_answers_is_unavailable(
    nodes: Any, client: col.CollectorClient
) -> None:
    node = await nodes()
    call = asyncio.create_task(client.send_command("venue-1", "announce", "{}", timeout_s=5))
    await until(lambda: len(node.commands) == 1)
    await node.close()
    with pytest.raises(col.CollectorCallError) as info:
        await call
    assert info.value.code == "UNAVAILABLE"


async def test_malformed_command_requests_are_invalid_argument(
    nodes: Any, client: col.CollectorClient
) -> None:
    await nodes()
    for kwargs in ({"args_json": "[1, 2]"}, {"args_json": "{nope"}, {"cmd": ""}):
        call: dict[str, Any] = {"node_id": "venue-1", "cmd": "announce", **kwargs}
        with pytest.raises(col.CollectorCallError) as info:
            await client.send_command(**call)
        assert info.value.code == "INVALID_ARGUMENT"


async def test_platform_events_reach_the_node(collector: col.Collector, nodes: Any) -> None:
    node = await nodes()
    event = col.PlatformEvent("e-1", "comment", "u-7", '{"text": "hello"}')
    collector.push_platform_event("venue-1", event)
    await until(lambda: len(node.events) == 1)
    assert node.events[0].user == "u-7"
    with pytest.raises(col.NodeNotConnected):
        collector.push_platform_event("nobody", event)


# -- auth and TLS ---------------------------------------------------------------------


async def test_a_wrong_token_is_unauthenticated(tmp_path: Path) -> None:
    c = await col.serve("127.0.0.1:0", tmp_path / "auth.db", token="s3cret")
    try:
        for token in (None, "wrong"):
            node = await FakeNode(c.address, "venue-1", token=token).connect()
            assert await node.wait_ended() == grpc.StatusCode.UNAUTHENTICATED, node.error
            await node.close()
            async with col.CollectorClient(c.address, token=token) as bad:
                with pytest.raises(col.CollectorCallError) as info:
                    await bad.list_nodes()
                assert info.value.code == "UNAUTHENTICATED"
                with pytest.raises(col.CollectorCallError) as info:
                    await stored(bad)
                assert info.value.code == "UNAUTHENTICATED"
        assert c.store.stored == 0 and c.connected_nodes() == []

        node = await FakeNode(c.address, "venue-1", token="s3cret").connect()
        await node.summary(1)
        await node.wait_ack(1)
        await node.close()
        async with col.CollectorClient(c.address, token="s3cret") as good:
            assert [n.node_id for n in await good.list_nodes()] == ["venue-1"]
    finally:
        await c.stop(grace_s=0.5)


def make_pki(tmp: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost, and a client certificate
    (plus a client certificate from another CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(
        cn: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
        san: list[x509.GeneralName] | None = None,
    ) -> x509.Certificate:
        issuer_name, issuer_key = issuer or (name(cn), key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(stem: str, c: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (tmp / f"{stem}.crt").write_bytes(c.public_bytes(serialization.Encoding.PEM))
        (tmp / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    import ipaddress

    ca_key, other_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca, other_ca = cert("test-ca", ca_key, None), cert("other-ca", other_key, None)
    write("ca", ca, ca_key)
    san: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    for stem, issuer in (("server", (ca, ca_key)), ("client", (ca, ca_key))):
        key = ec.generate_private_key(ec.SECP256R1())
        write(stem, cert(stem, key, (issuer[0].subject, issuer[1]), san), key)
    key = ec.generate_private_key(ec.SECP256R1())
    write("rogue", cert("rogue", key, (other_ca.subject, other_key)), key)
    return {p.stem + p.suffix: p for p in tmp.iterdir()}


async def test_mtls_accepts_the_right_client_certificate_only(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    tls = col.TlsFiles(str(pki["server.crt"]), str(pki["server.key"]), str(pki["ca.crt"]))
    c = await col.serve("127.0.0.1:0", tmp_path / "tls.db", tls=tls)
    try:
        good_tls = col.TlsFiles(str(pki["client.crt"]), str(pki["client.key"]), str(pki["ca.crt"]))
        ca = pki["ca.crt"].read_bytes()
        creds = grpc.ssl_channel_credentials(
            ca, pki["client.key"].read_bytes(), pki["client.crt"].read_bytes()
        )
        node = await FakeNode(c.address, "venue-1", credentials=creds).connect()
        await node.summary(1)
        await node.wait_ack(1)
        await node.close()
        async with col.CollectorClient(c.address, tls=good_tls) as good:
            assert [n.node_id for n in await good.list_nodes()] == ["venue-1"]
        for cert, key in ((None, None), ("rogue.crt", "rogue.key")):
            bad_tls = col.TlsFiles(
                str(pki[cert]) if cert else "", str(pki[key]) if key else "", str(pki["ca.crt"])
            )
            async with col.CollectorClient(c.address, tls=bad_tls) as bad:
                with pytest.raises(col.CollectorCallError) as info:
                    await bad.list_nodes(timeout_s=3)
                assert info.value.code == "UNAVAILABLE"
    finally:
        await c.stop(grace_s=0.5)


# Health checking and reflection: tests/cloud/test_collector_health.py.


# -- the CLI verbs, as processes --------------------------------------------------------


def cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EDGE_NODE_")}


async def edge_node(*args: str, timeout_s: float = 20) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_node",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(),
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_verbs_against_a_collector_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_node",
            "collector",
            "--listen",
            "127.0.0.1:0",
            "--db",
            str(tmp_path / "cli.db"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 15)
        assert b"listening on 127.0.0.1:" in line, line
        target = line.split()[4].decode()
        node = await FakeNode(target, "venue-1").connect()
        other = await FakeNode(target, "venue-2").connect()
        await node.welcomed()
        for seq in (1, 2, 3):
            await node.summary(seq, data=payload(seq, likes=10 * seq))
        await node.summary(4, data=b"", empty=True)
        await other.summary(1)
        await node.wait_ack(4)
        await other.wait_ack(1)

        code, out, err = await edge_node(
            "summaries", "--collector", target, "--node", "venue-1", "--json"
        )
        assert code == 0, err
        lines = [json.loads(x) for x in out.splitlines()]
        assert [x["seq"] for x in lines] == [1, 2, 3, 4]
        first = lines[0]
        assert first["node"] == "venue-1" and isinstance(first["node"], str)
        assert isinstance(first["seq"], int)
        assert first["start"] == T0_MS // 1000
        assert first["events"] == {"comment": {"accepted": 1, "blocked": 1}}
        assert lines[2]["likes"] == 30 and lines[2]["top_words"] == [["666", 3]]
        assert lines[3]["empty"] is True and lines[3]["events"] == {}

        code, out, err = await edge_node(
            "summaries", "--collector", target, "--since", str(T0_MS // 1000 + 2), "--json"
        )
        assert code == 0, err
        assert [(x["node"], x["seq"]) for x in map(json.loads, out.splitlines())] == [
            ("venue-1", 3),
            ("venue-1", 4),
        ]
        code, out, err = await edge_node("summaries", "--collector", target)
        assert code == 0, err
        assert len(out.splitlines()) == 5 and "venue-2" in out
        # Roll-ups: the 1 s windows joined per node (counts add, nothing lost).
        code, out, err = await edge_node(
            "summaries", "--collector", target, "--node", "venue-1", "--json", "--rollup", "10"
        )
        assert code == 0, err
        rolled = [json.loads(x) for x in out.splitlines()]
        assert sum(r["likes"] for r in rolled) == sum(x.get("likes", 0) for x in lines)
        assert sum(r["events"].get("comment", {}).get("accepted", 0) for r in rolled) == sum(
            x["events"].get("comment", {}).get("accepted", 0) for x in lines
        )
        assert all(r["window_s"] == 10 and r["start"] % 10 == 0 for r in rolled)
        assert rolled[0]["seqs"][0] == 1 and rolled[-1]["seqs"][1] == 4

        node.answer = answer_ok
        code, out, err = await edge_node(
            "command", "--collector", target, "--node", "venue-1", "--cmd", "announce",
            "--args", '{"text": "hi"}', "--timeout", "5",
        )  # fmt: skip
        assert code == 0, err
        shown = json.loads(out)
        assert shown["ok"] is True and shown["result"] == {"echo": {"text": "hi"}}
        assert shown["node"] == "venue-1" and shown["command_id"]

        node.answer = lambda c: pb.CommandResult(
            command_id=c.command_id, ok=False, error_code="bad_args", error="text is required"
        )
        code, out, err = await edge_node(
            "command", "--collector", target, "--node", "venue-1", "--cmd", "announce"
        )
        assert code == 1, err
        assert json.loads(out)["error_code"] == "bad_args"

        code, out, err = await edge_node(
            "command", "--collector", target, "--node", "nobody", "--cmd", "announce"
        )
        assert code == 2 and out == ""
        assert "not connected" in err and "Traceback" not in err
        code, out, err = await edge_node(
            "command", "--collector", target, "--node", "venue-1", "--cmd", "x", "--args", "[1]"
        )
        assert code == 2 and "--args" in err
        await node.close()
        await other.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            returncode = await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert returncode == 0, stderr
    assert "Traceback" not in stderr


async def test_cli_reports_an_unreachable_collector(tmp_path: Path) -> None:
    code, out, err = await edge_node("summaries", "--collector", "127.0.0.1:1", "--json")
    assert code == 2 and out == ""
    assert "127.0.0.1:1" in err and "UNAVAILABLE" in err and "Traceback" not in err
    code, out, err = await edge_node(
        "command", "--collector", "127.0.0.1:1", "--node", "n", "--cmd", "announce"
    )
    assert code == 2 and "UNAVAILABLE" in err


async def test_cli_collector_refuses_a_port_in_use(
    collector: col.Collector, tmp_path: Path
) -> None:
    code, _, err = await edge_node(
        "collector", "--listen", collector.address, "--db", str(tmp_path / "x.db")
    )
    assert code == 2 and "cannot listen" in err and "Traceback" not in err
