"""Two app hosts sharing one PostgreSQL and one Redis, each in its own network namespace
(docs/deployment.md, "Several machines").

The test builds the network itself: three namespaces (a data host running PostgreSQL and
Redis, two app hosts running gunicorn) joined by veth pairs to a bridge in the test's own
namespace, which drives both app hosts at once. It checks what several machines must not
change: a key's limits are exact across hosts, and a revocation is refused on both hosts'
next requests. It needs root and iproute2; it removes everything it created.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.apikeys.guards.conftest import child_env, project_root
from tests.apikeys.guards.servers import GUNICORN, HttpResult, http
from tests.programs import IPROUTE, POSTGRES, REDIS, require, require_all

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=False)]

APP_PORT = 8000
PG_PORT = 5432
REDIS_PORT = 6379


def _run(*args: str, timeout: float = 60) -> str:
    return subprocess.run(
        list(args), check=True, capture_output=True, text=True, timeout=timeout
    ).stdout


@dataclass
class Network:
    """A bridge in this namespace and one namespace per host, each on a veth pair."""

    tag: str
    subnet: str  # "10.231.N"
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    def address(self, host: int) -> str:
        return f"{self.subnet}.{host}"

    def create(self) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self.links.append(self.bridge)
        _run("ip", "addr", "add", f"{self.address(254)}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")

    def add_host(self, name: str, host: int) -> str:
        namespace = f"{self.tag}{name}"
        outside, inside = f"{self.tag}{name}o", f"{self.tag}{name}i"
        _run("ip", "netns", "add", namespace)
        self.namespaces.append(namespace)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        self.links.append(outside)
        _run("ip", "link", "set", inside, "netns", namespace)
        _run("ip", "link", "set", outside, "master", self.bridge)
        _run("ip", "link", "set", outside, "up")
        inns = ("ip", "netns", "exec", namespace)
        _run(*inns, "ip", "addr", "add", f"{self.address(host)}/24", "dev", inside)
        _run(*inns, "ip", "link", "set", inside, "up")
        _run(*inns, "ip", "link", "set", "lo", "up")
        return namespace

    def remove(self) -> None:
        for namespace in reversed(self.namespaces):
            with contextlib.suppress(subprocess.CalledProcessError):
                _run("ip", "netns", "delete", namespace)
        for link in reversed(self.links):
            with contextlib.suppress(subprocess.CalledProcessError):
                _run("ip", "link", "delete", link)


def in_namespace(namespace: str, *command: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, *command]


@dataclass
class Host:
    """gunicorn in `namespace`, listening on `address`."""

    namespace: str
    address: str
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://{self.address}:{APP_PORT}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                in_namespace(
                    self.namespace,
                    GUNICORN,
                    "--config",
                    str(project_root() / "tools" / "gunicorn.conf.py"),
                    "--workers",
                    "2",
                    "--worker-class",
                    "sync",
                    "--bind",
                    f"{self.address}:{APP_PORT}",
                    "config.wsgi:application",
                ),
                cwd=project_root(),
                env=self.env,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("gunicorn exited:\n" + self.log.read_text()[-3000:])
            with contextlib.suppress(OSError):
                if http("GET", self.base + "/api/v1/ping", timeout=2).status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("gunicorn did not answer in 60 s:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def call(self, path: str, secret: str) -> HttpResult:
        return http("GET", self.base + path, headers={"Authorization": f"Bearer {secret}"})


@dataclass
class Cluster:
    hosts: list[Host]
    env: dict[str, str]

    def django(self, code: str) -> str:
        """Run `code` with Django set up on the shared database, from the test's namespace."""
        script = "import django\ndjango.setup()\n" + code
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=project_root(),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-3000:])
        return result.stdout


def _network_tools() -> None:
    if os.geteuid() != 0:
        if require_all():
            pytest.fail("The two-host test needs root (network namespaces).")
        pytest.skip("network namespaces need root")
    require(IPROUTE)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    _network_tools()
    initdb, redis_server = require(POSTGRES), require(REDIS)
    tag = f"lk{os.getpid() % 100000}"
    network = Network(tag=tag, subnet=f"10.231.{os.getpid() % 200 + 20}")
    workdir = Path(tempfile.mkdtemp(prefix="latchkey-hosts-"))
    shutil.chown(workdir, "postgres", "postgres")
    processes: list[subprocess.Popen[bytes]] = []
    hosts: list[Host] = []
    pg_data = workdir / "pg"
    bindir = Path(initdb).parent

    def as_postgres(*command: str, namespace: str | None = None) -> None:
        inner = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(command)]
        _run(*(in_namespace(namespace, *inner) if namespace else inner), timeout=120)

    try:
        network.create()
        data_ns = network.add_host("d", 1)
        app_ns = [network.add_host("a", 2), network.add_host("b", 3)]
        data = network.address(1)

        as_postgres(str(bindir / "initdb"), "-D", str(pg_data), "-U", "postgres", "-A", "trust")
        with (pg_data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {network.subnet}.0/24 trust\n")
        as_postgres(
            str(bindir / "pg_ctl"),
            "-D",
            str(pg_data),
            "-l",
            str(workdir / "pg.log"),
            "-w",
            "-o",
            f"-p {PG_PORT} -k {workdir} -c listen_addresses={data} -c fsync=off",
            "start",
            namespace=data_ns,
        )
        as_postgres(
            str(bindir / "createdb"), "-h", data, "-p", str(PG_PORT), "-U", "postgres", "latchkey"
        )
        processes.append(
            subprocess.Popen(
                in_namespace(
                    data_ns,
                    redis_server,
                    "--bind",
                    data,
                    "--port",
                    str(REDIS_PORT),
                    "--protected-mode",
                    "no",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        env = child_env(
            DJANGO_SETTINGS_MODULE="config.settings",
            DATABASE_URL=f"postgres://postgres@{data}:{PG_PORT}/latchkey",
            REDIS_URL=f"redis://{data}:{REDIS_PORT}/0",
            CACHE_KEY_PREFIX=f"hosts{tag}",
            LATCHKEY_USAGE_FLUSH_SECONDS="0",
            CELERY_TASK_ALWAYS_EAGER="true",
            CELERY_BROKER_URL="memory://",
            ALLOWED_HOSTS="*",
        )
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=project_root(),
            env=env,
            check=True,
            timeout=300,
        )
        for index, namespace in enumerate(app_ns):
            host = Host(
                namespace=namespace,
                address=network.address(2 + index),
                # Each host its own lease table, as on separate machines (ADR 0090).
                env={**env, "LATCHKEY_LEASE_TABLE": str(workdir / f"leases{index}")},
                log=workdir / f"app{index}.log",
            )
            hosts.append(host)
            host.start()
        yield Cluster(hosts=hosts, env=env)
    finally:
        for host in hosts:
            host.stop()
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
        if (pg_data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                as_postgres(str(bindir / "pg_ctl"), "-D", str(pg_data), "-m", "fast", "-w", "stop")
        network.remove()
        shutil.rmtree(workdir, ignore_errors=True)


CREATE_KEY = """
from apikeys.services import apikey_create
from orgs.actors import Actor
from orgs.models import Organization
org, _ = Organization.objects.get_or_create(slug={slug!r}, defaults={{"name": {slug!r}}})
Organization.objects.filter(pk=org.pk).update(
    custom_per_minute=0, custom_burst=0, custom_monthly={monthly}
)
key, secret = apikey_create(
    org=org, name="k", environment="test", scopes=["members:read"], actor=Actor.system()
)
print(key.public_id)
print(secret)
"""


def new_key(cluster: Cluster, slug: str, monthly: int) -> tuple[str, str]:
    out = cluster.django(CREATE_KEY.format(slug=slug, monthly=monthly))
    public_id, secret = out.strip().splitlines()[-2:]
    return public_id, secret


def both_at_once(cluster: Cluster, secret: str, per_host: int) -> list[HttpResult]:
    calls = [host for host in cluster.hosts for _ in range(per_host)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda host: host.call("/api/v1/members", secret), calls))


def test_a_quota_is_exact_across_hosts(cluster: Cluster) -> None:
    _, secret = new_key(cluster, "quota-org", monthly=60)
    results = both_at_once(cluster, secret, per_host=50)
    statuses = sorted(r.status for r in results)
    assert statuses.count(200) == 60, statuses
    assert statuses.count(429) == 40
    assert {r.code for r in results if r.status == 429} == {"quota_exceeded"}
    # Each host admitted part of the 60: both enforced the one shared count.
    admitted = [sum(1 for r in results[i * 50 : (i + 1) * 50] if r.status == 200) for i in range(2)]
    assert all(n > 0 for n in admitted), admitted


def test_leases_on_both_hosts_never_pass_a_quota_and_give_back_what_they_did_not_use(
    cluster: Cluster,
) -> None:
    """A quota large enough for admission leases (a 256th of what is left is a block of
    up to 11): each host admits from its own leases, together they admit no more than the
    quota, and once the leases have ended and their unused tokens are back, exactly the
    quota is admitted."""
    quota = 3000
    _, secret = new_key(cluster, "leased-org", monthly=quota)
    results = both_at_once(cluster, secret, per_host=1700)
    statuses = Counter(r.status for r in results)
    assert set(statuses) == {200, 429}
    assert statuses[200] <= quota
    assert {r.code for r in results if r.status == 429} == {"quota_exceeded"}
    # The hosts did admit under leases (each grant leaves a marker).
    conn = redis.Redis.from_url(cluster.env["REDIS_URL"])
    assert conn.keys(f"{cluster.env['CACHE_KEY_PREFIX']}:g:lease:*")
    time.sleep(2.0)  # the leases' second has ended and their pushes have run
    admitted = statuses[200]
    for host in cluster.hosts * 500:
        if host.call("/api/v1/members", secret).status != 200:
            break
        admitted += 1
    assert admitted == quota


def test_a_revocation_is_refused_on_both_hosts_next_requests(cluster: Cluster) -> None:
    public_id, secret = new_key(cluster, "revoke-org", monthly=0)
    assert {r.status for r in both_at_once(cluster, secret, per_host=20)} == {200}
    cluster.django(
        "from apikeys.models import ApiKey\n"
        "from apikeys.services import apikey_revoke\n"
        "from orgs.actors import Actor\n"
        f"apikey_revoke(key=ApiKey.objects.get(public_id={public_id!r}), actor=Actor.system())\n"
    )
    after = both_at_once(cluster, secret, per_host=10)
    assert {(r.status, r.code) for r in after} == {(401, "api_key_revoked")}
