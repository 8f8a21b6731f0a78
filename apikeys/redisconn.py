"""The raw Redis connection behind the API guards (verification cache, limits, usage).

The guards talk to Redis directly, through the connection pool django-redis already holds
for the default cache, because each of them must do its work in one round trip (a Lua
script or an MGET), which Django's cache API cannot express. Without `REDIS_URL` (the
embedded default) `client()` returns None and every guard uses its local-memory twin.

Keys share the cache's prefix (`lk`, or `lktest` in tests) so one Redis database can serve
several deployments or test runs, and `cache.clear()` (a FLUSHDB on django-redis) resets
the guards' state along with the cache's.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError

logger = logging.getLogger("apikeys.guards")

# Redis failures that must degrade (fail open for limits, fall back to the database for
# authentication), never turn into a 500. OSError covers a socket torn down mid-call.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)


def enabled() -> bool:
    return bool(getattr(settings, "REDIS_URL", ""))


def client() -> Any | None:
    """The shared redis-py client of the default cache, or None on the embedded default."""
    if not enabled():
        return None
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def prefix() -> str:
    """The namespace of every guard key: the cache's KEY_PREFIX, e.g. `lk`."""
    return str(settings.CACHES["default"].get("KEY_PREFIX") or "lk")


def rkey(*parts: object) -> str:
    return ":".join((prefix(), "g", *(str(p) for p in parts)))


class ErrorLog:
    """Logs a Redis outage at ERROR level at most once per `interval` seconds per topic.

    While Redis is down every request degrades the same way; one line per topic and
    interval says so without flooding the log.
    """

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def error(self, topic: str, message: str, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(topic)
            if last is not None and now - last < self.interval:
                return
            self._last[topic] = now
        logger.error("%s (%s: %s)", message, type(exc).__name__, exc)


error_log = ErrorLog()
