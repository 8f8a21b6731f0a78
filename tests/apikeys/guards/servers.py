"""A multi-process Latchkey for tests: gunicorn workers on loopback, a SQLite file, Redis.

The server runs in child processes with its own database file (migrated once per test
session and copied per server), so the test process reaches it only over HTTP and
through `run_django` scripts, like a client and an operator would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.apikeys.guards.conftest import child_env, free_port, project_root

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        return str(self.json().get("error", {}).get("code", ""))


def http(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: Any = None,
    timeout: float = 30,
) -> HttpResult:
    data = None
    all_headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpResult(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return HttpResult(error.code, dict(error.headers.items()), error.read())


@dataclass
class Server:
    """gunicorn with `workers` processes against `db_path` and `redis_url`."""

    db_path: Path
    redis_url: str
    workers: int = 3
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)  # more environment

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        extra = {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": f"sqlite:///{self.db_path}",
            # Unique per template and copy: servers of other modules share the same Redis.
            "CACHE_KEY_PREFIX": (
                f"lksrv{self.db_path.parent.parent.name[-8:]}{self.db_path.parent.name[-4:]}"
            ),
            "LATCHKEY_USAGE_FLUSH_SECONDS": "0",
            "CELERY_TASK_ALWAYS_EAGER": "true",
            "CELERY_BROKER_URL": "memory://",
            # The host's lease table beside the database (removed with it).
            "LATCHKEY_LEASE_TABLE": str(self.db_path.with_suffix(".leases")),
        }
        if self.redis_url:
            extra["REDIS_URL"] = self.redis_url
        return child_env(**{**extra, **self.settings})

    def start(self) -> None:
        self.log_path = self.db_path.with_suffix(f".{self.port}.log")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                GUNICORN,
                "--config",
                str(project_root() / "tools" / "gunicorn.conf.py"),
                "--workers",
                str(self.workers),
                "--worker-class",
                "sync",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--graceful-timeout",
                "10",
                "config.wsgi:application",
            ],
            cwd=project_root(),
            env=self.env(),
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("gunicorn exited:\n" + self.log_path.read_text()[-3000:])
            try:
                if http("GET", self.base + "/api/v1/ping", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("gunicorn did not answer in 60 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: graceful, workers finish their requests
            self.process.wait(timeout=30)
        self.process = None

    def call(self, method: str, path: str, **kwargs: Any) -> HttpResult:
        return http(method, self.base + path, **kwargs)

    def run_django(self, code: str) -> str:
        """Run `code` with Django set up on this server's database; returns its stdout."""
        script = "import django\ndjango.setup()\n" + textwrap.dedent(code)
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=project_root(),
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-3000:])
        return result.stdout


class DatabaseTemplate:
    """A migrated SQLite file, made once, copied for each server."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="latchkey-srv-"))
        self.path = self.dir / "template.sqlite3"
        env = child_env(
            DJANGO_SETTINGS_MODULE="config.settings", DATABASE_URL=f"sqlite:///{self.path}"
        )
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=project_root(),
            env=env,
            check=True,
            timeout=300,
        )
        self.count = 0

    def copy(self) -> Path:
        self.count += 1
        target_dir = self.dir / f"db{self.count:04d}"
        target_dir.mkdir()
        target = target_dir / "latchkey.sqlite3"
        shutil.copyfile(self.path, target)
        return target

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


CREATE_KEY = """
from apikeys.services import apikey_create
from orgs.actors import Actor
from orgs.models import Organization
org, _ = Organization.objects.get_or_create(slug={slug!r}, defaults={{"name": {slug!r}}})
Organization.objects.filter(pk=org.pk).update(
    custom_per_minute={per_minute}, custom_burst={burst}, custom_monthly={monthly}
)
key, secret = apikey_create(
    org=org, name="srv", environment="test", scopes={scopes!r}, actor=Actor.system()
)
print(key.public_id)
print(secret)
"""


def create_key(
    server: Server,
    *,
    slug: str = "acme",
    scopes: list[str] | None = None,
    per_minute: int | None = None,
    burst: int | None = None,
    monthly: int | None = None,
) -> tuple[str, str]:
    """(public id, secret) of a new test key of org `slug` with the given custom limits."""
    out = server.run_django(
        CREATE_KEY.format(
            slug=slug,
            scopes=scopes if scopes is not None else ["api_keys:write", "usage:read"],
            per_minute=per_minute,
            burst=burst,
            monthly=monthly,
        )
    )
    public_id, secret = out.strip().splitlines()[-2:]
    return public_id, secret
