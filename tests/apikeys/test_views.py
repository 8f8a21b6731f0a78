"""The API-key dashboard: roles, show-once secrets, tenancy, constant queries."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apikeys.keys import key_digest, parse_key
from apikeys.models import ApiKey, KeyStatus
from apikeys.services import apikey_revoke
from orgs.actors import Actor
from orgs.models import AuditEvent, KycStatus, Organization, Role
from tests.apikeys.helpers import frozen_clock, make_key
from tests.conftest import signed_in_client
from tests.factories import MembershipFactory, UserFactory


def url(org: Organization, suffix: str = "") -> str:
    return f"/o/{org.slug}/api-keys/{suffix}"


def create_payload(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "Billing sync",
        "environment": "test",
        "expiry": "never",
        "scope": ["members:write", "usage:read"],
    }
    data.update(overrides)
    return data


def secret_in(content: bytes) -> str:
    html = content.decode()
    start = html.index('id="api-key-secret">') + len('id="api-key-secret">')
    return html[start : html.index("<", start)]


def test_admin_creates_a_key_and_sees_the_secret_once(
    admin_client_: Client, org: Organization, admin_user
) -> None:
    response = admin_client_.post(url(org, "new/"), create_payload())
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = secret_in(response.content)
    assert parse_key(secret) is not None
    key = ApiKey.objects.get()
    assert key.digest == key_digest(secret)
    assert key.scopes == ["members:read", "members:write", "usage:read"]
    assert key.created_by == admin_user and key.org == org
    assert b"will not be shown again" in response.content
    assert b'data-copy-target="api-key-secret"' in response.content
    # The secret is in no message and in no later page.
    for page in (url(org), url(org, f"{key.public_id}/")):
        later = admin_client_.get(page)
        assert later.status_code == 200
        assert secret.encode() not in later.content
        assert key.display.encode() in later.content
    assert secret not in repr(dict(admin_client_.session.items()))


def test_owner_can_create_too(owner_client: Client, org: Organization) -> None:
    assert owner_client.post(url(org, "new/"), create_payload()).status_code == 200


def test_create_form_shows_the_grid_from_the_registry(
    admin_client_: Client, org: Organization
) -> None:
    response = admin_client_.get(url(org, "new/"))
    html = response.content.decode()
    assert response.status_code == 200
    assert '<input type="text" name="name"' in html
    assert '<select name="environment"' in html
    for scope in [
        "organization:read",
        "organization:write",
        "members:read",
        "members:write",
        "api_keys:read",
        "api_keys:write",
        "audit_log:read",
        "usage:read",
        "kyc:read",
        "kyc:write",
    ]:
        assert f'name="scope" value="{scope}"' in html
    assert 'value="audit_log:write"' not in html and 'value="usage:write"' not in html
    assert "js/scopes.js" in html


def test_live_option_is_disabled_and_explained_until_kyc_approved(
    admin_client_: Client, org: Organization
) -> None:
    html = admin_client_.get(url(org, "new/")).content.decode()
    assert '<option value="live" disabled>' in html
    assert "available once" in html and "KYC" in html
    response = admin_client_.post(url(org, "new/"), create_payload(environment="live"))
    assert response.status_code == 400
    assert b"KYC" in response.content
    assert not ApiKey.objects.exists()

    org.kyc_status = KycStatus.APPROVED
    org.save()
    html = admin_client_.get(url(org, "new/")).content.decode()
    assert '<option value="live">' in html
    response = admin_client_.post(url(org, "new/"), create_payload(environment="live"))
    assert response.status_code == 200
    assert secret_in(response.content).startswith("lk_live_")


def test_write_implies_read_on_the_server(admin_client_: Client, org: Organization) -> None:
    admin_client_.post(url(org, "new/"), create_payload(scope=["kyc:write"]))
    assert ApiKey.objects.get().scopes == ["kyc:read", "kyc:write"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"name": ""}, b"This field is required"),
        ({"scope": []}, b"Tick at least one permission"),
        ({"scope": ["usage:write"]}, b"usage:write"),
        ({"environment": "sys"}, b"not one of the available choices"),
        ({"expiry": "custom", "expires_on": ""}, b"Pick the date"),
        ({"expiry": "custom", "expires_on": "9999-12-31"}, b"within the next ten years"),
    ],
)
def test_invalid_create_input_rerenders_the_form(
    admin_client_: Client, org: Organization, payload: dict[str, object], message: bytes
) -> None:
    response = admin_client_.post(url(org, "new/"), create_payload(**payload))
    assert response.status_code == 400
    assert message in response.content
    assert b'id="api-key-secret"' not in response.content
    assert not ApiKey.objects.exists()


def test_expiry_presets_and_custom_date(admin_client_: Client, org: Organization) -> None:
    with frozen_clock() as clock:
        t0 = clock.datetime()
        day = (t0 + timedelta(days=45)).date()
        assert admin_client_.post(url(org, "new/"), create_payload(expiry="30")).status_code == 200
        response = admin_client_.post(
            url(org, "new/"), create_payload(expiry="custom", expires_on=day.isoformat())
        )
        assert response.status_code == 200
    first, second = ApiKey.objects.order_by("id")
    assert first.expires_at == t0 + timedelta(days=30)
    assert second.expires_at == datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


def test_member_sees_masked_list_without_create(member_client: Client, org: Organization) -> None:
    key, secret = make_key(org)
    response = member_client.get(url(org))
    assert response.status_code == 200
    assert key.display.encode() in response.content
    assert secret.encode() not in response.content
    assert b'id="create-api-key"' not in response.content
    assert b"/api-keys/new/" not in response.content
    detail = member_client.get(url(org, f"{key.public_id}/"))
    assert detail.status_code == 200
    assert b"rotate-form" not in detail.content and b'id="revoke-key"' not in detail.content


def test_member_cannot_reach_any_key_action(member_client: Client, org: Organization) -> None:
    key, _ = make_key(org)
    assert member_client.get(url(org, "new/")).status_code == 403
    assert member_client.post(url(org, "new/"), create_payload()).status_code == 403
    for action in ("rotate", "revoke", "delete"):
        assert member_client.post(url(org, f"{key.public_id}/{action}/")).status_code == 403
    assert member_client.get(url(org, f"{key.public_id}/revoke/")).status_code == 403
    key.refresh_from_db()
    assert key.status == KeyStatus.ACTIVE and key.deleted_at is None
    assert ApiKey.objects.count() == 1


def test_anonymous_is_sent_to_sign_in(client: Client, org: Organization) -> None:
    response = client.get(url(org))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_other_orgs_keys_are_404_for_every_page_and_action(
    admin_client_: Client, org: Organization, other_org: Organization
) -> None:
    foreign, _ = make_key(other_org)
    for suffix in ("", "revoke/", "delete/"):
        assert admin_client_.get(url(org, f"{foreign.public_id}/{suffix}")).status_code == 404
    for action in ("rotate", "revoke", "delete"):
        response = admin_client_.post(url(org, f"{foreign.public_id}/{action}/"))
        assert response.status_code == 404
    # Asking through the other org's URL, without a membership there, is a 404 too.
    assert admin_client_.get(url(other_org)).status_code == 404
    assert admin_client_.get(url(other_org, f"{foreign.public_id}/")).status_code == 404
    foreign.refresh_from_db()
    assert foreign.status == KeyStatus.ACTIVE and foreign.deleted_at is None
    assert foreign.display.encode() not in admin_client_.get(url(org)).content


def test_rotate_shows_new_secret_once_and_keeps_old_key_for_grace(
    admin_client_: Client, org: Organization
) -> None:
    with frozen_clock() as clock:
        t0 = clock.datetime()
        key, old_secret = make_key(org)
        detail = admin_client_.get(url(org, f"{key.public_id}/")).content.decode()
        assert '<option value="86400" selected>' in detail
        response = admin_client_.post(url(org, f"{key.public_id}/rotate/"), {"grace": "3600"})
        assert response.status_code == 200
        assert "no-store" in response["Cache-Control"]
        new_secret = secret_in(response.content)
        assert new_secret != old_secret and parse_key(new_secret) is not None
        successor = ApiKey.objects.get(digest=key_digest(new_secret))
        key.refresh_from_db()
        assert successor.predecessor == key
        assert key.expires_at == t0 + timedelta(hours=1)
        listing = admin_client_.get(url(org)).content.decode()
        assert 'data-status="expiring"' in listing
        assert new_secret not in listing
        clock.advance(timedelta(hours=1))
        listing = admin_client_.get(url(org)).content.decode()
        assert 'data-status="expired"' in listing
    # A GET is the confirm step: it rotates nothing.
    step = admin_client_.get(url(org, f"{key.public_id}/rotate/"))
    assert step.status_code == 200 and b'id="confirm-rotate"' in step.content
    assert ApiKey.objects.count() == 2


def test_rotate_immediately_asks_first_and_a_grace_rotation_does_not(
    admin_client_: Client, org: Organization
) -> None:
    key, _ = make_key(org)
    rotate = url(org, f"{key.public_id}/rotate/")
    # The detail page's form asks (confirm_ask): "immediately" stops at the confirm step.
    step = admin_client_.post(rotate, {"grace": "0", "confirm_ask": "1"})
    assert step.status_code == 200
    page = step.content.decode()
    assert 'id="confirm-rotate"' in page and "stops working the moment you confirm" in page
    assert key.display in page
    assert '<input type="hidden" name="grace" value="0"' in page
    assert ApiKey.objects.count() == 1
    # Confirming performs.
    done = admin_client_.post(rotate, {"grace": "0"})
    assert done.status_code == 200 and secret_in(done.content)
    assert ApiKey.objects.count() == 2
    # With a grace period the ask performs at once: the old key keeps working.
    successor = ApiKey.objects.exclude(pk=key.pk).get()
    again = admin_client_.post(
        url(org, f"{successor.public_id}/rotate/"), {"grace": "3600", "confirm_ask": "1"}
    )
    assert again.status_code == 200 and secret_in(again.content)
    assert ApiKey.objects.count() == 3


def test_rotate_rejects_an_unlisted_grace(admin_client_: Client, org: Organization) -> None:
    key, _ = make_key(org)
    response = admin_client_.post(url(org, f"{key.public_id}/rotate/"), {"grace": "999999"})
    assert response.status_code == 400
    assert b"error-summary" in response.content
    assert ApiKey.objects.count() == 1


def test_revoked_key_cannot_be_rotated_from_the_dashboard(
    admin_client_: Client, org: Organization
) -> None:
    key, _ = make_key(org)
    apikey_revoke(key=key, actor=Actor.system())
    response = admin_client_.post(url(org, f"{key.public_id}/rotate/"), {"grace": "0"})
    assert response.status_code == 302
    assert b"revoked key cannot be rotated" in admin_client_.get(response["Location"]).content
    assert ApiKey.objects.count() == 1


def test_revoke_confirms_then_is_immediate(admin_client_: Client, org: Organization) -> None:
    key, _ = make_key(org)
    confirm = admin_client_.get(url(org, f"{key.public_id}/revoke/"))
    assert confirm.status_code == 200 and b'id="confirm-revoke"' in confirm.content
    key.refresh_from_db()
    assert key.revoked_at is None
    response = admin_client_.post(url(org, f"{key.public_id}/revoke/"))
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.status == KeyStatus.REVOKED
    detail = admin_client_.get(response["Location"]).content.decode()
    assert 'data-status="revoked"' in detail
    assert "api_key.revoked" in detail


def test_delete_removes_from_list_and_keeps_audit(admin_client_: Client, org: Organization) -> None:
    key, _ = make_key(org)
    response = admin_client_.post(url(org, f"{key.public_id}/delete/"))
    assert response.status_code == 302 and response["Location"] == url(org)
    assert key.display.encode() not in admin_client_.get(url(org)).content
    assert admin_client_.get(url(org, f"{key.public_id}/")).status_code == 404
    actions = set(
        AuditEvent.objects.filter(target_id=key.public_id).values_list("action", flat=True)
    )
    assert actions == {"api_key.created", "api_key.deleted"}


def test_detail_shows_scopes_history_and_usage_placeholder(
    admin_client_: Client, org: Organization, admin_user
) -> None:
    admin_client_.post(url(org, "new/"), create_payload(scope=["kyc:write", "audit_log:read"]))
    key = ApiKey.objects.get()
    html = admin_client_.get(url(org, f"{key.public_id}/")).content.decode()
    assert 'data-scope="kyc:write"' in html and 'data-scope="kyc:read"' in html
    assert 'data-scope="audit_log:read"' in html and 'data-scope="members:read"' not in html
    assert "api_key.created" in html and admin_user.email in html
    assert 'id="key-usage"' in html and "once the key is used" in html


def test_list_query_count_is_constant_for_1_and_500_keys(
    member_client: Client, org: Organization
) -> None:
    creator = UserFactory.create(email="creator@acme.test")
    MembershipFactory.create(org=org, user=creator, role=Role.ADMIN)
    make_key(org, actor=Actor.for_user(creator))
    member_client.get(url(org))  # warm the session and content-type caches
    with CaptureQueriesContext(connection) as one:
        assert member_client.get(url(org)).status_code == 200

    users = [UserFactory.create() for _ in range(5)]
    ApiKey.objects.bulk_create(
        [
            ApiKey(
                org=org,
                name=f"key {i}",
                environment="test",
                scopes=["members:read"],
                digest=f"{i:064x}",
                display=f"lk_test_{i:04d}\u2026abcd",
                created_by=users[i % 5],
            )
            for i in range(499)
        ]
    )
    with CaptureQueriesContext(connection) as many:
        response = member_client.get(url(org))
    assert response.status_code == 200
    # Pages of 50, newest first: every key exactly once, each page the same queries.
    assert response.content.count(b'class="api-key"') == 50
    assert len(many.captured_queries) == len(one.captured_queries)
    seen: list[str] = []
    page_url = url(org)
    while page_url:
        with CaptureQueriesContext(connection) as deep:
            page = member_client.get(page_url)
        assert len(deep.captured_queries) == len(one.captured_queries)
        seen += re.findall(r'data-key-id="(key_[0-9A-Za-z]+)"', page.content.decode())
        older = re.search(r'href="([^"]+)" id="keys-older"', page.content.decode())
        page_url = older.group(1).replace("&amp;", "&") if older else ""
    expected = ApiKey.objects.filter(org=org).order_by("-created_at", "-id")
    assert seen == [k.public_id for k in expected]
    assert member_client.get(url(org) + "?before=nonsense").status_code == 400


def test_another_members_session_in_the_org_sees_the_list(org: Organization, admin_user) -> None:
    outsider = UserFactory.create(email="outsider@example.com")
    assert signed_in_client(outsider).get(url(org)).status_code == 404


def test_selectors_never_return_another_orgs_key(
    org: Organization, other_org: Organization
) -> None:
    from django.http import Http404

    from apikeys.selectors import apikey_get, apikey_history, apikey_list

    mine, _ = make_key(org)
    foreign, _ = make_key(other_org)
    assert list(apikey_list(org=org)) == [mine]
    with pytest.raises(Http404):
        apikey_get(org=org, public_id=foreign.public_id)
    assert apikey_history(org=org, key=foreign) == []


def test_resubmitting_the_create_form_shows_the_key_masked_not_a_new_secret(
    admin_client_: Client, org: Organization
) -> None:
    form = admin_client_.get(url(org, "new/")).content.decode()
    start = form.index('name="form_nonce" value="') + len('name="form_nonce" value="')
    nonce = form[start : form.index('"', start)]
    assert len(nonce) >= 20
    first = admin_client_.post(url(org, "new/"), create_payload(form_nonce=nonce))
    secret = secret_in(first.content)
    again = admin_client_.post(url(org, "new/"), create_payload(form_nonce=nonce))
    key = ApiKey.objects.get()
    assert again.status_code == 302
    assert again["Location"] == url(org, f"{key.public_id}/")
    page = admin_client_.get(again["Location"]).content
    assert secret.encode() not in page and b"already created" in page
    session_dump = repr(dict(admin_client_.session.items()))
    assert nonce not in session_dump and secret not in session_dump
    # A fresh form (new nonce) creates a new key as usual.
    fresh = admin_client_.get(url(org, "new/")).content.decode()
    assert nonce not in fresh
