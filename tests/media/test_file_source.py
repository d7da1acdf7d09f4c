"""The file source loops a real media file (written here with PyAV's libx264)."""

from __future__ import annotations

import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from edge_node.errors import ConfigError
from edge_node.media.sources import FileSource


def write_clip(path: Path, frames: int, size: tuple[int, int] = (320, 240)) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 30)
        for i in range(frames):
            img = np.full((size[1], size[0], 3), (i * 8) % 255, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_file_source_loops_and_scales(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    write_clip(clip, 10)
    src = FileSource(str(clip), 160, 96, threading.Event())
    try:
        frames = [src.read() for _ in range(25)]
    finally:
        src.close()
    assert src.loops == 2
    assert all((f.width, f.height, f.format.name) == (160, 96, "yuv420p") for f in frames)


def test_file_source_refuses_a_file_without_video(tmp_path: Path) -> None:
    bad = tmp_path / "notmedia.mp4"
    bad.write_bytes(b"definitely not a media file")
    with pytest.raises(ConfigError) as err:
        FileSource(str(bad), 160, 96, threading.Event())
    assert err.value.key == "source.path"
