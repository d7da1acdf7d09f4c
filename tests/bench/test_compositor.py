"""The compositor scenario without a node: the workload (texts, positions, all N on
screen), the peer's filter graph and that it draws what the node draws, a tiny node
measurement, the figures and ratios, and the plots. A few seconds in all."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import compositor as comp  # noqa: E402
from bench import compositor_run  # noqa: E402
from bench.figures import Figure  # noqa: E402
from bench.scenarios import get  # noqa: E402
from bench.scenarios.compositor import checks, frames_for  # noqa: E402
from edge_node.overlay.measure import TextMeasure  # noqa: E402
from edge_node.overlay.text import find_font  # noqa: E402

FONT = find_font()
HAVE_PEER = (
    shutil.which("ffmpeg") is not None
    and Path(comp.PEER_FONT).is_file()
    and compositor_run.peer_unavailable() is None
)


@pytest.fixture(scope="module")
def measure() -> TextMeasure:
    return TextMeasure(FONT)


# ---- workload ---------------------------------------------------------------------------


def test_comment_texts_are_distinct_mixed_and_of_danmaku_length() -> None:
    texts = comp.comment_texts(200)
    assert len(set(texts)) == 200
    assert texts == comp.comment_texts(200)  # the same every run
    assert comp.comment_texts(10) == texts[:10]  # N = 10 is a prefix of N = 200
    for text in texts:
        assert comp.TEXT_MIN <= len(text) <= comp.TEXT_MAX
        assert any(ord(c) > 0x2E80 for c in text), text
        assert any(c.isascii() and c.isalnum() for c in text), text
        assert text == text.strip()


@pytest.mark.parametrize("n", [1, 10, 50, 200])
def test_every_comment_is_on_screen_at_every_frame(measure: TextMeasure, n: int) -> None:
    wl = comp.Workload.build(1280, 720, n, measure)
    counts = [wl.visible(k / comp.FPS) for k in range(0, 1200, 7)]
    # A comment is off screen only at the instant it wraps (x == w): rarely, briefly.
    assert min(counts) >= n - 1
    assert sum(counts) / len(counts) > n - 0.05


def test_scene_danmaku_are_where_the_peer_expression_puts_them(measure: TextMeasure) -> None:
    wl = comp.Workload.build(1920, 1080, 50, measure)
    for t in (0.0, 1.0, 7.3, 33.3):
        scene = wl.scene_at(t)
        assert scene.vote == comp.VOTE
        assert len(scene.danmaku) == 50
        for d, c in zip(scene.danmaku, wl.comments, strict=True):
            painter_x = wl.width - d.speed_px_s * (t - d.start)  # Painter._danmaku
            assert painter_x == pytest.approx(wl.x_at(c, t), abs=1e-6)
            assert d.width_px == c.board_width_px > c.text_width_px
            assert d.lane == c.lane < wl.style.lanes


def test_scene_changes_only_when_a_comment_wraps(measure: TextMeasure) -> None:
    wl = comp.Workload.build(1280, 720, 10, measure)
    before = wl.scene_at(1.0).danmaku
    same = [k / comp.FPS for k in range(31, 200) if wl.cycles(k / comp.FPS) == wl.cycles(1.0)]
    assert same
    assert wl.scene_at(same[-1]).danmaku == before


def test_all_visible_scene_has_every_comment_inside_the_picture(measure: TextMeasure) -> None:
    wl = comp.Workload.build(1280, 720, 50, measure)
    for d in wl.scene_all_visible().danmaku:
        x = wl.width - d.speed_px_s * (0.0 - d.start)
        assert x == pytest.approx(0.0, abs=1e-9)


def test_vote_layout_is_where_painter_draws_the_panel(measure: TextMeasure) -> None:
    import av

    from edge_node.overlay.blend import frame_planes
    from edge_node.overlay.scene import Scene
    from edge_node.overlay.text import TextRenderer
    from edge_node.overlay.widgets import Painter

    wl = comp.Workload.build(1280, 720, 0, measure)
    frame = av.VideoFrame(1280, 720, "yuv420p")
    y, u, v = frame_planes(frame)
    y[...], u[...], v[...] = 235, 128, 128  # white: the dark panel shows
    Painter(1280, 720, TextRenderer(FONT), probe_enabled=False).paint(
        (y, u, v), Scene(style=wl.style, vote=wl.vote), 0.0
    )
    rows, cols = np.nonzero(y != 235)
    x, top, w, h = comp.vote_layout(wl).panel
    assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x, top, x + w, top + h)


# ---- the peer's filter graph ------------------------------------------------------------


def test_peer_filters_draw_each_comment_and_the_vote_bar(measure: TextMeasure) -> None:
    wl = comp.Workload.build(1280, 720, 10, measure)
    files: dict[str, str] = {}

    def textfile(text: str) -> str:
        return files.setdefault(text, f"/tmp/t{len(files)}.txt")

    filters = comp.peer_filters(wl, textfile)
    texts = [f for f in filters if f.startswith("drawtext=")]
    boxes = [f for f in filters if f.startswith("drawbox=")]
    assert len(texts) == 10 + 1 + 3  # comments, question, options
    assert len(boxes) == 1 + 3  # panel, bars
    assert set(files) == {c.text for c in wl.comments} | {
        t for t, _, _ in comp.vote_layout(wl).labels
    }
    for f in texts:
        assert f"fontfile={comp.PEER_FONT}:" in f
        assert ":expansion=none:" in f and ":borderw=2:" in f
    for f, c in zip(texts[:10], wl.comments, strict=True):
        assert ":fontsize=32:" in f
        assert f"x='w-mod(t*{c.speed_px_s:.4f}+{c.phase:.6f}*(w+tw),w+tw)'" in f
        assert f.endswith(f":y={c.y}")
    # The panel first (under the labels), in Painter's colour.
    assert boxes[0].startswith(f"drawbox=x={comp.vote_layout(wl).panel[0]}:")
    assert f"color={comp.ff_color(wl.style.panel_rgba)}" in boxes[0]


def test_ff_color_and_argv() -> None:
    assert comp.ff_color((255, 0, 16, 255)) == "0xFF0010@1.000"
    assert comp.ff_color((0, 0, 0, 140)) == "0x000000@0.549"
    argv = comp.peer_argv(1280, 720, 330, Path("/s.txt"))
    assert argv[argv.index("-frames:v") + 1] == "330"
    assert argv[argv.index("-filter_script:v") + 1] == "/s.txt"
    assert "-threads" in argv and "-filter_threads" in argv
    assert argv[-3:] == ["-f", "null", "-"]


def test_peer_extra_frames() -> None:
    assert comp.peer_extra_frames(None, 1000) == comp.PEER_EXTRA_FRAMES_CHEAP
    assert comp.peer_extra_frames(10, 1000) == comp.PEER_EXTRA_FRAMES_CHEAP
    assert comp.peer_extra_frames(50, 1000) == comp.PEER_EXTRA_FRAMES
    assert comp.peer_extra_frames(200, 30) == 30  # --seconds 1 shortens the peer too
    assert frames_for(comp.FRAMES / comp.FPS) == comp.FRAMES


@pytest.mark.skipif(not HAVE_PEER, reason="ffmpeg with drawtext and the CJK font needed")
def test_node_and_peer_draw_the_same_overlay(tmp_path: Path) -> None:
    node, peer = compositor_run.render_both("720p", 10, 60, tmp_path)
    a = np.asarray(node.convert("L"), dtype=np.int16)
    b = np.asarray(peer.convert("L"), dtype=np.int16)
    assert abs(int(a[-1, -1]) - int(b[-1, -1])) <= 2  # the same background
    ink_node = np.abs(a - a[-1, -1]) > 8
    ink_peer = np.abs(b - b[-1, -1]) > 8
    # Same texts, sizes, outlines and boxes at the same places: the inked areas agree.
    assert ink_node.mean() > 0.05
    assert ink_peer.mean() == pytest.approx(ink_node.mean(), rel=0.05)
    overlap = (ink_node & ink_peer).sum() / ink_node.sum()
    assert overlap > 0.6


# ---- measuring and figures --------------------------------------------------------------


def test_measure_node_tiny() -> None:
    result = compositor_run.measure_node(
        frames=4, warmup=1, sizes=["720p"], counts=[0, 10], pool_frames=2
    )
    assert result["font"] == FONT
    # Every kernel was compiled in this process or loaded from numba's cache, once.
    assert result["kernels_compiled"] + result["kernels_from_cache"] == 2
    assert result["kernels_load_ms"] >= 0 and result["numba"]
    assert [(c["size"], c["n"]) for c in result["configs"]] == [("720p", 0), ("720p", 10)]
    for c in result["configs"]:
        assert c["frames"] == 4
        assert 0 < c["p50_ms"] <= c["p99_ms"] <= c["max_ms"]
        assert c["cpu_ms"] > 0
        # the comments, the question, 3 options, and the painter's font warm-up sprite
        assert c["cold_sprites"] == c["n"] + 5
        assert c["frame_path_renders"] == 0
        assert c["visible_mean"] == pytest.approx(c["n"], abs=0.5)
    figures = comp.node_figures(result)
    assert figures["node_720p_n10_p50_ms"].better == "lower"
    assert "node_cold_ms_per_sprite" in figures
    assert figures["node_kernels_load_ms"].value == result["kernels_load_ms"]
    assert all(c.ok for c in checks(result)[:2])


def _node_result(p50: float) -> dict[str, Any]:
    return {
        "configs": [
            {
                "size": "720p",
                "n": 50,
                "p50_ms": p50,
                "p99_ms": p50 * 2,
                "cpu_ms": 1.0,
                "cold_ms": 150.0,
                "cold_sprites": 54,
                "visible_mean": 50.0,
                "frame_path_renders": 0,
            }
        ]
    }


def test_target_check_and_ratio() -> None:
    target = [c for c in checks(_node_result(0.9)) if "target" in c.name]
    assert target and target[0].ok
    assert not next(c for c in checks(_node_result(1.2)) if "target" in c.name).ok
    figures = comp.node_figures(_node_result(0.9))
    peer = comp.peer_figures(
        {
            "baselines": {"720p": {"copy_ms": 0.02}},
            "configs": [{"size": "720p", "n": 50, "ms": 4.5, "init_ms": 30.0}],
        }
    )
    assert peer["peer_720p_n50_ms"].value == 4.5
    ratio = comp.derived({**figures, **peer})["peer_to_node_720p_n50_ratio"]
    assert ratio.value == pytest.approx(4.5)
    assert ratio.better == "higher"
    assert comp.derived(figures) == {}  # no peer, no ratio


def test_percentile() -> None:
    assert comp.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert comp.percentile(sorted(float(i) for i in range(1000)), 99) == pytest.approx(989.01)
    assert comp.percentile([5.0], 99) == 5.0


def test_write_plot(tmp_path: Path) -> None:
    figures = {}
    for size in comp.SIZES:
        for i, n in enumerate(comp.COUNTS):
            figures[f"node_{size}_n{n}_p50_ms"] = Figure(0.2 + i, "ms")
            figures[f"node_{size}_n{n}_p99_ms"] = Figure(0.3 + i, "ms")
            figures[f"node_{size}_n{n}_cpu_ms"] = Figure(0.2 + i, "ms")
            figures[f"peer_{size}_n{n}_ms"] = Figure(1.0 + 4 * i, "ms")
    figures.update(comp.derived(figures))
    written = comp.write_plot(figures, tmp_path, 3)
    assert written == ["compositor.png", "compositor_ratio.png"]
    for name in written:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scenario_is_registered_with_a_node_that_can_run() -> None:
    scenario = get("compositor")
    assert scenario.peer is not None
    assert frames_for(scenario.default_seconds) == comp.FRAMES
    # The harness's node must still draw its 256 px barcode strip.
    assert int(scenario.node_env["EDGE_NODE_VIDEO__WIDTH"]) >= 256
