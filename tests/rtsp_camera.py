"""A minimal RTSP camera for tests (no RTSP server we could install here works with
FFmpeg's client): OPTIONS, DESCRIBE, SETUP (RTP over the RTSP TCP connection,
interleaved), PLAY, TEARDOWN; H.264 from libx264 packetized by aiortc's RFC 6184
packetizer. It draws the contract's frame counter (bottom-left) from ``--start``.

    python -m tests.rtsp_camera --port 8554 --seconds 3 [--start 60000]

Serves clients one after the other until ``--seconds`` of streaming have been sent
in total, then exits: a camera that drops.
"""

from __future__ import annotations

import argparse
import base64
import socket
import struct
import time
from fractions import Fraction

import av
import numpy as np
from aiortc.codecs.h264 import H264Encoder as RtpH264

from edge_node import barcode
from edge_node.config import VideoConfig
from edge_node.media import flv
from edge_node.media.encode import H264Encoder

WIDTH, HEIGHT, FPS = 1280, 720, 30


def read_request(conn: socket.socket, buf: bytearray) -> tuple[str, dict[str, str]] | None:
    while b"\r\n\r\n" not in buf:
        data = conn.recv(4096)
        if not data:
            return None
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return lines[0], headers


def reply(conn: socket.socket, cseq: str, extra: str = "", body: str = "") -> None:
    msg = f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}"
    if body:
        msg += f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n"
    conn.sendall((msg + "\r\n" + body).encode())


def serve(port: int, seconds: float, start: int) -> None:
    encoder = H264Encoder(VideoConfig(width=WIDTH, height=HEIGHT, fps=FPS, keyframe_interval_s=1))
    buf = np.full((HEIGHT * 3 // 2, WIDTH), 128, np.uint8)
    buf[:HEIGHT] = 60
    first = encoder.encode(av.VideoFrame.from_ndarray(buf, format="yuv420p"), True)
    sps, pps = flv.parameter_sets(flv.split_annexb(bytes(first[0])))  # type: ignore[misc]
    sprop = base64.b64encode(sps).decode() + "," + base64.b64encode(pps).decode()
    profile = sps[1:4].hex()
    srv = socket.create_server(("127.0.0.1", port))
    sent_frames, budget = 0, int(seconds * FPS)
    counter = start
    while sent_frames < budget:
        conn, _ = srv.accept()
        pending = bytearray()
        try:
            while True:
                req = read_request(conn, pending)
                if req is None:
                    break
                line, h = req
                method, url = line.split(" ")[:2]
                cseq = h.get("cseq", "0")
                if method == "OPTIONS":
                    reply(conn, cseq, "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n")
                elif method == "DESCRIBE":
                    sdp = (
                        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=camera\r\nt=0 0\r\n"
                        "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
                        f"a=fmtp:96 packetization-mode=1;profile-level-id={profile};"
                        f"sprop-parameter-sets={sprop}\r\na=control:track1\r\n"
                    )
                    reply(conn, cseq, f"Content-Base: {url}/\r\n", sdp)
                elif method == "SETUP":
                    if "interleaved" not in h.get("transport", ""):
                        conn.sendall(
                            f"RTSP/1.0 461 Unsupported Transport\r\nCSeq: {cseq}\r\n\r\n".encode()
                        )
                        continue
                    reply(
                        conn,
                        cseq,
                        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 1234\r\n",
                    )
                elif method == "PLAY":
                    reply(conn, cseq, "Session: 1234\r\nRange: npt=0.000-\r\n")
                    sent_frames, counter = stream(conn, encoder, buf, sent_frames, budget, counter)
                    break
                elif method == "TEARDOWN":
                    reply(conn, cseq)
                    break
                else:
                    reply(conn, cseq)
        except (ConnectionError, OSError):
            pass
        finally:
            conn.close()
    srv.close()


def stream(
    conn: socket.socket, encoder: H264Encoder, buf: np.ndarray, sent: int, budget: int, counter: int
) -> tuple[int, int]:
    seq = 0
    t0 = time.monotonic()
    i = 0
    while sent < budget:
        delay = t0 + i / FPS - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        barcode.draw(buf[:HEIGHT], counter, *barcode.bottom_left(HEIGHT))
        frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
        frame.pts = i * (90000 // FPS)
        frame.time_base = Fraction(1, 90000)
        for packet in encoder.encode(frame, force_keyframe=(i == 0)):
            payloads = RtpH264._packetize(flv.split_annexb(bytes(packet)))
            for n, payload in enumerate(payloads):
                marker = 0x80 if n == len(payloads) - 1 else 0
                rtp = (
                    struct.pack(
                        ">BBHII",
                        0x80,
                        marker | 96,
                        seq & 0xFFFF,
                        (i * 3000) & 0xFFFFFFFF,
                        0x12345678,
                    )
                    + payload
                )
                conn.sendall(b"$\x00" + struct.pack(">H", len(rtp)) + rtp)
                seq += 1
        i += 1
        sent += 1
        counter += 1
    return sent, counter


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--start", type=int, default=60000)
    args = p.parse_args()
    serve(args.port, args.seconds, args.start)


if __name__ == "__main__":
    main()
