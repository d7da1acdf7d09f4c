"""The compositor hook of the frame pipeline.

It holds the latest scene snapshot and is called once per frame in the worker's
encode thread. With no widgets in the scene a frame passes through untouched (no
copy, no conversion); widget drawing arrives with the overlay work (issue 4).
"""

from __future__ import annotations

import av

from edge_node.overlay.scene import EMPTY_SCENE, Scene


class Compositor:
    def __init__(self) -> None:
        self.scene: Scene = EMPTY_SCENE

    def set_scene(self, scene: Scene) -> None:
        # One reference assignment: the encode thread sees the old or the new snapshot.
        self.scene = scene

    def composite(self, frame: av.VideoFrame, t: float) -> av.VideoFrame:
        """Draw the scene as of presentation time ``t`` (seconds) onto ``frame``."""
        return frame
