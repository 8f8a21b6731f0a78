"""Rate limits and quotas through the API (docs/api.md, "Rate limits and quotas")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from apikeys.services import apikey_revoke
from orgs.actors import Actor
from orgs.models import Organization
from tests.apikeys.guards.conftest import RedisServer, new_key, set_limits


def assert_429(response: Any, code: str) -> dict[str, Any]:
    assert response.status_code == 429, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "rate_limit_error"
    assert int(response["Retry-After"]) >= 1
    return error


def test_starter_burst_admits_ten_a_second(
    backend: str, org: Organization, frozen_clock: Any
) -> None:
    _, api = new_key(org)
    statuses = [api.get("me").status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    refused = api.get("me")
    assert_429(refused, "rate_limited")
    assert refused["Retry-After"] == "1"
    frozen_clock.now += 1
    assert api.get("me").status_code == 200


def test_starter_minute_admits_sixty(backend: str, org: Organization, frozen_clock: Any) -> None:
    _, api = new_key(org)
    admitted = 0
    for second in range(8):
        frozen_clock.now += 1 if second else 0.5
        for _ in range(10):
            admitted += api.get("me").status_code == 200
    assert admitted == 60
    refused = api.get("me")
    assert_429(refused, "rate_limited")
    assert refused["Retry-After"] == str(60 - 7)  # to the end of the minute
    assert refused["X-RateLimit-Remaining"] == "0"


def test_monthly_quota_and_refusals_do_not_count(
    backend: str,
    org: Organization,
    frozen_clock: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        set_limits(org, per_minute=0, burst=0, monthly=3)
    _, first = new_key(org, name="one")
    _, second = new_key(org, name="two")
    assert [first.get("me").status_code, second.get("me").status_code] == [200, 200]
    assert first.get("me").status_code == 200
    for _ in range(3):
        refused = second.get("me")
        error = assert_429(refused, "quota_exceeded")
        assert "month" in error["message"]
    february = datetime(2030, 2, 1, tzinfo=UTC).timestamp()
    assert refused["Retry-After"] == str(int(february - frozen_clock.now))
    # One more request of quota admits exactly one: the 429s counted nothing.
    with django_capture_on_commit_callbacks(execute=True):
        set_limits(org, per_minute=0, burst=0, monthly=4)
    assert first.get("me").status_code == 200
    assert_429(first.get("me"), "quota_exceeded")


def test_the_quota_resets_on_the_first_of_the_month(
    backend: str,
    org: Organization,
    frozen_clock: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        set_limits(org, per_minute=0, burst=0, monthly=1)
    _, api = new_key(org)
    frozen_clock.now = datetime(2030, 1, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    assert api.get("me").status_code == 200
    assert_429(api.get("me"), "quota_exceeded")
    frozen_clock.now += 1
    assert api.get("me").status_code == 200


def test_limits_are_counted_per_key(backend: str, org: Organization, frozen_clock: Any) -> None:
    _, first = new_key(org, name="one")
    _, second = new_key(org, name="two")
    assert all(first.get("me").status_code == 200 for _ in range(10))
    assert first.get("me").status_code == 429
    assert second.get("me").status_code == 200


def test_every_authenticated_response_carries_the_headers(
    backend: str, org: Organization, frozen_clock: Any
) -> None:
    frozen_clock.now += 15.5
    _, api = new_key(org, scopes=["usage:read"])
    reset = int(frozen_clock.now) // 60 * 60 + 60
    responses = {
        "ok": api.get("me"),
        "scope": api.get("api-keys"),  # 403 insufficient_scope
        "not_found": api.get("usage?key=key_doesnotexist"),
    }
    assert [r.status_code for r in responses.values()] == [200, 403, 404]
    for name, response in responses.items():
        assert response["X-RateLimit-Limit"] == "60", name
        assert response["X-RateLimit-Reset"] == str(reset), name
        assert response["RateLimit-Policy"] == '"burst";q=10;w=1, "minute";q=60;w=60', name
        assert response["RateLimit"].startswith('"minute";r='), name
        assert response["RateLimit"].endswith(";t=45"), name
    # The refused-by-scope requests read the window without using it.
    assert responses["scope"]["X-RateLimit-Remaining"] == "59"
    assert api.get("me")["X-RateLimit-Remaining"] == "57"


def test_unauthenticated_and_public_responses_carry_no_limit_headers(
    backend: str, org: Organization
) -> None:
    from django.test import Client

    client = Client()
    assert "X-RateLimit-Limit" not in client.get("/api/v1/ping")
    missing = client.get("/api/v1/me")
    assert missing.status_code == 401 and "X-RateLimit-Limit" not in missing


def test_a_plan_change_applies_on_the_next_request(
    backend: str,
    org: Organization,
    frozen_clock: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    _, api = new_key(org)
    assert api.get("me")["X-RateLimit-Limit"] == "60"
    with django_capture_on_commit_callbacks(execute=True):
        set_limits(org, per_minute=2, burst=None, monthly=None)
    response = api.get("me")
    assert response["X-RateLimit-Limit"] == "2"
    assert response.json()["rate_limits"]["per_minute"] == 2
    assert_429(api.get("me"), "rate_limited")


def test_unlimited_windows_are_not_reported(
    backend: str,
    org: Organization,
    frozen_clock: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        set_limits(org, per_minute=0, burst=0, monthly=0)
    _, api = new_key(org)
    responses = [api.get("me") for _ in range(120)]
    assert all(r.status_code == 200 for r in responses)
    assert "X-RateLimit-Limit" not in responses[-1]
    assert "RateLimit-Policy" not in responses[-1]


@pytest.mark.stops_redis
def test_redis_down_limits_fail_open_and_authentication_holds(
    use_redis: RedisServer,
    org: Organization,
    frozen_clock: Any,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from apikeys import redisconn

    redisconn.error_log._last.clear()
    _, api = new_key(org)
    revoked_key, revoked = new_key(org, name="revoked")
    assert api.get("me").status_code == 200
    use_redis.stop()
    try:
        statuses = [api.get("me").status_code for _ in range(15)]
        assert statuses == [200] * 15  # over the burst: limits fail open
        with django_capture_on_commit_callbacks(execute=True):
            apikey_revoke(key=revoked_key, actor=Actor.system())
        refused = revoked.get("me")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "api_key_revoked"
        garbage = api.get("me", headers={"Authorization": "Bearer lk_test_nope"})
        assert garbage.status_code == 401
    finally:
        use_redis.start()
    assert any("fail open" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    # Redis is back: the key is admitted (and counted) through it again.
    assert api.get("me").status_code == 200
    assert revoked.get("me").status_code == 401
