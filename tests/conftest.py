"""Shared fixtures: a real node process on loopback, stopped at the end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NodeProcess:
    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    rtmp_url: str

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def health(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.get("/healthz")[1])

    def metric(self, name: str) -> float:
        """Sum of every sample of ``name`` (all label sets) in /metrics."""
        text = self.get("/metrics")[1].decode()
        total, seen = 0.0, False
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
                seen = True
        if not seen:
            raise KeyError(name)
        return total

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(40)  # a loaded 2-core CI box can be slow to shut down
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_node(tmp: Path, *args: str, env: dict[str, str] | None = None) -> NodeProcess:
    port = free_port()
    rtmp_port = free_port()
    grpc_port = free_port()
    full_env = {
        "EDGE_NODE_CLOUD__EMBEDDED_COLLECTOR": f"127.0.0.1:{grpc_port}",
        "EDGE_NODE_CLOUD__TARGET": f"127.0.0.1:{grpc_port}",
        "EDGE_NODE_INGEST__RTMP_HOST": "127.0.0.1",
        "EDGE_NODE_INGEST__RTMP_PORT": str(rtmp_port),
        **os.environ,
        "EDGE_NODE_HTTP__HOST": "127.0.0.1",
        "EDGE_NODE_HTTP__PORT": str(port),
        "EDGE_NODE_WEBRTC__HOST_ADDRESSES": "127.0.0.1",
        **(env or {}),
    }
    log = open(tmp / "node.log", "wb")  # noqa: SIM115 - kept open for the process's life
    proc = subprocess.Popen(
        # No simulated audience unless a test asks: its danmaku would cross the lanes
        # the tests look at.
        [
            sys.executable,
            "-m",
            "edge_node",
            "demo",
            "--data-dir",
            str(tmp / "data"),
            *(args or ("--audience", "0")),
        ],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    node = NodeProcess(
        proc, f"http://127.0.0.1:{port}", tmp / "data", f"rtmp://127.0.0.1:{rtmp_port}/live"
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"node exited early:\n{(tmp / 'node.log').read_text()}")
        try:
            if node.get("/healthz")[0] == 200:
                return node
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    node.stop()
    raise RuntimeError(f"node not healthy in 20 s:\n{(tmp / 'node.log').read_text()}")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    n = start_node(tmp_path_factory.mktemp("node"))
    yield n
    n.stop()


@pytest.fixture(autouse=True, scope="session")
def _loopback_ice() -> None:
    # The test process's own aiortc peers also offer only loopback candidates.
    from edge_node.media.egress_whep import restrict_ice_host_addresses

    restrict_ice_host_addresses(["127.0.0.1"])


def recording_node(tmp: Path) -> NodeProcess:
    """A demo node that records everything to ``tmp/rec`` in one file per minute."""
    return start_node(
        tmp,
        env={
            "EDGE_NODE_RECORD__ENABLED": "true",
            "EDGE_NODE_RECORD__DIR": str(tmp / "rec"),
            "EDGE_NODE_RECORD__SEGMENT_S": "60",
        },
    )


def ffmpeg_publish(url: str, video: str, audio: str, seconds: float) -> None:
    """Publish lavfi ``video`` + ``audio`` sources over RTMP with Debian's ffmpeg CLI
    (H.264 with a keyframe every second, AAC), in real time, and wait for the end."""
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            video,
            "-f",
            "lavfi",
            "-i",
            audio,
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "30",
            "-c:a",
            "aac",
            "-f",
            "flv",
            url,
        ],
        check=True,
        timeout=30,
    )
