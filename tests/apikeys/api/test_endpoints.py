"""What each endpoint does: shapes, services reused with their rules, pagination, audit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apikeys.keys import parse_key
from apikeys.models import ApiKey
from orgs.actors import Actor
from orgs.models import AuditEvent, Invitation, Membership, Organization, Role
from orgs.services import audit_record
from tests.apikeys.api.conftest import ApiClient, KeyMaker, assert_error
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def _opaque(value: Any) -> None:
    """No database integer leaks: every `id` is a prefixed opaque string."""
    if isinstance(value, dict):
        for name, item in value.items():
            if name == "id" or (name.endswith("_id") and name != "request_id"):
                assert item in (None, "") or (isinstance(item, str) and "_" in item), (name, item)
            _opaque(item)
    elif isinstance(value, list):
        for item in value:
            _opaque(item)


def test_ping_needs_no_key_and_no_database() -> None:
    with CaptureQueriesContext(connection) as queries:
        response = ApiClient().get("ping")
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert len(queries) == 0


def test_me_describes_the_key_its_org_and_its_limits(org: Organization, full_key: Any) -> None:
    org.custom_per_minute = 1000
    org.save(update_fields=["custom_per_minute"])
    key, secret = full_key
    body = ApiClient(secret).get("me").json()
    assert body["key"]["id"] == key.public_id
    assert body["key"]["display"] == key.display and secret not in str(body)
    assert body["key"]["environment"] == "test"
    assert "members:write" in body["key"]["scopes"]
    assert body["organization"]["id"] == org.public_id
    assert body["organization"]["slug"] == "acme"
    assert body["rate_limits"] == {"per_minute": 1000, "burst": 10, "monthly": 100_000}
    _opaque(body)


def test_me_makes_one_query_the_key_lookup(full_key: Any) -> None:
    with CaptureQueriesContext(connection) as queries:
        assert ApiClient(full_key[1]).get("me").status_code == 200
    assert len(queries) == 1


def test_organization_get_and_rename(org: Organization, full_client: ApiClient) -> None:
    body = full_client.get("organization").json()
    assert body["id"] == org.public_id and body["name"] == "Acme"
    response = full_client.patch("organization", {"name": "  Acme Corp  "})
    assert response.status_code == 200
    assert response.json()["name"] == "Acme Corp"
    org.refresh_from_db()
    assert org.name == "Acme Corp" and org.slug == "acme"
    event = AuditEvent.objects.get(action="org.settings_changed")
    assert event.actor_type == "api_key"


def test_organization_patch_refuses_other_fields(full_client: ApiClient) -> None:
    bodies: list[dict[str, Any]] = [
        {"slug": "new"},
        {"require_two_factor": True},
        {"name": "x", "plan": "growth"},
    ]
    for body in bodies:
        error = assert_error(full_client.patch("organization", body), 400, "validation_error")
        assert error["param"] in body


def test_members_list_shows_members_in_joining_order(
    org: Organization, owner: Any, member_user: Any, full_client: ApiClient
) -> None:
    body = full_client.get("members").json()
    emails = [m["email"] for m in body["results"]]
    assert emails == ["owner@acme.test", "member@acme.test"]
    assert body["results"][0]["role"] == "owner"
    assert body["results"][0]["id"].startswith("mem_")
    assert body["results"][0]["two_factor"] is False
    _opaque(body)


def test_member_invite_sends_an_email_and_returns_the_invitation(
    org: Organization, full_client: ApiClient, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = full_client.post("members", {"email": "New@Example.com", "role": "admin"})
    assert response.status_code == 201
    body = response.json()
    assert body["object"] == "invitation" and body["id"].startswith("inv_")
    assert body["email"] == "new@example.com" and body["status"] == "pending"
    assert Invitation.objects.filter(org=org, email="new@example.com").exists()
    assert mail.outbox and mail.outbox[-1].to == ["new@example.com"]
    assert AuditEvent.objects.get(action="member.invited").actor_type == "api_key"


def test_invitations_are_listed_read_resent_and_cancelled(
    org: Organization,
    full_client: ApiClient,
    other_org: Organization,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        sent = full_client.post("members", {"email": "ann@example.com", "role": "member"}).json()
        full_client.post("members", {"email": "bob@example.com", "role": "admin"})
    listed = full_client.get("invitations").json()["results"]
    assert [i["email"] for i in listed] == ["bob@example.com", "ann@example.com"]
    one = full_client.get(f"invitations/{sent['id']}")
    assert one.status_code == 200 and one.json() == sent

    first_link = mail.outbox[-2].body
    with django_capture_on_commit_callbacks(execute=True):
        resent = full_client.post(f"invitations/{sent['id']}/resend")
    assert resent.status_code == 200 and resent.json()["status"] == "pending"
    assert mail.outbox[-1].to == ["ann@example.com"] and mail.outbox[-1].body != first_link

    cancelled = full_client.post(f"invitations/{sent['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = full_client.post(f"invitations/{sent['id']}/cancel")
    assert assert_error(again, 409, "conflict")["reason"] == "invitation_closed"
    invitation_events = AuditEvent.objects.filter(action__startswith="invitation.").order_by("id")
    assert [e.action for e in invitation_events] == [
        "invitation.resent",
        "invitation.cancelled",
    ]

    # Another org's invitation, and a wrong method, are the usual errors.
    from orgs.services import member_invite

    theirs = member_invite(
        org=other_org, email="x@example.com", role="member", actor=Actor.system()
    )
    assert_error(full_client.get(f"invitations/{theirs.public_id}"), 404, "not_found")
    assert_error(full_client.get(f"invitations/{sent['id']}/resend"), 405, "method_not_allowed")


def test_invitations_need_the_members_scopes(
    org: Organization, make_api_key: KeyMaker, full_client: ApiClient
) -> None:
    sent = full_client.post("members", {"email": "cat@example.com", "role": "member"}).json()
    _, reader = make_api_key(org, ["members:read"])
    assert ApiClient(reader).get("invitations").status_code == 200
    refused = ApiClient(reader).post(f"invitations/{sent['id']}/cancel")
    assert assert_error(refused, 403, "insufficient_scope")["required_scope"] == "members:write"


def test_member_rules_of_the_dashboard_apply_to_keys(
    org: Organization, owner: Any, member_user: Any, full_client: ApiClient
) -> None:
    owner_m = Membership.objects.get(org=org, user=owner)
    member_m = Membership.objects.get(org=org, user=member_user)
    # A key acts with an admin's powers: owners are out of its reach.
    forbidden = full_client.post("members", {"email": "boss@example.com", "role": "owner"})
    assert assert_error(forbidden, 403, "permission_denied")["reason"] == "forbidden"
    for response in [
        full_client.patch(f"members/{owner_m.public_id}", {"role": "member"}),
        full_client.delete(f"members/{owner_m.public_id}"),
    ]:
        assert_error(response, 403, "permission_denied")
    already = full_client.post("members", {"email": "member@acme.test"})
    assert assert_error(already, 409, "conflict")["reason"] == "already_member"
    bad_role = full_client.patch(f"members/{member_m.public_id}", {"role": "emperor"})
    assert assert_error(bad_role, 400, "validation_error")["param"] == "role"
    promoted = full_client.patch(f"members/{member_m.public_id}", {"role": "admin"})
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    owner_m.refresh_from_db()
    assert owner_m.role == Role.OWNER


def test_member_remove(org: Organization, member_user: Any, full_client: ApiClient) -> None:
    membership = Membership.objects.get(org=org, user=member_user)
    assert full_client.delete(f"members/{membership.public_id}").status_code == 204
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert_error(full_client.get(f"members/{membership.public_id}"), 404, "not_found")
    assert AuditEvent.objects.get(action="member.removed").actor_type == "api_key"


def test_another_orgs_objects_are_404_everywhere(
    org: Organization, other_org: Organization, make_api_key: KeyMaker
) -> None:
    foreign_member = MembershipFactory.create(org=other_org, role=Role.MEMBER)
    foreign_key, _ = make_api_key(other_org)
    _, secret = make_api_key(org)
    client = ApiClient(secret)
    for method, path, body in [
        ("GET", f"members/{foreign_member.public_id}", None),
        ("PATCH", f"members/{foreign_member.public_id}", {"role": "admin"}),
        ("DELETE", f"members/{foreign_member.public_id}", None),
        ("GET", f"api-keys/{foreign_key.public_id}", None),
        ("DELETE", f"api-keys/{foreign_key.public_id}", None),
        ("POST", f"api-keys/{foreign_key.public_id}/rotate", {}),
        ("POST", f"api-keys/{foreign_key.public_id}/revoke", None),
    ]:
        assert_error(client.request(method, path, body), 404, "not_found")
    foreign_key.refresh_from_db()
    foreign_member.refresh_from_db()
    assert foreign_key.revoked_at is None and foreign_key.rotated_at is None
    assert foreign_member.role == Role.MEMBER


def test_create_returns_the_secret_once(org: Organization, full_client: ApiClient) -> None:
    response = full_client.post(
        "api-keys", {"name": "Deploys", "scopes": ["members:write"], "environment": "test"}
    )
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    secret = body["secret"]
    assert parse_key(secret) is not None
    assert body["scopes"] == ["members:read", "members:write"]
    assert body["display"].startswith("lk_test_") and secret not in body["display"]
    assert secret not in full_client.get(f"api-keys/{body['id']}").content.decode()
    assert secret not in full_client.get("api-keys").content.decode()
    assert secret not in str(list(AuditEvent.objects.values()))
    # The new key works.
    assert ApiClient(secret).get("members").status_code == 200


def test_create_with_expiry(full_client: ApiClient) -> None:
    expires = (timezone.now() + timedelta(days=3)).replace(microsecond=0)
    response = full_client.post(
        "api-keys", {"name": "Short", "scopes": [], "expires_at": expires.isoformat()}
    )
    assert response.status_code == 201
    assert response.json()["expires_at"].startswith(expires.strftime("%Y-%m-%dT%H:%M:%S"))


def test_rotate_returns_a_new_secret_and_keeps_the_old_key_for_the_grace(
    org: Organization, full_client: ApiClient, make_api_key: KeyMaker
) -> None:
    target, old_secret = make_api_key(org, ["members:read"], name="Worker")
    response = full_client.post(
        f"api-keys/{target.public_id}/rotate",
        {"grace_period": 3600},
        headers={"X-Actor-Id": "ops-7"},
    )
    assert response.status_code == 201 and response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["id"] != target.public_id and body["predecessor_id"] == target.public_id
    assert body["name"] == "Worker" and body["scopes"] == ["members:read"]
    assert ApiClient(body["secret"]).get("members").status_code == 200
    assert ApiClient(old_secret).get("members").status_code == 200
    old = full_client.get(f"api-keys/{target.public_id}").json()
    assert old["status"] == "expiring" and old["rotated_at"] is not None
    event = AuditEvent.objects.get(action="api_key.rotated")
    assert event.external_actor_id == "ops-7" and event.details["grace_seconds"] == 3600
    assert old["rotated_to"] == body["id"]
    assert full_client.get(f"api-keys/{body['id']}").json()["rotated_to"] is None
    listed = {k["id"]: k for k in full_client.get("api-keys").json()["results"]}
    assert listed[target.public_id]["rotated_to"] == body["id"]
    # A second rotation names the key to rotate instead.
    again = full_client.post(f"api-keys/{target.public_id}/rotate", {})
    error = assert_error(again, 409, "already_rotated")
    assert error["successor_id"] == body["id"]
    assert body["id"] in error["message"]


def test_keys_are_listed_by_status_and_environment(
    org: Organization, full_client: ApiClient, make_api_key: KeyMaker
) -> None:
    from orgs.models import KycStatus

    org.kyc_status = KycStatus.APPROVED
    org.save(update_fields=["kyc_status"])
    revoked, _ = make_api_key(org, ["members:read"], name="Revoked")
    ApiKey.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())
    expired, _ = make_api_key(org, ["members:read"], name="Expired")
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    rotated, _ = make_api_key(org, ["members:read"], name="Rotated")
    full_client.post(f"api-keys/{rotated.public_id}/rotate", {"grace_period": 3600})
    make_api_key(org, ["members:read"], name="Live", environment="live")

    def names(**query: str) -> set[str]:
        response = full_client.get("api-keys", query=query)
        assert response.status_code == 200, response.json()
        return {k["name"] for k in response.json()["results"]}

    assert names(status="revoked") == {"Revoked"}
    assert names(status="expired") == {"Expired"}
    assert names(status="expiring") == {"Rotated"}
    assert "Rotated" in names(status="active")
    assert not {"Revoked", "Expired"} & names(status="active")
    # The calling key is a test key: it never sees live keys, filtered or not.
    assert names(environment="live") == set()
    assert "Live" not in names()
    _, live_secret = make_api_key(org, ["api_keys:read"], name="Reader", environment="live")
    live_client = ApiClient(live_secret)
    listed = live_client.get("api-keys", query={"environment": "live"}).json()["results"]
    assert {k["name"] for k in listed} == {"Live", "Reader"}
    revoked_live = live_client.get("api-keys", query={"environment": "live", "status": "revoked"})
    assert revoked_live.json()["results"] == []
    error = assert_error(
        full_client.get("api-keys", query={"status": "gone"}), 400, "validation_error"
    )
    assert error["param"] == "status"


def test_rotate_defaults_to_a_day_of_grace(org: Organization, full_client: ApiClient) -> None:
    target = ApiKey.objects.get(org=org)
    before = timezone.now()
    assert full_client.post(f"api-keys/{target.public_id}/rotate").status_code == 201
    after = timezone.now()
    target.refresh_from_db()
    assert target.expires_at is not None
    assert before + timedelta(hours=24) <= target.expires_at <= after + timedelta(hours=24)


def test_revoke_stops_the_key_at_once(
    org: Organization, full_client: ApiClient, make_api_key: KeyMaker
) -> None:
    target, secret = make_api_key(org, ["members:read"])
    assert ApiClient(secret).get("members").status_code == 200
    response = full_client.post(f"api-keys/{target.public_id}/revoke")
    assert response.status_code == 200
    assert response.json()["status"] == "revoked" and response.json()["revoked_at"]
    assert_error(ApiClient(secret).get("members"), 401, "api_key_revoked")
    # Revoking again is harmless.
    assert full_client.post(f"api-keys/{target.public_id}/revoke").status_code == 200


def test_delete_removes_the_key_from_lists(
    org: Organization, full_client: ApiClient, make_api_key: KeyMaker
) -> None:
    target, secret = make_api_key(org, ["members:read"])
    assert full_client.delete(f"api-keys/{target.public_id}").status_code == 204
    ids = [k["id"] for k in full_client.get("api-keys").json()["results"]]
    assert target.public_id not in ids
    assert_error(full_client.get(f"api-keys/{target.public_id}"), 404, "not_found")
    assert_error(ApiClient(secret).get("members"), 401, "invalid_api_key")
    assert AuditEvent.objects.filter(action="api_key.deleted", target_id=target.public_id).exists()


def test_a_key_can_revoke_itself(full_key: Any) -> None:
    key, secret = full_key
    assert ApiClient(secret).post(f"api-keys/{key.public_id}/revoke").status_code == 200
    assert_error(ApiClient(secret).get("me"), 401, "api_key_revoked")


def _walk(client: ApiClient, path: str, limit: int) -> list[str]:
    ids: list[str] = []
    query: dict[str, str] = {"limit": str(limit)}
    while True:
        body = client.get(path, query=query).json()
        assert set(body) == {"next", "previous", "results"}
        ids += [item["id"] for item in body["results"]]
        if not body["next"]:
            return ids
        query = {k: v[0] for k, v in parse_qs(urlsplit(body["next"]).query).items()}


def test_cursor_pagination_walks_every_item_once(
    org: Organization, full_client: ApiClient, make_api_key: KeyMaker
) -> None:
    for n in range(11):
        make_api_key(org, [], name=f"k{n}")
    ids = _walk(full_client, "api-keys", 4)
    assert len(ids) == 12 == len(set(ids))
    assert ids == list(
        ApiKey.objects.filter(org=org)
        .order_by("-created_at", "-id")
        .values_list("public_id", flat=True)
    )

    def follow(url: str) -> Any:
        parts = urlsplit(url)
        return full_client.get(f"{parts.path}?{parts.query}").json()

    first = full_client.get("api-keys", query={"limit": "4"}).json()
    second = follow(first["next"])
    back = follow(second["previous"])
    assert [k["id"] for k in back["results"]] == [k["id"] for k in first["results"]]


def _walk_back(client: ApiClient, url: str | None) -> list[str]:
    """The ids of the pages before the page at `url`, following `previous` links."""
    ids: list[str] = []
    while url:
        parts = urlsplit(url)
        body = client.get(f"{parts.path}?{parts.query}").json()
        ids = [item["id"] for item in body["results"]] + ids
        url = body["previous"]
    return ids


def test_an_oldest_first_list_pages_both_ways_in_its_own_order(
    org: Organization, full_client: ApiClient
) -> None:
    """Members are listed oldest first (joining order): the one keyset pager walks an
    ascending list forward and back, with rows that joined at the same moment."""
    moment = timezone.now()
    for n in range(6):
        membership = MembershipFactory.create(org=org, user=UserFactory.create())
        if n % 2:
            Membership.objects.filter(pk=membership.pk).update(created_at=moment)
    expected = list(
        Membership.objects.filter(org=org)
        .order_by("created_at", "id")
        .values_list("public_id", flat=True)
    )
    assert _walk(full_client, "members", 2) == expected
    last = full_client.get("members", query={"limit": "2"}).json()
    while last["next"]:
        parts = urlsplit(last["next"])
        last = full_client.get(f"{parts.path}?{parts.query}").json()
    tail = [item["id"] for item in last["results"]]
    assert _walk_back(full_client, last["previous"]) + tail == expected


def test_a_cursor_naming_no_row_of_the_list_gives_an_empty_page(
    org: Organization, other_org: Organization, full_client: ApiClient
) -> None:
    """A well-formed cursor naming another org's key (or none at all) is no position in
    this org's list: an empty page, never a 500 or someone else's rows."""
    from apikeys.pagination import encode_cursor
    from tests.factories import ApiKeyFactory

    foreign = ApiKeyFactory.create(org=other_org)
    for cursor in (
        encode_cursor(following=foreign.public_id),
        encode_cursor(preceding="key_doesnotexist"),
    ):
        body = full_client.get("api-keys", query={"cursor": cursor}).json()
        assert body == {"next": None, "previous": None, "results": []}


def test_audit_events_with_identical_timestamps_paginate_without_loss(
    org: Organization, full_client: ApiClient
) -> None:
    moment = timezone.now()
    for n in range(7):
        audit_record(action="test.same_time", org=org, details={"n": n})
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(org=org, action="test.tied", actor_type="system", created_at=moment)
            for _ in range(5)
        ]
    )
    ids = _walk(full_client, "audit-events", 2)
    assert len(ids) == len(set(ids)) == AuditEvent.objects.filter(org=org).count()


def test_audit_event_filters(
    org: Organization, other_org: Organization, full_key: Any, full_client: ApiClient
) -> None:
    old = AuditEvent.objects.create(
        org=org,
        action="member.invited",
        actor_type="user",
        actor_label="owner@acme.test",
        created_at=timezone.now() - timedelta(days=10),
    )
    audit_record(action="member.invited", org=other_org)
    full_client.post("api-keys", {"name": "A", "scopes": []}, headers={"X-Actor-Id": "u-1"})

    def ids(**query: str) -> list[str]:
        response = full_client.get("audit-events", query=query)
        assert response.status_code == 200, response.content
        for event in response.json()["results"]:
            assert event["id"].startswith("evt_")
            assert event["actor"]["id"] in ("", full_key[0].public_id)
        return [e["id"] for e in response.json()["results"]]

    everything = ids()
    assert old.public_id in everything
    assert ids(action="member.invited") == [old.public_id]
    assert ids(actor="OWNER@acme.test") == [old.public_id]
    assert len(ids(actor="u-1")) == 1
    assert len(ids(actor=full_key[0].public_id)) == 1
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert old.public_id not in ids(since=since)
    assert ids(until=since) == [old.public_id]
    assert ids(since="2000-01-01", action="member.invited") == [old.public_id]
    assert not AuditEvent.objects.filter(org=other_org).filter(public_id__in=everything).exists()


@pytest.mark.parametrize(
    ("path", "make_rows"),
    [
        ("api-keys", "keys"),
        ("members", "members"),
        ("audit-events", "events"),
    ],
)
def test_lists_run_a_constant_number_of_queries(
    org: Organization, full_client: ApiClient, make_api_key: KeyMaker, path: str, make_rows: str
) -> None:
    def add(count: int) -> None:
        for n in range(count):
            if make_rows == "keys":
                parent, _ = make_api_key(org, [], name=f"p{n}")
                make_api_key(org, [], name=f"c{n}", actor=Actor.for_key(parent))
            elif make_rows == "members":
                MembershipFactory.create(org=org, user=UserFactory.create())
            else:
                audit_record(action="test.event", org=org, details={"n": n})

    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert full_client.get(path, query={"limit": "100"}).status_code == 200
        return len(queries)

    add(1)
    small = count_queries()
    add(30)
    assert count_queries() == small
