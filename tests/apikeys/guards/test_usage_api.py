"""`GET /api/v1/usage`, and a warm `GET me` that touches no database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from apikeys import usage
from orgs.models import Organization
from tests.apikeys.guards.conftest import new_key

T0 = datetime(2030, 1, 4, 12, 0, tzinfo=UTC)


def test_a_warm_me_runs_no_database_query(
    backend: str, org: Organization, django_assert_num_queries: Any
) -> None:
    _, api = new_key(org)
    assert api.get("me").status_code == 200  # fills the key part of the cache entry
    assert api.get("me").status_code == 200  # and its org part
    with django_assert_num_queries(0):
        response = api.get("me", headers={"X-Client-Version": "sdk-2.0"})
    assert response.status_code == 200
    assert response["X-RateLimit-Limit"] == "60"
    assert response.json()["rate_limits"]["per_minute"] == 60


def test_usage_needs_the_usage_scope(backend: str, org: Organization) -> None:
    _, api = new_key(org, scopes=["api_keys:read"])
    response = api.get("usage")
    assert response.status_code == 403
    assert response.json()["error"]["required_scope"] == "usage:read"


def test_usage_reports_counts_by_status_class_versions_and_last_use(
    backend: str, org: Organization, frozen_clock: Any
) -> None:
    frozen_clock.now = T0.timestamp() + 60
    key, api = new_key(org, scopes=["usage:read"])
    api.get("me", headers={"X-Client-Version": "sdk-1.0"})
    api.get("me", headers={"X-Client-Version": "sdk-1.1"})
    api.get("api-keys")  # 403: counted as 4xx
    api.get("usage?key=key_nonexistent0000")  # 404
    usage.fold()
    response = api.get("usage?since=2030-01-04T00:00:00Z&until=2030-01-05T00:00:00Z")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "usage" and body["granularity"] == "hour"
    # Folded figures: this request itself is still in the live counters.
    assert body["totals"] == {
        "requests": 4,
        "requests_2xx": 2,
        "requests_4xx": 2,
        "requests_5xx": 0,
    }
    [bucket] = body["results"]
    assert bucket["key"] == key.public_id
    assert bucket["period_start"] == "2030-01-04T12:00:00Z"
    assert bucket["client_versions"] == ["sdk-1.0", "sdk-1.1"]
    assert bucket["last_used_at"].startswith("2030-01-04T12:01:00")
    assert bucket["last_used_ip"] == "127.0.0.1"


def test_daily_granularity_and_the_key_filter(
    backend: str, org: Organization, frozen_clock: Any
) -> None:
    first, api = new_key(org, scopes=["usage:read"])
    second, other = new_key(org, scopes=["usage:read"], name="other")
    for hour in (1, 5, 23):
        frozen_clock.now = T0.replace(hour=hour).timestamp()
        api.get("me")
    other.get("me")
    usage.fold()
    daily = api.get("usage?granularity=day&since=2030-01-01T00:00:00Z&until=2030-01-05T00:00:00Z")
    assert daily.status_code == 200, daily.content
    results = daily.json()["results"]
    assert sorted((r["key"], r["period_start"], r["requests"]) for r in results) == sorted(
        [
            (first.public_id, "2030-01-04T00:00:00Z", 3),
            (second.public_id, "2030-01-04T00:00:00Z", 1),
        ]
    )
    only = api.get(
        f"usage?key={second.public_id}&granularity=day"
        "&since=2030-01-01T00:00:00Z&until=2030-01-05T00:00:00Z"
    ).json()
    assert only["key"] == second.public_id
    assert [r["key"] for r in only["results"]] == [second.public_id]


def test_another_orgs_usage_is_invisible(
    backend: str, org: Organization, other_org: Organization, frozen_clock: Any
) -> None:
    frozen_clock.now = T0.timestamp()
    foreign, foreign_api = new_key(other_org, scopes=["usage:read"])
    foreign_api.get("me")
    usage.fold()
    _, api = new_key(org, scopes=["usage:read"])
    window = "since=2030-01-04T00:00:00Z&until=2030-01-05T00:00:00Z"
    assert api.get(f"usage?{window}").json()["results"] == []
    missing = api.get(f"usage?key={foreign.public_id}&{window}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_bad_filters_are_validation_errors(backend: str, org: Organization) -> None:
    _, api = new_key(org, scopes=["usage:read"])
    for query in (
        "granularity=week",
        "since=yesterday",
        "since=2030-01-05T00:00:00Z&until=2030-01-04T00:00:00Z",
        "since=2029-01-01T00:00:00Z&until=2030-01-04T00:00:00Z",
        "colour=blue",
    ):
        response = api.get(f"usage?{query}")
        assert response.status_code == 400, query
        assert response.json()["error"]["code"] == "validation_error", query
