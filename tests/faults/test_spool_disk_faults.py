"""A full disk under the spool (issue 10): a real node with its spool on a small tmpfs.

While the spool cannot commit, video and interactions carry on, /healthz says
``degraded`` and /metrics counts the failed commits; when space (or write access)
returns, the spool commits what it kept in memory and every window reaches the
collector: one per second, none missing. Needs CAP_SYS_ADMIN for ``mount`` (root in
CI); skipped with that reason where it is missing. (A read-only remount cannot be
done under an open database, "mount point is busy"; a commit failing for any reason
takes the same path, covered at the spool's level in tests/cloud/test_spool.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.test_cloud_e2e import (
    assert_contiguous,
    cleanup,  # noqa: F401  (the fixture)
    cloud,
    collector_proc,
    node_proc,
    summaries,
    wait_until,
)
from tests.e2e.test_interaction_e2e import call, token, ws_url

pytestmark = pytest.mark.timeout(180)


def _mount(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["mount", *args], capture_output=True, timeout=10)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "small"
    where.mkdir()
    done = _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


def metric(node: Any, name: str) -> float:
    total = 0.0
    for line in node.get("/metrics")[1].decode().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def comment_acked(node: Any, text: str) -> bool:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(ws_url(node, token(node, "fan", "viewer"))) as ws,
    ):
        reply = await call(ws, {"t": "comment", "id": f"c{time.monotonic_ns()}", "text": text})
        return reply["t"] == "ack"


def test_a_full_disk_is_loud_harmless_and_recovers(
    tmp_path: Path,
    small_disk: Path,
    cleanup: list[Callable[[], Any]],  # noqa: F811
) -> None:
    collector = collector_proc(tmp_path, cleanup)
    settings = {"spool__path": str(small_disk / "spool.db"), "cloud__window_lateness_s": "0.5"}
    node = node_proc(tmp_path, cleanup, collector.address, settings)
    wait_until(lambda: cloud(node)["acked_seq"] >= 2, 30, "the first acks")

    def unhealthy() -> bool:
        h = node.health()
        return bool(h["status"] == "degraded" and not h["spool"]["healthy"])

    def recovered() -> bool:
        h = node.health()
        target = h["spool"]["next_seq"] - 1
        return bool(
            h["status"] == "ok" and h["spool"]["healthy"] and cloud(node)["acked_seq"] >= target
        )

    for fault in ("full", "full again"):
        filler = fill(small_disk)
        wait_until(unhealthy, 20, f"the node to report the {fault} disk")
        assert metric(node, "edge_node_spool_commit_errors_total") >= 1
        time.sleep(2.0)  # windows close meanwhile and wait in memory
        # Video and interactions carry on.
        assert metric(node, "edge_node_frames_out_per_second") >= 20
        assert asyncio.run(comment_acked(node, f"still here ({fault})"))
        filler.unlink()
        wait_until(recovered, 30, f"recovery after the {fault} disk")

    rows = summaries(collector.address)
    assert_contiguous(rows)
    starts = [r["start"] for r in rows]
    assert starts == list(range(starts[0], starts[0] + len(starts))), starts
    assert node.stop() == 0
