"""The ``interaction`` scenario's pure parts, without a node or any process: joining the
prober's and the viewer's logs, percentiles, the figures taken from /metrics and from
the load, the engine-alone run and its queueing model, and the scenario's helpers."""

from __future__ import annotations

import itertools
import math
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import engine_alone, load_gen, prom  # noqa: E402
from bench import interaction as ix  # noqa: E402
from bench.figures import Figure  # noqa: E402
from bench.scenarios import interaction as scenario  # noqa: E402

# ---- logs -------------------------------------------------------------------------


def test_parse_log_skips_broken_lines_and_takes_seq_modulo_16_bits() -> None:
    lines = ["1000 10.5\n", "\n", "garbage\n", "1001 nan\n", "65537 11.0\n", "1002 12.", "7 x"]
    assert ix.parse_log(lines) == [(1000, 10.5), (1, 11.0), (1002, 12.0)]


def test_read_log_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert ix.read_log(tmp_path / "nope.log") == []


def test_join_files_reads_both_logs(tmp_path: Path) -> None:
    (tmp_path / "sent.log").write_text("5 1.000\n6 1.100\n")
    (tmp_path / "seen.log").write_text("0 0.99\n5 1.040\n5 1.07\n6 1.130\n")
    j = ix.join_files(tmp_path / "sent.log", tmp_path / "seen.log")
    assert (j.sent, j.seen, j.lost, j.frames) == (2, 2, 0, 4)
    assert j.latencies_ms == pytest.approx([40.0, 30.0])


# ---- percentiles ------------------------------------------------------------------


def test_percentile_interpolates_linearly_like_numpy() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert ix.percentile(values, 0) == 10.0
    assert ix.percentile(values, 100) == 40.0
    assert ix.percentile(values, 50) == pytest.approx(25.0)
    assert ix.percentile(values, 99) == pytest.approx(39.7)
    assert ix.percentile([7.0], 99) == 7.0
    assert ix.percentile([], 50) is None
    with pytest.raises(ValueError):
        ix.percentile(values, 101)


@given(
    st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=200),
    st.floats(0, 100),
    st.floats(0, 100),
)
@settings(max_examples=200, deadline=None)
def test_percentile_is_within_the_data_and_monotone_in_q(
    values: list[float], q1: float, q2: float
) -> None:
    lo, hi = sorted((q1, q2))
    a, b = ix.percentile(values, lo), ix.percentile(values, hi)
    assert a is not None and b is not None
    assert min(values) <= a <= b <= max(values)


# ---- the join -----------------------------------------------------------------------


def test_join_takes_the_first_picture_at_or_after_each_send() -> None:
    sent = [(1, 10.0), (2, 10.1), (3, 10.2)]
    frames = [
        (9, 9.95),  # before any probe: the strip shows the picture, not counted
        (1, 10.05),
        (1, 10.08),  # the same probe again: not a new arrival
        (2, 10.16),
        (2, 10.19),
        (3, 10.23),
    ]
    j = ix.join(sent, frames)
    assert (j.sent, j.seen, j.lost, j.foreign, j.early, j.frames) == (3, 3, 0, 0, 0, 6)
    assert j.latencies_ms == pytest.approx([50.0, 60.0, 30.0])
    assert j.quantile(50) == pytest.approx(50.0)
    assert j.lost_percent == 0.0


def test_join_counts_lost_probes_and_names_them() -> None:
    j = ix.join([(1, 1.0), (2, 1.1), (3, 1.2)], [(1, 1.05), (3, 1.25)])
    assert (j.seen, j.lost, j.lost_seqs) == (2, 1, [2])
    assert j.lost_percent == pytest.approx(100 / 3)


def test_a_read_before_its_probe_was_sent_is_early_not_a_latency() -> None:
    # Probe 2 misread at 1.06 (before it was sent at 1.1), then really shown at 1.15.
    j = ix.join([(1, 1.0), (2, 1.1)], [(1, 1.04), (2, 1.06), (2, 1.15)])
    assert j.early == 1
    assert j.latencies_ms == pytest.approx([40.0, 50.0])


def test_values_never_sent_are_foreign_once_a_probe_was_seen() -> None:
    frames = [(777, 0.5), (1, 1.04), (777, 1.05), (4242, 1.06)]
    j = ix.join([(1, 1.0)], frames)
    assert j.foreign == 2  # the read at 0.5 precedes every probe: the picture, not a misread
    assert j.seen == 1


def test_no_probe_seen_means_no_misread_accounting() -> None:
    j = ix.join([(1, 1.0)], [(5, 1.1), (6, 1.2)])
    assert (j.seen, j.lost, j.foreign, j.early) == (0, 1, 0, 0)
    assert j.quantile(99) is None and j.lost_percent == 100.0


def test_a_wrapped_seq_is_a_new_probe_matched_after_its_own_send() -> None:
    # seq 5 sent twice (the counter wrapped): each send takes the first picture after it
    # and before the next send of the same seq.
    sent = [(5, 1.0), (6, 1.1), (5, 10.0)]
    frames = [(5, 1.05), (6, 1.13), (5, 10.07)]
    j = ix.join(sent, frames)
    assert j.latencies_ms == pytest.approx([50.0, 30.0, 70.0])
    # Without a picture after the second send, the second is lost: the first send's
    # picture never counts for it.
    j = ix.join(sent, frames[:2])
    assert (j.seen, j.lost, j.lost_seqs) == (2, 1, [5])


def test_join_accepts_unordered_logs_and_reports_in_send_order() -> None:
    sent = [(3, 1.2), (1, 1.0), (2, 1.1)]
    frames = [(2, 1.13), (3, 1.21), (1, 1.05)]
    assert ix.join(sent, frames).latencies_ms == pytest.approx([50.0, 30.0, 10.0])


def test_join_of_empty_logs() -> None:
    j = ix.join([], [(1, 1.0)])
    assert (j.sent, j.seen, j.lost, j.frames) == (0, 0, 0, 1)
    assert j.lost_percent is None


@given(
    st.lists(st.floats(0.001, 0.5), min_size=1, max_size=60),
    st.integers(0, 65535),
    st.randoms(use_true_random=False),
)
@settings(max_examples=150, deadline=None)
def test_join_recovers_every_delay_of_a_simulated_viewer(
    delays: list[float], start: int, rng: random.Random
) -> None:
    """Probes 1 s apart with seq counting up (wrapping); the viewer shows each probe
    from its delay on, for three pictures, in between pictures of a foreign value."""
    sent = [((start + i) % 65536, 100.0 + i) for i in range(len(delays))]
    sent_values = {s for s, _ in sent}
    foreign = next(v for v in range(65536) if v not in sent_values)
    frames: list[tuple[int, float]] = []
    for (seq, t), d in zip(sent, delays, strict=True):
        frames += [(seq, t + d), (seq, t + d + 0.033), (seq, t + d + 0.066)]
        frames.append((foreign, t + 0.9))
    rng.shuffle(frames)
    j = ix.join(sent, frames)
    assert j.lost == 0 and j.early == 0
    assert j.latencies_ms == pytest.approx([d * 1000 for d in delays])
    assert j.foreign == len(delays)


# ---- figures ----------------------------------------------------------------------


def test_latency_figures_of_a_join() -> None:
    j = ix.join([(1, 1.0), (2, 1.1), (3, 1.2)], [(1, 1.01), (2, 1.13), (9, 1.14)])
    f = ix.latency_figures("probe", j)
    assert f["probe_latency_p50_ms"].value == pytest.approx(20.0)
    assert f["probe_latency_max_ms"].value == pytest.approx(30.0)
    assert f["probe_latency_mean_ms"].value == pytest.approx(20.0)
    assert f["probe_probes_sent"].value == 3
    assert f["probe_probes_seen"].value == 2
    assert f["probe_probes_lost"].value == 1
    assert f["probe_misreads"].value == 1
    assert f["probe_latency_p99_ms"].unit == "ms" and f["probe_latency_p99_ms"].better == "lower"


def test_latency_figures_without_a_join_carry_the_reason() -> None:
    f = ix.latency_figures("probe", None, "the viewer got no picture")
    assert f["probe_latency_p99_ms"].value is None
    assert f["probe_latency_p99_ms"].note == "the viewer got no picture"
    assert f["probe_probes_lost"].value is None


def _histogram_text(name: str, counts: dict[str, int], total: float) -> str:
    lines = [f'{name}_bucket{{le="{le}"}} {n}' for le, n in counts.items()]
    n = list(counts.values())[-1]
    return "\n".join([*lines, f"{name}_sum {total}", f"{name}_count {n}"]) + "\n"


def test_histogram_figures_take_the_window_difference() -> None:
    name = "edge_node_event_to_frame_seconds"
    start = prom.parse(_histogram_text(name, {"0.033": 5, "0.066": 5, "0.1": 5, "+Inf": 5}, 0.1))
    # 100 more events in the window: 60 under 33 ms, 39 more under 66 ms, 1 under 100 ms.
    end = prom.parse(
        _histogram_text(name, {"0.033": 65, "0.066": 104, "0.1": 105, "+Inf": 105}, 3.1)
    )
    f = ix.histogram_figures("node_event_to_frame", start, end, name)
    assert f["node_event_to_frame_p50_ms"].value == pytest.approx(33.0)
    assert f["node_event_to_frame_p99_ms"].value == pytest.approx(66.0)
    assert f["node_event_to_frame_mean_ms"].value == pytest.approx(30.0)
    assert f["node_event_to_frame_observations"].value == 100
    missing = ix.histogram_figures("x", None, end, name)
    assert missing["x_p50_ms"].value is None and missing["x_observations"].value is None


def test_events_by_outcome_and_rates() -> None:
    metric = "edge_node_interaction_events_total"
    start = prom.parse(
        f'{metric}{{type="like",outcome="accepted"}} 100\n'
        f'{metric}{{type="comment",outcome="accepted"}} 50\n'
    )
    end = prom.parse(
        f'{metric}{{type="like",outcome="accepted"}} 1100\n'
        f'{metric}{{type="comment",outcome="accepted"}} 850\n'
        f'{metric}{{type="comment",outcome="rate_limited"}} 40\n'
        f'{metric}{{type="comment",outcome="duplicate"}} 10\n'
        "edge_node_other_total 5\n"
    )
    outcomes = ix.events_by_outcome(start, end)
    assert outcomes == {
        ("like", "accepted"): 1000,
        ("comment", "accepted"): 800,
        ("comment", "rate_limited"): 40,
        ("comment", "duplicate"): 10,
    }
    f = ix.event_rate_figures(outcomes, 10.0)
    assert f["node_events_per_second"].value == pytest.approx(185.0)
    assert f["node_events_accepted_per_second"].value == pytest.approx(180.0)
    assert f["node_events_refused"].value == 40
    assert ix.event_rate_figures(outcomes, 0.0)["node_events_per_second"].value is None
    assert ix.events_by_outcome(None, end) == {}


def test_on_screen_figures_use_the_window_only() -> None:
    series = [[1.0, 10], [2.0, 48], [3.0, 50], [4.0, 49], [5.0, 3]]
    f = ix.on_screen_figures(series, 2.0, 4.0)
    assert f["danmaku_on_screen_mean"].value == pytest.approx(49.0)
    assert f["danmaku_on_screen_min"].value == 48
    assert ix.on_screen_figures(series, 10.0, 11.0)["danmaku_on_screen_mean"].value is None


def test_load_figures() -> None:
    result = {"seconds": 10.0, "sent": 20_000, "replies": {"ack": 19_990, "busy": 5}, "users": 100}
    f = ix.load_figures(result, 2000.0)
    assert f["load_events_per_second"].value == pytest.approx(2000.0)
    assert f["load_errors"].value == 5
    assert f["load_unanswered"].value == 5
    assert f["load_users"].value == 100
    assert ix.load_figures(None, 2000.0)["load_events_per_second"].value is None


def test_cdf_points_are_monotone_from_min_to_max() -> None:
    pts = ix.cdf_points([30.0, 10.0, 20.0], points=11)
    assert pts[0] == (10.0, 0.0) and pts[-1] == (30.0, 1.0)
    assert all(a[0] <= b[0] and a[1] < b[1] for a, b in itertools.pairwise(pts))
    assert ix.cdf_points([]) == []


# ---- the engine alone -------------------------------------------------------------


def test_queued_latencies_follow_lindleys_recursion() -> None:
    # Faster than the arrivals: no wait, latency = service time.
    assert engine_alone.queued_latencies([0.5, 0.5, 0.5], 1.0) == [0.5, 0.5, 0.5]
    # One slow event delays the ones behind it until the backlog drains.
    got = engine_alone.queued_latencies([3.0, 0.5, 0.5, 0.5, 0.5], 1.0)
    assert got == pytest.approx([3.0, 2.5, 2.0, 1.5, 1.0])
    # Slower than the arrivals on average: the wait grows without bound.
    got = engine_alone.queued_latencies([2.0] * 5, 1.0)
    assert got == pytest.approx([2.0, 3.0, 4.0, 5.0, 6.0])


def test_make_events_follows_the_mix_with_unique_ids() -> None:
    events = engine_alone.make_events(5000, 200, random.Random(1))
    ids = [m.id for _, _, m in events]
    assert len(set(ids)) == len(ids) == 5000
    kinds = [m.TYPE for _, _, m in events]
    assert kinds.count("probe") == 5
    assert 0.35 < kinds.count("comment") / 5000 < 0.45
    assert 0.44 < kinds.count("like") / 5000 < 0.54
    assert all(role == "bench" for _, role, m in events if m.TYPE == "probe")
    assert all(role == "platform" for _, role, m in events if m.TYPE == "gift")


def test_a_short_engine_run_accepts_everything_and_reports() -> None:
    r = engine_alone.run(events=2000, seed=3)
    assert len(r.total_s) == len(r.handle_s) == len(r.kinds) == 2000
    assert sum(r.outcomes.values()) == 2000
    assert all(key.endswith(":ack") for key in r.outcomes), r.outcomes
    f = engine_alone.figures(r)
    p50, p99 = f["engine_alone_p50_ms"].value, f["engine_alone_p99_ms"].value
    assert p50 is not None and p99 is not None and 0 < p50 <= p99
    assert f["engine_alone_events"].value == 2000
    assert f["engine_alone_capacity_events_per_second"].value > 0  # type: ignore[operator]


def test_the_bench_config_raises_the_limits_and_caps_the_board() -> None:
    cfg = engine_alone.bench_config()
    assert cfg.bench.probe is True
    assert cfg.overlay.max_on_screen == 50
    assert cfg.interaction.comment_rate_per_s == 1000
    assert cfg.interaction.ip_rate_per_s == 100000


# ---- the load generator -----------------------------------------------------------


def test_parse_mix_normalises_and_refuses_nonsense() -> None:
    assert load_gen.parse_mix("comment=2,like=2") == {"comment": 0.5, "like": 0.5}
    for bad in ("gift=1", "comment=x", "comment=-1", "comment=0,like=0", "comment"):
        with pytest.raises(ValueError):
            load_gen.parse_mix(bad)


def test_kind_cycle_holds_the_exact_proportions() -> None:
    cycle = load_gen.kind_cycle(load_gen.parse_mix(load_gen.DEFAULT_MIX), random.Random(1))
    assert len(cycle) == 1000
    assert (cycle.count("comment"), cycle.count("like"), cycle.count("vote")) == (400, 500, 100)


def test_bad_command_lines_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import probe_sender

    args = ["--url", "http://x", "--secret-file", "/nonexistent"]
    assert load_gen.main([*args, "--mix", "gift=1"]) == 2
    assert load_gen.main([*args, "--rate", "0"]) == 2
    assert probe_sender.main([*args, "--log", "/dev/null", "--jitter", "0.2"]) == 2


# ---- the scenario -----------------------------------------------------------------


def test_each_run_gets_its_own_seq_range() -> None:
    count = 1000
    ranges = [
        {(scenario.seq_start(run, count) + i) % 65536 for i in range(count)} for run in (1, 2, 3)
    ]
    assert not (ranges[0] & ranges[1]) and not (ranges[1] & ranges[2])
    assert not (ranges[0] & ranges[2])


def test_derived_figures_quote_the_reference_and_the_ratios() -> None:
    figures = {
        "probe_latency_p50_ms": Figure(28.0, "ms", "lower"),
        "probe_latency_p99_ms": Figure(73.0, "ms", "lower"),
    }
    d = scenario.derived(figures)
    assert d["reference_aiortc_sender_p50_ms"].value == 56.0
    assert "NOT measured" in d["reference_aiortc_sender_p99_ms"].note
    assert d["probe_latency_p50_to_reference_ratio"].value == pytest.approx(0.5)
    assert d["probe_latency_p99_to_reference_ratio"].value == pytest.approx(1.0)
    assert "probe_latency_p50_to_reference_ratio" not in scenario.derived({})


def test_the_reference_peer_never_runs_and_says_why() -> None:
    reason = scenario.FieldReference().unavailable()
    assert reason is not None and "56 ms" in reason and "73 ms" in reason


def test_secret_file_of_a_started_node_and_of_a_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "node.secret").write_bytes(b"x" * 32)
    started = SimpleNamespace(node=SimpleNamespace(started_by_bench=True, _data_dir=str(tmp_path)))
    assert scenario.secret_file(started) == (tmp_path / "node.secret", "")  # type: ignore[arg-type]
    target = SimpleNamespace(node=SimpleNamespace(started_by_bench=False, _data_dir=None))
    monkeypatch.delenv(scenario.SECRET_ENV, raising=False)
    path, reason = scenario.secret_file(target)  # type: ignore[arg-type]
    assert path is None and scenario.SECRET_ENV in reason
    monkeypatch.setenv(scenario.SECRET_ENV, str(tmp_path / "node.secret"))
    assert scenario.secret_file(target)[0] == tmp_path / "node.secret"  # type: ignore[arg-type]


def test_checks_of_a_good_and_a_bad_run() -> None:
    j = ix.join([(i, i * 0.1) for i in range(1000)], [(i, i * 0.1 + 0.03) for i in range(1000)])
    figures = {
        "load_errors": Figure(0, "events"),
        "node_events_per_second": Figure(2010.0, "events/s"),
        "danmaku_on_screen_mean": Figure(49.5, "danmaku"),
        "engine_alone_p99_ms": Figure(0.4, "ms"),
        "engine_alone_busy_percent": Figure(60.0, "%"),
    }
    checks = scenario._checks(figures, j, "", {"sent": 1, "error": None}, 1000)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    figures["engine_alone_busy_percent"] = Figure(170.0, "%")
    slow = ix.join([(i, i * 0.1) for i in range(10)], [(i, i * 0.1 + 0.3) for i in range(9)])
    checks = scenario._checks(figures, slow, "", {"sent": 1, "error": None}, 10)
    failed = {c.name for c in checks if not c.ok}
    assert "probes seen at the viewer (at most 1% lost)" in failed
    assert "at least 1,000 probes (issue 5)" in failed
    assert "probe p99 under 200 ms (seed)" in failed
    assert "engine alone keeps up with 10000 events/s" in failed
    no_join = scenario._checks(figures, None, "no viewer", None, 10)
    assert [c.ok for c in no_join] == [False]


def test_plots_from_the_logs(tmp_path: Path) -> None:
    from bench.report import Suite
    from bench.scenarios import RunResult

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "run1-probes-sent.log").write_text("".join(f"{i} {i * 0.1:.3f}\n" for i in range(50)))
    (logs / "run1-probes-seen.log").write_text(
        "".join(f"{i} {i * 0.1 + 0.02 + i * 0.0005:.4f}\n" for i in range(50))
    )
    figures = {
        "probe_latency_p50_ms": Figure(30.0, "ms"),
        "probe_latency_p99_ms": Figure(45.0, "ms"),
    }
    figures.update(scenario.derived(figures))
    suite = Suite(
        scenario="interaction",
        description="",
        seconds=5.0,
        runs=[RunResult(figures=dict(figures))],
        machine={},
        node={},
        figures=figures,
    )
    written = scenario.plots(suite, tmp_path)
    assert written == ["interaction.png", "interaction_cdf.png"]
    for name in written:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not math.isnan(figures["probe_latency_p50_to_reference_ratio"].value or math.nan)
