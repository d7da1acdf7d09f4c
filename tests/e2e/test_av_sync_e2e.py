"""Lip sync: a publisher's flashes and beeps (ffmpeg CLI, RTMP) stay together in the
node's output (read back from the recording, which holds both on one timeline)."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

import av
import numpy as np
import pytest

from tests.conftest import ffmpeg_publish, recording_node

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="Debian's ffmpeg CLI needed"),
]

# ITU-R BT.1359: audio 45 ms early or 125 ms late is where viewers start to notice.
TOLERANCE_S = 0.045


def onsets(path: Path) -> tuple[list[float], list[float]]:
    with av.open(str(path)) as c:
        flashes = [
            (float(f.time), float(f.to_ndarray(format="yuv420p")[100:300, 300:900].mean()))
            for f in c.decode(video=0)
        ]
    with av.open(str(path)) as c:
        chunks = []
        for f in c.decode(audio=0):
            a = np.abs(f.to_ndarray().astype(np.float64))
            for i in range(0, a.shape[-1], 240):  # 5 ms steps
                chunks.append((float(f.time) + i / f.sample_rate, float(a[..., i : i + 240].max())))
    video = [t for (t, m), (_, prev) in zip(flashes[1:], flashes, strict=False) if m > 128 >= prev]
    amps = np.array([a for _, a in chunks])
    thr = (amps.max() + np.median(amps)) / 2
    audio = [chunks[i][0] for i in range(1, len(chunks)) if amps[i] > thr >= amps[i - 1]]
    return video, audio


def test_flashes_and_beeps_stay_in_sync(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    node = recording_node(tmp_path)
    try:
        ffmpeg_publish(
            f"{node.rtmp_url}/demo",
            (
                "color=c=black:s=640x360:r=30,drawbox=x=0:y=0:w=640:h=360:c=white:t=fill"
                ":enable='lt(mod(t\\,1)\\,0.1)'"
            ),
            "sine=frequency=1000:sample_rate=48000:beep_factor=4",
            6,
        )
    finally:
        node.stop()
    path = next(p for p in rec.glob("*.mkv") if av.open(str(p)).streams.audio)
    video, audio = onsets(path)
    assert len(video) >= 4, video
    offsets = [min(audio, key=lambda a, v=v: abs(a - v)) - v for v in video]
    assert abs(statistics.median(offsets)) < TOLERANCE_S, offsets
