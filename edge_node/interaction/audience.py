"""The demo's simulated audience: realistic chat, likes and votes. Sans-I/O.

``events(now, dt, open_polls)`` returns what the audience sends during the next ``dt``
seconds; the demo feeds each event through the same engine entry point as a real
client (``Interactions.submit``), so they are limited, moderated and counted alike.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from edge_node.interaction.auth import Claims
from edge_node.interaction.messages import Comment, Like, Message, Vote

PHRASES = (
    "666",
    "666",
    "666",
    "主播好！",
    "太好看了",
    "hello from Berlin",
    "这个多少钱？",
    "上链接！",
    "wow 😍",
    "好听",
    "加油加油",
    "first time here",
    "哈哈哈哈",
    "买买买",
    "nice!",
    "来了来了",
    "画质好清楚",
    "PK 赢！",
    "谢谢主播",
    "🔥🔥🔥",
)
COMMENTS_PER_USER_S = 0.04
LIKES_PER_USER_S = 0.15
VOTES_PER_USER_S = 0.03


class AudienceModel:
    def __init__(self, size: int, rng: random.Random) -> None:
        self.users = [Claims(user=f"sim:{i:04d}", role="viewer", exp=None) for i in range(size)]
        self._rng = rng
        self._seq = 0
        self.voted: set[tuple[str, str]] = set()

    def _id(self) -> str:
        self._seq += 1
        return f"s{self._seq}"

    def events(
        self, now: float, dt: float, open_polls: Sequence[tuple[str, int]]
    ) -> list[tuple[Claims, Message]]:
        rng, n = self._rng, len(self.users)
        out: list[tuple[Claims, Message]] = []
        if not n:
            return out
        for _ in range(_poisson(rng, COMMENTS_PER_USER_S * n * dt)):
            out.append((rng.choice(self.users), Comment(self._id(), rng.choice(PHRASES))))
        for _ in range(_poisson(rng, LIKES_PER_USER_S * n * dt)):
            out.append((rng.choice(self.users), Like(self._id(), rng.randint(1, 5))))
        for poll, options in open_polls:
            for _ in range(_poisson(rng, VOTES_PER_USER_S * n * dt)):
                user = rng.choice(self.users)
                if (user.user, poll) not in self.voted:
                    self.voted.add((user.user, poll))
                    # A lopsided favourite makes the bars worth watching.
                    option = min(options - 1, int(rng.expovariate(1.2)))
                    out.append((user, Vote(self._id(), poll, option)))
        return out


def _poisson(rng: random.Random, mean: float) -> int:
    """Events in an interval with ``mean`` expected (Knuth; means here are small)."""
    if mean <= 0:
        return 0
    limit, k, p = pow(2.718281828459045, -min(mean, 30.0)), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
