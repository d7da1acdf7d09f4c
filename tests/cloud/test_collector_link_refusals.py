"""Why a node's link is refused, as the node reports it (state, log, /healthz).

A TLS or token refusal used to surface only as a connect timeout. The link now reads
gRPC's own reason off the failed call and names it: a certificate that does not
verify (wrong CA), a collector that hangs up in the handshake (our client
certificate refused, mTLS), TLS against a plaintext port and the reverse, a refused
bearer token, nothing listening. Real collectors and the node's real link on
loopback; ``explain_failure`` alone for what cannot be provoked here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from edge_node.cloud import collector as col
from edge_node.cloud.link import FAILURE_KINDS, explain_failure
from edge_node.config import CloudConfig
from edge_node.errors import ProtocolError
from tests.cloud.test_collector import LinkedNode, make_pki, until
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(40)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    d = tmp_path / "pki"
    d.mkdir()
    return {name: str(path) for name, path in make_pki(d).items()}


@pytest.fixture
async def mtls_collector(tmp_path: Path, pki: dict[str, str]) -> AsyncIterator[col.Collector]:
    tls = col.TlsFiles(pki["server.crt"], pki["server.key"], pki["ca.crt"])
    c = await col.serve("127.0.0.1:0", tmp_path / "mtls.db", tls=tls, token="right")
    yield c
    await c.stop(grace_s=0.5)


async def refused_with(
    tmp_path: Path, target: str, kind: str, **cloud: Any
) -> tuple[dict[str, Any], LinkedNode]:
    """A node dialling ``target`` until its link reports ``kind``; its status then."""
    node = await LinkedNode.start(tmp_path, target, node_id=f"node-{kind}", **cloud)
    await node.append(2)
    await until(lambda: node.link.problem == kind, 15)
    status = node.link.status()
    assert status["connected"] is False and status["problem"] == kind, status
    assert status["acked_seq"] == 0 and status["spool_depth"] == 2, status
    return status, node


def mtls(pki: dict[str, str], client: str | None, **more: Any) -> dict[str, Any]:
    cloud: dict[str, Any] = {"tls": True, "tls_ca": pki["ca.crt"], "token": "right"}
    if client is not None:
        cloud |= {"tls_cert": pki[f"{client}.crt"], "tls_key": pki[f"{client}.key"]}
    return cloud | more


async def test_the_right_certificate_and_token_connect(
    tmp_path: Path, pki: dict[str, str], mtls_collector: col.Collector
) -> None:
    node = await LinkedNode.start(tmp_path, mtls_collector.address, **mtls(pki, "client"))
    try:
        await node.append(2)
        await until(lambda: node.caught_up(2), 15)
        assert node.link.status()["problem"] is None and node.link.last_error is None
    finally:
        await node.stop()


async def test_a_collector_certificate_from_another_ca_fails_verification(
    tmp_path: Path, pki: dict[str, str], mtls_collector: col.Collector
) -> None:
    # The node trusts a certificate that did not sign the collector's.
    cloud = mtls(pki, "client", tls_ca=pki["rogue.crt"])
    status, node = await refused_with(
        tmp_path, mtls_collector.address, "tls_verify_failed", **cloud
    )
    try:
        assert "certificate verify failed" in status["last_error"]
        assert "unable to get local issuer certificate" in status["last_error"]
        assert pki["rogue.crt"] in status["last_error"]  # names what we trust
    finally:
        await node.stop()


@pytest.mark.parametrize("client", ["rogue", None])
async def test_a_refused_client_certificate_is_named(
    tmp_path: Path, pki: dict[str, str], mtls_collector: col.Collector, client: str | None
) -> None:
    status, node = await refused_with(
        tmp_path, mtls_collector.address, "tls_refused", **mtls(pki, client)
    )
    try:
        assert "refused our client certificate" in status["last_error"]
        expected = pki["rogue.crt"] if client else "cloud.tls_cert is empty"
        assert expected in status["last_error"]
    finally:
        await node.stop()
    assert await mtls_collector.list_nodes() == []  # it never heard a Hello


async def test_a_wrong_token_is_named(
    tmp_path: Path, pki: dict[str, str], mtls_collector: col.Collector
) -> None:
    cloud = mtls(pki, "client", token="wrong")
    status, node = await refused_with(tmp_path, mtls_collector.address, "unauthenticated", **cloud)
    try:
        assert "refused our bearer token" in status["last_error"]
        assert "UNAUTHENTICATED" in status["last_error"]
        metric = node.link.c_connects
        assert metric.value(outcome="unauthenticated") >= 1
    finally:
        await node.stop()


async def test_tls_against_a_plaintext_collector_and_the_reverse(
    tmp_path: Path, pki: dict[str, str], mtls_collector: col.Collector
) -> None:
    plain = await col.serve("127.0.0.1:0", tmp_path / "plain.db")
    try:
        status, node = await refused_with(
            tmp_path, plain.address, "tls_handshake_failed", tls=True, tls_ca=pki["ca.crt"]
        )
        await node.stop()
        assert "does the collector serve TLS" in status["last_error"]
    finally:
        await plain.stop(grace_s=0.5)
    status, node = await refused_with(tmp_path, mtls_collector.address, "refused", token="right")
    await node.stop()
    assert "does it expect TLS" in status["last_error"]


async def test_nothing_listening_is_unreachable(tmp_path: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    status, node = await refused_with(tmp_path, target, "unreachable")
    await node.stop()
    assert target in status["last_error"]


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    empty = grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, empty, empty, details, None)


def test_explain_failure_covers_what_loopback_cannot_provoke() -> None:
    cfg = CloudConfig(target="collector.example:50051", connect_timeout_s=4, tls=True)
    cases: list[tuple[BaseException, str, str]] = [
        (TimeoutError(), "timeout", "within 4 s"),
        (ProtocolError("ack", "absurd"), "protocol", "absurd"),
        (ProtocolError("acks", "none for 15 s"), "stalled", "none for 15 s"),
        (FileNotFoundError(2, "No such file", "/etc/ca.pem"), "tls_files", "/etc/ca.pem"),
        (
            rpc_error(
                grpc.StatusCode.UNAVAILABLE,
                "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.1:50051:"
                " Peer name collector.example is not in peer certificate",
            ),
            "tls_verify_failed",
            "does not name collector.example",
        ),
        (rpc_error(grpc.StatusCode.PERMISSION_DENIED, "banned"), "permission_denied", "banned"),
        (rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "v2"), "refused", "FAILED_PRECONDITION"),
        (
            rpc_error(grpc.StatusCode.UNAVAILABLE, "the collector is shutting down"),
            "unavailable",
            "shutting down",
        ),
        (
            rpc_error(grpc.StatusCode.UNAVAILABLE, "DNS resolution failed for collector.example"),
            "unreachable",
            "collector.example:50051",
        ),
        (ValueError("bug"), "internal", "bug"),
    ]
    for exc, kind, says in cases:
        failure = explain_failure(exc, cfg)
        assert failure.kind == kind and failure.kind in FAILURE_KINDS, (exc, failure)
        assert says in failure.reason, (exc, failure)
