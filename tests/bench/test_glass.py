"""The glass scenario's pure parts, without a node or any process: joining the
publisher's and a receiver's logs, percentiles, the figures and ratios, the RTMP
receiver's decoding (fed FLV tags in memory), the marker-bit jitter buffer, the
ffmpeg command line and the plots."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import glass  # noqa: E402
from bench.figures import Figure  # noqa: E402
from bench.glass_run import FFMPEG_VARIANTS, drawtext_filter, ffmpeg_argv, pick_font  # noqa: E402
from bench.scenarios.glass import derived  # noqa: E402

# ---- logs -------------------------------------------------------------------------


def test_parse_log_skips_broken_lines_and_wraps_counters() -> None:
    lines = ["40000 10.5\n", "\n", "garbage\n", "40001 nan\n", "65537 11.0\n", "40002 12.", "7 x"]
    assert glass.parse_log(lines) == [(40000, 10.5), (1, 11.0), (40002, 12.0)]


def test_read_log_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert glass.read_log(tmp_path / "nope.log") == []


# ---- percentile ---------------------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert glass.percentile(values, 0) == 1.0
    assert glass.percentile(values, 100) == 4.0
    assert glass.percentile(values, 50) == 2.5
    assert glass.percentile([7.0], 99) == 7.0
    assert glass.percentile([], 50) is None
    with pytest.raises(ValueError):
        glass.percentile(values, 101)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300),
    st.floats(0, 100),
)
def test_percentile_matches_numpy_linear(values: list[float], q: float) -> None:
    got = glass.percentile(values, q)
    assert got is not None
    assert got == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-6)
    assert min(values) <= got <= max(values)


@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=100))
def test_percentile_is_monotonic_in_q(values: list[float]) -> None:
    qs = [glass.percentile(values, q) for q in (0, 10, 50, 90, 99, 100)]
    assert qs == sorted(qs)  # type: ignore[type-var]


# ---- join ---------------------------------------------------------------------------


def sent_log(n: int, start: int = 40000, t0: float = 100.0, fps: int = 30) -> list[glass.Entry]:
    return [((start + i) % 65536, t0 + i / fps) for i in range(n)]


def test_join_latencies_losses_duplicates_and_strangers() -> None:
    sent = sent_log(60)  # 2 s; the first 30 frames (1 s) are discarded
    received: list[glass.Entry] = [(5, 99.0)]  # the node's test pattern before the switch
    for counter, t in sent:
        if counter in (40040, 40041):
            continue  # lost
        received.append((counter, t + 0.010))
    received.append((40050, sent[50][1] + 0.020))  # shown twice
    received.append((40059, sent[59][1] - 0.5))  # can't arrive before it was sent
    received.sort(key=lambda e: e[1])
    j = glass.join(sent, received, discard_s=1.0)
    assert j.discarded == 30
    assert j.sent == 30
    assert j.lost == 2
    assert j.delivered == 28
    assert j.duplicates == 1
    assert j.foreign == 1
    assert j.early == 1  # 40059's misread arrival is left out...
    # ...and its real arrival (10 ms after sending) came after it, so it counts.
    assert all(x == pytest.approx(10.0) for x in j.latencies_ms)
    assert j.quantile(50) == pytest.approx(10.0)
    assert j.lost_percent == pytest.approx(100 * 2 / 30)


def test_join_counts_across_the_counter_wrap() -> None:
    sent = sent_log(90, start=65500)  # 65500 .. 65535, 0 .. 53
    received = [(c, t + 0.004) for c, t in sent]
    j = glass.join(sent, received, discard_s=1.0)
    assert (j.sent, j.delivered, j.lost) == (60, 60, 0)


def test_join_with_no_publisher_log_has_nothing_sent() -> None:
    j = glass.join([], [(1, 1.0), (2, 2.0)])
    assert (j.sent, j.delivered, j.foreign) == (0, 0, 2)
    assert j.quantile(99) is None
    assert j.lost_percent is None


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 200),
    start=st.integers(0, 65535),
    data=st.data(),
)
def test_join_recovers_every_delay_and_counts_every_loss(
    n: int, start: int, data: st.DataObject
) -> None:
    sent = sent_log(n, start=start)
    delays = data.draw(st.lists(st.floats(0.0, 0.5), min_size=n, max_size=n))
    lost = data.draw(st.sets(st.integers(0, n - 1)))
    dup = data.draw(st.sets(st.integers(0, n - 1)))
    received: list[glass.Entry] = []
    for i, ((counter, t), d) in enumerate(zip(sent, delays, strict=True)):
        if i in lost:
            continue
        received.append((counter, t + d))
        if i in dup:
            received.append((counter, t + d + 0.001))
    received.sort(key=lambda e: e[1])
    j = glass.join(sent, received, discard_s=1.0)
    counted = [i for i in range(n) if sent[i][1] - sent[0][1] >= 1.0]
    assert j.sent == len(counted)
    assert j.discarded == n - j.sent
    assert j.delivered + j.lost == j.sent
    assert j.lost == len([i for i in counted if i in lost])
    assert j.latencies_ms == pytest.approx(
        [delays[i] * 1000 for i in counted if i not in lost], abs=1e-6
    )
    assert j.duplicates == len([i for i in dup if i not in lost])
    assert j.foreign == 0 and j.early == 0


def test_join_files(tmp_path: Path) -> None:
    pub, rx = tmp_path / "pub.log", tmp_path / "rx.log"
    pub.write_text("".join(f"{c} {t:.6f}\n" for c, t in sent_log(40)))
    rx.write_text("".join(f"{c} {t + 0.005:.6f}\n" for c, t in sent_log(40)) + "4000")
    j = glass.join_files(pub, rx, discard_s=1.0)
    assert (j.sent, j.delivered) == (10, 10)
    assert j.quantile(99) == pytest.approx(5.0, abs=1e-3)


# ---- figures ------------------------------------------------------------------------


def test_latency_figures_of_a_path() -> None:
    sent = sent_log(60)
    received = [(c, t + 0.001 * (i % 10 + 1)) for i, (c, t) in enumerate(sent) if i != 45]
    f = glass.latency_figures("push", glass.join(sent, received))
    assert f["push_frames_sent"].value == 30
    assert f["push_frames_lost"].value == 1
    assert f["push_latency_max_ms"].value == pytest.approx(10.0)
    assert f["push_latency_p50_ms"].unit == "ms"
    assert f["push_latency_p99_ms"].better == "lower"
    p50, p90, p99 = (f[f"push_latency_{q}_ms"].value for q in ("p50", "p90", "p99"))
    assert p50 is not None and p90 is not None and p99 is not None
    assert p50 <= p90 <= p99 <= 10.0 + 1e-6


def test_latency_figures_of_a_path_that_did_not_run_are_null_with_the_reason() -> None:
    f = glass.latency_figures("push", None, "push.url did not connect")
    assert f["push_latency_p99_ms"].value is None
    assert f["push_frames_lost"].value is None
    assert all(fig.note == "push.url did not connect" for fig in f.values())
    assert json.dumps({k: v.to_json() for k, v in f.items()})  # JSON-clean


def test_cdf_points_run_from_min_to_max() -> None:
    pts = glass.cdf_points([3.0, 1.0, 2.0], points=5)
    assert pts[0] == (1.0, 0.0) and pts[-1] == (3.0, 1.0)
    assert [y for _, y in pts] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert glass.cdf_points([]) == []


def test_derived_ratios_are_of_medians_and_floor_distance() -> None:
    figures = {
        "whep_latency_p50_ms": Figure(7.0, "ms"),
        "whep_latency_p99_ms": Figure(10.0, "ms"),
        "push_latency_p50_ms": Figure(None, "ms"),  # the push did not run
        "peer_latency_p50_ms": Figure(70.0, "ms"),
        "peer_latency_p99_ms": Figure(80.0, "ms"),
        "peer_slice_latency_p50_ms": Figure(5.0, "ms"),
        "floor_latency_p50_ms": Figure(3.0, "ms"),
        "floor_latency_p99_ms": Figure(4.0, "ms"),
        "node_cpu_cores": Figure(0.15, "cores"),
        "peer_slice_cpu_cores": Figure(0.1, "cores"),
    }
    d = derived(figures)
    assert d["whep_to_peer_latency_p50_ratio"].value == pytest.approx(0.1)
    assert d["whep_to_peer_latency_p99_ratio"].value == pytest.approx(0.125)
    assert d["whep_to_peer_slice_latency_p50_ratio"].value == pytest.approx(1.4)
    assert "whep_to_peer_slice_latency_p99_ratio" not in d  # no peer_slice p99
    assert d["whep_latency_p99_over_floor_ms"].value == pytest.approx(6.0)
    assert d["node_to_peer_slice_cpu_ratio"].value == pytest.approx(1.5)
    assert not any(name.startswith("push_") for name in d)


# ---- the peer's command line ---------------------------------------------------------


def test_drawtext_stays_clear_of_the_barcode() -> None:
    f = drawtext_filter("/some/font.ttc")
    assert f.startswith("drawtext=fontfile=/some/font.ttc:")
    opts = dict(part.split("=", 1) for part in f.removeprefix("drawtext=").split(":"))
    x, y, size = int(opts["x"]), int(opts["y"]), int(opts["fontsize"])
    border = int(opts["borderw"])
    # The barcode: rows 704..719, columns 0..255 of a 720p frame.
    assert y + 2 * size + border < 704 or x - border > 256
    assert "fontfile" not in drawtext_filter(None)


def test_ffmpeg_argv_variants() -> None:
    plain = ffmpeg_argv(1000, 2000, None)
    assert plain[0] == "ffmpeg"
    assert "rtmp://127.0.0.1:1000/live/demo" in plain
    assert plain[-1] == "rtmp://127.0.0.1:2000/live/out"
    assert plain[plain.index("-listen") + 1] == "1"
    options, _ = FFMPEG_VARIANTS["peer_slice"]
    sliced = ffmpeg_argv(1000, 2000, None, options)
    assert sliced.index("-thread_type") < sliced.index("-i")  # an input (decoder) option


def test_pick_font_falls_back(tmp_path: Path) -> None:
    present = tmp_path / "DejaVuSans.ttf"
    present.write_bytes(b"")
    assert pick_font([str(tmp_path / "missing.ttc"), str(present)]) == str(present)
    assert pick_font([str(tmp_path / "missing.ttc")]) is None


# ---- the RTMP receiver, fed in memory -----------------------------------------------


def encoded_frames(counters: list[int], width: int = 320, height: int = 240) -> list[Any]:
    """libx264 packets of pictures stamped with ``counters`` (Annex-B)."""
    import av

    from edge_node import barcode

    codec = av.CodecContext.create("libx264", "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = Fraction(1, 30)
    codec.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "bframes=0"}
    packets = []
    for i, counter in enumerate(counters):
        buf = np.full((height * 3 // 2, width), 128, np.uint8)
        buf[:height] = 90
        barcode.draw(buf[:height], counter, *barcode.bottom_left(height))
        frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
        frame.pts = i
        packets += list(codec.encode(frame))
    packets += list(codec.encode(None))
    return packets


def test_receiver_decodes_flv_tags_and_logs_counters(tmp_path: Path) -> None:
    import io

    from bench.rtmp_receiver import Receiver, in_range
    from edge_node.media import flv, rtmp

    counters = [65534, 65535, 0, 1]
    packets = encoded_frames(counters)
    log = io.StringIO()
    rx = Receiver(log, events=False, expect=(65534, 4))
    rx.on_start(1, "out")
    header_sent = False
    for p in packets:
        nalus = flv.split_annexb(bytes(p))
        params = flv.parameter_sets(nalus)
        if params is not None and not header_sent:
            rx.on_media(1, rtmp.MediaMessage("video", 0, flv.avc_sequence_header(*params)))
            header_sent = True
        body = [n for n in nalus if flv.nal_type(n) not in (flv.NAL_SPS, flv.NAL_PPS, flv.NAL_AUD)]
        rx.on_media(1, rtmp.MediaMessage("video", 0, flv.avc_video_tag(body, p.is_keyframe)))
    rx.on_media(1, rtmp.MediaMessage("video", 0, b"\x17"))  # too short: counted, not fatal
    rx.on_media(1, rtmp.MediaMessage("audio", 0, b"\xaf\x01"))  # ignored
    entries = glass.parse_log(log.getvalue().splitlines())
    assert [c for c, _ in entries] == counters
    assert all(math.isfinite(t) for _, t in entries)
    assert rx.stats.frames == rx.stats.expected_frames == 4
    assert rx.stats.bad_tags == 1
    assert (rx.stats.width, rx.stats.height) == (320, 240)
    assert in_range(1, 65534, 4) and not in_range(2, 65534, 4)


def test_receiver_ignores_pictures_before_the_sequence_header() -> None:
    import io

    from bench.rtmp_receiver import Receiver
    from edge_node.media import flv, rtmp

    rx = Receiver(io.StringIO(), events=False)
    rx.on_media(1, rtmp.MediaMessage("video", 0, flv.avc_video_tag([b"\x65\x88"], True)))
    assert rx.stats.frames == 0 and rx.stats.decode_errors == 0


# ---- the WHEP viewer's jitter buffer ---------------------------------------------------


def rtp(seq: int, ts: int, marker: bool, data: bytes) -> Any:
    from aiortc.rtp import RtpPacket

    p = RtpPacket(payload_type=96, marker=int(marker), sequence_number=seq, timestamp=ts)
    setattr(p, "_data", data)  # noqa: B010 - what aiortc's depayloader leaves on it
    return p


def test_marker_jitter_buffer_completes_a_frame_at_its_marker() -> None:
    from bench.glass_viewer import marker_jitter_buffer_class

    jb = marker_jitter_buffer_class()(capacity=128, is_video=True)
    assert jb.add(rtp(10, 3000, False, b"a"))[1] is None
    _, frame = jb.add(rtp(11, 3000, True, b"b"))
    assert frame is not None and frame.data == b"ab" and frame.timestamp == 3000
    # Stock aiortc would only have released it now, at the next frame's first packet.
    assert jb.add(rtp(12, 6000, False, b"c"))[1] is None
    _, frame = jb.add(rtp(13, 6000, True, b"d"))
    assert frame is not None and frame.data == b"cd"


def test_marker_jitter_buffer_waits_for_a_gap_and_falls_back_without_marker() -> None:
    from bench.glass_viewer import marker_jitter_buffer_class

    jb = marker_jitter_buffer_class()(capacity=128, is_video=True)
    assert jb.add(rtp(20, 100, False, b"x"))[1] is None
    assert jb.add(rtp(22, 100, True, b"z"))[1] is None  # 21 missing: wait
    _, frame = jb.add(rtp(21, 100, False, b"y"))  # retransmitted
    assert frame is not None and frame.data == b"xyz"
    # A frame whose last packet carries no marker: completed at the next timestamp.
    assert jb.add(rtp(23, 200, False, b"p"))[1] is None
    _, frame = jb.add(rtp(24, 300, False, b"q"))
    assert frame is not None and frame.data == b"p" and frame.timestamp == 200


def test_stock_aiortc_is_left_alone_by_importing_the_viewer() -> None:
    import aiortc.rtcrtpreceiver as receiver_mod
    from aiortc.jitterbuffer import JitterBuffer

    import bench.glass_viewer  # noqa: F401

    assert getattr(receiver_mod, "JitterBuffer") is JitterBuffer  # noqa: B009


# ---- plots and the command line --------------------------------------------------------


def test_cdf_chart_writes_a_png(tmp_path: Path) -> None:
    from bench.glass_plot import cdf_chart

    out = tmp_path / "cdf.png"
    cdf_chart(
        out,
        "t",
        {"a": glass.cdf_points([1.0, 2.0, 3.0]), "b": glass.cdf_points([70.0, 500.0])},
        "ms",
        x_max=80.0,
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_list_names_glass() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "glass" in [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def test_compare_does_not_blame_the_node_for_the_peer_or_floor(tmp_path: Path) -> None:
    def write(name: str, peer_p99: float, floor_p99: float, push_p99: float) -> Path:
        d = tmp_path / name
        d.mkdir()
        figures = {
            "push_latency_p99_ms": {"value": push_p99, "unit": "ms", "better": "lower"},
            "peer_latency_p99_ms": {"value": peer_p99, "unit": "ms", "better": "lower"},
            "floor_latency_p99_ms": {"value": floor_p99, "unit": "ms", "better": "lower"},
        }
        report = {"schema": 1, "scenario": {"name": "glass"}, "machine": {}, "figures": figures}
        (d / "report.json").write_text(json.dumps(report))
        return d

    a = write("a", 80.0, 4.0, 9.0)
    b = write("b", 120.0, 8.0, 9.0)
    c = write("c", 80.0, 4.0, 20.0)
    for other, code in ((b, 0), (c, 1)):
        result = subprocess.run(
            [sys.executable, "-m", "bench", "compare", str(a), str(other)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == code, result.stdout + result.stderr
