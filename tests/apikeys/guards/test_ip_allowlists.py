"""IP allowlists of keys: every door refuses a request from elsewhere with 403
`ip_not_allowed`, the client address follows TRUSTED_PROXY_HOPS, and "report only" admits
and records instead (usage and audit)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings

from apikeys import networks, usage
from apikeys.models import ApiKey, KeyUsageHour
from apikeys.networks import NetworkError, clean_allowed_ips
from apikeys.services import InvalidKeyInput, apikey_create, apikey_update
from orgs.actors import Actor
from orgs.models import AuditEvent, Organization
from tests.apikeys.api.conftest import assert_error
from tests.apikeys.api.test_verify import system_key
from tests.apikeys.guards.conftest import set_limits
from tests.factories import ApiKeyFactory

PRODUCT = Path(__file__).resolve().parents[1] / "catalogues" / "product.toml"

pytestmark = pytest.mark.usefixtures("backend", "product")


@pytest.fixture
def product() -> Iterator[None]:
    with override_settings(LATCHKEY_CATALOGUE=str(PRODUCT)):
        yield


def api(secret: str, ip: str, path: str = "/api/v1/me", **headers: str) -> Any:
    return Client().get(
        path, headers={"Authorization": f"Bearer {secret}", **headers}, REMOTE_ADDR=ip
    )


def gateway(secret: str, ip: str, **headers: str) -> Any:
    sent = {"X-Original-Method": "GET", "X-Original-URI": "/v1/payments/p1", **headers}
    return Client().get("/gateway/auth", headers={"X-Product-Key": secret, **sent}, REMOTE_ADDR=ip)


def verify(verifier: str, secret: str, **body: Any) -> Any:
    return Client().post(
        "/api/v1/keys/verify",
        {"key": secret, "scopes": ["payments:read"], **body},
        content_type="application/json",
        headers={"Authorization": f"Bearer {verifier}"},
        REMOTE_ADDR="10.9.9.9",
    )


def key_with(org: Organization, ranges: list[str], mode: str = "enforce", **kw: Any) -> Any:
    return ApiKeyFactory.pair(
        org=org,
        name="Net",
        environment="test",
        scopes=kw.pop("scopes", ["payments:read", "members:read"]),
        allowed_ips=ranges,
        allowed_ips_mode=mode,
        **kw,
    )


# --- the ranges ---------------------------------------------------------------------------


def test_ranges_are_normalised_deduplicated_and_sorted() -> None:
    assert clean_allowed_ips(
        [" 2001:db8::/32", "203.0.113.7", "10.0.0.0/8", "2001:DB8::/32", "::1"]
    ) == ["10.0.0.0/8", "203.0.113.7/32", "::1/128", "2001:db8::/32"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["10.0.0.1/8"], "did you mean 10.0.0.0/8?"),
        (["not-an-ip"], "is not an IP address or CIDR range"),
        (["10.0.0.0/33"], "is not an IP address or CIDR range"),
        ([""], "is not an IP address or CIDR range"),
        ([7], "must be a string"),
        ("10.0.0.0/8", "as a list"),
        ([f"10.0.{i}.0/24" for i in range(51)], "at most 50"),
    ],
)
def test_bad_ranges_are_refused_with_a_message(value: Any, message: str) -> None:
    with pytest.raises(NetworkError) as caught:
        clean_allowed_ips(value)
    assert message in caught.value.message


def test_ipv4_mapped_ipv6_is_checked_as_ipv4() -> None:
    nets = networks.networks_of(("192.0.2.0/24",))
    assert networks.allows(nets, "::ffff:192.0.2.9")
    assert not networks.allows(nets, "::ffff:198.51.100.1")
    assert not networks.allows(nets, "garbage")
    assert not networks.allows(nets, "")


# --- the API door -------------------------------------------------------------------------


def test_the_api_refuses_an_address_outside_the_list_and_admits_one_inside(
    org: Organization,
) -> None:
    _, secret = key_with(org, ["203.0.113.0/24", "2001:db8::/32"])
    assert api(secret, "203.0.113.9").status_code == 200
    assert api(secret, "2001:db8:1::5").status_code == 200
    error = assert_error(api(secret, "198.51.100.1"), 403, "ip_not_allowed")
    assert "198.51.100.1" in error["message"]
    assert_error(api(secret, "2001:db9::1"), 403, "ip_not_allowed")
    # A key without a list works from anywhere.
    _, open_secret = key_with(org, [])
    assert api(open_secret, "198.51.100.1").status_code == 200


def test_the_refusal_is_counted_in_usage_as_a_403(org: Organization) -> None:
    key, secret = key_with(org, ["203.0.113.0/24"])
    assert_error(api(secret, "198.51.100.1"), 403, "ip_not_allowed")
    recent = usage.recent_requests(key_pk=key.pk)
    assert [(r["status"], r["ip"]) for r in recent] == [(403, "198.51.100.1")]
    usage.fold()
    row = KeyUsageHour.objects.get(api_key=key)
    assert (row.count_2xx, row.count_4xx, row.ip_reported) == (0, 1, 0)


def test_the_client_address_follows_trusted_proxy_hops(org: Organization) -> None:
    _, secret = key_with(org, ["203.0.113.0/24"])
    forwarded = {"X-Forwarded-For": "203.0.113.9, 10.0.0.2"}
    # Without trusted hops the header is the client's own claim: ignored.
    assert_error(api(secret, "10.0.0.3", **forwarded), 403, "ip_not_allowed")
    with override_settings(TRUSTED_PROXY_HOPS=2):
        assert api(secret, "10.0.0.3", **forwarded).status_code == 200
    with override_settings(TRUSTED_PROXY_HOPS=1):
        # One hop trusted: the address the nearest proxy saw (10.0.0.2) is the client's.
        assert_error(api(secret, "10.0.0.3", **forwarded), 403, "ip_not_allowed")
        spoofed = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}
        assert_error(api(secret, "10.0.0.3", **spoofed), 403, "ip_not_allowed")


# --- the gateway and verify doors ---------------------------------------------------------


def test_the_gateway_refuses_an_address_outside_the_list(product: None, org: Organization) -> None:
    _, secret = key_with(org, ["2001:db8::/32"])
    assert gateway(secret, "2001:db8::7").status_code == 200
    refused = gateway(secret, "127.0.0.1")
    assert refused.status_code == 403
    assert refused["X-Latchkey-Error-Code"] == "ip_not_allowed"
    # nginx sends the client in X-Forwarded-For; Latchkey trusts it one hop back.
    with override_settings(TRUSTED_PROXY_HOPS=1):
        allowed = gateway(secret, "127.0.0.1", **{"X-Forwarded-For": "2001:db8::9"})
        assert allowed.status_code == 200
        outside = gateway(secret, "127.0.0.1", **{"X-Forwarded-For": "2001:db9::9"})
        assert outside["X-Latchkey-Error-Code"] == "ip_not_allowed"


def test_verify_checks_the_address_it_is_told(product: None, org: Organization) -> None:
    verifier = system_key(["keys:verify"])
    _, secret = key_with(org, ["203.0.113.0/24"])
    inside = verify(verifier, secret, ip="203.0.113.50").json()
    assert (inside["valid"], inside["code"]) == (True, None)
    outside = verify(verifier, secret, ip="198.51.100.2").json()
    assert (outside["valid"], outside["code"]) == (False, "ip_not_allowed")
    # Not told: the caller's own address says nothing about the key's client.
    untold = verify(verifier, secret).json()
    assert (untold["valid"], untold["code"]) == (False, "ip_not_allowed")
    bad = verify(verifier, secret, ip="not-an-ip")
    assert_error(bad, 400, "validation_error")
    # A key without a list needs no address.
    _, open_secret = key_with(org, [])
    assert verify(verifier, open_secret).json()["valid"] is True


# --- report only --------------------------------------------------------------------------


def test_report_only_admits_and_records_would_be_refusals(org: Organization) -> None:
    key, secret = key_with(org, ["203.0.113.0/24"], mode="report")
    assert api(secret, "203.0.113.1").status_code == 200
    assert [api(secret, "198.51.100.1").status_code for _ in range(3)] == [200, 200, 200]
    assert api(secret, "2001:db8::1").status_code == 200
    usage.fold()
    row = KeyUsageHour.objects.get(api_key=key)
    assert (row.count_2xx, row.ip_reported) == (5, 4)
    # One audit event per address and hour, naming the address and the mode.
    events = AuditEvent.objects.filter(action="api_key.ip_not_allowed", target_id=key.public_id)
    assert sorted(e.details["ip"] for e in events) == ["198.51.100.1", "2001:db8::1"]
    assert {(e.details["mode"], e.details["refused"], e.actor_id) for e in events} == {
        ("report", False, key.public_id)
    }


def test_enforced_refusals_are_audited_once_per_address_and_hour(org: Organization) -> None:
    key, secret = key_with(org, ["203.0.113.0/24"])
    for _ in range(3):
        assert_error(api(secret, "198.51.100.1"), 403, "ip_not_allowed")
    events = AuditEvent.objects.filter(action="api_key.ip_not_allowed", target_id=key.public_id)
    assert [(e.details["ip"], e.details["refused"]) for e in events] == [("198.51.100.1", True)]


def test_audit_events_per_key_and_hour_are_capped(org: Organization) -> None:
    from apikeys.networks_report import AUDIT_PER_KEY_HOUR

    set_limits(org, per_minute=0, burst=0, monthly=0)
    key, secret = key_with(org, ["203.0.113.0/24"], mode="report")
    for i in range(AUDIT_PER_KEY_HOUR + 5):
        assert api(secret, f"198.51.100.{i + 1}").status_code == 200
    events = AuditEvent.objects.filter(action="api_key.ip_not_allowed", target_id=key.public_id)
    assert events.count() == AUDIT_PER_KEY_HOUR
    usage.fold()
    assert KeyUsageHour.objects.get(api_key=key).ip_reported == AUDIT_PER_KEY_HOUR + 5


def test_switching_to_enforce_takes_effect_on_the_next_request(org: Organization) -> None:
    key, secret = key_with(org, ["203.0.113.0/24"], mode="report")
    assert api(secret, "198.51.100.1").status_code == 200
    apikey_update(key=key, allowed_ips_mode="enforce", actor=Actor.system())
    assert_error(api(secret, "198.51.100.1"), 403, "ip_not_allowed")
    apikey_update(key=key, allowed_ips=[], actor=Actor.system())
    assert api(secret, "198.51.100.1").status_code == 200


# --- the API sets them --------------------------------------------------------------------


def test_keys_carry_ranges_from_creation_and_patch(org: Organization) -> None:
    _, admin = apikey_create(
        actor=Actor.system(),
        org=org,
        name="Admin",
        environment="test",
        scopes=["api_keys:write", "members:read"],
    )
    headers = {"Authorization": f"Bearer {admin}"}
    created = Client().post(
        "/api/v1/api-keys",
        {"name": "Svc", "scopes": ["members:read"], "allowed_ips": ["203.0.113.0/24"]},
        content_type="application/json",
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["allowed_ips"], body["allowed_ips_mode"]) == (["203.0.113.0/24"], "enforce")
    assert_error(api(body["secret"], "198.51.100.1"), 403, "ip_not_allowed")

    patched = Client().patch(
        f"/api/v1/api-keys/{body['id']}",
        {"allowed_ips": ["2001:db8::/32", "198.51.100.1"], "allowed_ips_mode": "report"},
        content_type="application/json",
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert patched.status_code == 200, patched.content
    assert patched.json()["allowed_ips"] == ["198.51.100.1/32", "2001:db8::/32"]
    assert api(body["secret"], "192.0.2.1").status_code == 200  # report only

    bad = Client().patch(
        f"/api/v1/api-keys/{body['id']}",
        {"allowed_ips": ["10.0.0.1/8"]},
        content_type="application/json",
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    error = assert_error(bad, 400, "validation_error")
    assert error["param"] == "allowed_ips" and "10.0.0.0/8" in error["message"]
    assert ApiKey.objects.get(public_id=body["id"]).allowed_ips == [
        "198.51.100.1/32",
        "2001:db8::/32",
    ]
    event = AuditEvent.objects.filter(action="api_key.updated", target_id=body["id"]).get()
    assert event.details["changes"]["allowed_ips_mode"] == {"from": "enforce", "to": "report"}
    assert event.actor_id.startswith("key_")


def test_service_refuses_a_bad_mode(org: Organization) -> None:
    key, _ = key_with(org, [])
    with pytest.raises(InvalidKeyInput):
        apikey_update(key=key, allowed_ips_mode="sometimes", actor=Actor.system())


# --- found in review: the edges --------------------------------------------------------------


def test_a_forwarded_chain_shorter_than_the_trusted_hops_is_an_unknown_address(
    org: Organization,
) -> None:
    """A request that skipped the outer proxy must not pass as the inner proxy's address."""
    _, secret = key_with(org, ["10.0.0.0/8"])
    with override_settings(TRUSTED_PROXY_HOPS=2):
        short = api(secret, "10.0.0.3", **{"X-Forwarded-For": "10.0.0.2"})
        error = assert_error(short, 403, "ip_not_allowed")
        assert "unknown address" in error["message"]
        assert api(secret, "10.0.0.3").status_code == 403
        full = api(secret, "10.0.0.3", **{"X-Forwarded-For": "10.1.1.1, 10.0.0.2"})
        assert full.status_code == 200


def test_scoped_and_mapped_ranges() -> None:
    with pytest.raises(NetworkError):
        clean_allowed_ips(["fe80::1%eth0"])
    assert clean_allowed_ips(["::ffff:192.0.2.0/120"]) == ["192.0.2.0/24"]


def test_a_key_bound_to_networks_gives_no_key_a_wider_reach(org: Organization) -> None:
    bound, _ = key_with(org, ["203.0.113.0/24"], scopes=["api_keys:write", "members:read"])
    # Created without a list: it inherits the creator's.
    child, _ = apikey_create(
        org=org,
        name="Child",
        environment="test",
        scopes=["members:read"],
        actor=Actor.for_key(bound),
    )
    assert (child.allowed_ips, child.allowed_ips_mode) == (["203.0.113.0/24"], "enforce")
    # Inside the creator's ranges: fine.
    inner, _ = apikey_create(
        org=org,
        name="Inner",
        environment="test",
        scopes=["members:read"],
        allowed_ips=["203.0.113.16/28"],
        actor=Actor.for_key(bound),
    )
    assert inner.allowed_ips == ["203.0.113.16/28"]
    for ranges, mode in ((["198.51.100.0/24"], "enforce"), (["203.0.113.0/24"], "report")):
        with pytest.raises(InvalidKeyInput) as caught:
            apikey_create(
                org=org,
                name="Wide",
                environment="test",
                scopes=["members:read"],
                allowed_ips=ranges,
                allowed_ips_mode=mode,
                actor=Actor.for_key(bound),
            )
        assert caught.value.param == "allowed_ips"
    # Nor can it lift a list, its own included.
    for target in (inner, bound):
        with pytest.raises(InvalidKeyInput):
            apikey_update(key=target, allowed_ips=[], actor=Actor.for_key(bound))
    apikey_update(key=inner, allowed_ips=["203.0.113.32/28"], actor=Actor.for_key(bound))
    # A report-only list binds nothing yet.
    trial, _ = key_with(org, ["203.0.113.0/24"], mode="report", scopes=["api_keys:write"])
    free, _ = apikey_create(
        org=org, name="Free", environment="test", scopes=[], actor=Actor.for_key(trial)
    )
    assert free.allowed_ips == []


def test_the_drf_authentication_class_enforces_the_list(org: Organization) -> None:
    from django.test import RequestFactory
    from rest_framework.request import Request

    from apikeys.authentication import ApiKeyAuthentication
    from apikeys.errors import ApiError

    _, secret = key_with(org, ["203.0.113.0/24"])
    auth = ApiKeyAuthentication()

    def request_from(ip: str) -> Request:
        raw = RequestFactory().get("/x", HTTP_AUTHORIZATION=f"Bearer {secret}", REMOTE_ADDR=ip)
        return Request(raw)

    assert auth.authenticate(request_from("203.0.113.5")) is not None
    with pytest.raises(ApiError) as caught:
        auth.authenticate(request_from("198.51.100.5"))
    assert caught.value.code == "ip_not_allowed"
