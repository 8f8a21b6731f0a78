"""Three doors, one pipeline, several workers: host apps (`apikeys.public`), the gateway's
forward-auth and the verify API, on gunicorn with 3 workers and Redis, configured as an
operator does (LATCHKEY_CATALOGUE, LATCHKEY_EXTRA_APPS, LATCHKEY_EXTRA_URLCONF)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.apikeys.guards.conftest import RedisServer
from tests.apikeys.guards.servers import DatabaseTemplate, HttpResult, Server, create_key

pytestmark = pytest.mark.django_db(transaction=False)

PRODUCT = Path(__file__).resolve().parents[1] / "catalogues" / "product.toml"


def operator_server(
    template: DatabaseTemplate, redis_server: RedisServer, **settings: str
) -> Server:
    """gunicorn, 3 workers, on Redis, configured as an operator does (the product
    catalogue, host app and URLs), with more `settings`; started."""
    redis_server.ensure_running()
    srv = Server(
        db_path=template.copy(),
        redis_url=redis_server.url,
        workers=3,
        settings={
            "LATCHKEY_CATALOGUE": str(PRODUCT),
            "LATCHKEY_EXTRA_APPS": "tests.hostapp",
            "LATCHKEY_EXTRA_URLCONF": "tests.hostapp.urls",
            **settings,
        },
    )
    srv.start()
    return srv


@pytest.fixture
def server(template: DatabaseTemplate, redis_server: RedisServer) -> Iterator[Server]:
    srv = operator_server(template, redis_server)
    yield srv
    srv.stop()


def key_headers(secret: str, **extra: str) -> dict[str, str]:
    return {"X-Product-Key": secret, **extra}


def parallel(count: int, call: object) -> list[HttpResult]:
    with ThreadPoolExecutor(max_workers=12) as pool:
        return list(pool.map(lambda _: call(), range(count)))  # type: ignore[operator]


def system_key(server: Server) -> str:
    out = server.run_django(
        """
        from apikeys.services import system_apikey_create
        from orgs.actors import Actor
        _, secret = system_apikey_create(
            name="verifier", scopes=["keys:verify"], actor=Actor.system()
        )
        print(secret)
        """
    )
    return out.strip().splitlines()[-1]


def doors(server: Server, secret: str, verifier: str) -> tuple[Any, Any, Any]:
    """One request of `secret` through each door: a host endpoint, the gateway's
    forward-auth and the verify API (asked by `verifier`)."""

    def host() -> HttpResult:
        return server.call("GET", "/api/v1/payments", headers=key_headers(secret))

    def gateway() -> HttpResult:
        return server.call(
            "GET",
            "/gateway/auth",
            headers=key_headers(secret, **{"X-Original-URI": "/v1/payments/p1"}),
        )

    def verify() -> HttpResult:
        return server.call(
            "POST",
            "/api/v1/keys/verify",
            headers={"Authorization": f"Bearer {verifier}"},
            body={"key": secret, "scopes": ["payments:read"]},
        )

    return host, gateway, verify


def revoke(server: Server, public_id: str) -> None:
    server.run_django(
        f"""
        from apikeys.models import ApiKey
        from apikeys.services import apikey_revoke
        from orgs.actors import Actor
        apikey_revoke(key=ApiKey.objects.get(public_id={public_id!r}), actor=Actor.system())
        """
    )


def test_host_endpoints_get_the_whole_pipeline(server: Server) -> None:
    _, reader = create_key(server, scopes=["payments:read"], per_minute=3, burst=100)
    _, writer = create_key(
        server, slug="writers", scopes=["payments:write", "invoices:update"], monthly=3
    )

    missing = server.call("GET", "/api/v1/payments")
    assert (missing.status, missing.code) == (401, "missing_api_key")
    listed = server.call("GET", "/api/v1/payments", headers=key_headers(reader))
    assert listed.status == 200 and listed.json()["org"].startswith("org_")
    assert "X-RateLimit-Remaining" in listed.headers
    refused = server.call(
        "POST", "/api/v1/payments", headers=key_headers(reader, **{"Idempotency-Key": "a"})
    )
    assert (refused.status, refused.code) == (403, "insufficient_scope")
    assert refused.json()["error"]["required_scope"] == "payments:write"

    # Idempotency applies to host mutations.
    no_key = server.call(
        "POST", "/api/v1/payments", headers=key_headers(writer), body={"amount": 5}
    )
    assert (no_key.status, no_key.code) == (400, "idempotency_key_missing")
    once = key_headers(writer, **{"Idempotency-Key": f"pay-{uuid.uuid4()}"})
    first = server.call("POST", "/api/v1/payments", headers=once, body={"amount": 5})
    again = server.call("POST", "/api/v1/payments", headers=once, body={"amount": 5})
    assert first.status == 201 and first.json() == {"id": "pay_5", "amount": 5}
    assert again.status == 201 and again.headers.get("Idempotent-Replayed") == "true"

    # A custom action: POST needs invoices:execute, which invoices:update does not imply.
    send = server.call(
        "POST",
        "/api/v1/invoices/inv_1/send",
        headers=key_headers(writer, **{"Idempotency-Key": "s1"}),
    )
    assert (send.status, send.code) == (403, "insufficient_scope")
    assert send.json()["error"]["required_scope"] == "invoices:execute"

    # The monthly quota of the writers' org (3) is used up by now: 2 requests counted.
    results = [
        server.call("GET", "/api/v1/payments", headers=key_headers(writer)) for _ in range(3)
    ]
    assert [r.status for r in results][-1] == 429
    assert results[-1].code == "quota_exceeded"

    # Per-minute limit of the reader (3): one used above, the refusal was not counted.
    statuses = [
        server.call("GET", "/api/v1/payments", headers=key_headers(reader)).status for _ in range(3)
    ]
    assert statuses == [200, 200, 429]

    schema = server.call("GET", "/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/invoices/{invoice_id}/send"]["post"]
    assert operation["x-required-scope"] == "invoices:execute"
    assert any(p["name"] == "Idempotency-Key" for p in operation["parameters"])
    assert schema["paths"]["/api/v1/payments"]["get"]["x-required-scope"] == "payments:read"


def test_a_revoked_key_is_refused_by_every_worker_through_every_door(server: Server) -> None:
    public_id, secret = create_key(server, scopes=["payments:write"], per_minute=0, burst=0)
    verifier = system_key(server)

    host, gateway, verify = doors(server, secret, verifier)

    # Warm every worker's view of the key through every door.
    assert {r.status for r in parallel(30, host)} == {200}
    assert {r.status for r in parallel(30, gateway)} == {200}
    assert {r.json()["valid"] for r in parallel(30, verify)} == {True}

    revoke(server, public_id)

    assert {(r.status, r.code) for r in parallel(30, host)} == {(401, "api_key_revoked")}
    assert {(r.status, r.headers.get("X-Latchkey-Error-Code")) for r in parallel(30, gateway)} == {
        (401, "api_key_revoked")
    }
    assert {(r.json()["valid"], r.json()["code"]) for r in parallel(30, verify)} == {
        (False, "api_key_revoked")
    }


def test_usage_the_scope_and_the_actor_are_the_same_through_every_door(server: Server) -> None:
    public_id, secret = create_key(server, slug="doors", scopes=["payments:read"])
    verifier = system_key(server)
    actor = {"X-Product-Actor": "agent-7"}

    host = server.call("GET", "/api/v1/payments", headers=key_headers(secret, **actor))
    gateway = server.call(
        "GET",
        "/gateway/auth",
        headers=key_headers(secret, **actor, **{"X-Original-URI": "/v1/payments/p1"}),
    )
    verified = server.call(
        "POST",
        "/api/v1/keys/verify",
        headers={"Authorization": f"Bearer {verifier}"},
        body={"key": secret, "method": "GET", "path": "/v1/payments/p2"},
    )
    refused = server.call(
        "POST", "/api/v1/payments", headers=key_headers(secret, **{"Idempotency-Key": "x"})
    )
    assert host.status == 200 and host.json()["actor"] == "agent-7"
    assert gateway.status == 200 and gateway.headers["X-Latchkey-Actor-Id"] == "agent-7"
    assert verified.json()["valid"] is True
    assert refused.code == "insufficient_scope"

    out = server.run_django(
        f"""
        import json
        from apikeys import usage
        from apikeys.models import ApiKey, KeyUsageHour
        usage.fold()
        key = ApiKey.objects.get(public_id={public_id!r})
        rows = list(KeyUsageHour.objects.filter(api_key=key))
        print(json.dumps({{
            "scopes": [row.scopes for row in rows],
            "ok": sum(row.count_2xx for row in rows),
            "refused": sum(row.count_4xx for row in rows),
            "recent": sorted(
                [e["method"], e["path"], e["status"]]
                for e in usage.recent_requests(key_pk=key.pk)
            ),
        }}))
        """
    )
    seen = json.loads(out.strip().splitlines()[-1])
    # One request per door, each counted under the scope it needed; the refusal under the
    # scope it lacked.
    assert seen["scopes"] == [{"payments:read": 3, "payments:write": 1}]
    assert (seen["ok"], seen["refused"]) == (3, 1)
    assert seen["recent"] == [
        ["GET", "/api/v1/payments", 200],
        ["GET", "/v1/payments/p1", 200],
        ["GET", "/v1/payments/p2", 200],
        ["POST", "/api/v1/payments", 403],
    ]


def test_a_scope_edit_is_in_force_in_every_worker_through_every_door(server: Server) -> None:
    """An admin key narrows a key through the API; the next request in every worker, at
    every door, sees the new scopes (the cache entry and any admission lease end)."""
    public_id, secret = create_key(
        server,
        slug="edits",
        scopes=["payments:write", "invoices:read"],
        per_minute=0,
        burst=0,
        monthly=0,
    )
    _, admin = create_key(
        server,
        slug="edits",
        scopes=["api_keys:write", "payments:write"],
        per_minute=0,
        burst=0,
        monthly=0,
    )
    verifier = system_key(server)

    host, gateway, verify = doors(server, secret, verifier)

    assert {r.status for r in parallel(30, host)} == {200}
    assert {r.status for r in parallel(30, gateway)} == {200}
    assert {r.json()["valid"] for r in parallel(30, verify)} == {True}

    # payments:write is held by the admin key too, but the edited key holds
    # invoices:read, which the admin key lacks: the edit is refused and nothing changes.
    refused = server.call(
        "PATCH",
        f"/api/v1/api-keys/{public_id}",
        headers={"X-Product-Key": admin, "Idempotency-Key": "e1"},
        body={"scopes": []},
    )
    assert (refused.status, refused.code) == (403, "insufficient_scope")
    assert {r.status for r in parallel(12, host)} == {200}

    server.run_django(
        f"""
        from apikeys.models import ApiKey
        from apikeys.services import apikey_update
        from orgs.actors import Actor
        apikey_update(
            key=ApiKey.objects.get(public_id={public_id!r}),
            scopes=["invoices:read"],
            actor=Actor.system(),
        )
        """
    )
    assert {(r.status, r.code) for r in parallel(30, host)} == {(403, "insufficient_scope")}
    assert {(r.status, r.headers.get("X-Latchkey-Error-Code")) for r in parallel(30, gateway)} == {
        (403, "insufficient_scope")
    }
    assert {(r.json()["valid"], r.json()["code"]) for r in parallel(30, verify)} == {
        (False, "insufficient_scope")
    }


def test_an_allowlist_is_in_force_in_every_worker_behind_a_proxy(
    template: DatabaseTemplate, redis_server: RedisServer
) -> None:
    """TRUSTED_PROXY_HOPS=1: the address the proxy puts last in X-Forwarded-For is the
    client's; an allowlist set through the API applies at once in every worker."""
    srv = operator_server(template, redis_server, TRUSTED_PROXY_HOPS="1")
    try:
        public_id, secret = create_key(srv, slug="nets", scopes=["payments:read"])
        _, admin = create_key(
            srv,
            slug="nets",
            scopes=["api_keys:write", "payments:read"],
            per_minute=0,
            burst=0,
            monthly=0,
        )

        def from_(ip: str) -> HttpResult:
            return srv.call(
                "GET",
                "/api/v1/payments",
                headers=key_headers(secret, **{"X-Forwarded-For": f"198.51.100.1, {ip}"}),
            )

        assert {r.status for r in parallel(30, lambda: from_("2001:db8::5"))} == {200}
        edited = srv.call(
            "PATCH",
            f"/api/v1/api-keys/{public_id}",
            headers={"X-Product-Key": admin, "Idempotency-Key": "n1"},
            body={"allowed_ips": ["2001:db8::/32"]},
        )
        assert edited.status == 200, edited.body
        assert {r.status for r in parallel(30, lambda: from_("2001:db8::5"))} == {200}
        assert {(r.status, r.code) for r in parallel(30, lambda: from_("203.0.113.5"))} == {
            (403, "ip_not_allowed")
        }
    finally:
        srv.stop()
