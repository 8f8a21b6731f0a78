"""PostgreSQL unreachable: 503 `service_unavailable` with `Retry-After`, never a 500, and
the workers recover by themselves when it is back (docs/product.md#reliability).

The test runs its own PostgreSQL cluster (initdb into a temporary directory, on a free
loopback port) so that it can stop and start it, and gunicorn with two workers on it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apikeys.guards.conftest import child_env, free_port, project_root
from tests.apikeys.guards.servers import Server, create_key
from tests.programs import POSTGRES, require

pytestmark = pytest.mark.django_db(transaction=False)


class PostgresServer:
    """A throwaway PostgreSQL cluster a test may stop and start (as `postgres` when root)."""

    def __init__(self, initdb: str) -> None:
        self.bindir = Path(initdb).parent
        self.dir = Path(tempfile.mkdtemp(prefix="latchkey-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"
        )

    def _run(self, *command: str) -> None:
        args = list(command)
        if self.as_root:
            args = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(args)]
        subprocess.run(args, check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/latchkey"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=40"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "-o",
            options,
            "start",
        )

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def create_database(self) -> None:
        self._run(
            str(self.bindir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "latchkey",
        )

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(require(POSTGRES))
    server.start()
    server.create_database()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=project_root(),
        env=child_env(DATABASE_URL=server.url),
        check=True,
        timeout=300,
    )
    yield server
    server.remove()


@pytest.fixture
def web(postgres: PostgresServer, tmp_path: Path) -> Iterator[Server]:
    srv = Server(
        db_path=tmp_path / "unused.sqlite3",
        redis_url="",
        workers=2,
        settings={
            "DATABASE_URL": postgres.url,
            "DEBUG": "False",
            "LATCHKEY_SKIP_PRODUCTION_CHECKS": "1",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DB_CONN_MAX_AGE": "60",
        },
    )
    srv.start()
    yield srv
    srv.stop()


def test_a_database_outage_is_503_with_retry_after_and_workers_recover(
    postgres: PostgresServer, web: Server
) -> None:
    _, secret = create_key(web, scopes=["members:read"], per_minute=0, burst=0, monthly=0)
    key = {"Authorization": f"Bearer {secret}"}
    assert web.call("GET", "/api/v1/members", headers=key).status == 200

    postgres.stop()
    try:
        for _ in range(4):  # every worker, its pooled connection broken
            api = web.call("GET", "/api/v1/members", headers=key)
            assert api.status == 503, api.body[:300]
            assert api.code == "service_unavailable"
            assert int(api.headers["Retry-After"]) > 0
        page = web.call("GET", "/invitations/" + "A" * 43 + "/")
        assert page.status == 503 and int(page.headers["Retry-After"]) > 0
        assert b"Temporarily unavailable" in page.body
    finally:
        postgres.start()

    # Back without restarting a worker.
    statuses = {web.call("GET", "/api/v1/members", headers=key).status for _ in range(6)}
    assert statuses == {200}
