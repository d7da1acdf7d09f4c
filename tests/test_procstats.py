"""Reading CPU time and RSS from /proc."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edge_node.procstats import CpuMeter, parse_stat, parse_statm, sample


def test_the_command_name_may_hold_spaces_and_parentheses() -> None:
    fields = ["S"] + ["0"] * 10 + ["250", "50"] + ["0"] * 30
    text = f"1234 (a (weird) name) {' '.join(fields)}"
    ticks = os.sysconf("SC_CLK_TCK")
    assert parse_stat(text) == pytest.approx(300 / ticks)
    assert parse_statm("1000 200 30 1 0 50 0") == 200 * os.sysconf("SC_PAGE_SIZE")


BURN = """
import sys, time
sys.stdin.readline()
t = time.process_time()
while time.process_time() - t < 0.3:
    pass
print("done", flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_a_busy_child_shows_cpu_and_a_gone_one_reads_as_absent() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        meter = CpuMeter()
        first, rss = meter.cores([None, child.pid], now=0.0)
        assert first is None and rss > 0
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        # ``now`` is the caller's clock: one (virtual) second later, the child has
        # used at least the 0.3 s of CPU it burned.
        cores, _ = meter.cores([None, child.pid], now=1.0)
        assert cores is not None and cores >= 0.3
    finally:
        child.communicate("", timeout=10)
    assert sample(child.pid) is None
