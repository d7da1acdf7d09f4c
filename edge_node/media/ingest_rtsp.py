"""RTSP pull from an IP camera, in the media worker: connect, decode, reconnect.

A thread of its own: PyAV's demuxer blocks (without the GIL) while it waits for the
camera. When the camera drops or cannot be reached, the pull waits a jittered,
growing delay (the project's one ``Backoff``) and connects again; the output shows
the fallback meanwhile, like for any publisher loss.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

import av

from edge_node.backoff import Backoff

log = logging.getLogger(__name__)

# Connected long enough to count as working: the next failure starts the backoff afresh.
HEALTHY_S = 5.0


def redact(url: str) -> str:
    """The URL without its credentials, for logs."""
    return re.sub(r"//[^/@]*@", "//***@", url)


class RtspPull:
    def __init__(
        self,
        url: str,
        transport: str,
        width: int,
        height: int,
        on_frame: Callable[[av.VideoFrame], None],
        stop: threading.Event,
        backoff: Backoff,
    ) -> None:
        self.url, self.transport = url, transport
        self.width, self.height = width, height
        self._on_frame = on_frame
        self._stop = stop
        self._backoff = backoff
        self.connected = False
        self.connects = 0
        self.failures = 0
        self.frames = 0
        self.last_error: str | None = None

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name="rtsp-pull", daemon=True)
        t.start()
        return t

    def run(self) -> None:
        while not self._stop.is_set():
            lasted = 0.0
            try:
                lasted = self._pull_once()
            except (av.FFmpegError, OSError) as exc:
                self.last_error = redact(str(exc))  # FFmpeg quotes the URL
            finally:
                self.connected = False
            if self._stop.is_set():
                return
            self.failures += 1
            if lasted >= HEALTHY_S:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            log.warning(
                "rtsp pull from %s ended (%s); retrying in %.2f s",
                redact(self.url),
                self.last_error or "end of stream",
                delay,
            )
            self._stop.wait(delay)

    def _pull_once(self) -> float:
        """One connection; returns how long it delivered frames, in seconds."""
        options = {
            "rtsp_transport": self.transport,
            "timeout": "5000000",  # socket I/O timeout in µs: a silent camera is a drop
            "probesize": "32768",
            "analyzeduration": "0",
        }
        with av.open(self.url, "r", options=options, timeout=5.0) as container:
            if not container.streams.video:
                self.last_error = "the RTSP source has no video stream"
                return 0.0
            stream = container.streams.video[0]
            stream.thread_type = "SLICE"
            self.connected = True
            self.connects += 1
            self.last_error = None
            log.info("rtsp pull connected to %s", redact(self.url))
            first: float | None = None
            last = 0.0
            for packet in container.demux(stream):
                if self._stop.is_set():
                    break
                for frame in packet.decode():
                    assert isinstance(frame, av.VideoFrame)
                    t = float(frame.time or 0.0)
                    first = t if first is None else first
                    last = t
                    self.frames += 1
                    self._on_frame(frame.reformat(self.width, self.height, "yuv420p"))
            return last - (first or 0.0)
