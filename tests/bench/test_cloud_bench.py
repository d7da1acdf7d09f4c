"""The ``cloud`` scenario: its pure parts (percentiles, the capacity knee, figures and
their units, the knobs), its two child programs run briefly against real collectors,
and one short run of the whole scenario through ``python -m bench run``."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import cloud_figures as cf  # noqa: E402
from bench import cloud_nodes, cloud_pipeline  # noqa: E402
from bench.cloud_payload import pack, summary_payload  # noqa: E402
from bench.scenarios import cloud as scenario  # noqa: E402
from edge_node.cloud import collector as col  # noqa: E402


def step(nodes: int, p99: float | None, **kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "nodes": nodes, "connected": nodes, "sent": nodes * 10, "acked": nodes * 10,
        "errors": 0, "ack_p50_ms": 2.0, "ack_p99_ms": p99, "seconds": 10.0,
        "collector_cpu_cores": nodes / 2000, "load_cpu_cores": 0.2, "load_lag_p99_ms": 1.0,
    }  # fmt: skip
    return base | kw


# ---- pure -------------------------------------------------------------------------


def test_percentile_interpolates_and_refuses_nonsense() -> None:
    assert cf.percentile([10.0, 20.0, 30.0, 40.0], 50) == pytest.approx(25.0)
    assert cf.percentile([7.0], 99) == 7.0
    assert cf.percentile([], 50) is None
    with pytest.raises(ValueError):
        cf.percentile([1.0], 101)


@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=100))
def test_latency_summary_is_ordered_within_the_data(values: list[float]) -> None:
    s = cf.latency_summary(values)
    assert s["p50"] is not None and s["p99"] is not None and s["max"] is not None
    assert min(values) <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"] == max(values)  # type: ignore[operator]


def test_a_step_fails_on_latency_lost_streams_or_unacked_summaries() -> None:
    assert cf.judge_step(step(100, 40.0)).passed
    assert not cf.judge_step(step(100, 140.0)).passed
    assert "streams failed" in cf.judge_step(step(100, 40.0, errors=3)).why
    assert "connected" in cf.judge_step(step(100, 40.0, connected=90)).why
    assert "acked" in cf.judge_step(step(100, 40.0, acked=500)).why
    assert not cf.judge_step(step(100, None)).passed


def test_the_knee_is_the_last_step_before_the_first_failure() -> None:
    steps = [step(1000, 150.0), step(100, 10.0), step(500, 60.0), step(2000, 30.0)]
    ok, failed = cf.knee(steps)
    assert ok is not None and ok["nodes"] == 500
    assert failed is not None and failed["nodes"] == 1000  # later steps do not count
    ok, failed = cf.knee([step(100, 10.0), step(250, 20.0)])
    assert ok is not None and ok["nodes"] == 250 and failed is None
    assert cf.knee([step(100, 500.0)]) == (None, step(100, 500.0))


def test_capacity_figures_name_the_knee_and_every_step() -> None:
    f = cf.capacity_figures([step(100, 10.0), step(250, 20.0), step(500, 120.0)])
    assert f["capacity_nodes"].value == 250 and f["capacity_nodes"].unit == "nodes"
    assert f["capacity_nodes"].better == "higher"
    assert f["capacity_ack_p99_ms"].value == 20.0 and f["capacity_ack_p99_ms"].unit == "ms"
    assert f["capacity_first_failing_nodes"].value == 500
    assert "120" in f["capacity_first_failing_nodes"].note
    assert f["capacity_500n_ack_p99_ms"].value == 120.0
    assert f["capacity_250n_summaries_per_second"].value == pytest.approx(250.0)
    # 250 / 2000 cores for 250 summaries/s: 500 us each.
    assert f["capacity_250n_collector_us_per_summary"].value == pytest.approx(500.0)
    assert cf.capacity_figures([step(100, 300.0)])["capacity_nodes"].value == 0
    missing = cf.capacity_figures(None, reason="no result")
    assert missing["capacity_nodes"].value is None and missing["capacity_nodes"].note == "no result"


def test_pipeline_figures_from_a_result_and_without_one() -> None:
    commit_ms = {"p50": 20.0, "p99": 90.0}
    result = {
        "spool": {"appends": 40_000, "seconds": 2.0, "loop_cpu_s": 0.5, "commit_ms": commit_ms},
        "drain": {"summaries": 10_000, "seconds": 2.5},
        "sustained": {"acked": 6_000, "seconds": 2.0},
    }
    f = cf.pipeline_figures("fsync", result)
    assert f["spool_fsync_appends_per_second"].value == pytest.approx(20_000)
    assert f["spool_fsync_append_loop_us"].value == pytest.approx(12.5)
    assert f["spool_fsync_append_loop_us"].unit == "us"
    assert f["spool_fsync_commit_p99_ms"].value == 90.0
    assert f["link_fsync_drain_summaries_per_second"].value == pytest.approx(4_000)
    assert f["link_fsync_summaries_per_second"].value == pytest.approx(3_000)
    assert f["pipeline_fsync_machine_busy_cores"].value is None  # not in this result
    none = cf.pipeline_figures("os", None, "it crashed")
    assert all(v.value is None and v.note == "it crashed" for v in none.values())
    assert set(none) == {k.replace("fsync", "os") for k in f}


def test_outage_figures_in_mib_and_seconds() -> None:
    mib = cf.MIB
    result = {
        "outage_s": 600.0, "rss_before": 300 * mib, "rss_outage_max": 310 * mib,
        "control_rss_before": 120 * mib, "control_rss_outage_max": 121 * mib,
        "summaries_spooled": 600, "catchup_s": 3.5, "reconnect_s": 3.0, "drain_s": 0.5,
        "spool_depth_max": 601, "load_events_per_second": 1995.0,
    }  # fmt: skip
    f = cf.outage_figures(result)
    assert f["node_rss_outage_growth_mib"].value == pytest.approx(10.0)
    assert f["control_rss_outage_growth_mib"].value == pytest.approx(1.0)
    assert f["catchup_s"].value == 3.5 and f["catchup_s"].unit == "s"
    assert f["catchup_summaries_per_second"].value == pytest.approx(1200.0)
    assert cf.outage_figures(None, "no node")["catchup_s"].note == "no node"


def test_the_payload_is_a_realistic_summary() -> None:
    data = pack(summary_payload(1_700_000_000, random.Random(1)))
    assert 400 <= len(data) <= 1000, len(data)
    decoded = msgpack.unpackb(data)
    assert decoded["start"] == 1_700_000_000 and decoded["window_s"] == 1
    assert sum(sum(o.values()) for o in decoded["events"].values()) > 1500
    assert pack(summary_payload(1, random.Random(2))) != pack(summary_payload(1, random.Random(3)))


def test_settings_from_the_environment_name_the_variable() -> None:
    s = scenario.Settings({})
    assert s.parts == ["pipeline", "outage", "capacity"] and s.steps[0] == 100
    assert s.capacity_in(1) and not s.capacity_in(2)
    s = scenario.Settings({"BENCH_CLOUD_CAPACITY_RUNS": "all", "BENCH_CLOUD_PARTS": "capacity"})
    assert s.capacity_in(3) and s.parts == ["capacity"]
    assert not scenario.Settings({"BENCH_CLOUD_PARTS": "outage"}).capacity_in(1)
    for env, named in (
        ({"BENCH_CLOUD_PARTS": "pipeline,nope"}, "BENCH_CLOUD_PARTS"),
        ({"BENCH_CLOUD_CAPACITY_RUNS": "first"}, "BENCH_CLOUD_CAPACITY_RUNS"),
        ({"BENCH_CLOUD_STEP_S": "-1"}, "BENCH_CLOUD_STEP_S"),
        ({"BENCH_CLOUD_BACKLOG": "lots"}, "BENCH_CLOUD_BACKLOG"),
        ({"BENCH_CLOUD_STEPS": "500,100"}, "--steps"),
    ):
        with pytest.raises(ValueError, match=named):
            scenario.Settings(env)


def test_a_degraded_status_says_why() -> None:
    from bench.cloud_run import describe_status

    assert describe_status({"status": "ok"}) == "ok"
    stale = {"status": "degraded", "video": {"last_packet_age_s": 3.1}, "spool": {"healthy": True}}
    assert describe_status(stale) == "degraded (video stale)"
    both = {"status": "degraded", "worker": {"alive": False}, "spool": {"healthy": False}}
    assert describe_status(both) == "degraded (worker down, spool unhealthy)"
    assert describe_status({"status": "degraded"}) == "degraded (no reason shown)"


def test_bad_command_lines_exit_2() -> None:
    assert cloud_nodes.main(["--target", "x:1", "--steps", "10,5"]) == 2
    assert cloud_nodes.main(["--target", "x:1", "--step-seconds", "0"]) == 2
    assert cloud_pipeline.main(["--seconds", "0"]) == 2


# ---- the child programs, briefly, against real collectors --------------------------


@pytest.mark.timeout(60)
async def test_simulated_nodes_get_every_summary_acked(tmp_path: Path) -> None:
    c = await col.serve("127.0.0.1:0", tmp_path / "capacity.db")
    try:
        steps = await cloud_nodes.run(c.address, [5, 12], settle_s=0.5, step_s=1.5)
        nodes = await c.list_nodes()
    finally:
        await c.stop(grace_s=0.5)
    assert [s["nodes"] for s in steps] == [5, 12]
    for s in steps:
        assert s["connected"] == s["nodes"] and s["errors"] == 0, s
        assert s["sent"] >= s["nodes"] and s["acked"] == s["sent"], s
        assert 0 < s["ack_p50_ms"] <= s["ack_p99_ms"] < 5000, s
        assert s["passed"] is (s["ack_p99_ms"] <= cf.ACK_P99_LIMIT_MS)
    assert len(nodes) == 12 and all(n.highest_contiguous_seq >= 1 for n in nodes)


@pytest.mark.timeout(90)
async def test_the_pipeline_measures_spool_drain_and_link(tmp_path: Path) -> None:
    result = await cloud_pipeline.run("os", 0.5, backlog=300, producers=32, workdir=tmp_path)
    assert result["spool"]["appends"] > 0 and result["spool"]["loop_cpu_s"] > 0
    assert result["drain"]["summaries"] == 300 and result["drain"]["seconds"] is not None
    assert result["sustained"]["acked"] > 0
    f = cf.pipeline_figures("os", result)
    measured = {k: v for k, v in f.items() if "machine_busy" not in k}  # set by cloud_run
    assert all(v.value is not None and v.value > 0 for v in measured.values()), f


# ---- the whole scenario, short --------------------------------------------------------


@pytest.mark.timeout(180)
def test_a_short_run_of_the_scenario(tmp_path: Path) -> None:
    out = tmp_path / "report"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_NODE_")}
    env |= {
        "BENCH_CLOUD_STEPS": "5,10", "BENCH_CLOUD_STEP_S": "1", "BENCH_CLOUD_SETTLE_S": "0.5",
        "BENCH_CLOUD_PIPELINE_S": "0.5", "BENCH_CLOUD_BACKLOG": "300",
        "BENCH_CLOUD_LOAD_RATE": "500", "BENCH_CLOUD_RAMP_S": "1",
    }  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--scenario", "cloud", "--seconds", "2",
         "--runs", "1", "--warmup", "0", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=170,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    figures = report["figures"]
    for name, unit in (
        ("spool_fsync_appends_per_second", "summaries/s"),
        ("spool_os_append_loop_us", "us"),
        ("link_fsync_drain_summaries_per_second", "summaries/s"),
        ("catchup_s", "s"),
        ("node_rss_outage_max_mib", "MiB"),
        ("node_rss_baseline_growth_mib", "MiB"),
        ("capacity_nodes", "nodes"),
        ("capacity_10n_ack_p99_ms", "ms"),
    ):
        assert figures[name]["unit"] == unit, name
        assert figures[name]["value"] is not None, (name, figures[name])
    checks = {c["name"]: c for c in report["checks"]}
    for name in (
        "pipeline (fsync): the backlog drained through the link",
        "outage: the node caught up",
        "outage: every summary at the collector once, in order, none missing",
        "outage: the spool stayed healthy throughout",
    ):
        assert checks[name]["ok"], checks[name]
    assert (out / "cloud_outage_rss.png").exists() and (out / "cloud_capacity.png").exists()
