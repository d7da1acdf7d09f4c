"""Video sources of the media worker: the synthetic test pattern and a looped file.

A source's ``read()`` blocks until its next frame is due and returns it as a yuv420p
``av.VideoFrame`` of the output size. Sources run in the worker's source thread; they
never touch the control process.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from datetime import datetime

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from edge_node import barcode
from edge_node.config import Config
from edge_node.errors import ConfigError


class Source(ABC):
    name = ""

    @abstractmethod
    def read(self) -> av.VideoFrame:
        """Block until the next frame is due and return it (yuv420p, output size)."""

    def close(self) -> None:  # noqa: B027 - optional hook, not every source holds anything
        """Release what the source holds (files, sockets)."""


def _sleep_until(deadline: float, stop: threading.Event) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        stop.wait(delay)


class TestPattern(Source):
    """Colour bars, a moving box, the wall clock and the frame-counter barcode.

    Drawn directly in YUV (no RGB conversion per frame); only the box, the clock and
    the barcode change, so a frame costs a copy of the background plus small slices.
    """

    name = "test_pattern"
    _BARS_YUV = (  # 75% colour bars, BT.601 limited range
        (180, 128, 128),
        (162, 44, 142),
        (131, 156, 44),
        (112, 72, 58),
        (84, 184, 198),
        (65, 100, 212),
        (35, 212, 114),
        (16, 128, 128),
    )

    def __init__(self, width: int, height: int, fps: int, stop: threading.Event) -> None:
        self.width, self.height, self.fps = width, height, fps
        self._stop = stop
        self.index = 0
        self._t0 = time.monotonic()
        self._background = self._make_background()
        self._buf = self._background.copy()
        self._font = ImageFont.load_default(size=max(12, height // 18))
        self._clock_text = ""
        self._clock_patch = np.zeros((1, 1), np.uint8)

    def _make_background(self) -> np.ndarray:
        w, h = self.width, self.height
        buf = np.empty((h * 3 // 2, w), np.uint8)
        y = buf[:h]
        u = buf[h : h + h // 4].reshape(h // 2, w // 2)
        v = buf[h + h // 4 :].reshape(h // 2, w // 2)
        n = len(self._BARS_YUV)
        for i, (yy, uu, vv) in enumerate(self._BARS_YUV):
            x0, x1 = i * w // n, (i + 1) * w // n
            y[:, x0:x1] = yy
            u[:, x0 // 2 : x1 // 2] = uu
            v[:, x0 // 2 : x1 // 2] = vv
        return buf

    def _clock(self, now: float) -> np.ndarray:
        text = datetime.fromtimestamp(now).strftime("%H:%M:%S.%f")[:-3] + f"  #{self.index}"
        if text != self._clock_text:
            _, _, right, bottom = self._font.getbbox(text)
            img = Image.new("L", (int(right) + 16, int(bottom) + 8), 16)
            ImageDraw.Draw(img).text((8, 4), text, fill=235, font=self._font)
            self._clock_patch = np.asarray(img)
            self._clock_text = text
        return self._clock_patch

    def render(self, index: int, wall_time: float) -> av.VideoFrame:
        """Draw frame ``index`` (pure function of index and wall time)."""
        w, h = self.width, self.height
        np.copyto(self._buf, self._background)
        y = self._buf[:h]
        # Moving box: bounces across the middle band, one pass every 4 s.
        box = max(16, h // 9)
        span = w - box
        phase = (index % (self.fps * 8)) / (self.fps * 4)
        bx = int(span * (phase if phase <= 1 else 2 - phase))
        by = h // 2 - box // 2
        y[by : by + box, bx : bx + box] = 235
        patch = self._clock(wall_time)
        ph, pw = min(patch.shape[0], h), min(patch.shape[1], w)
        y[h // 12 : h // 12 + ph, (w - pw) // 2 : (w - pw) // 2 + pw] = patch[:ph, :pw]
        chroma = self._buf[h:]
        # Barcode cells neutral in chroma so they decode as pure grey levels.
        bx0, by0 = barcode.bottom_left(h)
        barcode.draw(y, index, bx0, by0)
        u = chroma[: h // 4].reshape(h // 2, w // 2)
        v = chroma[h // 4 :].reshape(h // 2, w // 2)
        u[by0 // 2 :, : barcode.STRIP_WIDTH_PX // 2] = 128
        v[by0 // 2 :, : barcode.STRIP_WIDTH_PX // 2] = 128
        return av.VideoFrame.from_ndarray(self._buf, format="yuv420p")

    def read(self) -> av.VideoFrame:
        deadline = self._t0 + self.index / self.fps
        if time.monotonic() - deadline > 2 / self.fps:
            # Not read for a while (a live publisher had the output): start pacing
            # afresh instead of bursting frames to catch up.
            self._t0 = time.monotonic() - self.index / self.fps
            deadline = time.monotonic()
        _sleep_until(deadline, self._stop)
        frame = self.render(self.index, time.time())
        self.index += 1
        return frame


class Slate(TestPattern):
    """ "Waiting for signal": what viewers see while no publisher is live (production)."""

    name = "slate"

    def _make_background(self) -> np.ndarray:
        w, h = self.width, self.height
        buf = np.full((h * 3 // 2, w), 128, np.uint8)
        buf[:h] = 40
        font = ImageFont.load_default(size=max(16, h // 12))
        text = "waiting for signal"
        _, _, right, bottom = font.getbbox(text)
        img = Image.new("L", (int(right), int(bottom)), 40)
        ImageDraw.Draw(img).text((0, 0), text, fill=200, font=font)
        patch = np.asarray(img)[:h, :w]
        y0, x0 = (h - patch.shape[0]) // 2, (w - patch.shape[1]) // 2
        buf[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]] = patch
        return buf

    def render(self, index: int, wall_time: float) -> av.VideoFrame:
        np.copyto(self._buf, self._background)
        h, w = self.height, self.width
        patch = self._clock(wall_time)
        ph, pw = min(patch.shape[0], h), min(patch.shape[1], w)
        y0 = h * 2 // 3
        self._buf[y0 : y0 + ph, (w - pw) // 2 : (w - pw) // 2 + pw] = patch[:ph, :pw]
        return av.VideoFrame.from_ndarray(self._buf, format="yuv420p")


class FileSource(Source):
    """Loops a media file at its own pace, scaled to the output size."""

    name = "file"

    def __init__(self, path: str, width: int, height: int, stop: threading.Event) -> None:
        self.path, self.width, self.height = path, width, height
        self._stop = stop
        self._container: av.container.InputContainer | None = None
        self._frames: object = None
        self._start = 0.0
        self._first_pts_s: float | None = None
        self.loops = 0
        self._open()

    def _open(self) -> None:
        try:
            container = av.open(self.path, "r")
        except (av.FFmpegError, OSError) as exc:
            raise ConfigError("source.path", f"cannot open {self.path}: {exc}") from None
        if not container.streams.video:
            container.close()
            raise ConfigError("source.path", f"{self.path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        self._container = container
        self._frames = container.decode(stream)
        self._start = time.monotonic()
        self._first_pts_s = None

    def read(self) -> av.VideoFrame:
        while True:
            assert self._frames is not None
            try:
                frame: av.VideoFrame = next(self._frames)  # type: ignore[call-overload]
            except StopIteration:
                self.close()
                self.loops += 1
                self._open()
                continue
            t = float(frame.time) if frame.time is not None else 0.0
            if self._first_pts_s is None:
                self._first_pts_s = t
            _sleep_until(self._start + (t - self._first_pts_s), self._stop)
            return frame.reformat(width=self.width, height=self.height, format="yuv420p")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def open_source(cfg: Config, stop: threading.Event) -> Source:
    v = cfg.video
    if cfg.source.kind == "file":
        return FileSource(cfg.source.path, v.width, v.height, stop)
    if cfg.source.kind == "slate":
        return Slate(v.width, v.height, v.fps, stop)
    return TestPattern(v.width, v.height, v.fps, stop)
