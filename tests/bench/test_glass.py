"""The glass scenario's pure parts, without a node or any process: joining the
publisher's and a receiver's logs, percentiles, the figures and ratios, the RTMP
receiver's decoding (fed FLV tags in memory), the marker-bit jitter buffer, the
ffmpeg command line, the WHIP publisher's command line, frames log and track, and
the plots. Then the WHIP publisher as a process (refused by a server without WHIP
and by a node given the wrong key; publishing to a real node) and a short real run
of the scenario (``bench_smoke``: every node path, WHIP in included, produced its
figures)."""

from __future__ import annotations

import io
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
from tests.conftest import NodeProcess  # noqa: E402

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


# ---- the WHIP publisher, sans I/O --------------------------------------------------------


def test_whip_frames_log_lines_are_the_rtmp_publishers() -> None:
    from bench.whip_publisher import FramesLog, frames_log_line

    # edge_node.clients.rtmp_publish writes f"{counter & 0xFFFF} {sent:.6f}\n".
    assert frames_log_line(65537, 12.3456789) == "1 12.345679\n"
    assert frames_log_line(50000, 100.0) == "50000 100.000000\n"
    out = io.StringIO()
    log = FramesLog(out, frames=3)
    kept = [log.frame(c, 10.0 + c / 30) for c in (65534, 65535, 0, 1)]
    assert kept == [True, True, True, False]
    assert log.written == 3 and log.first_at == pytest.approx(10.0 + 65534 / 30)
    entries = glass.parse_log(out.getvalue().splitlines())
    assert [c for c, _ in entries] == [65534, 65535, 0]
    assert out.getvalue().count("\n") == 3


def test_whip_publisher_argv_round_trips_through_its_parser(tmp_path: Path) -> None:
    from bench.glass_run import whip_publisher_argv
    from bench.whip_publisher import Options, parse_args

    argv = whip_publisher_argv(
        "http://127.0.0.1:8080/", "demo", 2.5, 50000, "640x360", 25, tmp_path / "f.log", 5.0
    )
    assert argv[1:3] == ["-m", "bench.whip_publisher"]
    opts = parse_args(argv[3:])
    assert opts == Options(
        url="http://127.0.0.1:8080",
        stream_key="demo",
        seconds=2.5,
        start=50000,
        width=640,
        height=360,
        fps=25,
        frames_log=str(tmp_path / "f.log"),
        json=True,
        busy_wait_s=5.0,
    )
    assert opts.frames == 62 and opts.tail_frames == 12  # 0.5 s of tail by default
    assert parse_args([*argv[3:], "--tail-seconds", "0"]).tail_frames == 1  # always one


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--size", "1280"], "WIDTHxHEIGHT"),
        (["--size", "1281x720"], "even"),
        (["--size", "128x72"], "256x16"),
        (["--seconds", "0"], "above 0"),
        (["--fps", "x"], "not a number"),
        (["--busy-wait", "-1"], "0 or more"),
    ],
)
def test_whip_publisher_refuses_a_bad_command_line(
    args: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.whip_publisher import parse_args

    base = ["--url", "http://x", "--stream-key", "k", "--seconds", "1", "--frames-log", "f"]
    with pytest.raises(SystemExit) as exc:
        parse_args([*base, *args])
    assert exc.value.code == 2
    assert complaint in capsys.readouterr().err


def test_whip_refusals_say_what_went_wrong() -> None:
    from bench.whip_publisher import is_loopback, refusal_message

    assert "stream key" in refusal_message(401, "http://n/whip")
    assert "no WHIP endpoint" in refusal_message(404, "http://n/whip")
    assert "another publisher" in refusal_message(409, "http://n/whip")
    assert refusal_message(500, "http://n/whip").startswith("POST http://n/whip: HTTP 500")
    assert is_loopback("http://127.0.0.1:8080") and is_loopback("http://localhost:1")
    assert is_loopback("http://[::1]:80") and not is_loopback("http://10.0.0.5:8080")
    assert not is_loopback("http://node.example")


async def test_whip_track_stamps_counters_logs_and_ends() -> None:
    import asyncio

    from bench.rtmp_receiver import luma
    from bench.whip_publisher import LoggedCounterTrack
    from edge_node import barcode

    logged: list[tuple[int, float]] = []
    track = LoggedCounterTrack(65534, 320, 240, 1000, 4, lambda c, t: logged.append((c, t)))
    counters = []
    for _ in range(4):
        frame = await track.recv()
        counters.append(barcode.read(luma(frame), *barcode.bottom_left(frame.height)))
    assert counters == [65534, 65535, 0, 1]
    assert [c for c, _ in logged] == counters
    assert [t for _, t in logged] == sorted(t for _, t in logged)
    assert not track.finished.is_set()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(track.recv(), 0.1)  # nothing more: it waits to be stopped
    assert track.finished.is_set() and track.sent == 4


# ---- the WHIP publisher as a process --------------------------------------------------------


async def run_whip_publisher(*args: str, timeout_s: float = 60.0) -> tuple[int, str, str]:
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.whip_publisher", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_whip_publisher_says_when_there_is_no_whip(tmp_path: Path) -> None:
    from aiohttp import web

    from bench.node import free_loopback_port

    runner = web.AppRunner(web.Application())  # answers 404 to everything
    await runner.setup()
    port = free_loopback_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        code, _, err = await run_whip_publisher(
            "--url", f"http://127.0.0.1:{port}", "--stream-key", "demo", "--seconds", "1",
            "--frames-log", str(tmp_path / "frames.log"),
        )  # fmt: skip
    finally:
        await runner.cleanup()
    assert code == 1
    assert "HTTP 404" in err and "no WHIP endpoint" in err
    assert glass.read_log(tmp_path / "frames.log") == []


# ---- a short real run (before the tests on the module's node: one node at a time) ------


@pytest.mark.bench_smoke
@pytest.mark.timeout(150)
async def test_glass_runs_every_node_path_whip_in_included(tmp_path: Path) -> None:
    from bench import report, runner
    from bench.scenarios.glass import Glass

    suite = await runner.run_suite(Glass(), 2.0, 1, tmp_path, with_peer=False, warmup_s=0.5)
    report.write(suite, tmp_path)
    data: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())
    figures = data["figures"]
    # On this shared box a path can starve; then its figures must say why, not vanish.
    for path in ("whep", "push", "whip_in"):
        for name in (f"{path}_latency_p99_ms", f"{path}_frames_delivered"):
            assert figures[name]["value"] is not None or figures[name].get("note"), name
    assert figures["whip_in_publisher_frames_sent"]["value"] == 60  # 2 s at 30 fps, over WHIP
    checks = {c["name"] for c in data["checks"]}
    assert {"whip_in: publisher sent every frame", "whip_in: frames delivered"} <= checks
    published = glass.read_log(tmp_path / "logs" / "run1-whip_in-publisher-frames.log")
    assert [c for c, _ in published] == list(range(glass.WHIP_START, glass.WHIP_START + 60))


# ---- the WHIP publisher against a real node --------------------------------------------


async def test_whip_publisher_is_refused_a_wrong_stream_key(
    node: NodeProcess, tmp_path: Path
) -> None:
    code, _, err = await run_whip_publisher(
        "--url", node.url, "--stream-key", "not-the-key", "--seconds", "1",
        "--frames-log", str(tmp_path / "frames.log"),
    )  # fmt: skip
    assert code == 1
    assert "HTTP 401" in err and "stream key" in err


async def test_whip_publisher_publishes_to_a_node_and_stops_by_itself(
    node: NodeProcess, tmp_path: Path
) -> None:
    log = tmp_path / "frames.log"
    units_before = _metric_or_zero(node, "edge_node_whip_access_units_total")
    code, out, err = await run_whip_publisher(
        "--url", node.url, "--stream-key", "demo", "--seconds", "1", "--start", "65520",
        "--size", "640x360", "--fps", "30", "--frames-log", str(log), "--json",
    )  # fmt: skip
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events] == ["connected", "first_frame", "result"]
    result = events[-1]
    assert result["status"] == 201 and result["delete_status"] == 200
    assert result["frames_sent"] == 30 and result["tail_frames_sent"] == 15
    assert result["error"] is None
    entries = glass.read_log(log)
    assert [c for c, _ in entries] == [(65520 + i) % 65536 for i in range(30)]  # wraps
    times = [t for _, t in entries]
    assert times == sorted(times)
    # Paced at 30 fps: never faster (a busy box may make it slower).
    assert times[-1] - times[0] >= 29 / 30 * 0.95
    assert _metric_or_zero(node, "edge_node_whip_access_units_total") > units_before


def _metric_or_zero(node: NodeProcess, name: str) -> float:
    try:
        return node.metric(name)
    except KeyError:
        return 0.0
