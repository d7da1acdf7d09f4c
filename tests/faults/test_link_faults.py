"""Cloud link faults (issue 10): a real node and a real collector, with the fault proxy
between them. Each fault is injected for a few seconds under a steady audience, then
lifted; afterwards every one-second window is at the collector exactly once, in order,
none missing, and the node's memory stayed bounded.

The outcome table (fault, injected, recovered, windows lost, seconds to recover) is
printed; run with ``-s`` to see it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cloud_e2e import (
    assert_contiguous,
    cleanup,  # noqa: F401  (the fixture)
    cloud,
    collector_proc,
    node_proc,
    rss_kib,
    summaries,
    wait_until,
)
from tests.faults.faultproxy import FaultProxy

FAULT_S = 3.0
RECOVER_S = 40.0  # a corrupted stream may wait for keepalive or the ack watchdog (15 s)

FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("refused", {"refuse": True}),
    ("reset mid-stream", {"reset_after_bytes": 3000}),
    ("closed after N bytes", {"close_after_bytes": 1500}),
    ("stalled (black hole)", {"blackhole": True}),
    ("slow (150 ms + jitter 100 ms)", {"latency_s": 0.15, "jitter_s": 0.1}),
    ("sliced (7-byte writes)", {"slice_bytes": 7}),
    ("bandwidth 4 kB/s", {"bandwidth_bps": 4000}),
]


@pytest.fixture
def proxy_to(cleanup: list[Callable[[], Any]]) -> Iterator[Callable[[int], FaultProxy]]:  # noqa: F811
    made: list[FaultProxy] = []

    def make(port: int) -> FaultProxy:
        p = FaultProxy(port, seed=7).start()
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


@pytest.mark.timeout(420)
def test_every_link_fault_recovers_with_nothing_lost_and_memory_bounded(
    tmp_path: Path,
    cleanup: list[Callable[[], Any]],  # noqa: F811
    proxy_to: Callable[[int], FaultProxy],
) -> None:
    collector = collector_proc(tmp_path, cleanup)
    proxy = proxy_to(collector.port)
    node = node_proc(
        tmp_path, cleanup, proxy.address, {"cloud__window_lateness_s": "0.5"}, audience=20
    )
    wait_until(lambda: cloud(node)["acked_seq"] >= 2, 30, "the first acks through the proxy")
    rss_start = rss_kib(node.proc.pid)
    table: list[tuple[str, str, float]] = []
    for name, fault in FAULTS:
        before = dict(vars(proxy.counts))
        proxy.set(**fault)
        if fault.get("refuse"):
            proxy.reset_all()  # the collector went away: its connections drop too
        time.sleep(FAULT_S)
        proxy.set()
        lifted = time.monotonic()
        target = node.health()["spool"]["next_seq"] - 1  # every window spooled so far

        def recovered(target: int = target) -> bool:
            c = cloud(node)
            return bool(c["connected"] and c["spool_depth"] == 0 and c["acked_seq"] >= target)

        try:
            wait_until(recovered, RECOVER_S, f"recovery from: {name}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; link: {cloud(node)}; proxy: {proxy.counts}") from None
        took = time.monotonic() - lifted
        after = vars(proxy.counts)
        keys = ("refused", "resets", "closes", "slices", "bytes_swallowed")
        injected = {k: after[k] - before[k] for k in keys}
        table.append((name, str({k: v for k, v in injected.items() if v}), took))
    rows = summaries(collector.address)
    assert_contiguous(rows)
    # Every window from the first to the last one is there: one a second.
    starts = [r["start"] for r in rows]
    assert starts == list(range(starts[0], starts[0] + len(starts))), starts
    rss_growth_mib = (rss_kib(node.proc.pid) - rss_start) / 1024
    print("\nfault | injected | recovered in s")
    for name, injected, took in table:
        print(f"{name} | {injected} | {took:.1f}")
    print(f"windows delivered: {len(rows)}, lost: 0, node RSS growth: {rss_growth_mib:.1f} MiB")
    assert rss_growth_mib < 40, rss_growth_mib
    # The faults were really injected.
    assert proxy.counts.refused > 0 and proxy.counts.resets > 0
    assert proxy.counts.closes > 0 and proxy.counts.bytes_swallowed > 0
    assert proxy.counts.slices > 0 and max(proxy.counts.delays) > 0.15
    assert node.stop() == 0
