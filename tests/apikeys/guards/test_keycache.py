"""The key-verification cache: warm hits without the database, immediate invalidation."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from apikeys import keycache
from apikeys.cache import invalidate_key, invalidate_org
from apikeys.keys import key_digest
from apikeys.models import ApiKey, PendingInvalidation
from apikeys.services import apikey_revoke, apikey_rotate
from orgs.actors import Actor
from orgs.models import Organization, OrgStatus
from orgs.plans import Limits
from tests.apikeys.guards.conftest import RedisServer
from tests.factories import ApiKeyFactory


def make_key(org: Organization) -> tuple[ApiKey, str]:
    return ApiKeyFactory.pair(org=org, name="Integration", scopes=["usage:read"])


def test_a_warm_lookup_does_no_database_query(
    backend: str, org: Organization, django_assert_num_queries: Any
) -> None:
    key, secret = make_key(org)
    digest = key_digest(secret)
    with django_assert_num_queries(1):  # cold: the key and its org, one query
        first = keycache.resolve(digest)
    assert first is not None and not first.from_cache
    with django_assert_num_queries(1):  # the org part, under its generation
        second = keycache.resolve(digest)
    assert second is not None and not second.from_cache
    with django_assert_num_queries(0):
        warm = keycache.resolve(digest)
    assert warm is not None and warm.from_cache
    assert warm.key.public_id == key.public_id
    assert warm.org is not None and warm.org.limits == org.limits


def test_an_unknown_digest_resolves_to_nothing(backend: str, db: None) -> None:
    assert keycache.resolve("0" * 64) is None


def test_revocation_is_seen_on_the_next_lookup(
    backend: str, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    key, secret = make_key(org)
    digest = key_digest(secret)
    keycache.resolve(digest)
    with django_capture_on_commit_callbacks(execute=True):
        apikey_revoke(key=key, actor=Actor.system())
    resolved = keycache.resolve(digest)
    assert resolved is not None and resolved.key.revoked_at is not None


def test_rotation_grace_end_is_cached_with_the_key(
    backend: str, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    key, secret = make_key(org)
    digest = key_digest(secret)
    keycache.resolve(digest)
    with django_capture_on_commit_callbacks(execute=True):
        apikey_rotate(key=key, actor=Actor.system())
    resolved = keycache.resolve(digest)
    assert resolved is not None and resolved.key.expires_at is not None


def test_an_org_change_turns_every_entry_of_its_keys_stale(
    backend: str, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    keys = [make_key(org) for _ in range(3)]
    digests = [key_digest(secret) for _, secret in keys]
    for digest in digests:
        keycache.resolve(digest)
    with django_capture_on_commit_callbacks(execute=True):
        Organization.objects.filter(pk=org.pk).update(
            status=OrgStatus.SUSPENDED, custom_per_minute=7
        )
        invalidate_org(org.pk)
    for digest in digests:
        resolved = keycache.resolve(digest)
        assert resolved is not None and not resolved.from_cache
        assert resolved.org is not None and resolved.org.status == OrgStatus.SUSPENDED
        assert resolved.org.limits.per_minute == 7
        again = keycache.resolve(digest)
        assert again is not None and again.from_cache and again.org is not None
        assert again.org.status == OrgStatus.SUSPENDED


def warm_up(digest: str) -> None:
    keycache.resolve(digest)  # the key part
    keycache.resolve(digest)  # the org part
    resolved = keycache.resolve(digest)
    assert resolved is not None and resolved.from_cache


def test_invalidation_inside_a_transaction_acts_now_and_again_at_commit(
    backend: str, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    _, secret = make_key(org)
    digest = key_digest(secret)
    warm_up(digest)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        invalidate_key(digest)
    assert len(callbacks) == 1
    refilled = keycache.resolve(digest)  # a request before the commit refills the entry
    assert refilled is not None and not refilled.from_cache
    warm_up(digest)
    callbacks[0]()  # the commit
    after = keycache.resolve(digest)
    assert after is not None and not after.from_cache


@pytest.mark.parametrize("warm", [False, True])
def test_a_fill_that_read_the_database_before_a_revocation_is_not_written(
    backend: str,
    org: Organization,
    warm: bool,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """A request reads the key; the revocation commits and invalidates; the request then
    tries to cache what it read. The next request must still see the revocation."""
    key, secret = make_key(org)
    digest = key_digest(secret)
    if warm:
        warm_up(digest)
        with django_capture_on_commit_callbacks(execute=True):
            invalidate_org(org.pk)  # the entry is stale: the next lookup reads the database
    real_load, real_load_org = keycache.load_from_db, keycache.load_org_from_db

    def revoke() -> None:
        with django_capture_on_commit_callbacks(execute=True):
            apikey_revoke(key=key, actor=Actor.system())

    def load_then_revoke(d: str) -> Any:
        loaded = real_load(d)
        revoke()
        return loaded

    def load_org_then_revoke(pk: int) -> Any:
        loaded = real_load_org(pk)
        revoke()
        return loaded

    monkeypatch.setattr(keycache, "load_from_db", load_then_revoke)
    monkeypatch.setattr(keycache, "load_org_from_db", load_org_then_revoke)
    seen = keycache.resolve(digest)
    assert seen is not None and seen.key.revoked_at is None  # read before the change
    monkeypatch.undo()
    fresh = keycache.resolve(digest)
    assert fresh is not None and fresh.key.revoked_at is not None


def test_a_fill_that_read_the_database_before_an_org_change_is_not_written(
    backend: str,
    org: Organization,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    _, secret = make_key(org)
    digest = key_digest(secret)
    warm_up(digest)
    with django_capture_on_commit_callbacks(execute=True):
        Organization.objects.filter(pk=org.pk).update(custom_per_minute=5)
        invalidate_org(org.pk)
    real_load_org = keycache.load_org_from_db

    def load_then_suspend(pk: int) -> Any:
        loaded = real_load_org(pk)
        with django_capture_on_commit_callbacks(execute=True):
            Organization.objects.filter(pk=org.pk).update(status=OrgStatus.SUSPENDED)
            invalidate_org(org.pk)
        return loaded

    monkeypatch.setattr(keycache, "load_org_from_db", load_then_suspend)
    seen = keycache.resolve(digest)
    assert seen is not None and seen.org is not None and seen.org.status == OrgStatus.ACTIVE
    assert seen.org.limits.per_minute == 5
    monkeypatch.undo()
    fresh = keycache.resolve(digest)
    assert fresh is not None and fresh.org is not None
    assert fresh.org.status == OrgStatus.SUSPENDED


def test_a_cold_fill_reads_the_org_after_its_generation(
    backend: str,
    org: Organization,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """On a cold miss the lookup cannot know the org: an org change that commits right
    after the key was read is still not cached over."""
    _, secret = make_key(org)
    digest = key_digest(secret)
    real_load = keycache.load_from_db

    def load_then_suspend(d: str) -> Any:
        loaded = real_load(d)
        with django_capture_on_commit_callbacks(execute=True):
            Organization.objects.filter(pk=org.pk).update(status=OrgStatus.SUSPENDED)
            invalidate_org(org.pk)
        return loaded

    monkeypatch.setattr(keycache, "load_from_db", load_then_suspend)
    keycache.resolve(digest)
    monkeypatch.setattr(keycache, "load_from_db", real_load)
    fresh = keycache.resolve(digest)
    assert fresh is not None and fresh.org is not None
    assert fresh.org.status == OrgStatus.SUSPENDED


@pytest.mark.stops_redis
def test_redis_unreachable_falls_back_to_the_database(
    use_redis: RedisServer, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    key, secret = make_key(org)
    digest = key_digest(secret)
    assert keycache.resolve(digest) is not None
    use_redis.stop()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            apikey_revoke(key=key, actor=Actor.system())
        resolved = keycache.resolve(digest)
        assert resolved is not None and not resolved.from_cache
        assert resolved.key.revoked_at is not None
    finally:
        use_redis.start()
    # The invalidation that failed during the outage is retried; meanwhile the restarted
    # (empty) Redis holds no stale entry either.
    resolved = keycache.resolve(digest)
    assert resolved is not None and resolved.key.revoked_at is not None


def test_limits_come_with_the_cached_org(backend: str, org: Organization) -> None:
    Organization.objects.filter(pk=org.pk).update(custom_burst=3, custom_monthly=0)
    _, secret = make_key(org)
    resolved = keycache.resolve(key_digest(secret))
    assert resolved is not None and resolved.org is not None
    assert resolved.org.limits == Limits(per_minute=60, burst=3, monthly=0)


# --- pending invalidations (ADR 0078): batches, back-off, savepoints --------------------


def _revoke_behind_the_caches_back(keys: list[ApiKey]) -> None:
    """Revoked in the database with the invalidation left pending, as after an outage."""
    ApiKey.objects.filter(pk__in=[k.pk for k in keys]).update(revoked_at=timezone.now())
    PendingInvalidation.objects.bulk_create(
        PendingInvalidation(kind="key", ident=k.digest) for k in keys
    )


def test_pending_invalidations_are_applied_past_one_batch(
    backend: str, org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keycache, "PENDING_BATCH", 2)
    made = [make_key(org) for _ in range(5)]
    digests = [key_digest(secret) for _, secret in made]
    for digest in digests:  # warm: the entries say "active"
        keycache.resolve(digest)
        keycache.resolve(digest)
    _revoke_behind_the_caches_back([key for key, _ in made])
    monkeypatch.setattr(keycache, "_check_pending", True)
    for digest in digests:
        resolved = keycache.resolve(digest)
        assert resolved is not None and resolved.key.revoked_at is not None
    assert PendingInvalidation.objects.count() == 0


def test_unreadable_pending_invalidations_are_not_retried_on_every_request(
    backend: str, org: Organization, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    _, secret = make_key(org)
    calls: list[int] = []

    def unreadable(*, limit: int) -> int:
        calls.append(limit)
        raise OperationalError("the database is unreachable")

    monkeypatch.setattr(keycache, "apply_pending", unreadable)
    monkeypatch.setattr(keycache, "_check_pending", True)
    monkeypatch.setattr(keycache.redisconn.error_log, "_last", {})
    for _ in range(3):
        assert keycache.resolve(key_digest(secret)) is not None
    assert len(calls) == 1  # then once per SETTLE_DB_RETRY_SECONDS, not per request
    assert [r.getMessage() for r in caplog.records].count(
        "Pending cache invalidations could not be read (OperationalError: "
        "the database is unreachable)"
    ) == 1


@pytest.mark.stops_redis
def test_until_pending_invalidations_are_applied_keys_are_read_from_the_database(
    use_redis: RedisServer, org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, secret = make_key(org)
    digest = key_digest(secret)
    keycache.resolve(digest)
    keycache.resolve(digest)  # warm: the entry says "active"
    _revoke_behind_the_caches_back([key])
    attempts: list[int] = []
    real_apply = keycache.apply_pending

    def counted(*, limit: int) -> int:
        attempts.append(limit)
        return real_apply(limit=limit)

    monkeypatch.setattr(keycache, "apply_pending", counted)
    monkeypatch.setattr(keycache, "_check_pending", True)
    use_redis.freeze()  # unreachable, keeping the stale entry
    try:
        for _ in range(3):
            resolved = keycache.resolve(digest)
            assert resolved is not None and not resolved.from_cache
            assert resolved.key.revoked_at is not None
        assert len(attempts) == 1  # no Redis round trip per request during the outage
    finally:
        use_redis.thaw()
    # Back, but not yet tried again: the stale entry is still not trusted.
    resolved = keycache.resolve(digest)
    assert resolved is not None and not resolved.from_cache
    assert resolved.key.revoked_at is not None
    monkeypatch.setattr(keycache, "_settle_after", 0.0)  # the back-off has passed
    for _ in range(2):
        resolved = keycache.resolve(digest)
        assert resolved is not None and resolved.key.revoked_at is not None
    assert len(attempts) == 2 and PendingInvalidation.objects.count() == 0


@pytest.mark.stops_redis
def test_a_pending_invalidation_that_cannot_be_stored_does_not_undo_the_revoke(
    use_redis: RedisServer, org: Organization, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    key, _ = make_key(org)

    def failing_insert(**fields: Any) -> None:
        with connection.cursor() as cursor:  # fails, as a full disk or lost table would
            cursor.execute("INSERT INTO apikeys_no_such_table VALUES (1)")

    monkeypatch.setattr(PendingInvalidation.objects, "create", failing_insert)
    use_redis.stop()
    try:
        with transaction.atomic():
            apikey_revoke(key=key, actor=Actor.system())
            # The revoke's transaction is still usable (on PostgreSQL a failed statement
            # outside a savepoint would abort it).
            assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    finally:
        use_redis.start()
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    assert any("could not be stored" in r.getMessage() for r in caplog.records)
