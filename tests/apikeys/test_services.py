from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from accounts.models import PlatformRole
from apikeys.cache import cache_key
from apikeys.keys import key_digest, parse_key
from apikeys.models import ApiKey, KeyStatus
from apikeys.services import (
    ActorNotAllowed,
    EnvironmentNotAllowed,
    InvalidKeyInput,
    KeyNotActive,
    OrgSuspended,
    ScopeNotAllowed,
    apikey_delete,
    apikey_revoke,
    apikey_rotate,
    system_apikey_create,
)
from orgs.actors import Actor
from orgs.models import AuditEvent, KycStatus, Organization, OrgStatus
from tests.apikeys.helpers import frozen_clock, make_key
from tests.factories import UserFactory

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def test_create_stores_only_the_hmac_digest_and_display_form(org: Organization, owner) -> None:
    key, secret = make_key(org, actor=Actor.for_user(owner))
    assert parse_key(secret) is not None
    assert key.digest == key_digest(secret)
    assert secret not in (key.digest, key.display)
    assert key.display.startswith("lk_test_") and "\u2026" in key.display
    assert key.public_id.startswith("key_") and len(key.public_id) == 28
    stored = ApiKey.objects.get(pk=key.pk)
    assert stored.digest == key_digest(secret)


def test_write_implies_read_on_create(org: Organization) -> None:
    key, _ = make_key(org, scopes=["kyc:write", "members:write", "members:write"])
    assert key.scopes == ["kyc:read", "kyc:write", "members:read", "members:write"]


@pytest.mark.parametrize("bad", ["usage:write", "nope:read", "members", "platform_kyc:read"])
def test_bad_scopes_are_refused_naming_the_scope(org: Organization, bad: str) -> None:
    with pytest.raises(InvalidKeyInput) as exc:
        make_key(org, scopes=[bad])
    assert bad in exc.value.message
    assert exc.value.param == "scopes"
    assert not ApiKey.objects.exists()


def test_live_keys_need_approved_kyc(org: Organization) -> None:
    for status in (KycStatus.NOT_SUBMITTED, KycStatus.PENDING, KycStatus.REJECTED):
        org.kyc_status = status
        org.save()
        with pytest.raises(EnvironmentNotAllowed) as exc:
            make_key(org, environment="live")
        assert exc.value.code == "environment_not_allowed"
    org.kyc_status = KycStatus.APPROVED
    org.save()
    key, secret = make_key(org, environment="live")
    assert secret.startswith("lk_live_") and key.environment == "live"


def test_suspended_org_cannot_get_keys(org: Organization) -> None:
    org.status = OrgStatus.SUSPENDED
    org.save()
    with pytest.raises(OrgSuspended):
        make_key(org)


def test_sys_environment_is_not_for_org_keys(org: Organization) -> None:
    with pytest.raises(EnvironmentNotAllowed):
        make_key(org, environment="sys")


def test_key_created_by_key_cannot_exceed_its_creator(org: Organization) -> None:
    org.kyc_status = KycStatus.APPROVED
    org.save()
    creator, _ = make_key(org, scopes=["api_keys:write", "members:read"])
    with pytest.raises(ScopeNotAllowed) as exc:
        make_key(org, scopes=["members:write"], actor=Actor.for_key(creator))
    assert exc.value.required_scope == "members:write"
    with pytest.raises(EnvironmentNotAllowed):
        make_key(org, environment="live", actor=Actor.for_key(creator))
    child, _ = make_key(org, scopes=["members:read", "api_keys:read"], actor=Actor.for_key(creator))
    assert child.created_by_key == creator
    event = AuditEvent.objects.get(action="api_key.created", target_id=child.public_id)
    assert event.actor_type == "api_key" and event.actor_id == creator.public_id


def test_a_key_created_by_a_key_cannot_outlive_it(org: Organization) -> None:
    soon = timezone.now() + timedelta(minutes=5)
    creator, _ = make_key(org, scopes=["api_keys:write"], expires_at=soon)
    with pytest.raises(InvalidKeyInput) as forever:
        make_key(org, scopes=["api_keys:read"], actor=Actor.for_key(creator))
    assert forever.value.param == "expires_at"
    with pytest.raises(InvalidKeyInput):
        make_key(
            org,
            scopes=["api_keys:read"],
            actor=Actor.for_key(creator),
            expires_at=soon + timedelta(seconds=1),
        )
    child, _ = make_key(
        org, scopes=["api_keys:read"], actor=Actor.for_key(creator), expires_at=soon
    )
    assert child.expires_at == soon


def test_audit_events_never_carry_the_secret(org: Organization, owner) -> None:
    key, secret = make_key(org, actor=Actor.for_user(owner))
    successor, secret2 = apikey_rotate(key=key, actor=Actor.for_user(owner))
    apikey_revoke(key=successor, actor=Actor.for_user(owner))
    apikey_delete(key=successor, actor=Actor.for_user(owner))
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["api_key.created", "api_key.rotated", "api_key.revoked", "api_key.deleted"]
    for event in AuditEvent.objects.all():
        blob = repr(event.details) + event.target_label + event.actor_label
        assert secret not in blob and secret2 not in blob
        assert event.actor_user == owner


def test_rotation_grace_then_expiry_with_frozen_clock(org: Organization) -> None:
    with frozen_clock(T0) as clock:
        key, _ = make_key(org, scopes=["usage:read", "kyc:write"])
        successor, secret = apikey_rotate(key=key, grace=timedelta(hours=24), actor=Actor.system())
        key.refresh_from_db()
        assert successor.predecessor == key
        assert (successor.name, successor.environment, successor.scopes, successor.org) == (
            key.name,
            key.environment,
            key.scopes,
            org,
        )
        assert successor.digest == key_digest(secret) != key.digest
        assert key.expires_at == T0 + timedelta(hours=24)
        assert key.status == KeyStatus.EXPIRING and key.is_usable()
        assert successor.status == KeyStatus.ACTIVE
        clock.advance(timedelta(hours=23, minutes=59, seconds=59))
        assert key.status == KeyStatus.EXPIRING and key.is_usable()
        clock.advance(timedelta(seconds=1))
        assert key.status == KeyStatus.EXPIRED and not key.is_usable()
        assert successor.is_usable()


def test_zero_grace_retires_the_old_key_at_once(org: Organization) -> None:
    with frozen_clock(T0):
        key, _ = make_key(org)
        apikey_rotate(key=key, grace=timedelta(0), actor=Actor.system())
        assert key.status == KeyStatus.EXPIRED and not key.is_usable()


def test_grace_is_bounded(org: Organization) -> None:
    key, _ = make_key(org)
    for grace in (timedelta(days=7, seconds=1), timedelta(seconds=-1)):
        with pytest.raises(InvalidKeyInput):
            apikey_rotate(key=key, grace=grace, actor=Actor.system())
    apikey_rotate(key=key, grace=timedelta(days=7), actor=Actor.system())


def test_grace_never_outlives_the_keys_own_expiry(org: Organization) -> None:
    with frozen_clock(T0):
        key, _ = make_key(org, expires_at=T0 + timedelta(hours=2))
        successor, _ = apikey_rotate(key=key, grace=timedelta(days=3), actor=Actor.system())
        assert key.expires_at == T0 + timedelta(hours=2)
        assert successor.expires_at == T0 + timedelta(hours=2)


def test_revoked_expired_and_rotated_keys_cannot_be_rotated(org: Organization) -> None:
    with frozen_clock(T0) as clock:
        revoked, _ = make_key(org)
        apikey_revoke(key=revoked, actor=Actor.system())
        with pytest.raises(KeyNotActive):
            apikey_rotate(key=revoked, actor=Actor.system())
        expiring, _ = make_key(org, expires_at=T0 + timedelta(minutes=5))
        rotated, _ = make_key(org)
        apikey_rotate(key=rotated, actor=Actor.system())
        with pytest.raises(KeyNotActive):
            apikey_rotate(key=rotated, actor=Actor.system())
        clock.advance(timedelta(minutes=5))
        assert expiring.status == KeyStatus.EXPIRED and not expiring.is_usable()
        with pytest.raises(KeyNotActive):
            apikey_rotate(key=expiring, actor=Actor.system())
    assert ApiKey.objects.count() == 4


def test_expiry_must_be_in_the_future(org: Organization) -> None:
    with frozen_clock(T0):
        with pytest.raises(InvalidKeyInput):
            make_key(org, expires_at=T0)
        key, _ = make_key(org, expires_at=T0 + timedelta(days=1))
        assert key.status == KeyStatus.ACTIVE


def test_revoke_is_immediate_and_idempotent(org: Organization) -> None:
    key, _ = make_key(org)
    apikey_revoke(key=key, actor=Actor.system())
    apikey_revoke(key=key, actor=Actor.system())
    key.refresh_from_db()
    assert key.status == KeyStatus.REVOKED and not key.is_usable()
    assert AuditEvent.objects.filter(action="api_key.revoked").count() == 1


def test_delete_hides_and_disables_but_keeps_audit_events(org: Organization) -> None:
    key, _ = make_key(org)
    apikey_delete(key=key, actor=Actor.system())
    key.refresh_from_db()
    assert key.deleted_at is not None and not key.is_usable()
    assert AuditEvent.objects.filter(target_id=key.public_id).count() == 2


def test_revoke_rotate_delete_invalidate_the_verification_cache(
    org: Organization, django_capture_on_commit_callbacks
) -> None:
    keys = [make_key(org)[0] for _ in range(3)]
    for key in keys:
        cache.set(cache_key(key.digest), "cached", 60)
    with django_capture_on_commit_callbacks(execute=True):
        apikey_revoke(key=keys[0], actor=Actor.system())
        apikey_rotate(key=keys[1], actor=Actor.system())
        apikey_delete(key=keys[2], actor=Actor.system())
    for key in keys:
        assert cache.get(cache_key(key.digest)) is None


def test_system_keys_need_a_platform_owner_and_system_scopes(db: None) -> None:
    staff = UserFactory.create(platform_role=PlatformRole.PLATFORM_ADMIN)
    with pytest.raises(ActorNotAllowed):
        system_apikey_create(name="ops", scopes=["platform_kyc:read"], actor=Actor.for_user(staff))
    owner = UserFactory.create(platform_role=PlatformRole.PLATFORM_OWNER)
    with pytest.raises(InvalidKeyInput):
        system_apikey_create(name="ops", scopes=["members:read"], actor=Actor.for_user(owner))
    key, secret = system_apikey_create(
        name="ops", scopes=["platform_kyc:write"], actor=Actor.for_user(owner)
    )
    assert secret.startswith("lk_sys_") and key.org is None and key.environment == "sys"
    assert key.scopes == ["platform_kyc:read", "platform_kyc:write"]


def test_successor_history_shows_the_rotation_that_issued_it(org: Organization, owner) -> None:
    from apikeys.selectors import apikey_history

    key, _ = make_key(org, actor=Actor.for_user(owner))
    successor, _ = apikey_rotate(key=key, actor=Actor.for_user(owner))
    assert [e.action for e in apikey_history(org=org, key=successor)] == ["api_key.rotated"]
    assert [e.action for e in apikey_history(org=org, key=key)] == [
        "api_key.rotated",
        "api_key.created",
    ]
