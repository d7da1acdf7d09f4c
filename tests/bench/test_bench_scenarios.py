"""The ``ramp``, ``fanout``, ``show-720p``/``show-1080p`` and ``soak`` scenarios.

First their arithmetic without a node: the ramp's stop rule and knee, the load and
viewer splits, the counting viewers' sequence accounting, the fan-out slopes, the
sliced glass-to-glass join (right across the frame counter's wrap), drift, the
peer's filter graph, the merged viewer's strips. Then a short real run of each
scenario (``bench_smoke``: a node, real client processes, seconds per run; the
figures are not judged, only that every path produced them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import fanout, glass, live_clients, ramp, series_plots, show, trend  # noqa: E402
from bench.fanout_viewer import Mark, PeerStats, window_figures  # noqa: E402
from bench.figures import Figure  # noqa: E402
from bench.glass_viewer import GlassViewerResult, StripLogger  # noqa: E402
from edge_node import barcode  # noqa: E402

# ---- ramp -------------------------------------------------------------------------


def step(target: float, p99: float | None, busy: int = 0, lost: float = 0.0) -> ramp.Step:
    return ramp.Step(target, target, busy, p99 and p99 / 2, p99, lost)


def test_knee_interpolates_between_the_steps_around_the_crossing() -> None:
    steps = [step(1000, 20.0), step(2000, 60.0), step(3000, 140.0)]
    assert ramp.knee(steps) == pytest.approx(2500.0)
    assert ramp.max_ok(steps) == 2000.0


def test_no_knee_without_a_crossing_or_when_the_first_step_is_over() -> None:
    assert ramp.knee([step(1000, 20.0), step(2000, 90.0)]) is None
    assert ramp.knee([step(1000, 120.0), step(2000, 300.0)]) is None
    figures = ramp.figures([step(1000, 120.0)])
    assert figures["ramp_knee_events_per_second"].value is None
    assert "first step" in figures["ramp_knee_events_per_second"].note
    figures = ramp.figures([step(1000, 20.0)])
    assert "never crossed" in figures["ramp_knee_events_per_second"].note


@given(
    st.lists(st.floats(1.0, 99.0), min_size=0, max_size=5),
    st.floats(100.5, 5000.0),
)
def test_knee_lies_between_the_last_good_and_the_first_bad_step(
    good: list[float], bad: float
) -> None:
    steps = [step(1000.0 * (i + 1), p) for i, p in enumerate(good)]
    steps.append(step(1000.0 * (len(good) + 1), bad))
    k = ramp.knee(steps)
    if not good:
        assert k is None
    else:
        assert k is not None and steps[-2].x <= k <= steps[-1].x


def test_the_ramp_stops_on_latency_busy_loss_or_no_probe() -> None:
    assert ramp.stop_reason(step(1000, 50.0)) is None
    assert "p99" in (ramp.stop_reason(step(1000, 150.0)) or "")
    assert "busy" in (ramp.stop_reason(step(1000, 50.0, busy=3)) or "")
    assert "lost" in (ramp.stop_reason(step(1000, 50.0, lost=80.0)) or "")
    assert "no probe" in (ramp.stop_reason(step(1000, None)) or "")
    assert ramp.busy_rate([step(1000, 50.0), step(2000, 50.0, busy=1)]) == 2000.0


def test_ramp_figures_name_every_step() -> None:
    figures = ramp.figures([step(1000, 20.0), step(5000, 80.0, busy=2)])
    assert figures["ramp_5000_busy_events"].value == 2.0
    assert figures["ramp_busy_events_per_second"].value == 5000.0
    assert figures["ramp_1000_probe_p99_ms"].value == 20.0
    assert figures["ramp_steps"].value == 2.0


# ---- splitting the clients -----------------------------------------------------------


@given(st.floats(1.0, 100_000.0), st.floats(100.0, 10_000.0))
def test_split_rate_keeps_the_rate_with_the_fewest_processes(rate: float, per: float) -> None:
    rates = live_clients.split_rate(rate, per)
    assert sum(rates) == pytest.approx(rate)
    assert all(r <= per * (1 + 1e-9) for r in rates)
    assert len(rates) == 1 or rate / (len(rates) - 1) > per


@given(st.integers(1, 500), st.integers(1, 100))
def test_split_count_is_even_and_within_the_limit(count: int, per: int) -> None:
    counts = live_clients.split_count(count, per)
    assert sum(counts) == count
    assert max(counts) <= per and max(counts) - min(counts) <= 1


def test_split_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="rate"):
        live_clients.split_rate(0)
    with pytest.raises(ValueError, match="count"):
        live_clients.split_count(0, 5)


def test_cpu_between_counts_a_late_process_from_zero() -> None:
    assert live_clients.cpu_cores_between({1: 1.0}, {1: 2.0, 2: 0.5}, 2.0) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="wall"):
        live_clients.cpu_cores_between({}, {}, 0.0)


def test_each_load_process_and_run_has_users_of_its_own() -> None:
    prefixes = {live_clients.load_prefix(r, k) for r in (1, 2) for k in (0, 1)}
    assert len(prefixes) == 4 and all(p.isalnum() for p in prefixes)
    argv = live_clients.load_argv("http://x", Path("/s"), 2000, 50, "p", 1, "abc")
    assert argv[argv.index("--user-prefix") + 1] == "abc" and "bench.load_gen" in argv
    from bench import load_gen

    assert load_gen.main(["--url", "http://x", "--secret-file", "/s", "--user-prefix", "a-b"]) == 2


# ---- the counting viewers ------------------------------------------------------------


@given(
    st.integers(0, (1 << 16) - 1),
    st.lists(st.booleans(), min_size=2, max_size=400),
)
@settings(max_examples=200)
def test_peer_stats_counts_every_dropped_packet_across_the_wrap(
    first: int, kept: list[bool]
) -> None:
    kept[0] = kept[-1] = True  # a loss is only known once a later packet arrives
    stats = PeerStats()
    for i, keep in enumerate(kept):
        if keep:
            stats.packet(first + i, 1000)
    assert stats.packets == sum(kept)
    assert stats.lost == kept.count(False)
    assert stats.bytes == 1000 * sum(kept)


def test_a_retransmitted_packet_fills_its_gap() -> None:
    stats = PeerStats()
    for seq in (10, 11, 13, 14, 12):
        stats.packet(seq, 10)
    assert (stats.gaps, stats.recovered, stats.lost) == (1, 1, 0)
    stats.packet(40000, 10)  # a new stream, not 26,000 losses
    assert stats.resets == 1 and stats.lost == 0


def test_frames_and_the_window() -> None:
    stats = PeerStats()
    for t in (0.0, 0.033, 0.066, 0.2):
        stats.frame(t)
    assert stats.frames == 4 and stats.max_interval_s == pytest.approx(0.134)
    start = stats.mark(0.2)
    assert stats.max_interval_s == 0.0
    for i in range(30):
        stats.packet(i, 1250)
        stats.frame(0.2 + (i + 1) / 30)
    row = window_figures(start, stats.mark(1.2), stats.max_interval_s)
    assert row["fps"] == pytest.approx(30.0)
    assert row["kbps"] == pytest.approx(300.0)
    assert window_figures(start, Mark(0.2, 0, 0, 0, 0), 0.0)["fps"] is None


# ---- fan-out arithmetic ----------------------------------------------------------------


def fan_step(n: int, cpu: float, fps: float = 30.0, rss: float = 300.0) -> fanout.StepResult:
    rows = [{"playing": True, "fps": fps, "kbps": 2000.0, "lost": 0} for _ in range(n)]
    rows[0]["decoded_fps"] = fps
    return fanout.StepResult(n, rows, cpu, rss)


def test_cpu_per_viewer_is_the_slope_over_the_steps() -> None:
    steps = [fan_step(n, 0.1 + 0.01 * n, rss=300 + 2 * n) for n in (1, 10, 50, 100)]
    figures = fanout.slope_figures(steps)
    assert figures["fanout_cpu_per_viewer_cores"].value == pytest.approx(0.01)
    assert figures["fanout_cpu_base_cores"].value == pytest.approx(0.1)
    assert figures["fanout_rss_per_viewer_mib"].value == pytest.approx(2.0)
    assert figures["fanout_max_viewers_at_30fps"].value == 100.0


def test_a_viewer_that_never_played_counts_as_zero_fps() -> None:
    step50 = fanout.StepResult(50, fan_step(49, 1.0).rows, 1.0, 400.0)
    assert step50.playing == 49 and min(step50.fps()) == 0.0 and not step50.holds()
    figures = fanout.step_figures(step50)
    assert figures["fanout_50_fps_min"].value == 0.0
    assert figures["fanout_50_node_cpu_per_viewer_cores"].value == pytest.approx(0.02)
    slow = fan_step(50, 1.0, fps=20.0)
    assert fanout.slope_figures([fan_step(1, 0.1), slow])["fanout_max_viewers_at_30fps"].value == 1


# ---- trends and drift ----------------------------------------------------------------------


# x as the bench has them (viewer counts, seconds): multiples of a millisecond.
@given(
    st.floats(-10, 10),
    st.floats(-100, 100),
    st.lists(st.integers(0, 1_000_000).map(lambda i: i / 1000), min_size=2),
)
def test_linear_fit_recovers_a_line(slope: float, intercept: float, xs: list[float]) -> None:
    points = [(x, intercept + slope * x) for x in xs]
    fit = trend.linear_fit(points)
    if len(set(xs)) < 2:
        assert fit is None
    else:
        assert fit is not None
        assert fit[0] == pytest.approx(slope, abs=1e-6)
        assert fit[1] == pytest.approx(intercept, abs=1e-4)


def test_drift_reports_the_slope_per_hour_and_the_edges() -> None:
    rss = [(t, 300.0 + t / 60) for t in range(0, 3601, 10)]  # 1 MiB a minute
    fds = [(float(t), 100.0 + (5 if t > 3000 else 0)) for t in range(0, 3601, 10)]
    figures = trend.drift_figures(rss, fds, [(0.0, 0.5), (3600.0, 0.5)], [])
    assert figures["node_rss_slope_mib_per_hour"].value == pytest.approx(60.0)
    assert figures["node_fds_change"].value == pytest.approx(5.0)
    assert figures["node_fds_max"].value == 105.0
    assert figures["node_cpu_change"].value == pytest.approx(0.0)
    assert figures["probe_p99_change"].value is None
    assert trend.fd_count(10**9) is None


# ---- the show's joins --------------------------------------------------------------------


@given(st.lists(st.floats(0.002, 0.4), min_size=1, max_size=120), st.sampled_from([0.5, 1.0, 3.0]))
@settings(max_examples=100, deadline=None)
def test_the_sliced_join_equals_glass_join(delays: list[float], slice_s: float) -> None:
    sent = [(40000 + i, 100.0 + i / 30) for i in range(len(delays))]
    got = [(c, t + d) for (c, t), d in zip(sent, delays, strict=True) if d < 0.35]
    whole = glass.join(sent, got, discard_s=1.0)
    sliced = show.video_join(sent, got, slice_s, discard_s=1.0)
    assert (sliced.sent, sliced.delivered, sliced.lost, sliced.discarded) == (
        whole.sent,
        whole.delivered,
        whole.lost,
        whole.discarded,
    )
    assert sorted(sliced.latencies_ms) == pytest.approx(sorted(whole.latencies_ms))


def test_the_sliced_join_survives_the_counter_wrap_that_a_whole_join_does_not() -> None:
    n = 70_000  # 39 minutes at 30 fps: the 16-bit counter wraps once
    sent = [((40000 + i) % 65536, i / 30) for i in range(n)]
    got = [(c, t + 0.02) for c, t in sent]
    assert glass.join(sent, got, discard_s=0.0).delivered < n  # repeats taken for old frames
    sliced = show.video_join(sent, got, 60.0, discard_s=0.0)
    assert sliced.delivered == n and sliced.lost == 0
    assert max(sliced.latencies_ms) == pytest.approx(20.0)


def test_latency_over_time_is_per_slice_of_send_time() -> None:
    probes = [(1000 + i, 10.0 + i / 10) for i in range(40)]  # 4 s of probes
    seen = [(s, t + (0.05 if t < 12 else 0.09)) for s, t in probes]
    series = show.over_time(probes, seen, show.probe_latencies, 1.0)
    assert [t for t, _ in series["p50"]] == [0.0, 1.0, 2.0, 3.0]
    assert series["p50"][0][1] == pytest.approx(50.0) and series["p50"][3][1] == pytest.approx(90.0)
    with pytest.raises(ValueError, match="slice_s"):
        list(show.slices(probes, seen, 0.0))


def test_per_slice_reduces_points() -> None:
    points = [(t / 10, float(t)) for t in range(30)]
    assert series_plots.per_slice(points, 1.0, 100.0) == [(0.0, 9.0), (1.0, 19.0), (2.0, 29.0)]


# ---- the show's definitions ------------------------------------------------------------------


def test_peer_filter_draws_as_many_texts_as_danmaku() -> None:
    size = show.SIZES["1080p"]
    graph = show.peer_filter(show.DANMAKU, size, "/fonts/x.ttc")
    assert graph.count("drawtext=") == show.DANMAKU
    texts = show.peer_texts(show.DANMAKU)
    assert len(set(texts)) == show.DANMAKU
    assert not any(c in text for text in texts for c in ":'\\,;[]%")
    assert "fontfile=/fonts/x.ttc" in graph and "fontfile" not in show.peer_filter(2, size, None)


def test_node_env_and_checks() -> None:
    env = show.node_env(show.SIZES["1080p"], "rtmp://127.0.0.1:1/live/out")
    assert env["EDGE_NODE_VIDEO__WIDTH"] == "1920" and env["EDGE_NODE_VIDEO__HEIGHT"] == "1080"
    assert env["EDGE_NODE_PUSH__URL"].startswith("rtmp://127.0.0.1")
    good = {
        "publisher_frames_sent": Figure(120.0, "frames"),
        "whep_latency_p99_ms": Figure(20.0, "ms"),
        "push_latency_p99_ms": Figure(25.0, "ms"),
        "probe_latency_p99_ms": Figure(80.0, "ms"),
        "node_events_per_second": Figure(2005.0, "events/s"),
        "danmaku_on_screen_median": Figure(50.0, "danmaku"),
        "extra_viewers": Figure(4.0, "viewers"),
        "extra_viewers_fps_min": Figure(29.9, "frames/s"),
        "node_video_encoders_max": Figure(1.0, "encoders"),
    }
    assert all(c.ok for c in show.checks(good, 120, show.SIZES["720p"]))
    bad = {**good, "probe_latency_p99_ms": Figure(150.0, "ms")}
    failed = [c.name for c in show.checks(bad, 120, show.SIZES["720p"]) if not c.ok]
    assert failed == ["interaction p99 under 100 ms (target)"]
    derived = show.derived({**good, "probe_latency_p50_ms": Figure(40.0, "ms")})
    assert derived["probe_latency_p99_to_seed_bound_ratio"].value == pytest.approx(0.4)


# ---- the merged viewer -------------------------------------------------------------------------


def picture(counter: int, seq: int, height: int = 720, width: int = 1280) -> Any:
    y = np.full((height, width), 90, np.uint8)
    barcode.draw(y, counter, *barcode.bottom_left(height))
    barcode.draw(y, seq, *barcode.TOP_LEFT)
    return y


def test_strip_logger_reads_both_strips_of_one_picture() -> None:
    log, probes = StringIO(), StringIO()
    result = GlassViewerResult(url="x", strip="both")
    strips = StripLogger("both", log, probes, result, expect=(40000, 10))
    events = strips.picture(picture(123, 7), 720, 1280, 5.0)
    assert set(events) == {"playing"}  # 123 is not an expected counter
    events = strips.picture(picture(40001, 8), 720, 1280, 5.1)
    assert events == {"first_frame": {"counter": 40001, "seq": 8, "at": 5.1}}
    assert log.getvalue() == "123 5.000000\n40001 5.100000\n"
    assert probes.getvalue() == "7 5.000000\n8 5.100000\n"
    assert (result.frames, result.expected_frames, result.width) == (2, 1, 1280)


def test_strip_logger_probe_only_and_refusals() -> None:
    log = StringIO()
    strips = StripLogger("probe", log, None, GlassViewerResult(url="x"))
    assert "first_frame" in strips.picture(picture(5, 65535), 720, 1280, 1.0)
    assert log.getvalue() == "65535 1.000000\n"
    with pytest.raises(ValueError, match="probe log"):
        StripLogger("both", log, None, GlassViewerResult(url="x"))
    with pytest.raises(ValueError, match="strip"):
        StripLogger("left", log, None, GlassViewerResult(url="x"))
    cli = subprocess.run(
        [sys.executable, "-m", "bench.glass_viewer", "--url", "http://x", "--log", "/dev/null",
         "--probe-log", "/dev/null"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 2 and "--probe-log" in cli.stderr


# ---- the registry --------------------------------------------------------------------------------


def test_the_new_scenarios_are_registered() -> None:
    from bench.scenarios import discover

    scenarios = discover()
    for name in ("ramp", "fanout", "show-720p", "show-1080p", "soak"):
        assert name in scenarios
    big = scenarios["show-1080p"]
    assert big.node_env["EDGE_NODE_VIDEO__WIDTH"] == "1920"
    assert big.peer is not None and big.peer.describe(1.0)["size"] == "1920x1080"
    assert scenarios["soak"].peer is None and scenarios["soak"].default_runs == 1


# ---- short real runs ------------------------------------------------------------


async def run(scenario: Any, seconds: float, out: Path, with_peer: bool = False) -> dict[str, Any]:
    from bench import report, runner

    suite = await runner.run_suite(scenario, seconds, 1, out, with_peer=with_peer, warmup_s=0.5)
    plots = report.write(suite, out)
    data: dict[str, Any] = json.loads((out / "report.json").read_text())
    assert data["plots"] == plots
    assert (out / "report.md").exists()
    return data


def value(data: dict[str, Any], name: str) -> Any:
    return data["figures"][name]["value"]


def measured(data: dict[str, Any], *names: str) -> None:
    """Each figure is there, with a value or the reason it has none: on this shared
    2-core box a run can starve (a first picture after 30 s), and then the report
    must say why rather than fail."""
    for name in names:
        figure = data["figures"][name]
        assert figure["value"] is not None or figure.get("note"), (name, figure)


@pytest.mark.bench_smoke
@pytest.mark.timeout(120)
async def test_ramp_runs(tmp_path: Path) -> None:
    from bench.scenarios.ramp import Ramp

    data = await run(Ramp(steps=(300, 600)), 2.0, tmp_path)
    assert value(data, "ramp_300_handled_events_per_second") > 0  # the load got through
    assert "ramp_300_probe_p99_ms" in data["figures"]
    measured(data, "ramp_knee_events_per_second", "ramp_busy_events_per_second")
    assert "ramp_cpu.png" in data["plots"]


@pytest.mark.bench_smoke
@pytest.mark.timeout(120)
async def test_fanout_runs(tmp_path: Path) -> None:
    from bench.scenarios.fanout import Fanout

    data = await run(Fanout(steps=(1, 2), per_process=1), 2.0, tmp_path)
    assert value(data, "fanout_2_viewers_playing") == 2  # two viewer processes
    assert value(data, "fanout_1_decoded_fps") > 0  # the decoding session read counters
    measured(data, "fanout_cpu_per_viewer_cores", "fanout_2_fps_min")
    assert {"fanout_cpu.png", "fanout_fps.png", "memory.png"} <= set(data["plots"])


@pytest.mark.bench_smoke
@pytest.mark.timeout(150)
async def test_show_720p_runs_with_its_peer(tmp_path: Path) -> None:
    from bench.scenarios.show_720p import Show720p

    class Quick(Show720p):
        ramp_s: ClassVar[float] = 1.0

    have_ffmpeg = shutil.which("ffmpeg") is not None
    data = await run(Quick(), 2.0, tmp_path, with_peer=have_ffmpeg)
    measured(data, "whep_latency_p99_ms", "push_latency_p99_ms", "probe_latency_p99_ms")
    measured(data, "extra_viewers_fps_min", "danmaku_on_screen_median")
    assert value(data, "publisher_frames_sent") > 0
    measured(data, "load_events_per_second")
    measured(data, "node_cpu_cores", "node_events_per_second")
    if have_ffmpeg:
        measured(data, "floor_latency_p99_ms", "peer_latency_p99_ms", "peer_slice_latency_p99_ms")
        assert value(data, "peer_cpu_cores") is not None
    assert {"cpu.png", "memory.png", "latency_time.png"} <= set(data["plots"])


@pytest.mark.bench_smoke
@pytest.mark.timeout(120)
async def test_soak_runs_and_reports_drift(tmp_path: Path) -> None:
    from bench.scenarios.soak import Soak

    class Quick(Soak):
        ramp_s: ClassVar[float] = 1.0

    data = await run(Quick(), 3.0, tmp_path)
    measured(data, "node_rss_slope_mib_per_hour", "node_fds_start", "node_fds_change")
    measured(data, "whep_latency_p99_ms", "probe_latency_p99_ms")
    assert {"fds.png", "memory.png"} <= set(data["plots"])


def test_fanout_viewer_refuses_a_bad_command_line() -> None:
    cli = subprocess.run(
        [sys.executable, "-m", "bench.fanout_viewer", "--url", "http://x", "--count", "2",
         "--decode", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 2 and "--decode" in cli.stderr
