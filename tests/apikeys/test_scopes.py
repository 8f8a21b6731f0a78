"""The scope registry: resources, validation, write-implies-read, host extras."""

from __future__ import annotations

import pytest

from apikeys.scopes import (
    ScopeError,
    all_resources,
    all_scopes,
    has_scope,
    missing_scopes,
    normalize_scopes,
    scope_choices,
)


def test_org_resources_match_the_spec() -> None:
    table = {r.name: r.actions for r in all_resources()}
    assert table == {
        "organization": ("read", "write"),
        "members": ("read", "write"),
        "api_keys": ("read", "write"),
        "audit_log": ("read",),
        "usage": ("read",),
        "kyc": ("read", "write"),
        "webhooks": ("read", "write"),
        "sign_in_links": ("create",),
    }
    system = {r.name: r.actions for r in all_resources(system=True)}
    assert system == {
        "platform_organizations": ("read", "write"),
        "platform_kyc": ("read", "write"),
        "keys": ("verify",),
    }
    assert all(r.system for r in all_resources(system=True))
    assert not any(r.system for r in all_resources())


def test_read_only_resources_have_no_write_scope() -> None:
    assert "audit_log:write" not in all_scopes()
    assert "usage:write" not in dict(scope_choices())
    assert "usage:read" in dict(scope_choices())
    assert "sign_in_links:create" in dict(scope_choices())
    assert len(scope_choices()) == 13


def test_normalize_adds_read_for_write_sorts_and_dedups() -> None:
    assert normalize_scopes(["members:write", "kyc:read", "kyc:read", "members:write"]) == [
        "kyc:read",
        "members:read",
        "members:write",
    ]
    assert normalize_scopes([]) == []


@pytest.mark.parametrize(
    "bad",
    ["usage:write", "members:admin", "members", ":read", "Members:read", "platform_kyc:read", ""],
)
def test_normalize_rejects_naming_the_scope(bad: str) -> None:
    with pytest.raises(ScopeError) as exc:
        normalize_scopes(["members:read", bad])
    assert repr(bad) in str(exc.value)


def test_system_scopes_are_only_for_system_keys() -> None:
    assert normalize_scopes(["platform_kyc:write"], system=True) == [
        "platform_kyc:read",
        "platform_kyc:write",
    ]
    with pytest.raises(ScopeError):
        normalize_scopes(["members:read"], system=True)


def test_normalize_rejects_a_bare_string_and_non_strings() -> None:
    with pytest.raises(ScopeError):
        normalize_scopes("members:read")
    with pytest.raises(ScopeError):
        normalize_scopes([3])


def test_write_implies_read_in_checks() -> None:
    assert has_scope(["members:write"], "members:read")
    assert has_scope(["members:read"], "members:read")
    assert not has_scope(["members:read"], "members:write")
    assert not has_scope(["kyc:write"], "members:read")
    assert missing_scopes(["members:write"], ["members:read", "kyc:read"]) == ["kyc:read"]


def test_a_star_grants_every_action_of_its_resource_only() -> None:
    assert normalize_scopes(["members:*"]) == ["members:*"]
    assert has_scope(["members:*"], "members:write")
    assert has_scope(["members:*"], "members:read")
    assert not has_scope(["members:*"], "kyc:read")
    assert missing_scopes(["members:write"], ["members:*"]) == ["members:*"]
    # Every action held today is still not `*`, which also covers actions added later.
    assert missing_scopes(["members:read", "members:write"], ["members:*"]) == ["members:*"]
    assert missing_scopes(["members:*"], ["members:*", "members:read"]) == []
    with pytest.raises(ScopeError):
        normalize_scopes(["*:*"])
