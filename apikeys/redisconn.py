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

import contextlib
import hashlib
import logging
import os
import threading
import time
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from redis.exceptions import DataError, NoScriptError, RedisError

logger = logging.getLogger("apikeys.guards")

# Redis failures that must degrade (fail open for limits, fall back to the database for
# authentication), never turn into a 500. OSError covers a socket torn down mid-call.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)


def enabled() -> bool:
    return bool(getattr(settings, "REDIS_URL", ""))


class _Memo(threading.local):
    generation = -1
    client: Any = None
    prefix = ""


_memo = _Memo()
# Bumped when the settings the guards read change (tests switch Redis servers).
_generation = 0


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    global _generation
    if setting in ("CACHES", "REDIS_URL"):
        _generation += 1


setting_changed.connect(_settings_changed, dispatch_uid="apikeys.redisconn")


def _current() -> _Memo:
    memo = _memo
    if memo.generation != _generation:
        memo.generation = _generation
        memo.prefix = str(settings.CACHES["default"].get("KEY_PREFIX") or "lk")
        memo.client = None
        if enabled():
            from django_redis import get_redis_connection

            memo.client = get_redis_connection("default")
    return memo


def settings_generation() -> int:
    """Changes whenever the settings behind `client()` and `prefix()` change."""
    return _generation


def client() -> Any | None:
    """The shared redis-py client of the default cache, or None on the embedded default."""
    return _current().client


def prefix() -> str:
    """The namespace of every guard key: the cache's KEY_PREFIX, e.g. `lk`."""
    return _current().prefix


def rkey(*parts: object) -> str:
    return ":".join((_current().prefix, "g", *[str(p) for p in parts]))


class ErrorLog:
    """Logs a Redis outage at ERROR level at most once per `interval` seconds per topic.

    While Redis is down every request degrades the same way; one line per topic and
    interval says so without flooding the log.
    """

    def __init__(self, interval: float = 10.0, logger_name: str = "apikeys.guards") -> None:
        self.interval = interval
        self.logger = logging.getLogger(logger_name)
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def error(self, topic: str, message: str, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(topic)
            if last is not None and now - last < self.interval:
                return
            self._last[topic] = now
        self.logger.error("%s (%s: %s)", message, type(exc).__name__, exc)


error_log = ErrorLog()


_registered_lock = threading.Lock()
_registered: dict[tuple[int, str], Any] = {}


def registered(conn: Any, source: str) -> Any:
    """redis-py's `Script` for Lua `source` on client `conn`, made once per client and
    source (it runs EVALSHA and loads the script on NOSCRIPT)."""
    key = (id(conn), source)
    script = _registered.get(key)
    if script is None:
        with _registered_lock:
            script = _registered.get(key)
            if script is None:
                script = _registered[key] = conn.register_script(source)
    return script


# --- the hot path's own connection (ADR 0064) --------------------------------------------
#
# A guarded request makes exactly one Redis call, one EVALSHA. Through redis-py's client
# that call costs about twice the CPU of the round trip itself (pool checkout and release
# under a lock, retry wrapper, per-argument encoding, the response callbacks). `run_script`
# sends it on a connection of the thread's own, made by the same pool's connection class
# and settings (address, password, database, TLS, timeouts, protocol), packed in one go.
# Any failure drops that connection; the next call makes a new one.


class FastScript:
    """A Lua script run by `run_script`: its source and SHA1, loaded on NOSCRIPT."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest().encode()  # noqa: S324 - Redis' id


class _Lane(threading.local):
    client: Any = None
    connection: Any = None
    pid: int = 0


_lane = _Lane()


def _encode(value: object) -> bytes:
    """An argument as redis-py encodes it (UTF-8; numbers as text); anything else is
    redis-py's `DataError`, never its `str()`."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int) and not isinstance(value, bool):
        return b"%d" % value
    if isinstance(value, float):
        return repr(value).encode()
    raise DataError(
        f"Invalid input of type: {type(value).__name__!r}. Convert to a bytes, string, int "
        "or float first."
    )


def pack(*parts: object) -> bytes:
    """One Redis command in RESP. The common kinds of argument are encoded here without a
    call (`_encode` for the rest): a usage push has over a thousand."""
    chunks = [b"*%d\r\n" % len(parts)]
    append = chunks.append
    for part in parts:
        kind = type(part)
        if kind is str:
            data = part.encode()  # type: ignore[attr-defined]
        elif kind is int:
            data = b"%d" % part  # type: ignore[str-format]
        elif kind is bytes:
            data = part
        else:
            data = _encode(part)
        append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(chunks)


def _connection(conn: Any) -> Any:
    if _lane.client is conn and _lane.pid == os.getpid() and _lane.connection is not None:
        return _lane.connection
    _drop()
    pool = conn.connection_pool
    connection = pool.connection_class(**pool.connection_kwargs)
    # Connected the way the pool connects its own: a Sentinel-managed connection asks the
    # Sentinels for the primary here (sending a command on an unconnected one would not).
    connection.connect()
    _lane.client, _lane.connection, _lane.pid = conn, connection, os.getpid()
    return connection


def _drop() -> None:
    connection = _lane.connection
    _lane.client = _lane.connection = None
    if connection is not None:
        with contextlib.suppress(Exception):  # a broken connection is dropped either way
            connection.disconnect()


_SEND_CHUNK = 64 * 1024


def run_script(conn: Any, script: FastScript, keys: list[object], args: list[object]) -> Any:
    """EVALSHA `script` on the calling thread's own connection to the Redis of `conn`
    (the shared client): one round trip, loading the script first if Redis lacks it.

    Raises what redis-py raises (`REDIS_ERRORS`), after dropping the connection.
    """
    packed = pack(b"EVALSHA", script.sha, len(keys), *keys, *args)
    # A large command (a usage push) goes in pieces, as redis-py sends it: the socket's
    # timeout bounds each `sendall`, not the whole command.
    chunks: list[Any] = [packed]
    if len(packed) > _SEND_CHUNK:
        view = memoryview(packed)
        chunks = [view[at : at + _SEND_CHUNK] for at in range(0, len(packed), _SEND_CHUNK)]
    connection = _connection(conn)
    try:
        connection.send_packed_command(chunks, check_health=False)
        try:
            return connection.read_response()
        except NoScriptError:
            conn.script_load(script.source)
            connection.send_packed_command(chunks, check_health=False)
            return connection.read_response()
    except BaseException:
        _drop()
        raise
