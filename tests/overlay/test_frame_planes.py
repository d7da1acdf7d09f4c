"""Blending through ``frame_planes`` writes into the av.VideoFrame itself."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from numpy.typing import NDArray

from edge_node.overlay.blend import blend, fill_rect, frame_planes
from edge_node.overlay.sprite import Sprite


def yuv_frame(width: int, height: int, seed: int = 0) -> av.VideoFrame:
    rng = np.random.default_rng(seed)
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane in frame.planes:
        # Fill every byte, padding included, so a view with the wrong stride shows.
        data = np.frombuffer(memoryview(plane), dtype=np.uint8)
        writable = np.ndarray(data.shape, dtype=np.uint8, buffer=memoryview(plane))
        writable[...] = rng.integers(0, 256, data.shape, dtype=np.uint8)
    return frame


Planes = tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]


def planes_of(frame: av.VideoFrame) -> Planes:
    """The frame's pixels as copies, read through PyAV's own conversion."""
    flat = np.asarray(frame.to_ndarray(), dtype=np.uint8).ravel()  # packed Y, U, V
    h, w = frame.height, frame.width
    luma, chroma = h * w, (h // 2) * (w // 2)
    return (
        flat[:luma].reshape(h, w).copy(),
        flat[luma : luma + chroma].reshape(h // 2, w // 2).copy(),
        flat[luma + chroma :].reshape(h // 2, w // 2).copy(),
    )


def sprite(h: int, w: int, seed: int = 1) -> Sprite:
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(rng.random((h, w)) < 0.5, 255, rgba[..., 3])
    return Sprite.from_rgba(rgba)


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (1366, 768), (100, 50)])
def test_blending_changes_the_frames_own_data(width: int, height: int) -> None:
    frame = yuv_frame(width, height)
    if width in (1366, 100):
        assert frame.planes[0].line_size > width  # the case this test is about
    expected = planes_of(frame)
    s = sprite(40, 70)
    # Interior, odd position, and over the right and bottom edges (next to the padding).
    spots = [(31, 17), (width - 51, height - 23), (-13, 5)]
    for x, y in spots:
        blend(*expected, s, x, y)  # the same blend on plain arrays
    fill_rect(*expected, width - 41, 3, 60, 9, (200, 30, 30, 180))

    views = frame_planes(frame)
    for x, y in spots:
        blend(*views, s, x, y)
    fill_rect(*views, width - 41, 3, 60, 9, (200, 30, 30, 180))

    got = planes_of(frame)
    for name, g, e in zip("YUV", got, expected, strict=True):
        assert np.array_equal(g, e), name
    assert not np.array_equal(got[0], planes_of(yuv_frame(width, height))[0])


def test_views_are_views_not_copies() -> None:
    frame = yuv_frame(100, 50)
    y, u, v = frame_planes(frame)
    assert (y.shape, u.shape, v.shape) == ((50, 100), (25, 50), (25, 50))
    assert y.strides == (frame.planes[0].line_size, 1)
    y[7, 99] = 11
    u[24, 49] = 22
    v[0, 0] = 33
    data = [bytes(memoryview(p)) for p in frame.planes]
    assert data[0][7 * frame.planes[0].line_size + 99] == 11
    assert data[1][24 * frame.planes[1].line_size + 49] == 22
    assert data[2][0] == 33


def test_other_pixel_formats_are_refused() -> None:
    with pytest.raises(ValueError):
        frame_planes(av.VideoFrame(64, 48, "rgb24"))


def _encoded_clip(frames: int = 6) -> bytes:
    out_buf = io.BytesIO()
    with av.open(out_buf, "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "bframes": "0"}
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        for i in range(frames):
            img = np.roll(base, i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return out_buf.getvalue()


def _decode(clip: bytes, draw_on_first: bool) -> list[NDArray[np.uint8]]:
    decoded: list[NDArray[np.uint8]] = []
    with av.open(io.BytesIO(clip), "r", format="h264") as container:
        for i, frame in enumerate(container.decode(video=0)):
            if draw_on_first and i == 0:
                fill_rect(*frame_planes(frame), 0, 0, 64, 48, (255, 255, 255, 255))
            decoded.append(np.asarray(frame.to_ndarray(), dtype=np.uint8))
    return decoded


def test_drawing_on_a_decoded_frame_leaves_later_frames_alone() -> None:
    # The decoder keeps the picture as a reference for the next ones; frame_planes
    # must give the frame its own buffers first, or the overlay leaks into them.
    clip = _encoded_clip()
    clean = _decode(clip, draw_on_first=False)
    drawn = _decode(clip, draw_on_first=True)
    assert len(clean) == len(drawn) > 1
    assert not np.array_equal(clean[0], drawn[0])
    for a, b in zip(clean[1:], drawn[1:], strict=True):
        assert np.array_equal(a, b)
