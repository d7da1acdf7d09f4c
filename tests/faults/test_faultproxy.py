"""The fault proxy itself: it relays, and each fault does what it says."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.faults.faultproxy import FaultProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    p = FaultProxy(server.server_address[1], seed=1).start()
    yield p
    p.stop()
    server.shutdown()
    server.server_close()


def roundtrip(p: FaultProxy, payload: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", p.port), timeout=timeout) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_it_relays_and_slices_without_changing_a_byte(proxy: FaultProxy) -> None:
    data = bytes(range(256)) * 40
    assert roundtrip(proxy, data) == data
    proxy.set(slice_bytes=7)
    assert roundtrip(proxy, data) == data
    assert proxy.counts.slices >= 2 * len(data) // 7


def test_latency_and_bandwidth_slow_it_down(proxy: FaultProxy) -> None:
    proxy.set(latency_s=0.2)
    t = time.monotonic()
    assert roundtrip(proxy, b"x") == b"x"
    assert time.monotonic() - t >= 0.4  # held once each way
    proxy.set(bandwidth_bps=20_000)
    t = time.monotonic()
    assert roundtrip(proxy, b"y" * 30_000, timeout=10) == b"y" * 30_000
    assert time.monotonic() - t >= 0.5  # 30 kB at 20 kB/s beyond the first second's burst


def test_refuse_reset_close_and_blackhole(proxy: FaultProxy) -> None:
    proxy.set(refuse=True)
    # The RST may arrive before or after the connect completes.
    with contextlib.suppress(ConnectionResetError):
        assert roundtrip(proxy, b"hello") == b""
    assert proxy.counts.refused == 1
    proxy.set(reset_after_bytes=10)
    with pytest.raises(ConnectionResetError):
        roundtrip(proxy, b"z" * 100)
    assert proxy.counts.resets >= 1
    proxy.set(close_after_bytes=10)
    assert roundtrip(proxy, b"z" * 100) == b""
    proxy.set(blackhole=True)
    with pytest.raises(TimeoutError):
        roundtrip(proxy, b"lost", timeout=0.5)
    assert proxy.counts.bytes_swallowed >= 4
