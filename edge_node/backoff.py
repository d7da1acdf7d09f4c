"""The one reconnect backoff of the project: exponential, capped, with full jitter.

Pure: ``next_delay()`` draws from an injected ``random`` so tests are deterministic.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial_s: float = 0.5
    max_s: float = 10.0
    rng: _random.Random = field(default_factory=_random.Random)
    attempts: int = 0

    def next_delay(self) -> float:
        """Delay before the next attempt: uniform in [cap/2, cap], cap doubling per failure."""
        cap = min(self.max_s, self.initial_s * 2**self.attempts)
        self.attempts += 1
        return self.rng.uniform(cap / 2, cap)

    def reset(self) -> None:
        """Call after a connection has worked: the next failure starts small again."""
        self.attempts = 0
