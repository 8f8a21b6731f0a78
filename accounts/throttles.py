"""The sign-in throttles: django-ratelimit on the shared cache, and a per-process
stand-in while that cache is unreachable.

With Redis down the shared counters cannot be read. Refusing every sign-in would turn a
cache outage into a full outage (docs/product.md#reliability), and counting nothing would
let anyone send unlimited sign-in emails meanwhile. So each process keeps its own
fixed-window counts at the same rates until the cache answers again: the limit then holds
per process, that is at most the rate times the number of worker processes, and an error
is logged at most every few seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest
from django_ratelimit import ALL
from django_ratelimit.core import _split_rate, is_ratelimited
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

from apikeys.redisconn import ErrorLog

Key = Callable[[str, HttpRequest], str]

_errors = ErrorLog(logger_name="accounts.throttles")
# What the cache raises when its Redis is unreachable.
CACHE_ERRORS: tuple[type[BaseException], ...] = (ConnectionInterrupted, RedisError, OSError)


class LocalWindows:
    """Fixed-window counters in this process's memory, bounded in size."""

    MAX_ENTRIES = 50_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, int, int], int] = {}

    def hit(self, group: str, value: str, rate: str, *, now: float | None = None) -> bool:
        """Count one request of `value` in `group`; True once it is over `rate`."""
        limit, period = _split_rate(rate)
        window = int((time.time() if now is None else now) // period)
        name = (group, value, period, window)
        with self._lock:
            if name not in self._counts and len(self._counts) >= self.MAX_ENTRIES:
                self._forget_before(window, period)
            count = self._counts.get(name, 0) + 1
            self._counts[name] = count
        return count > limit

    def _forget_before(self, window: int, period: int) -> None:
        stale = [n for n in self._counts if n[2] != period or n[3] < window]
        for name in stale:
            del self._counts[name]
        if len(self._counts) >= self.MAX_ENTRIES:  # one window this full: start it over
            self._counts.clear()

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()


local_windows = LocalWindows()


def limited(request: HttpRequest, *, group: str, key: Key, rate: str) -> bool:
    """Whether the sign-in throttle `group` trips for this request (and count it)."""
    try:
        return bool(
            is_ratelimited(
                request=request, group=group, key=key, rate=rate, method=ALL, increment=True
            )
        )
    except CACHE_ERRORS as exc:
        _errors.error("throttle", "Cache unreachable: sign-in throttles count in this process", exc)
        return local_windows.hit(group, str(key(group, request)), rate)


def reset_local(*_: Any) -> None:
    local_windows.clear()
