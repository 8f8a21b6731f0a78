"""Admission leases (ADR 0065): a key whose limits leave lots of room is admitted by the
worker from a block of tokens counted up front, without a Redis call per request.

The limits stay exact (the tokens are counted when granted, unused ones go back),
revocation stays immediate (an invalidation waits out every lease that may be held),
usage and recent requests are still counted, and standard plans keep the one-trip path.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from apikeys import keycache, leases, ratelimit, redisconn, usage
from apikeys.keys import key_digest
from apikeys.models import ApiKey, KeyUsageHour
from apikeys.services import apikey_revoke
from orgs.actors import Actor
from orgs.models import Organization
from tests.apikeys.api.conftest import ApiClient
from tests.apikeys.guards.conftest import CommandLog, RedisServer, new_key, set_limits

HIGH = 10**9
LEASE_MS = 1000


@pytest.fixture
def leases_on(use_redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """Leases on; no pusher thread (the tests push when they mean to)."""
    leases.discard()
    monkeypatch.setattr(leases._pusher, "ensure_started", lambda: None)
    with override_settings(LATCHKEY_KEY_LEASE_MS=LEASE_MS, LATCHKEY_KEY_LEASE_TOKENS=64):
        yield use_redis
    leases.discard()


def redis_ms() -> int:
    seconds, micros = redis().time()
    return int(seconds) * 1000 + int(micros) // 1000


def marker_left(name: str) -> float:
    """Seconds a lease marker still covers, by Redis' clock."""
    return (int(redis().get(name) or 0) - redis_ms()) / 1000


def redis() -> Any:
    conn = redisconn.client()
    assert conn is not None
    return conn


def counters(key: ApiKey, org: Organization, now: float) -> list[int]:
    """The burst, minute and month counters in Redis."""
    conn = redis()
    return [int(v or 0) for v in conn.mget(ratelimit.counter_keys(key.pk, org.pk, now))]


def remaining(response: Any) -> int:
    return int(response["X-RateLimit-Remaining"])


def lease_up(api: ApiClient) -> list[int]:
    """Cold (key part), org part, then the first warm request, which is granted a lease."""
    seen = []
    for _ in range(3):
        response = api.get("me")
        assert response.status_code == 200
        seen.append(remaining(response))
    return seen


def test_a_high_limit_key_is_admitted_without_redis_calls_under_a_lease(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=HIGH)
    key, api = new_key(org)
    assert lease_up(api) == [HIGH - 1, HIGH - 2, HIGH - 3]
    # The third request counted itself and 63 more tokens for this process.
    assert counters(key, org, frozen_clock.now) == [66, 66, 66]
    redis_commands.clear()
    seen = [remaining(api.get("me")) for _ in range(10)]
    assert redis_commands.names == []
    assert seen == [HIGH - 4 - i for i in range(10)]
    # Its unused tokens go back: the windows count exactly the admitted requests.
    leases.release_all()
    assert counters(key, org, frozen_clock.now) == [13, 13, 13]


def test_a_lease_takes_at_most_a_256th_of_what_is_left(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    set_limits(org, per_minute=HIGH, burst=256 * 3, monthly=HIGH)
    key, api = new_key(org)
    lease_up(api)
    # 765 left after the third request: a block of 2 (that request and one more).
    assert counters(key, org, frozen_clock.now)[0] == 4
    redis_commands.clear()
    assert api.get("me").status_code == 200
    assert redis_commands.names == []
    assert api.get("me").status_code == 200
    assert redis_commands.names == ["EVALSHA"]


def test_standard_plans_keep_one_round_trip_per_request(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, redis_commands: CommandLog
) -> None:
    # Enterprise: a burst of 200 leaves less than 256 x 2 in the window: no lease.
    set_limits(org, per_minute=6000, burst=200, monthly=50_000_000)
    key, api = new_key(org)
    lease_up(api)
    for _ in range(3):
        redis_commands.clear()
        assert api.get("me").status_code == 200
        assert redis_commands.names == ["EVALSHA"]
    assert counters(key, org, frozen_clock.now) == [6, 6, 6]


def test_never_more_than_the_quota_and_exactly_the_quota_once_tokens_are_back(
    leases_on: RedisServer, org: Organization, frozen_clock: Any
) -> None:
    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=1000)
    key, api = new_key(org)
    statuses: Counter[int] = Counter()
    codes = set()
    for _ in range(1100):
        response = api.get("me")
        statuses[response.status_code] += 1
        if response.status_code == 429:
            codes.add(response.json()["error"]["code"])
    assert set(statuses) == {200, 429} and codes == {"quota_exceeded"}
    assert statuses[200] <= 1000
    leases.release_all()
    assert counters(key, org, frozen_clock.now)[2] == statuses[200]
    # Tokens a lease held and did not use are admitted after all, and then no more.
    while api.get("me").status_code == 200:
        statuses[200] += 1
    assert statuses[200] == 1000


def test_revocation_waits_out_the_leases_and_is_then_in_force(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(keycache, "_wait", waits.append)
    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=HIGH)
    key, api = new_key(org)
    lease_up(api)
    with django_capture_on_commit_callbacks(execute=True):
        apikey_revoke(key=key, actor=Actor.system())
    # The invalidation at commit waited for what is left of the newest lease's marker.
    assert len(waits) == 1 and 0.2 < waits[0] <= LEASE_MS / 1000 + keycache.LEASE_WAIT_MARGIN
    refused = api.get("me")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "api_key_revoked"


def test_a_holder_trusts_its_lease_for_less_than_the_marker_lives(
    leases_on: RedisServer, org: Organization, frozen_clock: Any
) -> None:
    """What makes the wait enough: the marker outlives the holder's trust in its lease."""
    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=HIGH)
    _, api = new_key(org)
    lease_up(api)
    (lease,) = leases._leases.values()
    trusted = lease.valid_until - time.monotonic()
    marker = marker_left(keycache.key_lease_name(lease.digest))
    org_marker = marker_left(keycache.org_lease_name(org.pk))
    assert 0 < trusted < marker and trusted < org_marker
    assert trusted <= LEASE_MS / 1000 * leases.HOLDER_FRACTION


def test_no_wait_when_no_lease_is_held(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(keycache, "_wait", waits.append)
    key, api = new_key(org)  # the starter plan: never a lease
    lease_up(api)
    with django_capture_on_commit_callbacks(execute=True):
        apikey_revoke(key=key, actor=Actor.system())
    assert waits == []
    assert api.get("me").status_code == 401


def test_another_process_lease_is_waited_for(
    leases_on: RedisServer, org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marker is what counts: a lease held by another worker (only its marker is
    visible here) delays the invalidation just the same, for a key and for an org."""
    waits: list[float] = []
    monkeypatch.setattr(keycache, "_wait", waits.append)
    digest = key_digest("lk_test_" + "B" * 38)
    conn = redis()
    conn.set(keycache.key_lease_name(digest), redis_ms() + 3000)
    conn.set(keycache.org_lease_name(org.pk), redis_ms() + 2000)
    keycache._invalidate(("key", digest), wait=True)
    keycache._invalidate(("org", org.pk), wait=True)
    assert 2.0 < waits[0] <= 3.0 + keycache.LEASE_WAIT_MARGIN
    assert 1.0 < waits[1] <= 2.0 + keycache.LEASE_WAIT_MARGIN
    # A marker whose time has passed means no wait.
    conn.set(keycache.org_lease_name(org.pk), redis_ms() - 10)
    keycache._invalidate(("org", org.pk), wait=True)
    assert len(waits) == 2


def test_a_suspension_ends_this_process_leases_at_once(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, staff_user: Any
) -> None:
    from platform_admin.services import org_suspend

    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=HIGH)
    _, api = new_key(org)
    lease_up(api)
    org_suspend(org=org, actor=Actor.for_user(staff_user), reason="Unpaid invoices")
    refused = api.get("me")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "org_suspended"


def test_leased_requests_are_counted_in_usage_and_recent_requests(
    leases_on: RedisServer, org: Organization, other_org: Organization, frozen_clock: Any
) -> None:
    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=HIGH)
    key, api = new_key(org)
    lease_up(api)
    for _ in range(5):
        assert api.get("me", headers={"X-Client-Version": "sdk-2.1"}).status_code == 200
    for _ in range(2):
        assert api.get("members").status_code == 200
    for _ in range(2):
        mismatch = api.get("me", headers={"X-Org-Id": other_org.public_id})
        assert mismatch.status_code == 403
    # Refused before the limiter: their tokens went back to the lease.
    assert remaining(api.get("me")) == HIGH - 11
    usage.fold()  # pushes this process's leased requests first, then folds
    row = KeyUsageHour.objects.get(api_key=key)
    assert (row.count_2xx, row.count_4xx) == (11, 2)
    assert "sdk-2.1" in row.client_versions
    assert row.scopes == {"members:read": 2}  # `me` needs no scope
    statuses = [r["status"] for r in usage.recent_requests(key_pk=key.pk)]
    assert statuses == [200, 403, 403] + [200] * 10
    leases.release_all()
    assert counters(key, org, frozen_clock.now)[1] == 11


@pytest.mark.stops_redis
def test_redis_down_under_a_lease_gives_no_500_and_loses_no_leased_usage(
    leases_on: RedisServer,
    org: Organization,
    frozen_clock: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=HIGH)
    key, api = new_key(org)
    lease_up(api)
    leases_on.stop()
    try:
        with caplog.at_level(logging.ERROR, logger="apikeys.guards"):
            for _ in range(4):
                assert api.get("me").status_code == 200  # under the lease
            leases.push()  # cannot reach Redis: kept
            for lease in leases._leases.values():
                lease.valid_until = 0.0  # the lease has ended
            for _ in range(2):
                assert api.get("me").status_code == 200  # database, limits fail open
        assert "leased requests' usage kept for later" in caplog.text
    finally:
        leases_on.start()
    leases.push()
    conn = redis()
    hour = usage.hour_start(frozen_clock.now)
    pushed = conn.hget(usage.redis_hash_key(key.pk, org.pk, hour), "n")
    assert int(pushed) == 4


def test_a_push_whose_reply_was_lost_is_applied_once(
    leases_on: RedisServer, org: Organization, frozen_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis ran the batch but the reply never came (a timeout): sent again, it is skipped,
    so unused tokens are not given back twice (which would admit more than the limit)."""
    from redis.exceptions import TimeoutError as RedisTimeout

    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=HIGH)
    key, api = new_key(org)
    lease_up(api)
    for _ in range(4):
        assert api.get("me").status_code == 200
    real_send = leases._send
    calls: list[str] = []

    def lost_reply(conn: Any, batch_id: str, payload: str) -> None:
        calls.append(batch_id)
        real_send(conn, batch_id, payload)
        if len(calls) == 1:
            raise RedisTimeout("Timeout reading from socket")

    monkeypatch.setattr(leases, "_send", lost_reply)
    leases.release_all()  # sent, "timed out", kept
    assert leases._unsent
    leases.push()  # sent again under the same id: skipped
    assert calls[0] == calls[1] and not leases._unsent
    assert counters(key, org, frozen_clock.now) == [7, 7, 7]
    hour = usage.hour_start(frozen_clock.now)
    assert int(redis().hget(usage.redis_hash_key(key.pk, org.pk, hour), "n")) == 7


def test_a_worker_leaving_gives_back_what_its_leases_hold(
    leases_on: RedisServer, org: Organization, frozen_clock: Any
) -> None:
    set_limits(org, per_minute=HIGH, burst=HIGH, monthly=HIGH)
    key, api = new_key(org)
    lease_up(api)
    assert api.get("me").status_code == 200
    assert counters(key, org, frozen_clock.now) == [66, 66, 66]
    usage.fold_process()  # gunicorn's worker_exit
    assert not leases._leases
    assert counters(key, org, frozen_clock.now) == [4, 4, 4]
    hour = usage.hour_start(frozen_clock.now)
    assert int(redis().hget(usage.redis_hash_key(key.pk, org.pk, hour), "n")) == 4
