"""Audio carried through: AAC over RTMP in (ffmpeg CLI), Opus out to a WHEP viewer."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from edge_node.clients.whep import WhepViewer
from tests.conftest import NodeProcess, ffmpeg_publish, recording_node

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="Debian's ffmpeg CLI needed"),
]


async def test_rtmp_aac_reaches_whep_viewer_as_opus(node: NodeProcess) -> None:
    viewer = WhepViewer(node.url, audio=True)
    await viewer.connect()
    proc = subprocess.Popen(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-f",
            "flv",
            f"{node.rtmp_url}/demo",
        ],
        stderr=subprocess.PIPE,
    )
    try:
        await viewer.frame(timeout=10)
        frames = [await viewer.audio_frame(timeout=10) for _ in range(50)]  # 1 s of Opus
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float64)
        # A 440 Hz tone came through: real signal, not silence.
        assert np.abs(pcm).max() > 1000, np.abs(pcm).max()
        assert frames[0].sample_rate == 48000
        assert node.metric("edge_node_audio_packets_total") > 0
    finally:
        await viewer.close()
        assert await asyncio.to_thread(proc.wait, 20) == 0


def test_recording_carries_the_input_audio(tmp_path: Path) -> None:
    rec_dir = tmp_path / "rec"
    node = recording_node(tmp_path)
    try:
        ffmpeg_publish(
            f"{node.rtmp_url}/demo",
            "testsrc2=size=640x360:rate=30",
            "sine=frequency=440:sample_rate=48000",
            4,
        )
    finally:
        node.stop()
    with_audio = []
    for f in sorted(rec_dir.glob("*.mkv")):
        with av.open(str(f)) as c:
            if c.streams.audio:
                samples = sum(fr.samples for fr in c.decode(audio=0))
                with_audio.append(samples)
    # The file that began once audio was flowing has about the rest of the 4 s of it.
    assert with_audio and max(with_audio) > 48000, with_audio
