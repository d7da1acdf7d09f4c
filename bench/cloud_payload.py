"""A realistic one-second summary for the ``cloud`` scenario's synthetic traffic.

The payload the node's windowing produces at ~2,000 events/s (the keys of
``Summary.payload`` in proto/edge_node/v1/edge.proto): counts by type and outcome,
~100 unique users, ten top words (some Chinese), a latency histogram, actions and
health. About 600 bytes of msgpack, so that the spool, the link and the collector
move what a busy venue's node sends rather than a few bytes. Pure: no I/O.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack

WORDS = (
    "666",
    "主播",
    "好看",
    "哈哈",
    "awsl",
    "下单",
    "晚上",
    "上好",
    "yyds",
    "来了",
    "红色",
    "冲冲",
)
LATENCY_BOUNDS_MS = ("10", "20", "35", "50", "75", "100", "150", "200", "500", "1000", "inf")


def summary_payload(start_s: int, rng: random.Random, events_per_s: int = 2000) -> dict[str, Any]:
    """One window starting at ``start_s`` (Unix seconds) with about ``events_per_s``
    events; ``rng`` varies the counts so that no two payloads compress alike."""
    comments = int(events_per_s * 0.40 * rng.uniform(0.9, 1.1))
    likes = int(events_per_s * 0.49 * rng.uniform(0.9, 1.1))
    votes = int(events_per_s * 0.10 * rng.uniform(0.9, 1.1))
    words = rng.sample(WORDS, 10)
    latency = [
        int(comments * share) for share in (0.3, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0, 0, 0, 0)
    ]
    return {
        "v": 1,
        "start": start_s,
        "window_s": 1,
        "empty": False,
        "events": {
            "comment": {"accepted": comments, "rate_limited": rng.randint(0, 20)},
            "like": {"accepted": likes},
            "vote": {"accepted": votes, "bad_message": rng.randint(0, 3)},
            "gift": {"accepted": rng.randint(0, 10)},
        },
        "unique_users": rng.randint(90, 110),
        "top_words": [[w, rng.randint(5, 200)] for w in words],
        "likes": likes * 3,
        "gift_value": rng.randint(0, 5000),
        "latency_ms": {"bounds": list(LATENCY_BOUNDS_MS[:-1]), "counts": latency},
        "actions": {"mute": rng.randint(0, 2)},
        "health": {
            "stream": {"fps_in": 30.0, "fps_out": 30.0, "viewers": rng.randint(0, 50)},
            "node": {"cpu_pct": rng.uniform(30, 80), "mem_mb": 340.0, "spool_depth": 0},
        },
        "flags": [],
    }


def pack(payload: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(payload, use_bin_type=True))
