"""Per-connection rate limiting: a token bucket with a count of refused messages in a row."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Allows ``rate`` messages per second on average and ``burst`` at once."""

    __slots__ = ("rate", "burst", "tokens", "stamp", "strikes", "clock")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.clock = clock
        self.stamp = clock()
        self.strikes = 0  # messages refused since the last one allowed

    def allow(self) -> bool:
        """Take one token if there is one; count a strike otherwise."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.strikes = 0
            return True
        self.strikes += 1
        return False
