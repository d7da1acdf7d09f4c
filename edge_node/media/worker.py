"""Entry point of the media worker process (``python -m edge_node.media.worker``).

Started by the supervisor with spawn/exec, never forked from the control process
(grpcio does not survive fork). Its stdin carries channel frames down, a private
duplicate of its stdout carries frames up; fd 1 itself is pointed at stderr so that a
stray print from a library cannot corrupt the channel. When stdin closes (the
control process is gone) the worker exits.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from edge_node import config as config_mod
from edge_node import logs
from edge_node.errors import EdgeNodeError
from edge_node.media.channel import MessageReader, encode_message
from edge_node.media.pipeline import Pipeline
from edge_node.media.sources import open_source
from edge_node.overlay.compositor import Compositor
from edge_node.overlay.scene import Scene
from edge_node.overlay.text import TextRenderer, find_font
from edge_node.overlay.widgets import Painter

log = logging.getLogger("edge_node.worker")


class ChannelWriter:
    """Thread-safe writer of framed messages to the up pipe."""

    def __init__(self, fd: int, closed: threading.Event) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._closed = closed

    def send(self, msg: dict[str, Any]) -> None:
        data = encode_message(msg)
        with self._lock:
            try:
                view = memoryview(data)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
            except (BrokenPipeError, OSError):
                self._closed.set()


def _read_messages(fd: int, reader: MessageReader) -> list[dict[str, Any]] | None:
    data = os.read(fd, 65536)
    if not data:
        return None
    return reader.feed(data)


def _read_init(reader: MessageReader) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The init message, and whatever arrived with it (the supervisor's replay)."""
    while True:
        msgs = _read_messages(0, reader)
        if msgs is None:
            raise SystemExit(0)
        if msgs:
            if msgs[0]["t"] != "init":
                raise SystemExit(f"worker: first message must be init, got {msgs[0]['t']}")
            return msgs[0], msgs[1:]


def main() -> int:
    up_fd = os.dup(1)
    os.dup2(2, 1)
    reader = MessageReader()
    init, early = _read_init(reader)
    cfg = config_mod.from_wire(init["config"])
    logs.setup(cfg.node.log_level, cfg.node.log_format, process_role="worker")
    stop = threading.Event()
    writer = ChannelWriter(up_fd, stop)
    try:
        font = find_font(cfg.overlay.font_path or None, config_key="overlay.font_path")
        text = TextRenderer(font, cache_bytes=cfg.overlay.sprite_cache_mb * 1024 * 1024)
        painter = Painter(cfg.video.width, cfg.video.height, text, cfg.bench.probe)
        pipeline = Pipeline(
            cfg, lambda ev: open_source(cfg, ev), writer.send, compositor=Compositor(painter)
        )
    except EdgeNodeError as exc:
        log.error("media worker cannot start: %s", exc)
        return 2
    writer.send({"t": "hello", "pid": os.getpid(), "gen": init.get("gen", 0)})
    if init.get("scene"):
        pipeline.compositor.set_scene(Scene.from_wire(init["scene"]))
    pipeline.start()

    def read_down() -> None:
        pending: list[dict[str, Any]] | None = early
        try:
            while not stop.is_set():
                msgs = pending if pending is not None else _read_messages(0, reader)
                pending = None
                if msgs is None:
                    break
                for msg in msgs:
                    kind = msg["t"]
                    if kind == "keyframe":
                        pipeline.request_keyframe()
                    elif kind == "scene":
                        scene = Scene.from_wire(msg["scene"])
                        # Hand the snapshot over first (a probe or a vote shows on the
                        # next frame), then render its new comment texts, which the
                        # compositor draws once they are cached.
                        pipeline.compositor.set_scene(scene)
                        painter.prewarm(scene, time.monotonic())
                    elif kind == "in_video":
                        pipeline.live.flv_video(int(msg["ts"]), msg["data"])
                    elif kind == "in_h264":
                        pipeline.live.h264_annexb(msg["data"])
                    elif kind == "in_audio":
                        pipeline.audio.flv_audio(msg["data"], msg.get("ts"))
                    elif kind == "in_opus":
                        pipeline.audio.opus(msg["data"])
                    elif kind == "in_start":
                        pipeline.start_live(str(msg["proto"]))
                    elif kind == "in_end":
                        pipeline.end_live()
                    elif kind == "stop":
                        stop.set()
                    else:
                        log.warning("unknown channel message", extra={"kind": kind})
        except EdgeNodeError as exc:
            log.error("bad frame from the control process: %s", exc)
        except Exception:
            # A bug here must not leave a worker that no longer listens: exit, and
            # let the supervisor start a fresh one.
            log.exception("channel reader failed; the media worker exits")
            failed.set()
        stop.set()

    failed = threading.Event()
    threading.Thread(target=read_down, name="channel-down", daemon=True).start()
    while not stop.is_set() and not pipeline.stop_event.is_set():
        stop.wait(1.0)
        writer.send(pipeline.stats())
    pipeline.stop()
    if failed.is_set():
        return 1
    if pipeline.error is not None:
        log.error("media worker exiting after a pipeline error: %r", pipeline.error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
