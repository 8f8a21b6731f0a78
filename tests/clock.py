"""The tests' one frozen clock.

A moment in epoch seconds (`now`) that a test moves by hand. It stands in for each clock
the code reads: the limiter's (`apikeys.ratelimit.clock`: calling it gives seconds),
Django's `timezone.now` (`datetime()`), django-otp's `time` module (`time()`), the
leak endpoint's (`apikeys.leaks._now`), and the lease code's steady clock (its `time`
module's `monotonic()`, with a clock made at `time.monotonic()`; its `sleep` stays real).
"""

from __future__ import annotations

import time as _time
from datetime import UTC, datetime, timedelta


class FrozenClock:
    def __init__(self, now: float | None = None) -> None:
        self.now = float(_time.time() if now is None else now)

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    sleep = staticmethod(_time.sleep)

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, tz=UTC)

    def advance(self, delta: timedelta | float) -> None:
        self.now += delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
