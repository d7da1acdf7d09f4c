"""systemd's notify protocol, spoken by a real node to a socket of ours (issue 10)."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

from edge_node.sdnotify import Notifier
from tests.conftest import start_node


def test_without_notify_socket_it_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.enabled and n.watchdog_s is None and n.notify("READY=1") is False
    n = Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"})
    assert n.address == "\0x" and n.watchdog_s is None  # the watchdog is another pid's


def test_the_node_says_ready_pings_the_watchdog_and_says_stopping(tmp_path: Path) -> None:
    short = Path(tempfile.mkdtemp(prefix="sdn", dir="/tmp"))  # AF_UNIX paths are short
    address = str(short / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(60)
        node = start_node(tmp_path, env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"})
        try:
            got: list[str] = []
            deadline = time.monotonic() + 30
            while got.count("WATCHDOG=1") < 3 and time.monotonic() < deadline:
                got.append(sock.recv(256).decode())
            assert got[0] == "READY=1", got
            assert got.count("WATCHDOG=1") >= 3, got  # every half second while it runs
        finally:
            assert node.stop() == 0
        rest = []
        sock.settimeout(2)
        try:
            while True:
                rest.append(sock.recv(256).decode())
        except TimeoutError:
            pass
        assert "STOPPING=1" in rest, rest
    os.unlink(address)
    short.rmdir()
