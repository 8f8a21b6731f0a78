"""The warm path of a guarded request: verification and counting in ONE Redis round trip.

ADR 0064: the verification-and-count script resolves the key's cache entry and, when it
is complete, current and the key acceptable, runs the rate-limit check-and-count in the
same EVALSHA. A request the pipeline then refuses before the limiter (scope, `X-Org-Id`,
client headers) is refunded; revocation and suspension stay immediate; Redis down fails
open for limits and never for authentication.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from apikeys import redisconn, usage
from apikeys.models import KeyUsageHour
from apikeys.services import apikey_revoke
from orgs.actors import Actor
from orgs.models import Organization
from platform_admin.services import org_suspend
from tests.apikeys.guards.conftest import CommandLog, RedisServer, new_key, set_limits

HIGH = 10**9


def remaining(response: Any) -> int:
    return int(response["X-RateLimit-Remaining"])


def warm(api: Any) -> None:
    """Two requests fill the cache entry (key part, then org part)."""
    for _ in range(2):
        assert api.get("me").status_code == 200


def test_a_warm_guarded_request_is_one_redis_round_trip(
    use_redis: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=HIGH)
    _, api = new_key(org)
    warm(api)
    redis_commands.clear()
    response = api.get("me")
    assert response.status_code == 200
    assert redis_commands.names == ["EVALSHA"]
    # ...and that one call counted every window and the usage.
    assert remaining(response) == HIGH - 3
    assert "X-RateLimit-Limit" in response and "RateLimit-Policy" in response


def test_a_request_is_counted_once_on_the_cold_and_the_warm_path(
    backend: str, org: Organization, frozen_clock: Any
) -> None:
    set_limits(org, per_minute=100, burst=100, monthly=HIGH)
    key, api = new_key(org)
    seen = [remaining(api.get("me")) for _ in range(4)]  # cold, org part, warm, warm
    assert seen == [99, 98, 97, 96]
    usage.fold()
    row = KeyUsageHour.objects.get(api_key=key)
    assert (row.count_2xx, row.count_4xx) == (4, 0)


def test_a_scope_refusal_is_refunded_and_counted_as_a_4xx(
    backend: str, org: Organization, frozen_clock: Any
) -> None:
    set_limits(org, per_minute=5, burst=100, monthly=3)
    key, api = new_key(org, scopes=["usage:read"])
    warm(api)  # uses 2 of the month's 3
    for _ in range(4):
        refused = api.get("api-keys")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "insufficient_scope"
        assert remaining(refused) == 3  # the window as it stands: nothing taken
    # The refusals took nothing from the minute or the month: exactly one more fits.
    last = api.get("me")
    assert last.status_code == 200 and remaining(last) == 2
    assert api.get("me").json()["error"]["code"] == "quota_exceeded"
    usage.fold()
    row = KeyUsageHour.objects.get(api_key=key)
    assert (row.count_2xx, row.count_4xx) == (3, 5)
    statuses = [r["status"] for r in usage.recent_requests(key_pk=key.pk)]
    assert statuses == [429, 200, 403, 403, 403, 403, 200, 200]


def test_other_refusals_before_the_limiter_are_refunded(
    backend: str, org: Organization, other_org: Organization, frozen_clock: Any
) -> None:
    set_limits(org, per_minute=10, burst=100, monthly=HIGH)
    _, api = new_key(org)
    warm(api)
    mismatch = api.get("me", headers={"X-Org-Id": other_org.public_id})
    assert mismatch.status_code == 403 and mismatch.json()["error"]["code"] == "org_mismatch"
    invalid = api.get("me", headers={"X-Client-Version": "x" * 300})
    assert invalid.status_code == 400
    assert remaining(api.get("me")) == 7  # 10 - the two warm-ups - this one


def test_a_fault_after_the_count_gives_the_count_back_and_counts_a_5xx(
    backend: str, org: Organization, frozen_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apikeys.guard import pipeline

    set_limits(org, per_minute=10, burst=100, monthly=HIGH)
    key, api = new_key(org)
    warm(api)

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug between the count and the limits step")

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "_check_org_header", broken)
        faulty = api.get("me")
    assert faulty.status_code == 500
    assert faulty.json()["error"]["code"] == "internal_error"
    assert remaining(api.get("me")) == 7  # 10 - the two warm-ups - this one
    usage.fold()
    row = KeyUsageHour.objects.get(api_key=key)
    assert (row.count_2xx, row.count_5xx) == (3, 1)
    assert usage.recent_requests(key_pk=key.pk)[1]["status"] == 500


def test_a_scope_refusal_outranks_a_full_window(
    backend: str, org: Organization, frozen_clock: Any
) -> None:
    set_limits(org, per_minute=HIGH, burst=2, monthly=HIGH)
    key, api = new_key(org, scopes=["usage:read"])
    warm(api)  # the burst window (one second) is full
    refused = api.get("api-keys")
    assert refused.status_code == 403  # scope is checked before the limiter
    assert usage.recent_requests(key_pk=key.pk)[0]["status"] == 403
    frozen_clock.now += 1
    assert api.get("me").status_code == 200


def test_revocation_is_immediate_on_the_warm_path_and_counts_nothing(
    backend: str,
    org: Organization,
    frozen_clock: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=5)
    key, api = new_key(org)
    _, other = new_key(org, name="other")
    warm(api)
    with django_capture_on_commit_callbacks(execute=True):
        apikey_revoke(key=key, actor=Actor.system())
    for _ in range(3):
        refused = api.get("me")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "api_key_revoked"
    # The refused requests took nothing from the org's month: 3 of 5 are left.
    assert [other.get("me").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert len(usage.recent_requests(key_pk=key.pk)) == 2


def test_suspension_is_immediate_on_the_warm_path(
    backend: str,
    org: Organization,
    staff_user: Any,
    frozen_clock: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    _, api = new_key(org)
    warm(api)
    with django_capture_on_commit_callbacks(execute=True):
        org_suspend(org=org, actor=Actor.for_user(staff_user), reason="test")
    refused = api.get("me")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "org_suspended"


def test_an_expired_key_is_neither_accepted_nor_counted(
    backend: str, org: Organization, frozen_clock: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    set_limits(org, per_minute=100, burst=100, monthly=HIGH)
    key, api = new_key(org)
    warm(api)
    key.expires_at = timezone.now() - timedelta(seconds=1)
    key.save(update_fields=["expires_at"])
    from apikeys.cache import invalidate_key

    invalidate_key(key.digest)
    refused = api.get("me")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "api_key_expired"
    assert len(usage.recent_requests(key_pk=key.pk)) == 2


@pytest.mark.stops_redis
def test_redis_down_on_the_warm_path_fails_open_once_and_authenticates_from_the_database(
    use_redis: RedisServer,
    org: Organization,
    frozen_clock: Any,
    caplog: pytest.LogCaptureFixture,
    redis_commands: CommandLog,
) -> None:
    set_limits(org, per_minute=2, burst=HIGH, monthly=HIGH)
    _, api = new_key(org)
    warm(api)
    redisconn.error_log._last.clear()
    use_redis.stop()
    try:
        redis_commands.clear()
        with caplog.at_level(logging.ERROR, logger="apikeys.guards"):
            statuses = [api.get("me").status_code for _ in range(3)]
        garbage = api.get("me", headers={"Authorization": "Bearer lk_test_nope"})
    finally:
        use_redis.start()
    assert statuses == [200, 200, 200]  # over the minute's 2: limits fail open
    assert garbage.status_code == 401  # authentication never does
    messages = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("fail open" in m for m in messages)
    assert any("against the database" in m for m in messages)
    # One attempt per request: the limiter does not try Redis again after the
    # verification found it down.
    assert redis_commands.names.count("EVALSHA") <= 3
    assert api.get("me").status_code == 200  # and it recovers by itself


def test_the_round_trip_reply_is_parsed_by_hiredis() -> None:
    """Every Redis connection, the guards' own included, reads replies with hiredis' C
    parser (`redis[hiredis]`): redis-py's pure-Python parser cost about 90 us of worker
    CPU per round trip (docs/performance.md)."""
    from redis.connection import DefaultParser
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE
    assert DefaultParser.__name__ == "_HiredisParser"
