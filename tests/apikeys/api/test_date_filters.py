"""The `since` / `until` query filters of `GET audit-events` and `GET usage`: a time out of
range (year 1, year 9999, ...), one whose alignment to an hour or a day overflows, a NUL
byte or an overlong value is a 400 `validation_error` naming the parameter, never a 500;
the widest accepted range still answers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from orgs.models import ActorType, AuditEvent, Organization
from tests.apikeys.api.conftest import ApiClient, assert_error

pytestmark = pytest.mark.django_db

OUT_OF_RANGE = [
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999+00:00",
    "9999-12-31",
    "0001-01-01T00:00:00Z",
    "0001-01-01",
    "3000-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    # An offset that moves the value past datetime.max or before datetime.min.
    "9999-12-31T23:59:59-05:00",
    "0001-01-01T00:00:00+05:00",
]
MALFORMED = [
    "2024-01-01T00:00:00Z\x00",
    "\x00",
    "2024-01-01T00:00:00" + "0" * 200 + "Z",
    "2024-01-01T00:00:00Z" + " " * 100,
    "10000-01-01T00:00:00Z",
]


@pytest.fixture
def usage_api(api_client_with_scopes: Callable[..., ApiClient]) -> ApiClient:
    return api_client_with_scopes("usage:read")


@pytest.fixture
def audit_api(api_client_with_scopes: Callable[..., ApiClient]) -> ApiClient:
    return api_client_with_scopes("audit_log:read")


@pytest.mark.parametrize("value", OUT_OF_RANGE + MALFORMED)
@pytest.mark.parametrize("param", ["since", "until"])
@pytest.mark.parametrize("granularity", ["hour", "day"])
def test_usage_refuses_a_time_out_of_range_naming_the_parameter(
    usage_api: ApiClient, param: str, value: str, granularity: str
) -> None:
    response = usage_api.get("usage", query={param: value, "granularity": granularity})
    error = assert_error(response, 400, "validation_error")
    assert error["param"] == param, error


@pytest.mark.parametrize("value", OUT_OF_RANGE + MALFORMED)
@pytest.mark.parametrize("param", ["since", "until"])
def test_audit_events_refuse_a_time_out_of_range_naming_the_parameter(
    audit_api: ApiClient, param: str, value: str
) -> None:
    response = audit_api.get("audit-events", query={param: value})
    error = assert_error(response, 400, "validation_error")
    assert error["param"] == param, error


@pytest.mark.parametrize("granularity", ["hour", "day"])
def test_usage_answers_at_the_latest_accepted_time(usage_api: ApiClient, granularity: str) -> None:
    # `until` is aligned up to the next hour or day: from the last accepted second that
    # is the first moment out of range, which must still be computed, not overflow.
    response = usage_api.get(
        "usage",
        query={
            "since": "2999-12-31T00:00:00Z",
            "until": "2999-12-31T23:59:59Z",
            "granularity": granularity,
        },
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["until"] == "3000-01-01T00:00:00Z"
    assert body["results"] == []


@pytest.mark.parametrize(
    ("granularity", "since"), [("hour", "1969-12-31T00:00:00Z"), ("day", "1969-12-02T00:00:00Z")]
)
def test_usage_answers_at_the_earliest_accepted_time(
    usage_api: ApiClient, granularity: str, since: str
) -> None:
    # Without `since` the default window reaches back before the earliest accepted time.
    response = usage_api.get(
        "usage", query={"until": "1970-01-01T00:00:00Z", "granularity": granularity}
    )
    assert response.status_code == 200, response.content
    assert response.json()["since"] == since


def test_audit_events_keep_the_widest_accepted_range(
    org: Organization, audit_api: ApiClient
) -> None:
    AuditEvent.objects.create(
        org=org,
        action="test.event",
        actor_type=ActorType.SYSTEM,
        actor_label="system",
        created_at=datetime(2024, 5, 1, 12, tzinfo=UTC),
    )
    response = audit_api.get(
        "audit-events",
        query={
            "action": "test.event",
            "since": "1970-01-01T00:00:00Z",
            "until": "2999-12-31T23:59:59.999999Z",
        },
    )
    assert response.status_code == 200, response.content
    assert [event["action"] for event in response.json()["results"]] == ["test.event"]


@pytest.mark.parametrize("value", ["2030-01-01T00:00:00Z\x00junk", "2030-01-01T00:00:00\x00"])
def test_a_nul_byte_in_a_body_time_is_refused_not_cut_off(
    api_client_with_scopes: Callable[..., ApiClient], value: str
) -> None:
    # Python's ISO parser stops at a NUL byte, so these parsed as 2030-01-01 before.
    api = api_client_with_scopes("api_keys:write")
    response = api.post("api-keys", {"name": "n", "scopes": [], "expires_at": value})
    assert assert_error(response, 400, "validation_error")["param"] == "expires_at"


def test_the_range_is_far_from_what_python_can_represent() -> None:
    from config import dates

    # Room for a month either side: no alignment or default window can overflow.
    assert dates.EARLIEST - timedelta(days=31) > datetime.min.replace(tzinfo=UTC)
    assert dates.END + timedelta(days=31) < datetime.max.replace(tzinfo=UTC)
