"""The guards with several worker processes: gunicorn on loopback, Redis, a SQLite file.

These tests talk to the server over HTTP only, like integrators, and act as an operator
through `run_django` scripts (revoke, suspend, fold usage).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from tests.apikeys.guards.conftest import RedisServer
from tests.apikeys.guards.servers import DatabaseTemplate, HttpResult, Server, create_key

pytestmark = pytest.mark.django_db(transaction=False)


@pytest.fixture
def server(template: DatabaseTemplate, redis_server: RedisServer) -> Iterator[Server]:
    redis_server.ensure_running()
    srv = Server(db_path=template.copy(), redis_url=redis_server.url, workers=3)
    srv.start()
    yield srv
    srv.stop()
    redis_server.ensure_running()


def bearer(secret: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **extra}


def parallel(count: int, call: object) -> list[HttpResult]:
    with ThreadPoolExecutor(max_workers=12) as pool:
        return list(pool.map(lambda _: call(), range(count)))  # type: ignore[operator]


def test_two_processes_admit_no_more_than_the_starter_limits(
    template: DatabaseTemplate, redis_server: RedisServer
) -> None:
    srv = Server(db_path=template.copy(), redis_url=redis_server.url, workers=2)
    srv.start()
    try:
        _, secret = create_key(srv)
        results = parallel(150, lambda: srv.call("GET", "/api/v1/me", headers=bearer(secret)))
        assert {r.status for r in results} <= {200, 429}
        # Group the admitted requests by the minute window they were counted in.
        admitted = Counter(r.headers["X-RateLimit-Reset"] for r in results if r.status == 200)
        assert admitted and all(count <= 60 for count in admitted.values())
        refused = [r for r in results if r.status == 429]
        assert refused and all(r.code == "rate_limited" for r in refused)
        # An exact count: a monthly quota of 25 shared by both processes.
        _, quota_secret = create_key(srv, slug="quota", per_minute=0, burst=0, monthly=25)
        results = parallel(80, lambda: srv.call("GET", "/api/v1/me", headers=bearer(quota_secret)))
        statuses = Counter(r.status for r in results)
        assert statuses == {200: 25, 429: 55}
        assert {r.code for r in results if r.status == 429} == {"quota_exceeded"}
    finally:
        srv.stop()


def test_a_revoked_key_is_refused_by_every_worker_on_the_next_request(server: Server) -> None:
    public_id, secret = create_key(server)
    _, other_secret = create_key(server, slug="other", per_minute=0, burst=0, monthly=0)
    create_key(server, slug="acme", per_minute=0, burst=0, monthly=0)  # lift acme's limits
    warm = parallel(60, lambda: server.call("GET", "/api/v1/me", headers=bearer(secret)))
    assert {r.status for r in warm} == {200}
    server.run_django(
        f"""
        from apikeys.models import ApiKey
        from apikeys.services import apikey_revoke
        from orgs.actors import Actor
        apikey_revoke(key=ApiKey.objects.get(public_id={public_id!r}), actor=Actor.system())
        """
    )
    after = parallel(60, lambda: server.call("GET", "/api/v1/me", headers=bearer(secret)))
    assert {(r.status, r.code) for r in after} == {(401, "api_key_revoked")}
    # An org suspension reaches every worker too.
    server.run_django(
        """
        from django.db import transaction
        from apikeys.cache import invalidate_org
        from orgs.models import Organization, OrgStatus
        with transaction.atomic():
            org = Organization.objects.select_for_update().get(slug="other")
            org.status = OrgStatus.SUSPENDED
            org.save(update_fields=["status"])
            invalidate_org(org.pk)
        """
    )
    suspended = parallel(30, lambda: server.call("GET", "/api/v1/me", headers=bearer(other_secret)))
    assert {(r.status, r.code) for r in suspended} == {(403, "org_suspended")}


@pytest.mark.stops_redis
def test_redis_stopped_mid_test_gives_no_500_and_keeps_authentication(
    server: Server, redis_server: RedisServer
) -> None:
    _, secret = create_key(server, per_minute=0, burst=0, monthly=0)
    revoked_id, revoked_secret = create_key(server, slug="acme")
    assert server.call("GET", "/api/v1/me", headers=bearer(secret)).status == 200
    assert server.call("GET", "/api/v1/me", headers=bearer(revoked_secret)).status == 200
    redis_server.stop()
    ok = parallel(20, lambda: server.call("GET", "/api/v1/me", headers=bearer(secret)))
    assert {r.status for r in ok} == {200}
    server.run_django(
        f"""
        from apikeys.models import ApiKey
        from apikeys.services import apikey_revoke
        from orgs.actors import Actor
        apikey_revoke(key=ApiKey.objects.get(public_id={revoked_id!r}), actor=Actor.system())
        """
    )
    refused = parallel(20, lambda: server.call("GET", "/api/v1/me", headers=bearer(revoked_secret)))
    assert {(r.status, r.code) for r in refused} == {(401, "api_key_revoked")}
    unknown = server.call("GET", "/api/v1/me", headers=bearer("lk_test_" + "A" * 38))
    assert unknown.status == 401
    redis_server.start()
    assert server.call("GET", "/api/v1/me", headers=bearer(secret)).status == 200
    assert server.call("GET", "/api/v1/me", headers=bearer(revoked_secret)).status == 401


@pytest.mark.stops_redis
def test_a_revoke_made_while_redis_is_unreachable_survives_restarting_every_worker(
    server: Server, redis_server: RedisServer
) -> None:
    """ADR 0078: Redis keeps its data through the outage (a network cut, not a restart),
    so the stale entry of the revoked key is still there when it answers again."""
    public_id, secret = create_key(server, slug="acme", per_minute=0, burst=0, monthly=0)
    warm = parallel(12, lambda: server.call("GET", "/api/v1/me", headers=bearer(secret)))
    assert {r.status for r in warm} == {200}
    redis_server.freeze()
    try:
        server.run_django(
            f"""
            from apikeys.models import ApiKey
            from apikeys.services import apikey_revoke
            from orgs.actors import Actor
            apikey_revoke(key=ApiKey.objects.get(public_id={public_id!r}), actor=Actor.system())
            """
        )
        server.stop()  # every worker: nothing remembered in memory survives
        server.start()
    finally:
        redis_server.thaw()
    after = parallel(24, lambda: server.call("GET", "/api/v1/me", headers=bearer(secret)))
    assert {(r.status, r.code) for r in after} == {(401, "api_key_revoked")}
    left = server.run_django(
        """
        from apikeys.models import PendingInvalidation
        print(PendingInvalidation.objects.count())
        """
    )
    assert left.strip().splitlines()[-1] == "0"  # applied, then forgotten


def test_concurrent_duplicates_with_one_idempotency_key_write_once(server: Server) -> None:
    _, secret = create_key(server, per_minute=0, burst=0, monthly=0)
    body = {"name": "Once", "environment": "test", "scopes": ["usage:read"]}
    headers = bearer(secret, **{"Idempotency-Key": f"dup-{uuid.uuid4()}"})
    results = parallel(
        24, lambda: server.call("POST", "/api/v1/api-keys", headers=headers, body=body)
    )
    statuses = Counter(r.status for r in results)
    assert set(statuses) <= {201, 409}, statuses
    assert {r.code for r in results if r.status == 409} <= {"idempotency_key_in_use"}
    created = [r for r in results if r.status == 201]
    assert len({r.json()["id"] for r in created}) == 1
    count = server.run_django(
        """
        from apikeys.models import ApiKey
        print(ApiKey.objects.filter(name="Once").count())
        """
    )
    assert count.strip() == "1"
    replay = server.call("POST", "/api/v1/api-keys", headers=headers, body=body)
    assert replay.status == 201 and replay.headers["Idempotent-Replayed"] == "true"


def test_usage_counts_survive_a_fold_and_a_restart(server: Server) -> None:
    public_id, secret = create_key(server, per_minute=0, burst=0, monthly=0)
    for _ in range(5):
        server.call("GET", "/api/v1/me", headers=bearer(secret))
    server.run_django("from apikeys.usage import fold\nfold()")
    for _ in range(3):
        server.call("GET", "/api/v1/me", headers=bearer(secret))
    server.stop()  # graceful: nothing counted may be lost
    server.start()
    server.call("GET", "/api/v1/me", headers=bearer(secret, **{"X-Client-Version": "v9"}))
    server.run_django("from apikeys.usage import fold\nfold()")
    report = server.call("GET", f"/api/v1/usage?key={public_id}", headers=bearer(secret)).json()
    assert report["totals"]["requests"] == 9
    # In whichever hour's bucket it fell (a run may cross the hour).
    versions = {v for bucket in report["results"] for v in bucket["client_versions"]}
    assert versions == {"v9"}


def test_usage_of_the_embedded_default_is_folded_when_the_server_stops(
    template: DatabaseTemplate,
) -> None:
    srv = Server(db_path=template.copy(), redis_url="", workers=1)
    srv.start()
    try:
        public_id, secret = create_key(srv, per_minute=0, burst=0, monthly=0)
        for _ in range(4):
            srv.call("GET", "/api/v1/me", headers=bearer(secret))
    finally:
        srv.stop()  # SIGTERM: the worker folds its local counters as it exits
    out = srv.run_django(
        f"""
        from apikeys.models import KeyUsageHour
        rows = KeyUsageHour.objects.filter(api_key__public_id={public_id!r})
        print(sum(r.count_2xx for r in rows))
        """
    )
    assert out.strip() == "4"


def test_under_admission_leases_workers_admit_no_more_than_the_quota(
    template: DatabaseTemplate, redis_server: RedisServer
) -> None:
    """High limits: each worker admits from blocks of tokens counted up front (ADR 0065);
    together they never pass the quota, and once their unused tokens are back (a graceful
    stop gives them back) exactly the quota is admitted."""
    srv = Server(db_path=template.copy(), redis_url=redis_server.url, workers=2)
    srv.start()
    try:
        _, secret = create_key(srv, slug="big", per_minute=10**9, burst=10**9, monthly=1500)
        results = parallel(1700, lambda: srv.call("GET", "/api/v1/me", headers=bearer(secret)))
        statuses = Counter(r.status for r in results)
        assert set(statuses) == {200, 429}
        assert {r.code for r in results if r.status == 429} == {"quota_exceeded"}
        assert statuses[200] <= 1500
        # The workers did admit under leases (each grant leaves a marker).
        prefix = srv.env()["CACHE_KEY_PREFIX"]
        markers = redis.Redis.from_url(redis_server.url).keys(f"{prefix}:g:lease:*")
        assert markers
        srv.stop()
        srv.start()
        admitted = statuses[200]
        while srv.call("GET", "/api/v1/me", headers=bearer(secret)).status == 200:
            admitted += 1
        assert admitted == 1500
    finally:
        srv.stop()


def test_a_revoked_high_limit_key_is_refused_by_every_worker_despite_leases(
    template: DatabaseTemplate, redis_server: RedisServer
) -> None:
    """Workers admit the key under leases while it is revoked: the revocation waits out
    their leases, and no request sent after it returned is admitted."""
    srv = Server(
        db_path=template.copy(),
        redis_url=redis_server.url,
        workers=3,
        settings={"LATCHKEY_KEY_LEASE_MS": "900"},
    )
    srv.start()
    try:
        public_id, secret = create_key(srv, slug="big", per_minute=10**9, burst=10**9)
        sent: list[tuple[float, int]] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                at = time.monotonic()
                sent.append((at, srv.call("GET", "/api/v1/me", headers=bearer(secret)).status))

        clients = [threading.Thread(target=hammer) for _ in range(6)]
        for client in clients:
            client.start()
        try:
            time.sleep(1.0)
            out = srv.run_django(
                f"""
                import time
                from apikeys.models import ApiKey
                from apikeys.services import apikey_revoke
                from orgs.actors import Actor
                started = time.monotonic()
                apikey_revoke(key=ApiKey.objects.get(public_id={public_id!r}), actor=Actor.system())
                print(time.monotonic() - started)
                """
            )
            returned = time.monotonic()
            time.sleep(0.5)
        finally:
            stop.set()
            for client in clients:
                client.join()
        # The workers held leases (their markers made the revocation wait)...
        assert float(out.strip().splitlines()[-1]) > 0.1
        assert any(status == 200 for _, status in sent)
        # ...and nothing sent after it returned was admitted.
        after = [status for at, status in sent if at > returned]
        assert after and set(after) == {401}
    finally:
        srv.stop()
