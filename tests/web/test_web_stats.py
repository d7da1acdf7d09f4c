"""The console's live figures: Prometheus text parsing, bucket quantiles and rates
over snapshots (sans-I/O, fake time), checked against the project's own registry."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node.metrics import LATENCY_BUCKETS_S, Registry
from edge_node.server.http import LiveFigures, bucket_quantile, health_figures, parse_metrics


def registry() -> tuple[Registry, dict[str, object]]:
    reg = Registry()
    parts: dict[str, object] = {
        "events": reg.counter("edge_node_interaction_events_total", "x"),
        "dropped": reg.counter("edge_node_frames_dropped_total", "x"),
        "latency": reg.histogram("edge_node_event_to_frame_seconds", "x"),
        "fps_in": reg.gauge("edge_node_frames_in_per_second", "x"),
        "viewers": reg.gauge("edge_node_viewers", "x"),
    }
    return reg, parts


def test_parse_sums_labels_and_keeps_buckets_apart() -> None:
    reg, m = registry()
    m["events"].inc(3, type="comment", outcome="accepted")  # type: ignore[attr-defined]
    m["events"].inc(2, type="like", outcome='we"ird\\label')  # type: ignore[attr-defined]
    m["latency"].observe(0.003)  # type: ignore[attr-defined]
    m["latency"].observe(0.05)  # type: ignore[attr-defined]
    m["viewers"].set(7)  # type: ignore[attr-defined]
    values = parse_metrics(reg.render() + "garbage line\n# comment\n")
    assert values["edge_node_interaction_events_total"] == 5
    assert values["edge_node_viewers"] == 7
    assert values["edge_node_event_to_frame_seconds_bucket|0.004"] == 1
    assert values["edge_node_event_to_frame_seconds_bucket|+Inf"] == 2
    assert values["edge_node_event_to_frame_seconds_count"] == 2


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    bounds = [0.01, 0.02, 0.04, math.inf]
    assert bucket_quantile(0.5, bounds, [0, 10, 10, 10]) == pytest.approx(0.015)
    assert bucket_quantile(0.99, bounds, [10, 10, 10, 10]) == pytest.approx(0.0099)
    # Beyond the last finite bound all one can say is "at least that".
    assert bucket_quantile(0.5, bounds, [0, 0, 0, 4]) == 0.04
    assert bucket_quantile(0.5, bounds, [0, 0, 0, 0]) is None
    assert bucket_quantile(0.5, [], []) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.00001, 2.0, allow_nan=False), min_size=1, max_size=200))
def test_quantiles_stay_within_the_bucket_of_the_exact_value(samples: list[float]) -> None:
    reg, m = registry()
    for s in samples:
        m["latency"].observe(s)  # type: ignore[attr-defined]
    figures = LiveFigures()
    figures.observe(0.0, registry()[0].render())  # empty before
    figures.observe(1.0, reg.render())
    ordered = sorted(samples)
    bounds = (0.0, *LATENCY_BUCKETS_S, math.inf)
    for q, got in zip(
        (0.5, 0.99), figures.quantiles(1.0, figures.LATENCY, (0.5, 0.99)), strict=True
    ):
        assert got is not None
        exact = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
        # The estimate lies in the bucket holding the exact quantile (or, past the
        # last bound, is that bound).
        i = next(i for i in range(1, len(bounds)) if exact <= bounds[i])
        low, high = bounds[i - 1], min(bounds[i], LATENCY_BUCKETS_S[-1])
        assert low - 1e-12 <= got <= high + 1e-12


def test_rates_and_recent_quantiles_over_fake_time() -> None:
    reg, m = registry()
    figures = LiveFigures(rate_window_s=2.0, quantile_window_s=10.0, min_interval_s=0.25)
    assert figures.figures(0.0)["events_per_s"] is None  # nothing observed yet
    figures.observe(0.0, reg.render())
    assert figures.figures(0.0)["events_per_s"] is None  # one snapshot: no rate yet
    m["fps_in"].set(29.5)  # type: ignore[attr-defined]
    for t in range(1, 21):  # 20 s: 50 events and 1 dropped frame a second
        m["events"].inc(50, type="comment", outcome="accepted")  # type: ignore[attr-defined]
        m["dropped"].inc(1, stage="source_queue")  # type: ignore[attr-defined]
        if t <= 5:  # slow frames early on, none after
            m["latency"].observe(0.150)  # type: ignore[attr-defined]
        figures.observe(float(t), reg.render())
        figures.observe(t + 0.1, reg.render())  # too soon: ignored (many consoles)
    out = figures.figures(20.0)
    assert out["events_per_s"] == pytest.approx(50.0)
    assert out["dropped_per_s"] == pytest.approx(1.0)
    assert out["dropped_total"] == 20
    assert out["fps_in"] == 29.5
    # The slow frames were more than 10 s ago: no latency to report now.
    assert out["latency_ms"] == {"p50": None, "p99": None, "window_s": 10.0}
    m["latency"].observe(0.012)  # type: ignore[attr-defined]
    figures.observe(21.0, reg.render())
    p50 = figures.figures(21.0)["latency_ms"]["p50"]
    assert 8.0 < p50 <= 16.0
    # Only what the windows need is kept.
    assert len(figures._snapshots) <= 13


def test_health_figures_pick_the_link_and_spool() -> None:
    health = {
        "status": "ok",
        "ingest": {"live": "whip"},
        "cloud": {"target": "c:1", "connected": True, "last_error": None, "acked_seq": 4},
        "spool": {"depth": 3, "path": "/x"},
    }
    assert health_figures(health) == {
        "status": "ok",
        "ingest": "whip",
        "cloud": {"target": "c:1", "connected": True, "last_error": None},
        "spool_depth": 3,
    }
    bare = health_figures({"status": "degraded", "ingest": {"live": None}, "cloud": None})
    assert bare["cloud"] is None and bare["spool_depth"] is None
