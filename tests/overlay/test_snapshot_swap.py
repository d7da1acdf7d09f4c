"""The compositor takes one snapshot per frame: never a torn scene under concurrent swaps."""

from __future__ import annotations

import threading
import time

import av
import numpy as np

from edge_node.overlay.compositor import Compositor
from edge_node.overlay.scene import Danmaku, Scene, Style, VoteBar
from edge_node.overlay.text import TextRenderer, find_font
from edge_node.overlay.widgets import Painter


class RecordingPainter(Painter):
    """Draws for real, and notes which snapshot each widget came from."""

    def __init__(self) -> None:
        super().__init__(320, 240, TextRenderer(find_font()), probe_enabled=False)
        self.frames: list[list[str]] = []

    def paint(self, planes, scene: Scene, t: float) -> None:  # type: ignore[no-untyped-def]
        self.frames.append([])
        super().paint(planes, scene, t)

    def _danmaku(self, planes, s: Style, d: Danmaku, t: float) -> None:  # type: ignore[no-untyped-def]
        self.frames[-1].append(d.text)
        super()._danmaku(planes, s, d, t)

    def _vote(self, planes, s: Style, vote: VoteBar, t: float) -> None:  # type: ignore[no-untyped-def]
        self.frames[-1].append(vote.question)
        super()._vote(planes, s, vote, t)


def scene(version: int) -> Scene:
    tag = f"v{version % 7}"
    return Scene(
        version=version,
        danmaku=tuple(Danmaku(f"{version}-{i}", tag, i, 0.0, 100.0, 60) for i in range(3)),
        vote=VoteBar("p", tag, ("a", "b"), (1, 2)),
    )


def test_a_frame_never_mixes_two_snapshots() -> None:
    painter = RecordingPainter()
    compositor = Compositor(painter)
    for v in range(7):  # warm the sprite cache so frames are fast and many
        compositor.set_scene(scene(v))
        compositor.composite(
            av.VideoFrame.from_ndarray(np.zeros((360, 320), np.uint8), format="yuv420p"), 0.5
        )
    stop = threading.Event()

    def swapper() -> None:
        v = 0
        while not stop.is_set():
            v += 1
            compositor.set_scene(scene(v))

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            frame = av.VideoFrame.from_ndarray(np.zeros((360, 320), np.uint8), format="yuv420p")
            compositor.composite(frame, 0.5)
    finally:
        stop.set()
        thread.join()
    assert len(painter.frames) > 50
    torn = [f for f in painter.frames if len(set(f)) != 1]
    assert not torn, torn[:3]
    assert len({f[0] for f in painter.frames}) > 1  # the swaps did happen mid-run
