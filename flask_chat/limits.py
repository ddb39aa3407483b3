"""In-process rate limits for one connection's frames.

Sends are limited per user in Redis (every instance shares the budget); frames that
store nothing (typing, read marks, catch-up requests, pings, the bridge's subscribe and
event frames) are limited per connection here, with no Redis round trip: a flood costs
the flooder's own connection, never another user's.
"""

from __future__ import annotations

import time


class TokenBucket:
    """``rate`` actions a second on average, ``burst`` at once. A rate of 0 allows all."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        """Spend a token if there is one; False means "over the limit"."""
        if not self.rate:
            return True
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
