"""Prometheus text rendering of counters, gauges and histograms; the rate meter."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_node.metrics import LATENCY_BUCKETS_S, Counter, Gauge, Histogram, RateMeter, Registry

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\\\|\\"|\\n)*"'
LABELS = rf"\{{{NAME}={LABEL_VALUE}(?:,{NAME}={LABEL_VALUE})*\}}"
VALUE = r"(?:[+-]?Inf|NaN|[+-]?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)"
SAMPLE_RE = re.compile(rf"^(?P<name>{NAME})(?P<labels>{LABELS})? (?P<value>{VALUE})$")
HELP_RE = re.compile(rf"^# HELP (?P<name>{NAME}) .*$")
TYPE_RE = re.compile(rf"^# TYPE (?P<name>{NAME}) (counter|gauge|histogram|summary|untyped)$")


def parse(text: str) -> dict[str, dict[str, float]]:
    """A strict enough reader of the exposition format: every line must be well formed,
    each metric's HELP and TYPE must come before its samples. Returns name -> labels -> value.
    """
    assert text.endswith("\n")
    samples: dict[str, dict[str, float]] = {}
    typed: dict[str, str] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if m := HELP_RE.match(line):
            helped.add(m["name"])
            continue
        if m := TYPE_RE.match(line):
            assert m["name"] in helped, f"TYPE before HELP: {line}"
            assert m["name"] not in typed, f"duplicate TYPE: {line}"
            typed[m["name"]] = m.group(2)
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"malformed line: {line!r}"
        name = m["name"]
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or family in typed, f"sample before TYPE: {line}"
        samples.setdefault(name, {})[m["labels"] or ""] = float(m["value"])
    return samples


def check_histogram(samples: dict[str, dict[str, float]], name: str) -> list[tuple[float, float]]:
    """Buckets in order as (le, cumulative count); asserts the Prometheus invariants."""
    buckets = []
    for labels, value in samples[f"{name}_bucket"].items():
        le = re.fullmatch(r'\{le="([^"]+)"\}', labels)
        assert le, labels
        buckets.append((float(le.group(1)), value))
    buckets.sort()
    assert buckets[-1][0] == math.inf
    counts = [c for _, c in buckets]
    assert counts == sorted(counts), "cumulative buckets must not decrease"
    assert buckets[-1][1] == samples[f"{name}_count"][""]
    assert f"{name}_sum" in samples
    return buckets


# --- counters ----------------------------------------------------------------------------


def test_counter_renders_help_type_and_value() -> None:
    c = Counter("edge_node_things_total", "Things that happened.")
    c.inc()
    c.inc(2.5)
    text = c.render() + "\n"
    lines = text.splitlines()
    assert lines[0] == "# HELP edge_node_things_total Things that happened."
    assert lines[1] == "# TYPE edge_node_things_total counter"
    assert parse(text)["edge_node_things_total"] == {"": 3.5}
    assert c.value() == 3.5


def test_unused_counter_renders_zero() -> None:
    c = Counter("edge_node_nothing_total", "Nothing yet.")
    assert parse(c.render() + "\n")["edge_node_nothing_total"] == {"": 0.0}


def test_counter_labels_are_separate_series_and_order_independent() -> None:
    c = Counter("edge_node_dropped_total", "Drops.")
    c.inc(stage="a", kind="x")
    c.inc(3, kind="x", stage="a")
    c.inc(stage="b", kind="x")
    assert c.value(stage="a", kind="x") == 4
    assert c.value(kind="x", stage="b") == 1
    assert c.value(stage="c") == 0
    series = parse(c.render() + "\n")["edge_node_dropped_total"]
    assert series == {'{kind="x",stage="a"}': 4.0, '{kind="x",stage="b"}': 1.0}


def test_counter_refuses_negative() -> None:
    c = Counter("edge_node_x_total", "X.")
    c.inc(1)
    with pytest.raises(ValueError):
        c.inc(-0.5)
    assert c.value() == 1


def test_counter_accepts_zero() -> None:
    c = Counter("edge_node_x_total", "X.")
    c.inc(0)
    assert c.value() == 0


def test_label_values_are_escaped() -> None:
    c = Counter("edge_node_paths_total", "Paths.")
    c.inc(path='C:\\dir\\"quoted"')
    text = c.render() + "\n"
    assert 'path="C:\\\\dir\\\\\\"quoted\\""' in text
    series = parse(text)["edge_node_paths_total"]
    assert list(series.values()) == [1.0]


def test_newline_in_label_value_is_escaped() -> None:
    c = Counter("edge_node_lines_total", "Lines.")
    c.inc(text="two\nlines")
    parse(c.render() + "\n")


def test_values_render_as_integers_or_floats() -> None:
    c = Counter("edge_node_big_total", "Big.")
    c.inc(1e20)
    assert "edge_node_big_total 100000000000000000000" in c.render()
    g = Gauge("edge_node_ratio", "Ratio.")
    g.set(0.125)
    assert g.render().endswith("edge_node_ratio 0.125")
    g.set(math.inf)
    assert g.render().endswith("edge_node_ratio +Inf")


# --- gauges --------------------------------------------------------------------------------


def test_gauge_set_and_render() -> None:
    g = Gauge("edge_node_viewers", "Viewers.")
    g.set(3)
    g.set(2)
    text = g.render() + "\n"
    assert "# TYPE edge_node_viewers gauge" in text
    assert parse(text)["edge_node_viewers"] == {"": 2.0}
    assert g.value == 2.0


def test_gauge_reads_function_at_render_time() -> None:
    box = [1.0]
    g = Gauge("edge_node_depth", "Depth.", read=lambda: box[0])
    assert g.value == 1.0
    box[0] = 7.5
    assert parse(g.render() + "\n")["edge_node_depth"] == {"": 7.5}


# --- histograms ------------------------------------------------------------------------------


def test_histogram_render() -> None:
    h = Histogram("edge_node_encode_seconds", "Encode time.", buckets=(0.1, 0.01, 1.0))
    assert h.buckets == (0.01, 0.1, 1.0)
    for v in (0.005, 0.01, 0.05, 0.5, 5.0):
        h.observe(v)
    text = h.render() + "\n"
    assert "# HELP edge_node_encode_seconds Encode time." in text
    assert "# TYPE edge_node_encode_seconds histogram" in text
    samples = parse(text)
    buckets = check_histogram(samples, "edge_node_encode_seconds")
    # le is inclusive: 0.01 lands in the 0.01 bucket.
    assert buckets == [(0.01, 2), (0.1, 3), (1.0, 4), (math.inf, 5)]
    assert samples["edge_node_encode_seconds_count"][""] == 5
    assert samples["edge_node_encode_seconds_sum"][""] == pytest.approx(5.565)


def test_empty_histogram() -> None:
    h = Histogram("edge_node_wait_seconds", "Wait.")
    samples = parse(h.render() + "\n")
    buckets = check_histogram(samples, "edge_node_wait_seconds")
    assert len(buckets) == len(LATENCY_BUCKETS_S) + 1
    assert all(c == 0 for _, c in buckets)
    assert samples["edge_node_wait_seconds_sum"][""] == 0
    assert math.isnan(h.quantile(0.5))


def test_histogram_quantile_is_bucket_upper_bound() -> None:
    h = Histogram("edge_node_q_seconds", "Q.", buckets=(1.0, 2.0, 4.0))
    for v in (0.5, 1.5, 1.5, 3.0):
        h.observe(v)
    assert h.quantile(0.25) == 1.0
    assert h.quantile(0.5) == 2.0
    assert h.quantile(1.0) == 4.0
    h.observe(100.0)
    assert h.quantile(1.0) == math.inf


observations = st.lists(
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False),
    max_size=200,
)


@given(values=observations)
def test_histogram_property_cumulative_and_totals(values: list[float]) -> None:
    h = Histogram("edge_node_p_seconds", "P.")
    for v in values:
        h.observe(v)
    samples = parse(h.render() + "\n")
    buckets = check_histogram(samples, "edge_node_p_seconds")
    assert buckets[-1][1] == len(values)
    assert h.count == len(values)
    for le, cumulative in buckets:
        assert cumulative == sum(1 for v in values if v <= le)
    assert h.sum == pytest.approx(sum(values))
    assert samples["edge_node_p_seconds_sum"][""] == pytest.approx(sum(values))


# --- registry --------------------------------------------------------------------------------


def test_registry_renders_all_metrics() -> None:
    r = Registry()
    c = r.counter("edge_node_a_total", "A.")
    g = r.gauge("edge_node_b", "B.")
    h = r.histogram("edge_node_c_seconds", "C.")
    c.inc(stage="x")
    g.set(4)
    h.observe(0.003)
    samples = parse(r.render())
    assert samples["edge_node_a_total"] == {'{stage="x"}': 1.0}
    assert samples["edge_node_b"] == {"": 4.0}
    check_histogram(samples, "edge_node_c_seconds")


@pytest.mark.parametrize("kind", ["counter", "gauge", "histogram"])
def test_registry_refuses_duplicate_names(kind: str) -> None:
    r = Registry()
    r.counter("edge_node_dup", "First.")
    with pytest.raises(ValueError, match="edge_node_dup"):
        getattr(r, kind)("edge_node_dup", "Second.")


# --- rate meter ------------------------------------------------------------------------------


def test_rate_meter_counts_the_last_window() -> None:
    m = RateMeter()
    assert m.rate(0.0) == 0.0
    for t in (10.0, 10.25, 10.5, 10.75):
        m.add(t)
    assert m.rate(10.8) == 4.0
    # The event at exactly now - window has left the window.
    assert m.rate(11.0) == 3.0
    assert m.rate(11.6) == 1.0
    assert m.rate(12.0) == 0.0


def test_rate_meter_amounts_and_window() -> None:
    m = RateMeter(window_s=2.0)
    m.add(0.0, 1000)
    m.add(1.0, 3000)
    assert m.rate(1.5) == 2000.0
    assert m.rate(2.5) == 1500.0


def test_rate_meter_long_run_stays_correct() -> None:
    m = RateMeter()
    # 128 events per second (exact binary fractions), well past the compaction point.
    for i in range(5000):
        now = i / 128
        m.add(now)
        if i >= 128:
            assert m.rate(now) == 128.0
    assert m.rate(4999 / 128 + 0.5) == 64.0
