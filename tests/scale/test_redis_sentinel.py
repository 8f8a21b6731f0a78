"""Redis behind Sentinel: gunicorn follows a failover by itself (docs/deployment.md,
"Redis high availability").

A primary, a replica and one Sentinel (quorum 1) on loopback; gunicorn with
`REDIS_URL=redis://latchkey/0` and `REDIS_SENTINELS`. The primary is stopped; once the
Sentinel has promoted the replica, limits are counted there and a revocation made after
the failover is refused on the next requests.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apikeys.guards.conftest import free_port
from tests.apikeys.guards.conftest import template as template  # the fixture
from tests.apikeys.guards.servers import DatabaseTemplate, Server, create_key
from tests.programs import REDIS, require

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=False)]

SERVICE = "latchkey"


def _ask(port: int, *command: str) -> bytes:
    """One command in Redis's inline protocol; the raw reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall((" ".join(command) + "\r\n").encode())
        time.sleep(0.05)
        return sock.recv(65536)


def _wait(what: str, check: object, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Trio:
    """Primary, replica and one Sentinel, each a process of this test."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir = binary, workdir
        self.primary, self.replica, self.sentinel = free_port(), free_port(), free_port()
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def _redis(self, port: int, *extra: str) -> None:
        self.processes[port] = subprocess.Popen(
            [
                *(self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--dir", str(self.workdir), *extra),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait(f"redis on {port}", lambda: _ask(port, "PING").startswith(b"+PONG"))

    def start(self) -> None:
        self._redis(self.primary)
        self._redis(self.replica, "--replicaof", "127.0.0.1", str(self.primary))
        conf = self.workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
        )
        self.processes[self.sentinel] = subprocess.Popen(
            [self.binary, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait("the sentinel", lambda: str(self.primary).encode() in self.primary_address())
        _wait(
            "the replica in sync",
            lambda: b"master_link_status:up" in _ask(self.replica, "INFO", "replication"),
        )

    def primary_address(self) -> bytes:
        return _ask(self.sentinel, "SENTINEL", "get-master-addr-by-name", SERVICE)

    def stop(self, port: int) -> None:
        process = self.processes.pop(port, None)
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(timeout=10)

    def stop_all(self) -> None:
        for port in list(self.processes):
            self.stop(port)


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[Trio]:
    trio = Trio(require(REDIS), tmp_path)
    try:
        trio.start()
        yield trio
    finally:
        trio.stop_all()


def test_gunicorn_follows_a_sentinel_failover(trio: Trio, template: DatabaseTemplate) -> None:
    server = Server(
        db_path=template.copy(),
        redis_url=f"redis://{SERVICE}/0",
        workers=2,
        settings={"REDIS_SENTINELS": f"127.0.0.1:{trio.sentinel}"},
    )
    server.start()
    try:
        public_id, secret = create_key(server, scopes=["members:read"], per_minute=0, burst=0)
        key = {"Authorization": f"Bearer {secret}"}
        assert server.call("GET", "/api/v1/members", headers=key).status == 200
        # The guards write to the primary the Sentinel names.
        assert b":g:" in _ask(trio.primary, "KEYS", "*")

        trio.stop(trio.primary)
        _wait(
            "the replica's promotion",
            lambda: str(trio.replica).encode() in trio.primary_address(),
        )
        # Both workers reconnect by themselves (a request or two may fail open meanwhile).
        _wait(
            "the workers on the new primary",
            lambda: (
                all(
                    server.call("GET", "/api/v1/members", headers=key).status == 200
                    for _ in range(4)
                )
                and b":g:" in _ask(trio.replica, "KEYS", "*")
            ),
        )

        # Exact limits on the new primary: a quota of 3 admits 3.
        _, quota_secret = create_key(
            server, slug="after", scopes=["members:read"], per_minute=0, burst=0, monthly=3
        )
        statuses = [
            server.call(
                "GET", "/api/v1/members", headers={"Authorization": f"Bearer {quota_secret}"}
            ).status
            for _ in range(5)
        ]
        assert statuses == [200, 200, 200, 429, 429]

        # A revocation after the failover reaches every worker through the new primary.
        server.run_django(
            "from apikeys.models import ApiKey\n"
            "from apikeys.services import apikey_revoke\n"
            "from orgs.actors import Actor\n"
            f"apikey_revoke(key=ApiKey.objects.get(public_id={public_id!r}),"
            " actor=Actor.system())\n"
        )
        refused = {server.call("GET", "/api/v1/members", headers=key).code for _ in range(6)}
        assert refused == {"api_key_revoked"}
    except AssertionError:
        assert server.log_path is not None
        print(server.log_path.read_text()[-6000:])
        raise
    finally:
        server.stop()
