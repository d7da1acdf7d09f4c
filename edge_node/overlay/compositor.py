"""The compositor stage of the frame pipeline.

It holds the latest scene snapshot (replaced by reference: the encode thread sees the
old or the new one, never a mix) and draws it onto each frame in place, in YUV420,
touching only the widgets' rectangles. An empty scene costs nothing: the frame
passes through untouched. Building one readies the compiled blend kernels
(``blend.warm_up``), so the first frame pays no start-up cost.
"""

from __future__ import annotations

import av

from edge_node.overlay.blend import frame_planes, warm_up
from edge_node.overlay.scene import EMPTY_SCENE, Scene
from edge_node.overlay.widgets import Painter


class Compositor:
    def __init__(self, painter: Painter | None = None) -> None:
        self.scene: Scene = EMPTY_SCENE
        self.last_drawn: Scene = EMPTY_SCENE  # the snapshot the latest frame used
        self.painter = painter
        warm_up()

    def set_scene(self, scene: Scene) -> None:
        self.scene = scene

    def composite(self, frame: av.VideoFrame, t: float) -> av.VideoFrame:
        """Draw the scene as of ``t`` (the frame's capture time, monotonic seconds)."""
        scene = self.scene  # one read: the whole frame uses one snapshot
        self.last_drawn = scene
        if self.painter is None or scene.is_empty:
            return frame
        self.painter.paint(frame_planes(frame), scene, t)
        return frame
