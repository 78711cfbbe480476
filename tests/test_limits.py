"""The token bucket, driven by an injected clock."""

from chat_ws.limits import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert all(bucket.allow() for _ in range(5))
    assert not bucket.allow()
    assert bucket.strikes == 1
    clock.now += 0.1  # one token back
    assert bucket.allow()
    assert bucket.strikes == 0
    assert not bucket.allow()


def test_tokens_never_exceed_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=100, burst=3, clock=clock)
    clock.now += 1000
    assert sum(bucket.allow() for _ in range(10)) == 3
    assert bucket.strikes == 7
