"""Editing a key's scopes through the API: a subset of the caller's own, in force on the
next request, audited."""

from __future__ import annotations

from typing import Any

from apikeys.models import ApiKey
from orgs.models import AuditEvent, Organization
from tests.apikeys.api.conftest import ApiClient, KeyMaker, assert_error


def patch(client: ApiClient, key: ApiKey, body: Any) -> Any:
    return client.patch(f"api-keys/{key.public_id}", body)


def test_narrowing_a_key_is_in_force_on_its_next_request(
    org: Organization, make_api_key: KeyMaker
) -> None:
    _, admin = make_api_key(org, ["api_keys:write", "members:read", "audit_log:read"])
    target, secret = make_api_key(org, ["members:read", "audit_log:read"], name="Target")
    client = ApiClient(secret)
    assert client.get("audit-events").status_code == 200

    response = patch(ApiClient(admin), target, {"scopes": ["members:read"]})
    assert response.status_code == 200, response.content
    assert response.json()["scopes"] == ["members:read"]

    error = assert_error(client.get("audit-events"), 403, "insufficient_scope")
    assert error["required_scope"] == "audit_log:read"
    assert client.get("members").status_code == 200
    event = AuditEvent.objects.get(action="api_key.updated", target_id=target.public_id)
    assert event.details["changes"] == {
        "scopes": {"from": ["audit_log:read", "members:read"], "to": ["members:read"]}
    }
    assert event.actor_type == "api_key"


def test_a_key_grants_only_scopes_it_holds(org: Organization, make_api_key: KeyMaker) -> None:
    _, narrow = make_api_key(org, ["api_keys:write", "members:read"])
    target, _ = make_api_key(org, ["members:read"], name="Target")
    error = assert_error(
        patch(ApiClient(narrow), target, {"scopes": ["members:read", "audit_log:read"]}),
        403,
        "insufficient_scope",
    )
    assert error["required_scope"] == "audit_log:read"
    target.refresh_from_db()
    assert target.scopes == ["members:read"]
    assert not AuditEvent.objects.filter(action="api_key.updated").exists()


def test_a_key_cannot_edit_a_broader_key(org: Organization, make_api_key: KeyMaker) -> None:
    """Replacing a broader key's scopes with a subset of the caller's would still be an
    act on scopes it does not hold (as rotation is)."""
    _, narrow = make_api_key(org, ["api_keys:write", "members:read"])
    broad, _ = make_api_key(org, ["members:read", "audit_log:read"], name="Broad")
    assert_error(
        patch(ApiClient(narrow), broad, {"scopes": ["members:read"]}), 403, "insufficient_scope"
    )
    broad.refresh_from_db()
    assert broad.scopes == ["audit_log:read", "members:read"]


def test_edits_are_validated(org: Organization, make_api_key: KeyMaker) -> None:
    _, admin = make_api_key(org)
    target, _ = make_api_key(org, ["members:read"], name="Target")
    client = ApiClient(admin)
    assert (
        assert_error(patch(client, target, {"scopes": ["nope:read"]}), 400, "validation_error")[
            "param"
        ]
        == "scopes"
    )
    assert_error(patch(client, target, {"name": "renamed"}), 400, "validation_error")
    assert_error(patch(client, target, {"scopes": "members:read"}), 400, "validation_error")
    # Implied scopes are added, as at creation.
    widened = patch(client, target, {"scopes": ["members:write"]})
    assert widened.json()["scopes"] == ["members:read", "members:write"]
    # Nothing changed: no audit event.
    before = AuditEvent.objects.filter(action="api_key.updated").count()
    assert patch(client, target, {"scopes": ["members:write"]}).status_code == 200
    assert AuditEvent.objects.filter(action="api_key.updated").count() == before


def test_a_revoked_key_cannot_be_edited(org: Organization, make_api_key: KeyMaker) -> None:
    _, admin = make_api_key(org)
    target, _ = make_api_key(org, ["members:read"], name="Target")
    client = ApiClient(admin)
    assert client.post(f"api-keys/{target.public_id}/revoke").status_code == 200
    assert_error(patch(client, target, {"scopes": ["members:read"]}), 400, "validation_error")


def test_a_reported_url_keeps_no_secret(org: Organization, make_api_key: KeyMaker) -> None:
    """A report's URL may carry the key itself; what is stored and sent keeps only the
    scheme, host and path, with key-shaped strings redacted."""
    from apikeys.services import apikey_report_leaked

    key, secret = make_api_key(org, ["members:read"], name="Leaky")
    url = f"https://paste.example/raw/{secret}?k={secret}#{secret}"
    assert apikey_report_leaked(key=key, source="report", url=url)
    event = AuditEvent.objects.get(action="api_key.leaked", target_id=key.public_id)
    assert event.details["url"] == "https://paste.example/raw/[redacted]"
    assert secret not in str(event.details)


def test_leaked_shows_in_me(org: Organization, make_api_key: KeyMaker) -> None:
    from orgs.models import LeakResponse

    Organization.objects.filter(pk=org.pk).update(leak_response=LeakResponse.FLAG)
    org.refresh_from_db()
    key, secret = make_api_key(org, ["members:read"], name="Leaky")
    client = ApiClient(secret)
    assert client.get("me").json()["key"]["leaked"] is False
    from apikeys.services import apikey_report_leaked

    assert apikey_report_leaked(key=key, source="report")
    assert client.get("me").json()["key"]["leaked"] is True
