"""The ``interaction`` scenario's pure parts, without a node or any process: joining the
prober's and the viewer's logs, percentiles, the figures taken from /metrics and from
the load, the engine-alone run and its queueing model, and the scenario's helpers."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import engine_alone, load_gen, prom, ws_client  # noqa: E402
from bench import interaction as ix  # noqa: E402
from bench.figures import Figure  # noqa: E402
from bench.sampler import Sample  # noqa: E402
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


def _gauge_sample(t: float, on_screen: float | None) -> Sample:
    text = "edge_node_interaction_clients 101\n"
    if on_screen is not None:
        text += f"edge_node_danmaku_on_screen {on_screen:g}\n"
    return Sample(t=t, cpu_s={}, rss_bytes={}, metrics=prom.parse(text))


def test_danmaku_figures_are_the_node_gauge_over_the_window_only() -> None:
    samples = [_gauge_sample(t, v) for t, v in ((1.0, 10), (2.0, 48), (2.5, 50), (3.0, 50))]
    samples += [_gauge_sample(3.5, None), _gauge_sample(4.0, 49), _gauge_sample(5.0, 3)]
    samples.insert(2, Sample(t=2.2, cpu_s={}, rss_bytes={}, metrics=None))  # /metrics down
    f = scenario.danmaku_figures(samples, samples[1], samples[-2])  # the edges: 2.0 and 4.0
    assert f["danmaku_on_screen_median"].value == pytest.approx(49.5)  # 48, 50, 50, 49
    assert f["danmaku_on_screen_min"].value == 48
    assert "edge_node_danmaku_on_screen" in f["danmaku_on_screen_median"].note
    outside = scenario.danmaku_figures(samples, _gauge_sample(10.0, 1), _gauge_sample(11.0, 1))
    assert outside["danmaku_on_screen_median"].value is None


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
    assert load_gen.parse_mix("comment=3,join=1") == {"comment": 0.75, "join": 0.25}
    for bad in ("gift=1", "comment=x", "comment=-1", "comment=0,like=0", "comment"):
        with pytest.raises(ValueError):
            load_gen.parse_mix(bad)


def test_kind_cycle_holds_the_exact_proportions() -> None:
    cycle = load_gen.kind_cycle(load_gen.parse_mix(load_gen.DEFAULT_MIX), random.Random(1))
    assert len(cycle) == 1000
    assert (cycle.count("comment"), cycle.count("like"), cycle.count("vote")) == (400, 500, 100)


def test_kind_cycle_with_like_bursts_keeps_the_event_shares() -> None:
    mix = load_gen.parse_mix("comment=0.35,like=0.5,vote=0.1,join=0.05")
    cycle = load_gen.kind_cycle(mix, random.Random(1), like_burst=4)
    # A like turn is 4 events: the other kinds get 4 times their turns.
    assert {k: cycle.count(k) for k in load_gen.KINDS} == {
        "comment": 1400, "like": 500, "vote": 400, "join": 200}  # fmt: skip
    events = {k: cycle.count(k) * (4 if k == "like" else 1) for k in load_gen.KINDS}
    assert events == {"comment": 1400, "like": 2000, "vote": 400, "join": 200}


def _turns(got: list[tuple[int, str, dict[str, object]]]) -> list[list[int]]:
    """The message indices of each turn: a run of likes from one user is one turn
    per ``like_burst`` messages; anything else is a turn of its own."""
    turns: list[list[int]] = []
    for i, (user, kind, _) in enumerate(got):
        prev = got[i - 1] if i else None
        if kind == "like" and prev is not None and prev[:2] == (user, "like"):
            turns[-1].append(i)
        else:
            turns.append([i])
    return turns


@pytest.mark.parametrize(("seed", "users", "burst"), [(1, 7, 4), (5, 100, 3), (2, 1, 1)])
def test_messages_with_joins_and_like_bursts(seed: int, users: int, burst: int) -> None:
    mix = load_gen.parse_mix("comment=0.3,like=0.5,vote=0.1,join=0.1")
    cycle_events = 1000 * burst
    stream = load_gen.messages(mix, random.Random(seed), "p", users, "L", burst)
    got = list(itertools.islice(stream, 6 * cycle_events))
    assert got == list(
        itertools.islice(load_gen.messages(mix, random.Random(seed), "p", users, "L", burst),
                         6 * cycle_events))  # fmt: skip
    assert got != list(
        itertools.islice(load_gen.messages(mix, random.Random(seed + 1), "p", users, "L", burst),
                         6 * cycle_events))  # fmt: skip
    assert [m["id"] for _, _, m in got] == [f"l{n}" for n in range(1, len(got) + 1)]
    # Exact shares of the events over whole cycles (a join turn is a join or a keyword).
    kinds = [("join" if k == "keyword" else k) for _, k, _ in got]
    shares = {k: kinds.count(k) for k in load_gen.KINDS}
    assert shares == {"comment": 1800 * burst, "like": 3000 * burst, "vote": 600 * burst,
                      "join": 600 * burst}  # fmt: skip
    for _, kind, m in got:
        assert m["t"] == ("comment" if kind == "keyword" else kind)
    # Each user joins once, on their first join turn; later turns comment the keyword.
    # (Which users have join turns is the round robin's: with 100 users, a divisor of
    # the cycle's 2,200 turns, the same 97 every cycle; real audiences do not all enter.)
    joins = [(i, user) for i, (user, kind, _) in enumerate(got) if kind == "join"]
    with_join_turns = {user for user, kind, _ in got if kind in ("join", "keyword")}
    assert len(joins) == len({user for _, user in joins}) == len(with_join_turns)
    assert len(joins) == (97 if users == 100 else users)
    first_join = {user: i for i, user in joins}
    for i, (user, kind, m) in enumerate(got):
        if kind == "join":
            assert m == {"t": "join", "id": f"l{i + 1}", "lottery": "L"}
        elif kind == "keyword":
            assert first_join[user] < i and m["text"] == load_gen.LOTTERY_KEYWORD
    # Turns go round robin; a like turn is `burst` likes back to back from its user.
    turns = _turns(got) if users > 1 else [[i] for i in range(len(got))]
    if users > 1:
        assert [got[t[0]][0] for t in turns] == [i % users for i in range(len(turns))]
        like_turns = [t for t in turns if got[t[0]][1] == "like"]
        assert like_turns and all(len(t) == burst for t in like_turns)
        assert all(len(t) == 1 for t in turns if got[t[0]][1] != "like")
        assert len(turns) == 6 * (300 * burst + 500 + 100 * burst + 100 * burst)
    else:
        assert {user for user, _, _ in got} == {0}


def test_like_bursts_keep_the_contents_of_single_likes() -> None:
    """A burst of 3 draws its like counts from the seed as 3 single likes would."""
    mix = load_gen.parse_mix("like=1")
    single = list(itertools.islice(load_gen.messages(mix, random.Random(4), "p", 5), 300))
    burst = list(itertools.islice(load_gen.messages(mix, random.Random(4), "p", 5, "L", 3), 300))
    assert [m for _, _, m in single] == [m for _, _, m in burst]
    assert [u for u, _, _ in burst] == [(i // 3) % 5 for i in range(300)]


def test_draw_summary_counts_the_entrants() -> None:
    reply = {"t": "ack", "id": "d", "result": {"lottery": "L", "seed": "ab",
             "entrants": ["a", "b", "c"], "winners": ["b"]}}  # fmt: skip
    assert load_gen.draw_summary(reply) == {"t": "ack", "id": "d", "result": {
        "lottery": "L", "seed": "ab", "entrants": 3, "winners": ["b"]}}  # fmt: skip
    err = {"t": "err", "id": "d", "code": "unknown_target", "msg": "no lottery 'L'"}
    assert load_gen.draw_summary(err) == err
    assert load_gen.default_lottery() == "bench-load"
    assert load_gen.default_lottery("b1r2") == "b1r2-bench-load"


def test_bad_command_lines_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import probe_sender

    args = ["--url", "http://x", "--secret-file", "/nonexistent"]
    assert load_gen.main([*args, "--mix", "gift=1"]) == 2
    assert load_gen.main([*args, "--rate", "0"]) == 2
    assert load_gen.main([*args, "--like-burst", "0"]) == 2
    assert load_gen.main([*args, "--lottery", " "]) == 2
    assert load_gen.main([*args, "--lottery", "x" * 65]) == 2
    assert probe_sender.main([*args, "--log", "/dev/null", "--jitter", "0.2"]) == 2


def _old_messages(seed: int, count: int, poll: str) -> list[dict[str, object]]:
    """The load's messages as the loop of the aiohttp-based load generator drew them."""
    rng = random.Random(seed)
    kinds = itertools.cycle(load_gen.kind_cycle(load_gen.parse_mix(load_gen.DEFAULT_MIX), rng))
    out: list[dict[str, object]] = []
    for n in range(1, count + 1):
        kind = next(kinds)
        mid = f"l{n}"
        if kind == "comment":
            out.append({"t": "comment", "id": mid, "text": engine_alone.comment_text(rng, n)})
        elif kind == "like":
            out.append({"t": "like", "id": mid, "n": rng.randint(1, 5)})
        else:
            option = min(len(load_gen.POLL_OPTIONS) - 1, int(rng.expovariate(1.2)))
            out.append({"t": "vote", "id": mid, "poll": poll, "option": option})
    return out


@pytest.mark.parametrize("seed", [1, 5])
def test_messages_are_the_seeded_mix_of_before(seed: int) -> None:
    mix = load_gen.parse_mix(load_gen.DEFAULT_MIX)
    got = list(itertools.islice(load_gen.messages(mix, random.Random(seed), "p", 7), 3000))
    assert [m for _, _, m in got] == _old_messages(seed, 3000, "p")
    assert all(kind == m["t"] for _, kind, m in got)
    assert [user for user, _, _ in got] == [i % 7 for i in range(3000)]  # round robin
    # One reused packer writes what msgpack.packb writes.
    pack = msgpack.Packer().pack
    assert all(pack(m) == msgpack.packb(m) for _, _, m in got)


def _unmask_client_frame(frame: bytes) -> tuple[int, bool, bytes]:
    """(opcode, fin, payload) of one client frame, checked as a server would."""
    b0, b1 = frame[0], frame[1]
    assert b1 & 0x80, "a client frame must be masked"
    assert not b0 & 0x70, "no RSV bit without an extension"
    length, pos = b1 & 0x7F, 2
    if length == 126:
        length, pos = int.from_bytes(frame[2:4], "big"), 4
        assert length >= 126  # the shortest length encoding
    elif length == 127:
        length, pos = int.from_bytes(frame[2:10], "big"), 10
        assert length >= 1 << 16
    key = frame[pos : pos + 4]
    body = frame[pos + 4 :]
    assert len(body) == length
    return b0 & 0x0F, bool(b0 & 0x80), bytes(b ^ key[i % 4] for i, b in enumerate(body))


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 44, 125, 126, 127, 65535, 65536, 70001])
def test_client_frames_are_masked_and_unmask_to_the_payload(size: int) -> None:
    payload = random.Random(size).randbytes(size)
    key = bytes([0x37, 0xFA, 0x21, 0x3D])
    frame = ws_client.client_frame(ws_client.OP_BINARY, payload, key)
    assert frame[0] == 0x82  # FIN, binary
    assert _unmask_client_frame(frame) == (ws_client.OP_BINARY, True, payload)
    assert ws_client.mask(key, ws_client.mask(key, payload)) == payload


def test_rfc_6455_masking_example() -> None:
    # RFC 6455 section 5.7: a masked "Hello" from a client.
    frame = ws_client.client_frame(ws_client.OP_TEXT, b"Hello", bytes([0x37, 0xFA, 0x21, 0x3D]))
    assert frame == bytes.fromhex("818537fa213d7f9f4d5158")


def test_masks_are_fresh_four_byte_keys_from_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.urandom

    def urandom(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(os, "urandom", urandom)
    masks = ws_client.Masks(pool_bytes=64)
    keys = [masks.next() for _ in range(5000)]
    assert all(len(k) == 4 for k in keys)
    assert len(set(keys)) > 4990  # 2^32 keys: a repeat or two by chance at most
    assert calls == [64] * 313  # 16 keys a pool


def test_accept_key_of_rfc_6455() -> None:
    assert ws_client.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def _head(status: str, **headers: str) -> bytes:
    lines = [status, *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    return "\r\n".join(lines).encode()


def test_check_handshake() -> None:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    ok = {"Upgrade": "WebSocket", "Connection": "keep-alive, Upgrade",
          "Sec_WebSocket_Accept": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}  # fmt: skip
    ws_client.check_handshake(_head("HTTP/1.1 101 Switching Protocols", **ok), key)
    refused = _head("HTTP/1.1 401 Unauthorized", Content_Type="application/json")
    with pytest.raises(ws_client.WsError, match=r"401 Unauthorized: \{\"error\""):
        ws_client.check_handshake(refused, key, b'{"error": "token: expired"}')
    bad = [
        {**ok, "Sec_WebSocket_Accept": "x"},
        {**ok, "Upgrade": "h2c"},
        {**ok, "Connection": "close"},
        {**ok, "Sec_WebSocket_Extensions": "permessage-deflate"},
    ]
    for headers in bad:
        with pytest.raises(ws_client.WsError):
            ws_client.check_handshake(_head("HTTP/1.1 101 Switching Protocols", **headers), key)
    with pytest.raises(ws_client.WsError, match="header line"):
        ws_client.check_handshake(b"HTTP/1.1 101 OK\r\nnonsense", key)


def test_handshake_request() -> None:
    req = ws_client.handshake_request("127.0.0.1:8080", "/ws", "k==", {"Authorization": "Bearer t"})
    assert req.startswith(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in req and b"\r\nAuthorization: Bearer t\r\n" in req
    assert req.endswith(b"\r\n\r\n") and b"Extensions" not in req
    url = ws_client.WsUrl.of("https://node.example:8443/edge/")
    assert (url.host, url.port, url.netloc, url.path, url.tls) == (
        "node.example", 8443, "node.example:8443", "/edge/ws", True)  # fmt: skip
    assert ws_client.WsUrl.of("http://[::1]").netloc == "[::1]"
    assert ws_client.WsUrl.of("http://[::1]").port == 80
    with pytest.raises(ValueError):
        ws_client.WsUrl.of("ftp://x")


def _server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        return bytes((b0, n)) + payload
    if n < 1 << 16:
        return bytes((b0, 126)) + n.to_bytes(2, "big") + payload
    return bytes((b0, 127)) + n.to_bytes(8, "big") + payload


def test_frame_reader_byte_by_byte_fragments_and_control_frames() -> None:
    big = bytes(range(256)) * 300  # 76,800 bytes: a 64-bit length
    stream = (
        _server_frame(ws_client.OP_TEXT, b'{"t":"state"}')
        + _server_frame(ws_client.OP_BINARY, b"ab", fin=False)
        + _server_frame(ws_client.OP_PING, b"hb")  # between fragments: allowed
        + _server_frame(ws_client.OP_CONTINUATION, b"cd", fin=False)
        + _server_frame(ws_client.OP_CONTINUATION, b"e")
        + _server_frame(ws_client.OP_BINARY, b"x" * 300)  # a 16-bit length
        + _server_frame(ws_client.OP_BINARY, big)
        + _server_frame(ws_client.OP_CLOSE, (1000).to_bytes(2, "big"))
    )
    want = [
        (ws_client.OP_TEXT, b'{"t":"state"}'),
        (ws_client.OP_PING, b"hb"),
        (ws_client.OP_BINARY, b"abcde"),
        (ws_client.OP_BINARY, b"x" * 300),
        (ws_client.OP_BINARY, big),
        (ws_client.OP_CLOSE, b"\x03\xe8"),
    ]
    whole = ws_client.FrameReader()
    assert whole.feed(stream) == want
    reader = ws_client.FrameReader()
    got: list[tuple[int, bytes]] = []
    for i in range(0, 2000):  # byte by byte through the headers and small frames
        got += reader.feed(stream[i : i + 1])
    got += reader.feed(stream[2000:])
    assert got == want


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (bytes((0x82, 0x81, 1, 2, 3, 4, 5)), "masked"),
        (bytes((0xC2, 0x01, 0)), "RSV"),
        (bytes((0x83, 0x00)), "reserved opcode"),
        (bytes((0x80, 0x00)), "continuation"),
        (bytes((0x09, 0x00)), "control frame"),
        (bytes((0x02, 0x01, 0)) + bytes((0x82, 0x00)), "final fragment"),
        (bytes((0x82, 0x7F)) + (1 << 40).to_bytes(8, "big"), "bytes"),
    ],
)
def test_frame_reader_refuses_what_a_server_must_not_send(frame: bytes, why: str) -> None:
    with pytest.raises(ws_client.WsError, match=why):
        ws_client.FrameReader().feed(frame)


def _reference_code(payload: bytes) -> str | None:
    """The aiohttp-based load generator's reading of a binary reply."""
    reply = msgpack.unpackb(payload)
    kind = reply.get("t")
    if kind == "state":
        return None
    return "ack" if kind == "ack" else str(reply.get("code"))


def test_reply_code_of_the_nodes_own_replies() -> None:
    from edge_node.interaction import messages as wire

    def packed(reply: dict[str, object]) -> bytes:
        out = wire.encode_reply(reply, binary=True)
        assert isinstance(out, bytes)
        return out

    replies = [
        wire.ack("l1"),
        wire.ack("l2", duplicate=True),
        wire.ack("poll.open-1", result={"poll": "p", "options": ["a", "b"]}),
        wire.ack("x" * 300, masked=True),  # a str8 id
        wire.err("l3", "rate_limited", "slow down"),
        wire.err(None, "bad_message", "what is this"),
        wire.err("l4", "unknown_target", "no open poll 'p'"),
        {"t": "state", "poll": "p", "totals": [1, 2, 3]},
        {"t": "state", "coupon": "d1", "code": "ABC"},  # a push that carries a "code"
        {"id": "l5", "t": "ack"},  # "t" not first: unpacked, still an ack
        {"id": "l6", "t": "err", "code": "busy"},
        {"t": "acknowledged", "code": "busy"},  # not an ack, whatever its prefix
    ]
    for reply in replies:
        data = packed(reply)
        assert ws_client.reply_code(data) == _reference_code(data), reply
    assert [ws_client.reply_code(packed(r)) for r in replies[:4]] == ["ack"] * 4
    assert ws_client.reply_code(packed(replies[8])) is None
    assert ws_client.reply_code(packed(replies[11])) == "busy"
    for garbage in (b"", b"\xc1", b"\x81\xa1t", msgpack.packb([1, 2]), msgpack.packb("ack")):
        assert ws_client.reply_code(garbage) == "bad_reply"


@given(
    st.dictionaries(
        st.sampled_from(["id", "code", "msg", "result", "t2", "duplicate"]),
        st.one_of(st.text(max_size=40), st.integers(-(2**63), 2**64 - 1), st.booleans(), st.none()),
        max_size=6,
    ),
    st.sampled_from(["ack", "err", "state", "ac", "acks", "stat"]),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_reply_code_agrees_with_a_full_unpack(
    rest: dict[str, object], kind: str, t_first: bool
) -> None:
    reply = {"t": kind, **rest} if t_first else {**rest, "t": kind}
    data = msgpack.packb(reply)
    assert ws_client.reply_code(data) == _reference_code(data)


async def _fake_node(
    inbox: list[tuple[str, dict[str, object]]],
    events: list[str],
    lotteries: dict[str, list[str]] | None = None,
) -> tuple[object, str]:
    """An aiohttp WebSocket server standing in for the node's /ws: greets in JSON,
    acks in msgpack (a vote to an unknown poll is an ``unknown_target`` err), pings
    once (autoping off: the client's pong arrives as a message) and pushes state.
    Lotteries as the node keeps them: ``lottery.open`` (busy while one of that name
    is open), ``join`` (``unknown_target`` unless open; a repeat acked as a
    duplicate), ``lottery.draw`` (the entrants in entry order, a state push first).
    ``lotteries``: open lottery -> entrants, at the start and as it goes."""
    from aiohttp import WSMsgType, web

    lotteries = {} if lotteries is None else lotteries

    async def ws(request: web.Request) -> web.WebSocketResponse:
        user = request.headers.get("Authorization", "")
        sock = web.WebSocketResponse(autoping=False)
        await sock.prepare(request)
        await sock.send_str(json.dumps({"t": "state", "poll": "greeting"}))
        await sock.ping(b"hb")
        async for frame in sock:
            if frame.type is WSMsgType.PONG:
                events.append(f"pong {bytes(frame.data)!r}")
                continue
            if frame.type is not WSMsgType.BINARY:
                continue
            msg = msgpack.unpackb(frame.data)
            inbox.append((user, msg))
            if msg["t"] == "command":
                args = msg["args"]
                reply: dict[str, object] = {"t": "ack", "id": msg["id"], "result": {}}
                if msg["cmd"] == "lottery.open" and args["lottery"] in lotteries:
                    reply = {"t": "err", "id": msg["id"], "code": "busy", "msg": "draw it"}
                elif msg["cmd"] == "lottery.open":
                    lotteries[args["lottery"]] = []
                    reply["result"] = {"lottery": args["lottery"], "commit": "c0"}
                elif msg["cmd"] == "lottery.draw":
                    entrants = lotteries.pop(args["lottery"])
                    await sock.send_bytes(msgpack.packb({"t": "state", "phase": "drawn"}))
                    reply["result"] = {"lottery": args["lottery"], "seed": "5e",
                                       "entrants": entrants, "winners": entrants[:1]}  # fmt: skip
                await sock.send_bytes(msgpack.packb(reply))
            elif msg["t"] == "join" and msg["lottery"] not in lotteries:
                err = {"t": "err", "id": msg["id"], "code": "unknown_target", "msg": "closed"}
                await sock.send_bytes(msgpack.packb(err))
            elif msg["t"] == "join":
                entrants = lotteries[msg["lottery"]]
                ack: dict[str, object] = {"t": "ack", "id": msg["id"]}
                if user in entrants:
                    ack["duplicate"] = True
                entrants.append(user)
                await sock.send_bytes(msgpack.packb(ack))
            elif msg["t"] == "vote" and msg["poll"] != "p":
                err = {"t": "err", "id": msg["id"], "code": "unknown_target", "msg": "no poll"}
                await sock.send_bytes(msgpack.packb(err))
            else:
                await sock.send_bytes(msgpack.packb({"t": "state", "likes": 1}))
                await sock.send_bytes(msgpack.packb({"t": "ack", "id": msg["id"]}))
        events.append(f"closed {sock.close_code}")
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def test_load_against_a_websocket_server(tmp_path: Path) -> None:
    from edge_node.interaction.auth import load_or_create_secret

    load_or_create_secret(tmp_path, path=tmp_path / "node.secret")
    inbox: list[tuple[str, dict[str, object]]] = []
    events: list[str] = []
    runner, url = await _fake_node(inbox, events)
    try:
        result = await load_gen.load(
            url, tmp_path / "node.secret", rate=400.0, users=3,
            mix=load_gen.parse_mix(load_gen.DEFAULT_MIX), poll="p", events=False,
            stop_on_stdin_eof=False, max_seconds=0.6, seed=2, user_prefix="t",
        )  # fmt: skip
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]
    assert result["error"] is None, result
    sent = result["sent"]
    assert 150 <= sent <= 260
    assert result["replies"] == {"ack": sent}
    assert sum(result["by_type"].values()) == sent
    assert result["poll_open"]["t"] == "ack" and result["poll_close"]["t"] == "ack"
    # In sending order (the server reads the three sockets as they come).
    load_msgs = sorted(
        ((user, m) for user, m in inbox if m["t"] != "command"),
        key=lambda um: int(str(um[1]["id"])[1:]),
    )
    assert [m for _, m in load_msgs] == _old_messages(2, sent, "p")
    # Round robin: message n from user (n - 1) % 3, each with a token of its own.
    users = [user for user, _ in load_msgs]
    assert len(set(users[:3])) == 3 and users == [users[i % 3] for i in range(sent)]
    assert events.count("pong b'hb'") == 4  # three users and the operator
    assert events.count("closed 1000") == 4  # the closing handshake, every socket
    assert "lottery_open" not in result and "lottery_draw" not in result  # no join


async def test_load_with_a_lottery_and_like_bursts(tmp_path: Path) -> None:
    from edge_node.interaction.auth import load_or_create_secret

    load_or_create_secret(tmp_path, path=tmp_path / "node.secret")
    inbox: list[tuple[str, dict[str, object]]] = []
    # A lottery of that name left open by an earlier load: drawn, then opened anew.
    lotteries = {"L": ["stale-user"]}
    runner, url = await _fake_node(inbox, [], lotteries)
    mix = load_gen.parse_mix("comment=0.3,like=0.4,vote=0.1,join=0.2")
    try:
        result = await load_gen.load(
            url, tmp_path / "node.secret", rate=400.0, users=3, mix=mix, poll="p",
            events=False, stop_on_stdin_eof=False, max_seconds=0.6, seed=2,
            user_prefix="t", like_burst=3, lottery="L",
        )  # fmt: skip
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]
    assert result["error"] is None, result
    sent = result["sent"]
    assert 150 <= sent <= 260
    assert result["replies"] == {"ack": sent}  # every join entered once, keywords acked
    by_type = result["by_type"]
    assert sum(by_type.values()) == sent and by_type["join"] == 3 and by_type["keyword"] > 0
    commands = [(m["cmd"], m["args"]) for _, m in inbox if m["t"] == "command"]
    lottery_args = {"lottery": "L", "keyword": "抽奖", "winners": 3}
    assert commands == [
        ("poll.open", {"poll": "p", "question": "Which colour?",
                       "options": load_gen.POLL_OPTIONS}),
        ("lottery.open", lottery_args),  # busy: the stale one
        ("lottery.draw", {"lottery": "L"}),
        ("lottery.open", lottery_args),
        ("poll.close", {"poll": "p"}),
        ("lottery.draw", {"lottery": "L"}),
    ]  # fmt: skip
    assert result["lottery_open"]["result"] == {"lottery": "L", "commit": "c0"}
    draw = result["lottery_draw"]
    assert draw["t"] == "ack" and draw["result"]["entrants"] == 3 and not lotteries
    # On the wire: the seeded stream, each message from its turn's user.
    load_msgs = sorted(
        ((user, m) for user, m in inbox if m["t"] != "command"),
        key=lambda um: int(str(um[1]["id"])[1:]),
    )
    want = list(itertools.islice(load_gen.messages(mix, random.Random(2), "p", 3, "L", 3), sent))
    assert [m for _, m in load_msgs] == [m for _, _, m in want]
    tokens: dict[int, str] = {}
    for (token, _), (user, _, _) in zip(load_msgs, want, strict=True):
        assert tokens.setdefault(user, token) == token
    assert len(set(tokens.values())) == 3
    joined = [token for token, m in load_msgs if m["t"] == "join"]
    assert len(joined) == len(set(joined)) == 3


async def test_load_counts_error_replies_and_reports_a_refused_upgrade(tmp_path: Path) -> None:
    from edge_node.interaction.auth import load_or_create_secret

    load_or_create_secret(tmp_path, path=tmp_path / "node.secret")
    inbox: list[tuple[str, dict[str, object]]] = []
    runner, url = await _fake_node(inbox, [])
    try:
        result = await load_gen.load(
            url, tmp_path / "node.secret", rate=200.0, users=2,
            mix=load_gen.parse_mix("vote=1"), poll="other", events=False,
            stop_on_stdin_eof=False, max_seconds=0.3, seed=1,
        )  # fmt: skip
        assert result["error"] is None and result["sent"] > 0
        assert result["replies"] == {"unknown_target": result["sent"]}
        refused = await load_gen.load(
            url.replace("127.0.0.1", "127.0.0.1") + "/nowhere", tmp_path / "node.secret",
            rate=200.0, users=2, mix=load_gen.parse_mix("like=1"), poll="p", events=False,
            stop_on_stdin_eof=False, max_seconds=0.3, seed=1,
        )  # fmt: skip
        assert refused["sent"] == 0
        assert refused["error"].startswith("WsError: handshake: HTTP/1.1 404")
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


async def test_load_gen_process_on_uvloop(tmp_path: Path) -> None:
    """The command line, in a process of its own as the bench runs it (on uvloop, a
    project dependency; the tests above run on the standard loop)."""
    import asyncio

    from edge_node.interaction.auth import load_or_create_secret

    load_or_create_secret(tmp_path, path=tmp_path / "node.secret")
    inbox: list[tuple[str, dict[str, object]]] = []
    runner, url = await _fake_node(inbox, [])
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.load_gen", "--url", url,
            "--secret-file", str(tmp_path / "node.secret"), "--rate", "300", "--users", "2",
            "--max-seconds", "0.5", "--user-prefix", "c1", "--poll", "p", "--json",
            "--mix", "comment=0.4,like=0.4,join=0.2", "--like-burst", "2",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [e["event"] for e in lines] == ["running", "result"]
    result = lines[1]
    assert proc.returncode == 0 and result["error"] is None
    assert result["sent"] > 50 and result["replies"] == {"ack": result["sent"]}
    assert "on_screen" not in result
    assert result["like_burst"] == 2 and result["by_type"]["join"] == 2
    assert result["lottery_open"]["result"]["lottery"] == "c1-bench-load"
    assert result["lottery_draw"]["result"]["entrants"] == 2


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
        "danmaku_on_screen_median": Figure(50.0, "danmaku"),
        "engine_alone_p99_ms": Figure(0.4, "ms"),
        "engine_alone_busy_percent": Figure(60.0, "%"),
    }
    checks = scenario._checks(figures, j, "", {"sent": 1, "error": None}, 1000)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    figures["engine_alone_busy_percent"] = Figure(170.0, "%")
    figures["danmaku_on_screen_median"] = Figure(30.0, "danmaku")
    slow = ix.join([(i, i * 0.1) for i in range(10)], [(i, i * 0.1 + 0.3) for i in range(9)])
    checks = scenario._checks(figures, slow, "", {"sent": 1, "error": None}, 10)
    failed = {c.name for c in checks if not c.ok}
    assert "probes seen at the viewer (at most 1% lost)" in failed
    assert "at least 1,000 probes (issue 5)" in failed
    assert "probe p99 under 200 ms (seed)" in failed
    assert "engine alone keeps up with 10000 events/s" in failed
    assert "about 50 danmaku on screen (node gauge)" in failed
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
