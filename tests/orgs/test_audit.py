"""The audit log: its one selector, the /o/<slug>/audit/ page, the CSV export and the
overview's link and key count."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from apikeys.scopes import all_scopes
from apikeys.services import apikey_create, apikey_revoke
from orgs import selectors
from orgs.actors import Actor
from orgs.models import ActorType, AuditEvent, Organization, Role
from orgs.services import audit_record
from orgs.views import CSV_HEADER, csv_safe, details_summary
from tests.conftest import signed_in_client
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db

AUDIT = "/o/acme/audit/"
EXPORT = "/o/acme/audit/export.csv"


def _event(org: Organization | None, action: str = "test.event", **fields: Any) -> AuditEvent:
    values: dict[str, Any] = {
        "actor_type": ActorType.SYSTEM,
        "actor_label": "system",
        "created_at": timezone.now(),
        **fields,
    }
    return AuditEvent.objects.create(org=org, action=action, **values)


def _fill(org: Organization, n: int) -> None:
    now = timezone.now()
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(
                org=org,
                action=f"test.kind{i % 7}",
                actor_type=ActorType.USER,
                actor_label=f"user{i % 13}@acme.test",
                target_type="membership",
                target_id=f"mem_{i}",
                target_label=f"target{i}@acme.test",
                ip="203.0.113.9",
                user_agent="pytest",
                request_id=f"req-{i}",
                details={"n": i, "changes": {"name": {"from": "a", "to": "b"}}},
                # Some share a timestamp: pages must still neither lose nor repeat one.
                created_at=now - timedelta(seconds=i // 3),
            )
            for i in range(n)
        ]
    )


def _csv(response: Any) -> list[list[str]]:
    assert isinstance(response, StreamingHttpResponse)
    body = b"".join(response.streaming_content).decode()  # type: ignore[arg-type]
    return list(csv.reader(io.StringIO(body)))


# --- the selector --------------------------------------------------------------------


def test_selector_filters_by_action_actor_time_and_target(
    org: Organization, other_org: Organization
) -> None:
    old = _event(
        org,
        "member.invited",
        actor_type=ActorType.USER,
        actor_label="Owner@Acme.test",
        target_id="inv_1",
        created_at=timezone.now() - timedelta(days=10),
    )
    by_key = _event(
        org,
        "api_key.created",
        actor_type=ActorType.API_KEY,
        actor_id="key_abc",
        actor_label="lk_test_…abcd",
        external_actor_id="crm-user-7",
        target_id="key_new",
    )
    theirs = _event(other_org, "member.invited", actor_label="owner@acme.test")

    def ids(**filters: Any) -> list[str]:
        return [e.public_id for e in selectors.audit_event_list(org=org, **filters)]

    assert ids() == [by_key.public_id, old.public_id]
    assert theirs.public_id not in ids(action="member.invited", actor="owner@acme.test")
    assert ids(action="member.invited") == [old.public_id]
    assert ids(actor="owner@ACME.test") == [old.public_id]
    assert ids(actor="key_abc") == ids(actor="crm-user-7") == [by_key.public_id]
    assert ids(actor="crm-user") == []
    yesterday = timezone.now() - timedelta(days=1)
    assert ids(since=yesterday) == [by_key.public_id]
    assert ids(until=yesterday) == [old.public_id]
    assert ids(target_id="key_new") == [by_key.public_id]


def test_keyset_pages_walk_the_whole_log_both_ways_without_loss(org: Organization) -> None:
    _fill(org, 23)
    expected = [e.public_id for e in selectors.audit_event_list(org=org)]
    pages = [selectors.audit_event_page(org=org, limit=5)]
    assert pages[0].previous is None
    while pages[-1].next:
        pages.append(selectors.audit_event_page(org=org, before=pages[-1].next, limit=5))
    assert [len(p.items) for p in pages] == [5, 5, 5, 5, 3]
    assert [e.public_id for p in pages for e in p.items] == expected
    # And back again with the "newer" cursors.
    back = selectors.audit_event_page(org=org, after=pages[-1].previous or "", limit=5)
    assert [e.public_id for e in back.items] == [e.public_id for e in pages[-2].items]
    first = selectors.audit_event_page(org=org, after=pages[1].previous or "", limit=5)
    assert [e.public_id for e in first.items] == expected[:5]
    assert first.previous is None and first.next == expected[4]


def test_a_cursor_from_another_org_gives_an_empty_page(
    org: Organization, other_org: Organization
) -> None:
    _fill(org, 3)
    theirs = _event(other_org, created_at=timezone.now() + timedelta(days=1))
    page = selectors.audit_event_page(org=org, before=theirs.public_id)
    assert page.items == [] and page.next is None and page.previous is None


# --- the page ------------------------------------------------------------------------


@pytest.mark.parametrize("route", [AUDIT, EXPORT])
@pytest.mark.parametrize(
    ("role", "status"), [(Role.MEMBER, 403), (Role.ADMIN, 200), (Role.OWNER, 200)]
)
def test_the_audit_log_is_for_admins_and_owners(
    route: str, role: str, status: int, org: Organization
) -> None:
    membership = MembershipFactory.create(org=org, role=role)
    response = signed_in_client(membership.user).get(route)
    assert response.status_code == status


@pytest.mark.parametrize("route", ["audit/", "audit/export.csv"])
def test_another_orgs_audit_log_is_the_same_404_as_an_absent_org(
    route: str, owner: User, other_org: Organization
) -> None:
    MembershipFactory.create(org=other_org, role=Role.OWNER)
    _event(other_org, "org.secret_thing")
    client = signed_in_client(owner)
    theirs = client.get(f"/o/globex/{route}")
    absent = client.get(f"/o/nope/{route}")
    assert theirs.status_code == absent.status_code == 404
    assert b"org.secret_thing" not in theirs.content


def test_page_shows_time_actor_action_target_ip_request_and_details(
    owner: User, org: Organization, other_org: Organization
) -> None:
    key, _ = apikey_create(
        actor=Actor.system(), org=org, name="CI", environment="test", scopes=all_scopes()
    )
    _event(
        org,
        "member.role_changed",
        actor_type=ActorType.API_KEY,
        actor_id=key.public_id,
        actor_label=key.display,
        external_actor_id="crm-user-42",
        target_type="membership",
        target_id="mem_target",
        target_label="bob@acme.test",
        ip="198.51.100.7",
        request_id="req-abc123",
        details={"email": "bob@acme.test", "from": "member", "to": "admin"},
        created_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    _event(other_org, "org.elsewhere")
    response = signed_in_client(owner).get(AUDIT)
    html = response.content.decode()
    assert response.status_code == 200
    assert "2030-01-02 03:04:05" in html and "Time (UTC)" in html
    assert "API key" in html and key.display in html and key.public_id in html
    assert "crm-user-42" in html
    assert "member.role_changed" in html and "bob@acme.test" in html and "mem_target" in html
    assert "198.51.100.7" in html and "req-abc123" in html
    assert "email: bob@acme.test · from: member · to: admin" in html
    assert "org.elsewhere" not in html
    # The creation of the key above is listed too, with the same actor badge logic.
    assert "api_key.created" in html


def test_filters_by_action_actor_and_dates_through_the_get_form(
    owner: User, org: Organization
) -> None:
    _event(org, "member.invited", actor_label="a@acme.test", actor_type=ActorType.USER)
    _event(org, "api_key.revoked", actor_label="b@acme.test", actor_type=ActorType.USER)
    _event(
        org,
        "member.invited",
        actor_label="c@acme.test",
        created_at=datetime(2024, 5, 1, 23, 59, tzinfo=UTC),
    )
    client = signed_in_client(owner)

    def actions(**query: str) -> list[str]:
        response = client.get(AUDIT, query)
        assert response.status_code == 200
        return [row["event"].actor_label for row in response.context["rows"]]

    page = client.get(AUDIT)
    # The action select offers the actions present in this org.
    assert page.context["actions"] == ["api_key.revoked", "member.invited"]
    assert actions(action="member.invited") == ["a@acme.test", "c@acme.test"]
    assert actions(actor="B@acme.test") == ["b@acme.test"]
    # Whole UTC days, both ends inclusive.
    assert actions(since="2024-05-01", until="2024-05-01") == ["c@acme.test"]
    assert actions(until="2024-04-30") == []
    assert "c@acme.test" not in actions(since="2024-05-02")
    filtered = client.get(AUDIT, {"action": "member.invited", "since": "2024-01-01"})
    assert 'href="/o/acme/audit/export.csv?action=member.invited&amp;since=2024-01-01"' in (
        filtered.content.decode()
    )


def test_invalid_filters_are_reported_and_list_nothing(owner: User, org: Organization) -> None:
    _event(org)
    response = signed_in_client(owner).get(AUDIT, {"since": "2024-05-02", "until": "2024-05-01"})
    assert response.status_code == 200
    assert response.context["rows"] == []
    assert "The end date is before the start date." in response.content.decode()
    assert signed_in_client(owner).get(AUDIT, {"since": "not-a-date"}).context["rows"] == []


def test_page_links_to_older_and_newer_pages_keeping_filters(
    owner: User, org: Organization
) -> None:
    _fill(org, 120)
    client = signed_in_client(owner)
    first = client.get(AUDIT, {"actor": "user1@acme.test"})
    assert len(first.context["rows"]) == 10  # i % 13 == 1 among 120
    seen: list[str] = []
    response = client.get(AUDIT)
    while True:
        seen += [row["event"].public_id for row in response.context["rows"]]
        if not response.context["older_url"]:
            break
        assert response.context["newer_url"] or len(seen) == 50
        response = client.get(response.context["older_url"])
    assert len(seen) == len(set(seen)) == 120
    filtered = client.get(AUDIT, {"since": "2000-01-01", "actor": ""})
    assert filtered.context["older_url"].startswith("/o/acme/audit/?since=2000-01-01&before=evt_")
    second = client.get(filtered.context["older_url"])
    assert second.context["newer_url"].startswith("/o/acme/audit/?since=2000-01-01&after=evt_")
    assert second.context["newest_url"] == "/o/acme/audit/?since=2000-01-01"


def test_page_runs_the_same_queries_for_1_and_300_events(owner: User, org: Organization) -> None:
    client = signed_in_client(owner)
    _event(org)
    client.get(AUDIT)
    counts = []
    for query in ({}, {"action": "test.kind1", "actor": "user1@acme.test"}):
        with CaptureQueriesContext(connection) as small:
            assert client.get(AUDIT, query).status_code == 200
        counts.append(len(small.captured_queries))
    _fill(org, 299)
    page = client.get(AUDIT).context
    with CaptureQueriesContext(connection) as large:
        assert len(client.get(AUDIT).context["rows"]) == 50
    with CaptureQueriesContext(connection) as deep:
        assert client.get(page["older_url"]).status_code == 200
    with CaptureQueriesContext(connection) as large_filtered:
        client.get(AUDIT, {"action": "test.kind1", "actor": "user1@acme.test"})
    assert len(large.captured_queries) == len(deep.captured_queries) == counts[0]
    assert len(large_filtered.captured_queries) == counts[1]


# --- CSV export ----------------------------------------------------------------------


def test_export_streams_csv_with_the_page_filters(owner: User, org: Organization) -> None:
    _event(org, "member.invited", actor_label="a@acme.test", ip="192.0.2.1")
    _event(org, "api_key.revoked", actor_label="b@acme.test")
    response = signed_in_client(owner).get(EXPORT, {"action": "member.invited"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    disposition = response["Content-Disposition"]
    assert disposition.startswith('attachment; filename="audit-acme-') and ".csv" in disposition
    rows = _csv(response)
    assert rows[0] == CSV_HEADER
    assert len(rows) == 2
    row = dict(zip(CSV_HEADER, rows[1], strict=True))
    assert row["action"] == "member.invited" and row["actor"] == "a@acme.test"
    assert row["ip"] == "192.0.2.1" and row["id"].startswith("evt_")
    assert row["time_utc"].endswith("Z")


def test_export_is_recorded_in_the_audit_log(owner: User, org: Organization) -> None:
    signed_in_client(owner).get(EXPORT, {"actor": "x@acme.test"})
    event = AuditEvent.objects.get(org=org, action="audit_log.exported")
    assert event.actor_label == "owner@acme.test"
    assert event.details == {"filters": {"actor": "x@acme.test"}}


def test_export_disarms_spreadsheet_formulas(owner: User, org: Organization) -> None:
    _event(
        org,
        "member.invited",
        actor_type=ActorType.API_KEY,
        actor_label='=HYPERLINK("http://evil")',
        external_actor_id="+1-555",
        target_label="@SUM(A1)",
        user_agent="-2+3",
        details={"email": "=cmd|' /C calc'!A0"},
    )
    rows = _csv(signed_in_client(owner).get(EXPORT, {"action": "member.invited"}))
    row = dict(zip(CSV_HEADER, rows[1], strict=True))
    assert row["actor"] == '\'=HYPERLINK("http://evil")'
    assert row["external_actor_id"] == "'+1-555"
    assert row["target"] == "'@SUM(A1)"
    assert row["user_agent"] == "'-2+3"
    # JSON details start with "{", which a spreadsheet does not evaluate.
    assert row["details"].startswith("{")
    for cell in rows[1]:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert csv_safe("\tx") == "'\tx" and csv_safe("\rx") == "'\rx" and csv_safe("ok") == "ok"


def test_export_with_invalid_filters_is_a_400(owner: User, org: Organization) -> None:
    response = signed_in_client(owner).get(EXPORT, {"since": "yesterday"})
    assert response.status_code == 400
    assert not AuditEvent.objects.filter(action="audit_log.exported").exists()


def test_export_runs_the_same_queries_for_1_and_300_events(owner: User, org: Organization) -> None:
    client = signed_in_client(owner)
    _event(org)
    _csv(client.get(EXPORT))

    def measure() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as queries:
            rows = _csv(client.get(EXPORT))
        return len(queries.captured_queries), len(rows)

    small, small_rows = measure()
    _fill(org, 299)
    large, large_rows = measure()
    assert large_rows == small_rows + 299 + 1  # plus the previous export's own event
    assert large == small


def test_details_summary_reads_changes_and_truncates() -> None:
    assert details_summary({"changes": {"name": {"from": "A", "to": "B"}}}) == "name: A → B"
    assert details_summary({"scopes": ["a:read", "b:write"]}) == "scopes: a:read, b:write"
    long = details_summary({"x": "y" * 500})
    assert len(long) == 140 and long.endswith("…")


# --- the overview ----------------------------------------------------------------------


def test_overview_links_admins_to_the_audit_log_and_counts_active_keys(
    owner: User, member_user: User, org: Organization, other_org: Organization
) -> None:
    apikey_create(actor=Actor.system(), org=org, name="a", environment="test", scopes=[])
    apikey_create(actor=Actor.system(), org=org, name="b", environment="test", scopes=[])
    revoked, _ = apikey_create(
        actor=Actor.system(), org=org, name="c", environment="test", scopes=[]
    )
    apikey_revoke(key=revoked, actor=Actor.system())
    apikey_create(actor=Actor.system(), org=other_org, name="theirs", environment="test", scopes=[])
    response = signed_in_client(owner).get("/o/acme/")
    assert response.context["key_counts"] == {"active": 2, "live": 0, "test": 2}
    assert 'id="audit-log-link"' in response.content.decode()
    as_member = signed_in_client(member_user).get("/o/acme/").content.decode()
    assert 'id="audit-log-link"' not in as_member


def test_overview_queries_do_not_grow_with_keys_or_events(owner: User, org: Organization) -> None:
    client = signed_in_client(owner)
    client.get("/o/acme/")
    with CaptureQueriesContext(connection) as small:
        client.get("/o/acme/")
    for n in range(30):
        apikey_create(actor=Actor.system(), org=org, name=f"k{n}", environment="test", scopes=[])
    _fill(org, 100)
    with CaptureQueriesContext(connection) as large:
        response = client.get("/o/acme/")
    assert response.context["key_counts"]["active"] == 30
    assert len(large.captured_queries) == len(small.captured_queries)


def test_audit_record_on_a_request_is_listed_with_its_ip_and_request_id(
    owner: User, org: Organization, rf: Any
) -> None:
    request = rf.get("/", REMOTE_ADDR="192.0.2.44", HTTP_USER_AGENT="Firefox")
    request.request_id = "req-from-request"
    request.user = owner
    audit_record(action="org.settings_changed", org=org, request=request, details={"n": 1})
    html = signed_in_client(owner).get(AUDIT).content.decode()
    assert "192.0.2.44" in html and "req-from-request" in html and 'title="Firefox"' in html
