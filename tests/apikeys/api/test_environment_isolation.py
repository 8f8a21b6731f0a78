"""A test key knows nothing of live keys: not their keys, usage or audit events (ADR 0043)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apikeys.models import ApiKey, KeyUsageHour
from apikeys.services import apikey_revoke
from orgs.actors import Actor
from orgs.models import KycStatus, Organization
from tests.apikeys.api.conftest import ApiClient, KeyMaker, assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def approved_org(org: Organization) -> Organization:
    org.kyc_status = KycStatus.APPROVED
    org.save(update_fields=["kyc_status"])
    return org


def _usage_row(key: ApiKey, org: Organization, requests: int) -> None:
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    KeyUsageHour.objects.create(api_key=key, org=org, hour=hour, count_2xx=requests)


def test_a_test_key_sees_no_live_key_usage(
    approved_org: Organization, make_api_key: KeyMaker
) -> None:
    live, _ = make_api_key(approved_org, ["usage:read"], environment="live", name="Live")
    test, test_secret = make_api_key(approved_org, ["usage:read"], name="Test")
    _, live_secret = make_api_key(approved_org, ["usage:read"], environment="live", name="L2")
    _usage_row(live, approved_org, 7)
    _usage_row(test, approved_org, 3)

    as_test = ApiClient(test_secret).get("usage")
    assert as_test.status_code == 200, as_test.content
    assert {b["key"] for b in as_test.json()["results"]} == {test.public_id}
    assert as_test.json()["totals"]["requests"] == 3
    assert_error(
        ApiClient(test_secret).get("usage", query={"key": live.public_id}), 404, "not_found"
    )

    as_live = ApiClient(live_secret).get("usage")
    assert {b["key"] for b in as_live.json()["results"]} == {live.public_id, test.public_id}


def test_a_test_key_sees_no_live_key_audit_events(
    approved_org: Organization, make_api_key: KeyMaker
) -> None:
    live, _ = make_api_key(approved_org, ["api_keys:write"], environment="live", name="Secret")
    _, live_secret = make_api_key(approved_org, ["audit_log:read"], environment="live")
    _, test_secret = make_api_key(approved_org, ["audit_log:read"], name="Test")
    apikey_revoke(key=live, actor=Actor.system())

    as_test = ApiClient(test_secret).get("audit-events")
    assert as_test.status_code == 200
    events = as_test.json()["results"]
    assert events, "the test key still sees the events of test keys"
    assert live.public_id not in as_test.content.decode()
    assert "Secret" not in as_test.content.decode()

    as_live = ApiClient(live_secret).get("audit-events")
    assert live.public_id in as_live.content.decode()
