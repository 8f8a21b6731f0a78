"""A key's page: its permissions beside their use and narrowing to what it used, editing
scopes and the IP allowlist, report-only figures, leaked keys; the create form's
allowlist and the org's leak setting (docs/product.md#api-keys)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apikeys import redisconn, usage
from apikeys.models import ApiKey, IpMode, KeyStatus, KeyUsageHour
from apikeys.selectors import apikey_scope_use, usage_ip_reported, usage_window
from apikeys.services import apikey_report_leaked, apikey_revoke, apikey_update
from orgs.actors import Actor
from orgs.models import AuditEvent, LeakResponse, Organization
from tests.apikeys.api.conftest import ApiClient
from tests.apikeys.helpers import make_key

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
def _no_recent_requests() -> Iterator[None]:
    usage.discard_recent_local()
    yield
    usage.discard_recent_local()


def url(org: Organization, key: ApiKey | None = None, suffix: str = "") -> str:
    base = f"/o/{org.slug}/api-keys/"
    return f"{base}{key.public_id}/{suffix}" if key is not None else base


def this_hour() -> datetime:
    return timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def fold(key: ApiKey, *, ago: timedelta = HOUR, ok: int = 0, refused: int = 0, **kw: Any) -> None:
    """A folded usage row of `key`, `ago` before this hour (as `apikeys.usage.fold`
    writes them)."""
    KeyUsageHour.objects.create(
        api_key=key,
        org_id=key.org_id,
        hour=this_hour() - ago,
        count_2xx=ok,
        count_4xx=refused,
        **kw,
    )


def push_recent(key: ApiKey, *, ip: str, status: int = 200, request_id: str) -> None:
    body = usage.recent_body(
        at=timezone.now().timestamp(),
        method="GET",
        path="/api/v1/members",
        ip=ip,
        client_version="",
        request_id=request_id,
    )
    conn = redisconn.client()
    if conn is None:
        usage.local_recent_push(key_pk=key.pk, status=status, body=body)
    else:
        conn.lpush(usage.recent_redis_key(key.pk), f"{status} {body}")


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def held_rows(html: str) -> dict[str, str]:
    """The Permissions card's held scopes: scope -> the row's text."""
    card = html[html.index('id="scopes-held"') :]
    card = card[: card.index("</ul>")]
    rows = re.findall(r'<li class="held-scope" data-scope="([^"]+)"[^>]*>(.*?)</li>', card, re.S)
    return {scope: text(body).strip() for scope, body in rows}


def section(html: str, section_id: str) -> str:
    start = html.index(f'id="{section_id}"')
    return html[start : html.index("</section>", start)]


# --- the Permissions card -------------------------------------------------------------------


def test_each_held_scope_shows_the_requests_that_needed_it_in_30_days(
    member_client: Client, org: Organization
) -> None:
    key, _ = make_key(org, scopes=["members:read", "usage:read", "audit_log:read"])
    fold(key, ok=10, scopes={"members:read": 10})
    fold(key, ago=3 * DAY, ok=2, refused=3, scopes={"members:read": 2, "kyc:write": 3})
    # Older than 30 days: not counted.
    fold(key, ago=31 * DAY, ok=5, scopes={"usage:read": 5})
    html = member_client.get(url(org, key)).content.decode()
    rows = held_rows(html)
    assert set(rows) == {"members:read", "usage:read", "audit_log:read"}
    assert "12 requests" in rows["members:read"]
    assert "Not used in 30 days" in rows["usage:read"]
    assert "Not used in 30 days" in rows["audit_log:read"]
    # Refused requests asked for a scope the key does not hold: listed apart.
    not_held = section(html, "key-permissions")
    assert "Asked for but not held" in not_held
    assert 'data-needed-scope="kyc:write"' in not_held and "3 refused" in text(not_held)
    assert 'data-scope="kyc:write"' not in html
    # A member reads it all, but is offered neither narrowing nor editing.
    assert 'id="narrow-key"' not in html and 'id="edit-permissions"' not in html


def test_a_used_scope_is_credited_to_the_held_scope_that_covers_it(
    admin_client_: Client, org: Organization
) -> None:
    key, _ = make_key(org, scopes=["members:*", "usage:read"])
    fold(key, ok=4, scopes={"members:read": 3, "members:write": 1})
    rows = held_rows(admin_client_.get(url(org, key)).content.decode())
    assert "4 requests" in rows["members:*"] and "members:read, members:write" in rows["members:*"]
    assert "Not used in 30 days" in rows["usage:read"]


def test_real_api_requests_show_as_used_once_folded(
    admin_client_: Client, org: Organization
) -> None:
    key, secret = make_key(org, scopes=["members:read", "usage:read"])
    api = ApiClient(secret)
    assert api.get("members").status_code == 200
    assert api.get("members").status_code == 200
    usage.fold()
    html = admin_client_.get(url(org, key)).content.decode()
    rows = held_rows(html)
    assert "2 requests" in rows["members:read"]
    assert "Not used in 30 days" in rows["usage:read"]
    assert 'id="narrow-key"' in html and "Narrow to what it used" in html


def test_a_key_not_used_in_30_days_says_so_and_offers_no_narrowing(
    admin_client_: Client, org: Organization
) -> None:
    key, _ = make_key(org, scopes=["members:read", "usage:read"])
    fold(key, ago=40 * DAY, ok=9, scopes={"members:read": 9})
    html = admin_client_.get(url(org, key)).content.decode()
    assert "Not used in the last 30 days" in html
    assert 'id="narrow-key"' not in html
    step = admin_client_.get(url(org, key, "narrow/")).content.decode()
    assert 'id="confirm-blocked"' in step and 'id="confirm-narrow"' not in step


def test_a_key_that_used_everything_it_holds_offers_no_narrowing(
    admin_client_: Client, org: Organization
) -> None:
    key, _ = make_key(org, scopes=["members:read"])
    fold(key, ok=1, scopes={"members:read": 1})
    html = admin_client_.get(url(org, key)).content.decode()
    assert 'id="scope-use-all"' in html and 'id="narrow-key"' not in html


# --- narrowing -------------------------------------------------------------------------------


def test_narrowing_asks_first_then_keeps_exactly_the_used_scopes(
    admin_client_: Client, org: Organization, admin_user: Any
) -> None:
    key, _ = make_key(org, scopes=["members:write", "usage:read"])
    assert key.scopes == ["members:read", "members:write", "usage:read"]
    fold(key, ok=7, scopes={"members:read": 7})
    narrow = url(org, key, "narrow/")
    assert f'href="{narrow}"' in admin_client_.get(url(org, key)).content.decode()

    step = admin_client_.get(narrow)
    assert step.status_code == 200
    page = text(step.content.decode())
    assert 'id="confirm-narrow"' in step.content.decode()
    assert "Removes: members:write, usage:read" in page and "Keeps: members:read" in page
    key.refresh_from_db()
    assert key.scopes == ["members:read", "members:write", "usage:read"]  # nothing yet

    done = admin_client_.post(narrow, {"remove": "members:write usage:read"})
    assert done.status_code == 302 and done["Location"] == url(org, key)
    key.refresh_from_db()
    assert key.scopes == ["members:read"]
    event = AuditEvent.objects.get(action="api_key.updated", target_id=key.public_id)
    assert event.actor_user == admin_user
    assert event.details["changes"]["scopes"] == {
        "from": ["members:read", "members:write", "usage:read"],
        "to": ["members:read"],
    }
    html = admin_client_.get(done["Location"]).content.decode()
    assert "now holds only what it used" in html
    assert set(held_rows(html)) == {"members:read"}


def test_the_narrowed_set_is_computed_on_the_server_not_taken_from_the_form(
    admin_client_: Client, org: Organization
) -> None:
    key, _ = make_key(org, scopes=["members:read", "usage:read", "kyc:read"])
    fold(key, ok=3, scopes={"members:read": 2, "usage:read": 1})
    response = admin_client_.post(
        url(org, key, "narrow/"), {"scope": ["kyc:write"], "scopes": "kyc:write"}
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.scopes == ["members:read", "usage:read"]


def test_narrowing_refuses_to_remove_more_than_the_step_showed(
    admin_client_: Client, org: Organization
) -> None:
    key, _ = make_key(org, scopes=["members:read", "usage:read", "kyc:read"])
    fold(key, ok=1, scopes={"members:read": 1})
    # The step showed only kyc:read going (usage:read was used then).
    again = admin_client_.post(url(org, key, "narrow/"), {"remove": "kyc:read"})
    assert again.status_code == 200 and b'id="confirm-narrow"' in again.content
    assert b"usage changed" in again.content
    key.refresh_from_db()
    assert key.scopes == ["kyc:read", "members:read", "usage:read"]


def test_members_cannot_narrow_or_edit(member_client: Client, org: Organization) -> None:
    key, _ = make_key(org, scopes=["members:read", "usage:read"])
    fold(key, ok=1, scopes={"members:read": 1})
    for suffix in ("narrow/", "edit/"):
        assert member_client.get(url(org, key, suffix)).status_code == 403
        assert member_client.post(url(org, key, suffix), {"scope": ["kyc:read"]}).status_code == 403
    key.refresh_from_db()
    assert key.scopes == ["members:read", "usage:read"]


def test_another_orgs_key_is_a_404_for_edit_and_narrow(
    admin_client_: Client, org: Organization, other_org: Organization
) -> None:
    foreign, _ = make_key(other_org, scopes=["members:read", "usage:read"])
    for suffix in ("narrow/", "edit/"):
        assert admin_client_.get(url(org, foreign, suffix)).status_code == 404
        assert admin_client_.post(url(org, foreign, suffix)).status_code == 404


def test_a_revoked_key_cannot_be_narrowed_or_edited(
    admin_client_: Client, org: Organization
) -> None:
    key, _ = make_key(org, scopes=["members:read", "usage:read"])
    fold(key, ok=1, scopes={"members:read": 1})
    apikey_revoke(key=key, actor=Actor.system())
    html = admin_client_.get(url(org, key)).content.decode()
    assert 'id="narrow-key"' not in html and 'id="edit-permissions"' not in html
    step = admin_client_.get(url(org, key, "narrow/")).content.decode()
    assert 'id="confirm-blocked"' in step and "cannot be edited" in step
    assert admin_client_.post(url(org, key, "narrow/")).status_code == 302
    edit = admin_client_.get(url(org, key, "edit/"))
    assert edit.status_code == 302
    assert b"cannot be edited" in admin_client_.get(edit["Location"]).content
    saved = admin_client_.post(
        url(org, key, "edit/"), {"scope": ["kyc:read"], "allowed_ips": "10.0.0.0/8"}
    )
    assert saved.status_code == 302
    key.refresh_from_db()
    assert key.scopes == ["members:read", "usage:read"] and key.allowed_ips == []
    assert not AuditEvent.objects.filter(action="api_key.updated").exists()


# --- editing scopes and the allowlist --------------------------------------------------------


def test_edit_page_shows_the_grid_ticked_and_saves_new_scopes(
    admin_client_: Client, org: Organization
) -> None:
    key, _ = make_key(org, scopes=["members:read", "usage:read"])
    detail = admin_client_.get(url(org, key)).content.decode()
    assert f'href="{url(org, key, "edit/")}"' in detail
    page = admin_client_.get(url(org, key, "edit/")).content.decode()
    assert re.search(r'value="members:read" id="scope-members-read"[^>]*checked', page)
    assert not re.search(r'value="kyc:write"[^>]*checked', page)
    assert "js/scopes.js" in page and 'name="allowed_ips"' in page
    response = admin_client_.post(
        url(org, key, "edit/"),
        {"scope": ["kyc:write", "usage:read"], "allowed_ips": "", "allowed_ips_mode": "enforce"},
    )
    assert response.status_code == 302 and response["Location"] == url(org, key)
    key.refresh_from_db()
    assert key.scopes == ["kyc:read", "kyc:write", "usage:read"]
    assert AuditEvent.objects.filter(action="api_key.updated", target_id=key.public_id).exists()
    assert "is updated" in admin_client_.get(url(org, key)).content.decode()


def test_saving_unchanged_boxes_keeps_a_wildcard_scope(
    owner_client: Client, org: Organization
) -> None:
    key, _ = make_key(org, scopes=["members:*"])
    response = owner_client.post(
        url(org, key, "edit/"),
        {"scope": ["members:read", "members:write"], "allowed_ips": "203.0.113.0/24"},
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.scopes == ["members:*"] and key.allowed_ips == ["203.0.113.0/24"]


def test_edit_needs_a_scope(admin_client_: Client, org: Organization) -> None:
    key, _ = make_key(org, scopes=["members:read"])
    response = admin_client_.post(url(org, key, "edit/"), {"allowed_ips": ""})
    assert response.status_code == 400
    assert (
        b"error-summary" in response.content and b"Tick at least one permission" in response.content
    )
    key.refresh_from_db()
    assert key.scopes == ["members:read"]


def test_allowlist_saved_with_ipv4_and_ipv6_lines(admin_client_: Client, org: Organization) -> None:
    key, _ = make_key(org, scopes=["members:read"])
    response = admin_client_.post(
        url(org, key, "edit/"),
        {
            "scope": ["members:read"],
            "allowed_ips": "2001:db8::/32\r\n203.0.113.0/24\r\n\r\n 198.51.100.7 \r\n",
            "allowed_ips_mode": "report",
        },
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.allowed_ips == ["198.51.100.7/32", "203.0.113.0/24", "2001:db8::/32"]
    assert key.allowed_ips_mode == IpMode.REPORT
    assert key.scopes == ["members:read"]
    card = section(admin_client_.get(url(org, key)).content.decode(), "key-allowlist")
    assert re.findall(r'data-range="([^"]+)"', card) == [
        "198.51.100.7/32",
        "203.0.113.0/24",
        "2001:db8::/32",
    ]
    assert 'id="ip-mode" data-mode="report">Report only<' in card
    # The edit page shows the list back, one range a line, with the mode chosen.
    page = admin_client_.get(url(org, key, "edit/")).content.decode()
    assert "198.51.100.7/32\n203.0.113.0/24\n2001:db8::/32</textarea>" in page
    assert re.search(r'value="report" id="id_allowed_ips_mode_report" checked', page)


def test_a_bad_range_shows_the_message_and_stores_nothing(
    admin_client_: Client, org: Organization
) -> None:
    key, _ = make_key(org, scopes=["members:read"])
    response = admin_client_.post(
        url(org, key, "edit/"),
        {
            "scope": ["members:read", "usage:read"],
            "allowed_ips": "203.0.113.0/24\n10.0.0.1/8",
            "allowed_ips_mode": "enforce",
        },
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "error-summary" in html and 'href="#id_allowed_ips"' in html
    assert "has bits set beyond its prefix length; did you mean 10.0.0.0/8?" in html
    assert 'id="allowed-ips-error"' in html
    # What was typed comes back to be corrected.
    assert "203.0.113.0/24\n10.0.0.1/8</textarea>" in html
    key.refresh_from_db()
    assert key.allowed_ips == [] and key.scopes == ["members:read"]
    assert not AuditEvent.objects.filter(action="api_key.updated").exists()


def test_an_empty_list_means_any_address(admin_client_: Client, org: Organization) -> None:
    key, _ = make_key(org, scopes=["members:read"])
    apikey_update(key=key, allowed_ips=["203.0.113.0/24"], actor=Actor.system())
    admin_client_.post(url(org, key, "edit/"), {"scope": ["members:read"], "allowed_ips": ""})
    key.refresh_from_db()
    assert key.allowed_ips == []
    card = section(admin_client_.get(url(org, key)).content.decode(), "key-allowlist")
    assert 'id="allowed-ips-any"' in card and "Any address" in card


def test_report_mode_shows_the_would_be_refusals_of_30_days(
    member_client: Client, org: Organization
) -> None:
    key, _ = make_key(org, scopes=["members:read"])
    apikey_update(
        key=key, allowed_ips=["203.0.113.0/24"], allowed_ips_mode="report", actor=Actor.system()
    )
    fold(key, ok=10, ip_reported=4)
    fold(key, ago=2 * DAY, ok=5, ip_reported=3)
    fold(key, ago=35 * DAY, ok=50, ip_reported=50)
    window = usage_window("30d", now=timezone.now())
    assert usage_ip_reported(org=org, key=key, since=window.since, until=window.until) == 7
    card = section(member_client.get(url(org, key)).content.decode(), "key-allowlist")
    assert 'data-count="7"' in card
    assert "7 requests in the last 30 days came from outside this list" in text(card)
    # Enforced: no report figures (the refusals are the 403s).
    apikey_update(key=key, allowed_ips_mode="enforce", actor=Actor.system())
    card = section(member_client.get(url(org, key)).content.decode(), "key-allowlist")
    assert 'id="ip-reported"' not in card and ">Enforced<" in card


def test_usage_ip_reported_is_one_query_and_scoped_to_the_org(
    org: Organization, other_org: Organization, django_assert_num_queries: Any
) -> None:
    key, _ = make_key(org)
    fold(key, ip_reported=2)
    window = usage_window("30d", now=timezone.now())
    with django_assert_num_queries(1):
        assert usage_ip_reported(org=org, key=key, since=window.since, until=window.until) == 2
    assert usage_ip_reported(org=other_org, key=key, since=window.since, until=window.until) == 0


@pytest.mark.parametrize("mode", ["report", "enforce"])
def test_recent_requests_from_outside_the_list_are_marked(
    member_client: Client, org: Organization, mode: str
) -> None:
    key, _ = make_key(org, scopes=["members:read"])
    apikey_update(
        key=key,
        allowed_ips=["203.0.113.0/24", "2001:db8::/32"],
        allowed_ips_mode=mode,
        actor=Actor.system(),
    )
    push_recent(key, ip="203.0.113.9", request_id="req_inside")
    push_recent(key, ip="2001:db8::5", request_id="req_inside6")
    push_recent(key, ip="198.51.100.1", request_id="req_outside", status=403)
    push_recent(key, ip="::ffff:203.0.113.10", request_id="req_mapped")
    html = member_client.get(url(org, key)).content.decode()
    rows = dict(
        re.findall(r'<tr class="recent-request" data-request-id="([^"]+)">(.*?)</tr>', html, re.S)
    )
    assert "Outside allowlist" in rows["req_outside"]
    for inside in ("req_inside", "req_inside6", "req_mapped"):
        assert "Outside allowlist" not in rows[inside]


def test_without_a_list_no_request_is_marked(member_client: Client, org: Organization) -> None:
    key, _ = make_key(org, scopes=["members:read"])
    push_recent(key, ip="198.51.100.1", request_id="req_any")
    assert b"Outside allowlist" not in member_client.get(url(org, key)).content


# --- leaked keys -----------------------------------------------------------------------------


def test_a_flagged_leaked_key_shows_the_callout_and_badge_and_can_be_rotated(
    admin_client_: Client, org: Organization
) -> None:
    org.leak_response = LeakResponse.FLAG
    org.save()
    key, _ = make_key(org, name="Billing sync", scopes=["members:read"])
    assert apikey_report_leaked(key=key, source="github")
    key.refresh_from_db()
    assert key.status == KeyStatus.LEAKED
    html = admin_client_.get(url(org, key)).content.decode()
    callout = html[html.index('id="leaked-callout"') :]
    callout = text(callout[: callout.index("</div>")])
    assert f"Reported leaked on {key.leaked_at:%Y-%m-%d}" in callout
    assert "flags leaked keys" in callout and "still works" in callout
    assert 'class="badge badge-danger" data-status="leaked">Leaked<' in html
    assert 'id="rotate-form"' in html and 'id="leaked-revoke"' in html
    listing = admin_client_.get(url(org)).content.decode()
    assert 'data-status="leaked"' in listing
    rotated = admin_client_.post(url(org, key, "rotate/"), {"grace": "3600"})
    assert rotated.status_code == 200 and b'id="api-key-secret"' in rotated.content
    assert ApiKey.objects.filter(predecessor=key).exists()


def test_a_leaked_key_revoked_by_the_org_setting_says_so(
    member_client: Client, org: Organization
) -> None:
    key, _ = make_key(org, scopes=["members:read"])
    assert apikey_report_leaked(key=key, source="github")
    key.refresh_from_db()
    assert key.status == KeyStatus.REVOKED
    html = member_client.get(url(org, key)).content.decode()
    assert 'id="leaked-callout"' in html and "It is revoked" in html
    assert "flags leaked keys" not in html and 'data-status="revoked"' in html


def test_a_key_never_reported_has_no_leak_callout(member_client: Client, org: Organization) -> None:
    key, _ = make_key(org)
    assert b'id="leaked-callout"' not in member_client.get(url(org, key)).content


# --- the create form -------------------------------------------------------------------------


def create(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "Billing sync",
        "environment": "test",
        "expiry": "never",
        "scope": ["members:read"],
    }
    data.update(overrides)
    return data


def test_create_form_takes_an_allowlist(admin_client_: Client, org: Organization) -> None:
    form = admin_client_.get(url(org) + "new/").content.decode()
    assert '<textarea name="allowed_ips" id="id_allowed_ips"' in form
    assert "203.0.113.0/24" in form and "2001:db8::/32" in form
    assert re.search(r'value="enforce" id="id_allowed_ips_mode_enforce" checked', form)
    response = admin_client_.post(
        url(org) + "new/",
        create(allowed_ips="203.0.113.0/24\n2001:db8::/32", allowed_ips_mode="report"),
    )
    assert response.status_code == 200 and b'id="api-key-secret"' in response.content
    key = ApiKey.objects.get()
    assert key.allowed_ips == ["203.0.113.0/24", "2001:db8::/32"]
    assert key.allowed_ips_mode == IpMode.REPORT


def test_create_form_defaults_to_any_address_and_enforce(
    admin_client_: Client, org: Organization
) -> None:
    assert admin_client_.post(url(org) + "new/", create()).status_code == 200
    key = ApiKey.objects.get()
    assert key.allowed_ips == [] and key.allowed_ips_mode == IpMode.ENFORCE


def test_create_form_shows_a_bad_range_on_the_field(
    admin_client_: Client, org: Organization
) -> None:
    response = admin_client_.post(url(org) + "new/", create(allowed_ips="10.0.0.1/8"))
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="allowed-ips-error"' in html and "did you mean 10.0.0.0/8?" in html
    assert 'href="#id_allowed_ips"' in html
    assert not ApiKey.objects.exists()


# --- the org's leak setting ------------------------------------------------------------------


def settings_payload(**overrides: str) -> dict[str, str]:
    return {"name": "Acme", "slug": "acme", **overrides}


def test_an_owner_chooses_what_a_leak_report_does(owner_client: Client, org: Organization) -> None:
    page = owner_client.get("/o/acme/settings/").content.decode()
    assert "When a key is reported leaked" in page
    assert re.search(r'value="revoke" id="id_leak_response_revoke" checked', page)
    assert '<fieldset class="field choices" id="id_leak_response"' in page
    fieldset = page[page.index('id="id_leak_response"') :]
    assert " disabled>" not in fieldset[: fieldset.index(">") + 1]
    response = owner_client.post("/o/acme/settings/", settings_payload(leak_response="flag"))
    assert response.status_code == 302
    org.refresh_from_db()
    assert org.leak_response == LeakResponse.FLAG
    event = AuditEvent.objects.get(action="org.settings_changed")
    assert event.details["changes"]["leak_response"] == {"from": "revoke", "to": "flag"}
    # A post without the field (an older page) leaves it as it is.
    owner_client.post("/o/acme/settings/", settings_payload(name="Acme Ltd"))
    org.refresh_from_db()
    assert org.leak_response == LeakResponse.FLAG and org.name == "Acme Ltd"


def test_an_admin_sees_the_leak_setting_but_cannot_change_it(
    admin_client_: Client, org: Organization
) -> None:
    page = admin_client_.get("/o/acme/settings/").content.decode()
    fieldset = page[page.index('id="id_leak_response"') :]
    assert fieldset[: fieldset.index(">") + 1].endswith(" disabled>")
    response = admin_client_.post(
        "/o/acme/settings/", settings_payload(name="Acme 2", leak_response="flag")
    )
    assert response.status_code == 302
    org.refresh_from_db()
    assert org.leak_response == LeakResponse.REVOKE
    assert org.name == "Acme 2"  # the rest of the form still saves


# --- the selector ----------------------------------------------------------------------------


def test_scope_use_keeps_implied_scopes_of_a_used_scope(org: Organization) -> None:
    key, _ = make_key(org, scopes=["members:write", "kyc:read"])
    fold(key, ok=2, scopes={"members:write": 2})
    window = usage_window("30d", now=timezone.now())
    use = apikey_scope_use(org=org, key=key, since=window.since, until=window.until)
    assert use.used == ["members:write"]
    assert use.keep == ["members:read", "members:write"]
    assert use.remove == ["kyc:read"]
    by_scope = {held.scope: held for held in use.held}
    assert by_scope["members:read"].requests == 0
    assert by_scope["members:read"].kept_with == "members:write"
    assert use.can_narrow
