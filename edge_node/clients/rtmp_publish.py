"""A test publisher: stamps a frame counter (the contract's barcode, bottom-left) on a
synthetic picture, encodes with libx264 and publishes over RTMP with PyAV/FFmpeg.

Run it in its own process (``python -m edge_node.clients.rtmp_publish``): PyAV holds
the GIL while its RTMP output waits for the server, so it must never share a process
with an asyncio RTMP server. With ``--log`` it writes one ``counter monotonic_s`` line
per frame sent, for glass-to-glass timing against a receiver on the same machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction

import av
import numpy as np

from edge_node import barcode


def publish(
    url: str, seconds: float, start: int, width: int, height: int, fps: int, log: str | None
) -> int:
    out = av.open(url, "w", format="flv")
    stream = out.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "x264-params": f"keyint={fps}:bframes=0",
    }
    buf = np.full((height * 3 // 2, width), 128, np.uint8)
    buf[:height] = 90
    logf = open(log, "w") if log else None  # noqa: SIM115 - closed below
    n = int(seconds * fps)
    t0 = time.monotonic()
    try:
        for i in range(n):
            delay = t0 + i / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            counter = (start + i) & 0xFFFF
            x = (i * 8) % (width - 64)
            buf[height // 2 - 32 : height // 2 + 32, :] = 90
            buf[height // 2 - 32 : height // 2 + 32, x : x + 64] = 200
            barcode.draw(buf[:height], counter, *barcode.bottom_left(height))
            frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            sent = time.monotonic()
            for packet in stream.encode(frame):
                out.mux(packet)
            if logf:
                logf.write(f"{counter} {sent:.6f}\n")
        for packet in stream.encode():
            out.mux(packet)
    finally:
        out.close()
        if logf:
            logf.close()
    return n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="rtmp://host:port/live/<stream key>")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--start", type=int, default=40000, help="first frame counter value")
    p.add_argument("--size", default="1280x720")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--log", help="write 'counter monotonic_s' per frame sent")
    args = p.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    try:
        publish(args.url, args.seconds, args.start, width, height, args.fps, args.log)
    except av.FFmpegError as exc:
        print(f"rtmp_publish: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
