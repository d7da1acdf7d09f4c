"""Graceful shutdown (issue 10): SIGTERM drains within ``node.shutdown_deadline_s``.

A real node process dialling a real collector process: on SIGTERM the node stops
taking input, spools the windows still open (the current one cut short, flagged
``partial``), lets the link deliver them, and exits 0 well within the deadline. A
node whose collector is frozen still exits within the deadline, and its next start
delivers what the drain could not.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cloud_e2e import (
    assert_contiguous,
    caught_up,
    cleanup,  # noqa: F401  (the fixture)
    collector_proc,
    node_proc,
    summaries,
    wait_until,
)

DEADLINE_S = 6.0
SETTINGS = {"node__shutdown_deadline_s": str(DEADLINE_S)}


def running(tmp: Path, cleanup: list[Callable[[], Any]], acked: int) -> tuple[Any, Any]:  # noqa: F811
    """A collector process and a node dialling it, with ``acked`` windows delivered."""
    collector = collector_proc(tmp, cleanup)
    node = node_proc(tmp, cleanup, collector.address, SETTINGS)
    wait_until(lambda: caught_up(node, acked), 30, "the first windows to be acked")
    return collector, node


@pytest.mark.timeout(90)
def test_sigterm_delivers_the_open_windows_and_exits_in_time(
    tmp_path: Path,
    cleanup: list[Callable[[], Any]],  # noqa: F811
) -> None:
    collector, node = running(tmp_path, cleanup, 3)
    signalled = time.time()
    node.proc.send_signal(signal.SIGTERM)
    node.proc.wait(DEADLINE_S + 10)
    took = time.time() - signalled
    assert node.proc.returncode == 0
    assert took < DEADLINE_S + 3, took
    rows = summaries(collector.address)
    assert rows, "no summaries at the collector"
    # Every window up to the moment of the signal is there, the last one cut short:
    # without the drain the last ``lateness`` seconds (2 s by default) would wait in
    # memory and die with the process.
    assert rows[-1]["start"] >= math.floor(signalled), (rows[-1], signalled)
    assert "partial" in rows[-1]["flags"], rows[-1]
    seqs = [r["seq"] for r in rows]
    assert seqs == list(range(1, len(rows) + 1)), seqs


@pytest.mark.timeout(120)
def test_a_drain_that_cannot_deliver_keeps_the_deadline_and_the_next_start_delivers(
    tmp_path: Path,
    cleanup: list[Callable[[], Any]],  # noqa: F811
) -> None:
    collector, node = running(tmp_path, cleanup, 2)
    os.kill(collector.pid, signal.SIGSTOP)  # accepts nothing, acks nothing
    time.sleep(1.5)
    signalled = time.time()
    node.proc.send_signal(signal.SIGTERM)
    node.proc.wait(DEADLINE_S + 10)
    assert node.proc.returncode == 0
    assert time.time() - signalled < DEADLINE_S + 3
    os.kill(collector.pid, signal.SIGCONT)
    again = node_proc(tmp_path, cleanup, collector.address, SETTINGS)
    # The drain spooled what it could not send: the next start found it on disk.
    assert again.health()["spool"]["load"]["records"] > 0

    def delivered() -> bool:
        rows = summaries(collector.address)
        return bool(rows) and any("partial" in r["flags"] for r in rows) and caught_up(again)

    wait_until(delivered, 30, "the spooled windows to be delivered after the restart")
    rows = summaries(collector.address)
    assert_contiguous([r for r in rows])
    assert any(r["start"] >= math.floor(signalled) for r in rows)
    assert again.stop() == 0
