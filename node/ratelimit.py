"""Per-peer rate limits: a token bucket per sender, answered with a retry-after hint when empty."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens per second up to `burst`; each request takes one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._updated = float(burst), clock()

    def take(self) -> float:
        """0 when a token was taken; otherwise the seconds until one will be there (retry-after)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


class PeerRateLimiter:
    """One bucket per peer, made on first use; peers unseen for a while are forgotten."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic, max_peers: int = 10_000):
        self.rate, self.burst, self._clock, self.max_peers = rate, burst, clock, max_peers
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, peer: str) -> float:
        """0 when peer may go ahead; else seconds to wait before retrying."""
        bucket = self._buckets.get(peer)
        if bucket is None:
            if len(self._buckets) >= self.max_peers:  # forget the oldest peer rather than grow without bound
                self._buckets.pop(next(iter(self._buckets)))
            bucket = self._buckets[peer] = TokenBucket(self.rate, self.burst, self._clock)
        return bucket.take()
