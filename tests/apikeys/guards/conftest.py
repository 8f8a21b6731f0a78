"""Fixtures for the API guards: a real Redis, both backends, servers.

Tests that need Redis use the server of `REDIS_URL` when it is set, else one of their own
(`redis-server` on a free loopback port). A test that stops Redis mid-test is marked
`stops_redis` and always gets a server of its own, so it never stops a shared one. Without
`redis-server` those tests are skipped with the package to install (tests/programs.py).
Tests marked with the `backend` fixture run once on the embedded default (local memory) and
once on Redis.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from redis.connection import AbstractConnection

from apikeys import usage
from apikeys.models import ApiKey
from orgs.actors import Actor
from orgs.models import Organization
from tests.apikeys.api.conftest import ApiClient
from tests.clock import FrozenClock
from tests.factories import ApiKeyFactory
from tests.programs import REDIS, require


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway redis-server on loopback that a test can stop and start again."""

    def __init__(self, workdir: Path, binary: str) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def start(self) -> None:
        binary = self.binary
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def freeze(self) -> None:
        """Unreachable but keeping its data, as behind a network outage (SIGSTOP)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class ExternalRedis(RedisServer):
    """The Redis of `REDIS_URL`: shared with the rest of the run, never stopped by a test."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.process = None

    @property
    def url(self) -> str:
        return self._url

    @property
    def running(self) -> bool:
        return True

    def start(self) -> None:
        pass

    def stop(self) -> None:
        raise RuntimeError("A test that stops Redis must be marked @pytest.mark.stops_redis.")


@pytest.fixture(scope="session")
def own_redis_server() -> Iterator[RedisServer]:
    """A redis-server process of this test run's own, which tests may stop and start."""
    binary = require(REDIS)
    workdir = Path(tempfile.mkdtemp(prefix="latchkey-redis-"))
    server = RedisServer(workdir, binary)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_server(request: pytest.FixtureRequest) -> RedisServer:
    """`REDIS_URL`'s server when set (unless the test stops Redis), else our own."""
    url = os.environ.get("REDIS_URL", "")
    if url and request.node.get_closest_marker("stops_redis") is None:
        return ExternalRedis(url)
    server: RedisServer = request.getfixturevalue("own_redis_server")
    return server


def redis_settings(url: str, prefix: str) -> dict[str, object]:
    return {
        "REDIS_URL": url,
        "CACHES": {
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": url,
                "KEY_PREFIX": prefix,
                "OPTIONS": {
                    "CLIENT_CLASS": "django_redis.client.DefaultClient",
                    "SOCKET_CONNECT_TIMEOUT": 1,
                    "SOCKET_TIMEOUT": 1,
                },
            }
        },
    }


LOCAL_SETTINGS: dict[str, object] = {
    "REDIS_URL": "",
    # Folding is driven by the tests, never by a background thread.
    "LATCHKEY_USAGE_FLUSH_SECONDS": 0,
    "CACHES": {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "latchkey-guards-test",
        }
    },
}


@pytest.fixture
def use_redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    """Point the guards (and the cache) at a real Redis for this test."""
    redis_server.ensure_running()
    prefix = "lkg" + uuid.uuid4().hex[:8]
    with override_settings(**redis_settings(redis_server.url, prefix)):
        from django.core.cache import cache

        cache.clear()
        yield redis_server
        if redis_server.running:
            cache.clear()


@pytest.fixture
def use_local() -> Iterator[None]:
    with override_settings(**LOCAL_SETTINGS):
        from django.core.cache import cache

        cache.clear()
        yield
        cache.clear()


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test on the embedded default and on Redis."""
    if request.param == "redis":
        request.getfixturevalue("use_redis")
    else:
        request.getfixturevalue("use_local")
    usage.discard_local()
    usage.discard_recent_local()
    yield str(request.param)
    usage.discard_local()
    usage.discard_recent_local()


@pytest.fixture(scope="module")
def template() -> Iterator[Any]:
    """A migrated SQLite file for the servers of one test module (tests/.../servers.py)."""
    from tests.apikeys.guards.servers import DatabaseTemplate

    made = DatabaseTemplate()
    yield made
    made.remove()


def project_root() -> Path:
    return Path(__file__).resolve().parents[3]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process of the project (server, script)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(extra)
    return env


# --- in-process API calls ------------------------------------------------------------------


ALL_SCOPES = ["api_keys:write", "usage:read", "organization:write", "members:write"]


def new_key(
    org: Organization, scopes: list[str] | None = None, name: str = "Integration"
) -> tuple[ApiKey, ApiClient]:
    """A key and the API client that sends it, adding no Idempotency-Key of its own (the
    guard tests name theirs)."""
    key, secret = ApiKeyFactory.pair(
        org=org, name=name, environment="test", scopes=ALL_SCOPES if scopes is None else scopes
    )
    client = ApiClient(secret)
    client.auto_idempotency = False
    return key, client


def set_limits(
    org: Organization,
    *,
    per_minute: int | None = None,
    burst: int | None = None,
    monthly: int | None = None,
) -> None:
    """Custom limits through the platform service (which invalidates the key cache)."""
    from django.db import transaction

    from platform_admin.services import org_set_limits

    with transaction.atomic():
        org_set_limits(
            org=org, per_minute=per_minute, burst=burst, monthly=monthly, actor=Actor.system()
        )


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The limiter's clock, held still (and moved by the test): no test depends on time."""
    from apikeys import ratelimit

    clock = FrozenClock(1_893_672_000.0)  # 2030-01-04 12:00:00 UTC, a minute boundary
    monkeypatch.setattr(ratelimit, "clock", clock)
    return clock


# --- Redis commands sent ------------------------------------------------------------------


class CommandLog:
    """Every command sent to Redis on any connection (pool or the hot path's own)."""

    def __init__(self) -> None:
        self.commands: list[bytes] = []

    def clear(self) -> None:
        self.commands.clear()

    @property
    def names(self) -> list[str]:
        return [c.split(b"\r\n")[2].decode().upper() for c in self.commands]


@pytest.fixture
def redis_commands(monkeypatch: pytest.MonkeyPatch) -> Iterator[CommandLog]:
    """The commands the test's own thread sends (what its requests cost), not those of
    background threads (the invalidation retrier of an earlier test, a lease pusher)."""
    log = CommandLog()
    original = AbstractConnection.send_packed_command
    requests_thread = threading.get_ident()

    def recording(self: Any, command: Any, check_health: bool = True) -> None:
        if threading.get_ident() == requests_thread:
            parts = command if isinstance(command, list) else [command]
            payload = b"".join(p if isinstance(p, bytes) else bytes(p) for p in parts)
            for chunk in payload.split(b"\r\n*")[0:1]:
                log.commands.append(chunk)
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", recording)
    yield log
