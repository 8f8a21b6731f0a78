"""`apikeys.usage.recent_requests`: the last requests of a key, newest first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from apikeys import usage
from orgs.models import Organization
from tests.apikeys.guards.conftest import new_key, set_limits

T0 = datetime(2030, 1, 4, 12, 0, tzinfo=UTC)


def test_recent_requests_newest_first_with_their_statuses(
    backend: str, org: Organization, frozen_clock: Any
) -> None:
    key, api = new_key(org, scopes=["api_keys:read"])
    frozen_clock.now = T0.timestamp()
    assert api.get("me", headers={"X-Client-Version": "sdk-1.0"}).status_code == 200
    frozen_clock.now += 1
    assert api.get("usage?since=secret-query").status_code == 403  # scope refusal
    frozen_clock.now += 1
    assert api.get("api-keys/key_nonexistent0000").status_code == 404
    frozen_clock.now += 1
    response = api.get("/api/v1/me?token=do-not-keep", headers={"X-Request-Id": "req-abcdef12"})
    assert response.status_code == 200

    recent = usage.recent_requests(key_pk=key.pk)
    assert [(r["method"], r["path"], r["status"]) for r in recent] == [
        ("GET", "/api/v1/me", 200),
        ("GET", "/api/v1/api-keys/key_nonexistent0000", 404),
        ("GET", "/api/v1/usage", 403),
        ("GET", "/api/v1/me", 200),
    ]
    newest, oldest = recent[0], recent[-1]
    assert newest["request_id"] == "req-abcdef12"
    assert newest["at"] == datetime.fromtimestamp(T0.timestamp() + 3, tz=UTC)
    assert newest["ip"] == "127.0.0.1"
    assert oldest["client_version"] == "sdk-1.0"
    assert newest["client_version"] is None
    text = repr(recent)
    assert "do-not-keep" not in text and "secret-query" not in text
    assert api.secret and api.secret not in text and key.digest not in text
    assert usage.recent_requests(key_pk=key.pk, limit=2) == recent[:2]


def test_rate_limited_requests_are_recorded_as_429(
    backend: str, org: Organization, frozen_clock: Any
) -> None:
    set_limits(org, burst=1, per_minute=100)
    key, api = new_key(org)
    assert api.get("me").status_code == 200
    assert api.get("me").status_code == 429
    statuses = [r["status"] for r in usage.recent_requests(key_pk=key.pk)]
    assert statuses == [429, 200]


def test_mutations_record_their_real_status(
    backend: str, org: Organization, frozen_clock: Any
) -> None:
    key, api = new_key(org)
    created = api.post(
        "api-keys",
        {"name": "child", "environment": "test", "scopes": ["usage:read"]},
        idempotency_key="k-1",
    )
    assert created.status_code == 201, created.content
    bad = api.post("api-keys", {"name": ""}, idempotency_key="k-2")
    assert bad.status_code in (400, 422)
    statuses = [(r["method"], r["status"]) for r in usage.recent_requests(key_pk=key.pk)]
    assert statuses == [("POST", bad.status_code), ("POST", 201)]


def test_the_list_is_capped_and_kept_per_key(
    backend: str, org: Organization, frozen_clock: Any
) -> None:
    set_limits(org, burst=1000, per_minute=1000)
    first, api = new_key(org)
    second, other = new_key(org, name="other")
    for _ in range(usage.RECENT_MAX + 5):
        api.get("me")
    other.get("ping")  # public: no key is recorded
    other.get("me")
    assert len(usage.recent_requests(key_pk=first.pk)) == usage.RECENT_MAX
    assert len(usage.recent_requests(key_pk=first.pk, limit=500)) == usage.RECENT_MAX
    assert [r["path"] for r in usage.recent_requests(key_pk=second.pk)] == ["/api/v1/me"]
    assert usage.recent_requests(key_pk=999_999) == []


@pytest.mark.stops_redis
def test_unreachable_redis_gives_an_empty_list(
    use_redis: Any, org: Organization, frozen_clock: Any
) -> None:
    key, api = new_key(org)
    api.get("me")
    assert len(usage.recent_requests(key_pk=key.pk)) == 1
    use_redis.stop()
    try:
        assert usage.recent_requests(key_pk=key.pk) == []
    finally:
        use_redis.start()
