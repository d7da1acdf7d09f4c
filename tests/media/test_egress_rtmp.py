"""RTMP push against a real RtmpListener on loopback, fed real x264 packets through the
PacketHub: the target gets a sequence header, then tags that PyAV decodes; the push
reconnects after the target goes away and comes back, counts refusals, gives up on a
target that stops reading, and speaks rtmps through a TLS proxy. Never logs the key."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from edge_node.backoff import Backoff
from edge_node.config import VideoConfig
from edge_node.media import egress_rtmp, flv, rtmp
from edge_node.media.egress_rtmp import RtmpPush
from edge_node.media.encode import H264Encoder
from edge_node.media.fanout import PacketHub
from edge_node.media.ingest_rtmp import RtmpListener
from edge_node.metrics import Registry

pytestmark = pytest.mark.timeout(30)

KEY = "push-key-7f3a9c"
FRAME_PTS = 3000  # 30 fps at 90 kHz
GOP = 10


# ---- fixtures: real packets, a hub feeding them, a target --------------------------------


def encode_packets() -> list[tuple[bytes, bool]]:
    """60 real H.264 access units (Annex-B), a keyframe with SPS/PPS every GOP frames."""
    encoder = H264Encoder(VideoConfig(width=160, height=96, fps=30))
    packets = []
    for i in range(60):
        picture = np.zeros((96, 160, 3), np.uint8)
        picture[:, (i * 3) % 160] = 255
        picture[(i * 2) % 96, :] = 128
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts = i * FRAME_PTS
        for packet in encoder.encode(frame, force_keyframe=i % GOP == 0):
            packets.append((bytes(packet), bool(packet.is_keyframe)))
    assert len(packets) == 60 and packets[0][1]
    return packets


@pytest.fixture(scope="module")
def x264_packets() -> list[tuple[bytes, bool]]:
    return encode_packets()


class Feeder:
    """Plays the packets into the hub in a loop, as the media worker would (faster)."""

    def __init__(self, packets: list[tuple[bytes, bool]], data: Callable[[int], bytes] | None):
        self.registry = Registry()
        self.hub = PacketHub(self.registry, self._keyframe_requested, FRAME_PTS)
        self._packets = packets
        self._data = data
        self._index = 0
        self.keyframe_requests = 0
        self._task: asyncio.Task[None] | None = None

    def _keyframe_requested(self) -> None:
        self.keyframe_requests += 1

    async def _run(self, interval_s: float) -> None:
        pts = 0
        while True:
            data, key = self._packets[self._index % len(self._packets)]
            if self._data is not None:
                data = self._data(self._index)
            self.hub.on_worker_message(
                {
                    "t": "pkt",
                    "data": data,
                    "pts": pts,
                    "key": key,
                    "capture": time.monotonic(),
                    "queue_s": 0.0,
                    "composite_s": 0.0,
                    "encode_s": 0.001,
                },
                1,
            )
            self._index += 1
            pts += FRAME_PTS
            await asyncio.sleep(interval_s)

    def start(self, interval_s: float = 0.005) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(interval_s))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@pytest.fixture
async def feeder(x264_packets: list[tuple[bytes, bool]]) -> AsyncIterator[Feeder]:
    feed = Feeder(x264_packets, None)
    feed.start()
    yield feed
    await feed.stop()


class Target:
    """An RtmpListener on loopback that keeps what its publisher sends."""

    def __init__(self, port: int = 0) -> None:
        self.video: list[rtmp.MediaMessage] = []
        self.starts: list[str] = []
        self.ends = 0
        self.listener = RtmpListener(
            "127.0.0.1",
            port,
            "live",
            Registry(),
            check_publish=lambda key: None if key == KEY else "unknown stream key",
            on_start=lambda _conn, key: self.starts.append(key),
            on_media=self._media,
            on_end=self._end,
        )

    def _media(self, _conn: int, message: rtmp.MediaMessage) -> None:
        if message.kind == "video":
            self.video.append(message)

    def _end(self, _conn: int) -> None:
        self.ends += 1

    @property
    def port(self) -> int:
        return self.listener.port

    async def __aenter__(self) -> Target:
        await self.listener.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.listener.stop()


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def decode(messages: list[rtmp.MediaMessage]) -> int:
    """Check the stream's shape and decode it; returns the number of pictures."""
    tags = [flv.parse_video_tag(m.payload) for m in messages]
    assert tags[0].packet_type == flv.AVC_SEQUENCE_HEADER, "the sequence header comes first"
    assert tags[1].packet_type == flv.AVC_NALU and tags[1].keyframe, "then a keyframe"
    assert messages[0].timestamp_ms == messages[1].timestamp_ms == 0
    stamps = [m.timestamp_ms for m in messages]
    assert stamps == sorted(stamps), "timestamps never go back"
    ctx = av.CodecContext.create("h264", "r")
    ctx.extradata = tags[0].data
    ctx.thread_type = "SLICE"
    pictures = 0
    for tag in tags[1:]:
        assert tag.packet_type == flv.AVC_NALU  # one encoder: no second header
        nal_types = [flv.nal_type(n) for n in split_length_prefixed(tag.data)]
        assert not {flv.NAL_AUD, flv.NAL_SPS, flv.NAL_PPS} & set(nal_types)
        for frame in ctx.decode(av.Packet(tag.data)):
            assert (frame.width, frame.height) == (160, 96)
            pictures += 1
    return pictures


def split_length_prefixed(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def new_push(url: str, feed: Feeder, **kwargs: Any) -> tuple[RtmpPush, Registry]:
    registry = Registry()
    push = RtmpPush(url, feed.hub, registry, Backoff(initial_s=0.05, max_s=0.2), **kwargs)
    return push, registry


def assert_key_never_logged(records: list[logging.LogRecord]) -> None:
    for record in records:
        assert KEY not in record.getMessage()
        assert KEY not in repr(vars(record))


# ---- tests --------------------------------------------------------------------------


# Six waits of up to 10 s each (``until``): this module's 30 s default would cut a slow
# but healthy run short on a loaded box (CI saw one take over 30 s).
@pytest.mark.timeout(90)
async def test_push_decodes_and_reconnects_to_a_restarted_target(
    feeder: Feeder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first = Target()
    await first.listener.start()
    port = first.port
    push, registry = new_push(f"rtmp://127.0.0.1:{port}/live/{KEY}", feeder)
    await push.start()
    try:
        await until(lambda: len(first.video) >= 25)
        assert first.starts == [KEY]
        assert push.status() == {
            "url": f"rtmp://127.0.0.1:{port}/live/***",
            "connected": True,
            "reconnects": 0,
            "last_error": None,
        }
        assert decode(first.video) >= 20

        # The target goes away; packets keep coming and are thrown away meanwhile.
        await first.listener.stop()
        await until(lambda: not push.connected)
        await until(lambda: push.c_connects.value(outcome="error") >= 1)
        assert push.status()["last_error"]
        queued_while_down = feeder.hub.c_dropped.value(stage="rtmp_push")

        # It comes back on the same port: the push finds it, starting at a keyframe.
        async with Target(port) as second:
            await until(lambda: len(second.video) >= 25)
            assert push.c_connects.value(outcome="ok") == 2
            assert push.connected and push.status()["last_error"] is None
            assert push.status()["reconnects"] >= 2
            assert decode(second.video) >= 20
            assert "edge_node_rtmp_push_connected 1" in registry.render()
            assert push.c_bytes.value() > 10_000 and push.c_packets.value() >= 45
        assert feeder.hub.c_dropped.value(stage="rtmp_push") > queued_while_down
        assert feeder.hub.c_dropped.value(stage="subscriber") == 0  # never backed up
    finally:
        await push.stop()
    assert not push.connected and "edge_node_rtmp_push_connected 0" in registry.render()
    assert feeder.hub.subscribers == 0
    assert_key_never_logged(caplog.records)


async def test_a_refused_key_is_counted_and_retried(
    feeder: Feeder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Target() as target:
        push, _ = new_push(f"rtmp://127.0.0.1:{target.port}/live/{KEY}-wrong", feeder)
        await push.start()
        try:
            await until(lambda: push.c_connects.value(outcome="refused") >= 2)
        finally:
            await push.stop()
    assert push.c_connects.value(outcome="ok") == 0
    assert not target.video and not target.starts
    status = push.status()
    assert status["connected"] is False
    assert "NetStream.Publish.BadName" in status["last_error"]
    assert KEY not in str(status)
    assert_key_never_logged(caplog.records)


async def test_a_stop_unpublishes_cleanly(feeder: Feeder) -> None:
    async with Target() as target:
        push, _ = new_push(f"rtmp://127.0.0.1:{target.port}/live/{KEY}", feeder)
        await push.start()
        await until(lambda: len(target.video) >= 5)
        await push.stop()
        await until(lambda: target.ends == 1)


async def test_a_target_that_stops_reading_is_dropped(
    x264_packets: list[tuple[bytes, bool]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(egress_rtmp, "DRAIN_TIMEOUT_S", 0.3)
    sps_pps_idr = x264_packets[0][0]
    # Big packets, so that the socket buffers fill up quickly.
    big_idr = b"\x00\x00\x01\x65" + b"\xaa" * 300_000
    feed = Feeder(x264_packets, lambda i: sps_pps_idr + big_idr)
    connections = 0

    async def stalling_target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        conn = rtmp.RtmpServerConnection("live", lambda _key: None)
        while conn.state is not rtmp.State.PUBLISHING:
            data = await reader.read(65536)
            if not data:
                return
            conn.receive_data(data)
            writer.write(conn.data_to_send())
        await asyncio.sleep(3600)  # then never read again

    server = await asyncio.start_server(stalling_target, "127.0.0.1", 0)
    for sock in server.sockets:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = server.sockets[0].getsockname()[1]
    push, _ = new_push(f"rtmp://127.0.0.1:{port}/live/{KEY}", feed)
    feed.start(interval_s=0.002)
    await push.start()
    try:
        started = time.monotonic()
        await until(lambda: push.c_connects.value(outcome="ok") >= 2)
        assert time.monotonic() - started >= 0.3  # not before the drain timeout
        assert connections >= 2
        drops = [r.getMessage() for r in caplog.records if "rtmp push down" in r.getMessage()]
        assert drops and "write stalled for 0.3 s" in drops[0]
    finally:
        await push.stop()
        await feed.stop()
        server.close()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="no ffmpeg CLI")
async def test_ffmpeg_as_the_target_decodes_the_push(feeder: Feeder) -> None:
    """Another implementation's server: ``ffmpeg -listen 1`` (in its own process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ffmpeg = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-listen", "1",
        "-i", f"rtmp://127.0.0.1:{port}/live/{KEY}", "-f", "framemd5", "-",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    # The push retries (backoff) until ffmpeg listens: no port probing, which ffmpeg's
    # single accept would take for the publisher.
    push, _ = new_push(f"rtmp://127.0.0.1:{port}/live/{KEY}", feeder)
    await push.start()
    try:
        await until(lambda: push.c_packets.value() >= 40)
    finally:
        await push.stop()
    try:
        async with asyncio.timeout(10):
            out, err = await ffmpeg.communicate()
    finally:
        if ffmpeg.returncode is None:
            ffmpeg.kill()
            await ffmpeg.wait()
    frames = [line for line in out.decode().splitlines() if not line.startswith("#")]
    assert len(frames) >= 30, err.decode()
    assert push.c_connects.value(outcome="ok") == 1


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


async def test_rtmps_through_a_tls_proxy(feeder: Feeder, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async with Target() as target:

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        async def terminate_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target.port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        proxy = await asyncio.start_server(terminate_tls, "127.0.0.1", 0, ssl=server_ctx)
        port = proxy.sockets[0].getsockname()[1]
        push, _ = new_push(f"rtmps://127.0.0.1:{port}/live/{KEY}", feeder, ssl_context=client_ctx)
        assert push.status()["url"] == f"rtmps://127.0.0.1:{port}/live/***"
        await push.start()
        try:
            await until(lambda: len(target.video) >= 15)
            assert decode(target.video) >= 10
        finally:
            await push.stop()
            proxy.close()


async def test_an_untrusted_certificate_is_an_error(
    feeder: Feeder, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(nothing, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    push, _ = new_push(f"rtmps://127.0.0.1:{port}/live/{KEY}", feeder)  # system trust store
    await push.start()
    try:
        await until(lambda: push.c_connects.value(outcome="error") >= 1)
        assert "CERTIFICATE_VERIFY_FAILED" in (push.last_error or "")
    finally:
        await push.stop()
        server.close()
