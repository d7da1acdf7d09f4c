"""The ffmpeg CLI as the standing peer.

``FfmpegEncodePeer`` does the work of the node's video path without the node:
generate a 720p30 test picture and encode it with x264 ultrafast/zerolatency, in
real time (``-re``: without it ffmpeg encodes as fast as it can and its CPU per wall
second says nothing about a live stream). Its CPU is the child's user + system time
over its wall time, from ``os.wait4`` (the same accounting as
``getrusage(RUSAGE_CHILDREN)`` deltas, but for that child alone, and with its peak
RSS too).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

from bench.figures import Figure, Figures
from bench.scenarios import Peer

_SLACK_S = 30.0


def ffmpeg_version() -> str | None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "-hide_banner", "-version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0] if out else None


def run_child(argv: list[str], timeout_s: float, log_path: Path) -> dict[str, Any]:
    """Run ``argv`` (stdin and stdout to /dev/null, stderr to ``log_path``) and return
    its exit status, wall seconds and resource usage. Blocking: call it in a thread."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
    ]
    started = time.monotonic()
    pid = os.posix_spawnp(argv[0], argv, dict(os.environ), file_actions=actions)
    deadline = started + timeout_s
    killed = False
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            break
        if time.monotonic() > deadline and not killed:
            os.kill(pid, signal.SIGKILL)
            killed = True
        time.sleep(0.02)
    wall = time.monotonic() - started
    return {
        "exit_status": os.waitstatus_to_exitcode(status),
        "killed_after_timeout": killed,
        "wall_s": wall,
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "max_rss_kib": usage.ru_maxrss,  # Linux reports kilobytes (KiB)
    }


class FfmpegEncodePeer(Peer):
    name: ClassVar[str] = "ffmpeg-cli x264 encode"

    def __init__(self, size: str = "1280x720", fps: int = 30) -> None:
        self.size = size
        self.fps = fps

    def argv(self, seconds: float) -> list[str]:
        return [
            "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
            "-re", "-f", "lavfi", "-i", f"testsrc2=size={self.size}:rate={self.fps}",
            "-t", f"{seconds:g}",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
            "-f", "null", "-",
        ]  # fmt: skip

    def unavailable(self) -> str | None:
        if shutil.which("ffmpeg") is None:
            return "ffmpeg is not on PATH (apt-get install ffmpeg to measure the peer)"
        return None

    def describe(self, seconds: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "command": " ".join(self.argv(seconds)),
            "version": ffmpeg_version(),
            "note": "test picture + x264 in real time (-re), no network; run with the "
            "node stopped; CPU = (user + sys) / wall of the ffmpeg child",
        }

    async def run(self, seconds: float, log_path: Path) -> Figures:
        r = await asyncio.to_thread(run_child, self.argv(seconds), seconds + _SLACK_S, log_path)
        ok = r["exit_status"] == 0
        cpu_s = r["user_s"] + r["sys_s"]
        cores = cpu_s / r["wall_s"] if ok and r["wall_s"] > 0 else None
        note = "" if ok else f"ffmpeg exited with {r['exit_status']}; see {log_path}"
        return {
            "peer_cpu_cores": Figure(cores, "cores", "lower", note),
            "peer_cpu_seconds": Figure(cpu_s, "s"),
            "peer_wall_s": Figure(r["wall_s"], "s"),
            "peer_max_rss_mib": Figure(r["max_rss_kib"] / 1024, "MiB", "lower"),
        }
