"""Usage on the dashboard: the selectors, the SVG chart, the key detail page, the org
usage page and the overview card; roles, tenancy and constant queries."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apikeys import redisconn, usage
from apikeys.charts import PLOT_HEIGHT, build_chart, compact, nice_step
from apikeys.models import ApiKey, KeyUsageHour
from apikeys.selectors import (
    month_start,
    usage_by_key,
    usage_client_versions,
    usage_series,
    usage_totals,
    usage_window,
)
from apikeys.services import apikey_delete
from orgs.actors import Actor
from orgs.models import Organization, Role
from tests.apikeys.helpers import FrozenClock, frozen_clock, make_key
from tests.conftest import signed_in_client
from tests.factories import MembershipFactory

# Mid-month and mid-day, so every window of the tests stays inside one month.
NOW = datetime(2031, 3, 17, 14, 25, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    with frozen_clock(NOW) as frozen:
        yield frozen


@pytest.fixture(autouse=True)
def _no_recent_requests() -> Iterator[None]:
    usage.discard_recent_local()
    yield
    usage.discard_recent_local()


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def seed(
    key: ApiKey,
    hour: datetime,
    c2: int = 0,
    c4: int = 0,
    c5: int = 0,
    versions: list[str] | None = None,
) -> KeyUsageHour:
    return KeyUsageHour.objects.create(
        api_key=key,
        org_id=key.org_id,
        hour=hour_of(hour),
        count_2xx=c2,
        count_4xx=c4,
        count_5xx=c5,
        client_versions=versions or [],
    )


def push_recent(
    key: ApiKey,
    *,
    status: int,
    path: str,
    request_id: str,
    method: str = "GET",
    ip: str = "203.0.113.9",
    version: str = "",
) -> None:
    body = usage.recent_body(
        at=NOW.timestamp(),
        method=method,
        path=path,
        ip=ip,
        client_version=version,
        request_id=request_id,
    )
    # Where the app reads them: Redis when configured (as the guard script writes them),
    # else this process's memory.
    conn = redisconn.client()
    if conn is None:
        usage.local_recent_push(key_pk=key.pk, status=status, body=body)
    else:
        conn.lpush(usage.recent_redis_key(key.pk), f"{status} {body}")


def bars(html: str) -> list[dict[str, str]]:
    """The chart's bars as their data attributes."""
    found = re.findall(r'<g class="bar" ([^>]*)>', html)
    return [dict(re.findall(r'data-([\w-]+)="([^"]*)"', attrs)) for attrs in found]


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# --- selectors ---------------------------------------------------------------------------


def test_windows_end_with_the_current_hour_or_utc_day() -> None:
    day = usage_window("24h", now=NOW)
    assert day.granularity == "hour" and day.periods == 24
    assert day.until == datetime(2031, 3, 17, 15, tzinfo=UTC)
    assert day.since == datetime(2031, 3, 16, 15, tzinfo=UTC)
    month = usage_window("30d", now=NOW)
    assert month.granularity == "day" and month.periods == 30
    assert month.until == datetime(2031, 3, 18, tzinfo=UTC)
    assert month.since == datetime(2031, 2, 16, tzinfo=UTC)
    assert usage_window("bogus", now=NOW) == day
    assert month_start(NOW) == datetime(2031, 3, 1, tzinfo=UTC)


def test_series_sums_keys_per_hour_fills_gaps_and_ignores_other_orgs(
    org: Organization, other_org: Organization
) -> None:
    a, _ = make_key(org, name="a")
    b, _ = make_key(org, name="b")
    theirs, _ = make_key(other_org)
    seed(a, NOW, c2=5, c4=1)
    seed(b, NOW, c2=2, c5=3)
    seed(a, NOW - 3 * HOUR, c2=7)
    seed(a, NOW - 30 * HOUR, c2=100)  # before the window
    seed(theirs, NOW, c2=999)
    window = usage_window("24h", now=NOW)
    points = usage_series(
        org=org, since=window.since, until=window.until, granularity=window.granularity
    )
    assert len(points) == 24
    assert [p.start for p in points] == window.starts()
    assert points[-1].start == hour_of(NOW)
    assert (points[-1].count_2xx, points[-1].count_4xx, points[-1].count_5xx) == (7, 1, 3)
    assert points[-4].requests == 7
    assert sum(p.requests for p in points) == 18
    only_b = usage_series(
        org=org, key=b, since=window.since, until=window.until, granularity="hour"
    )
    assert sum(p.requests for p in only_b) == 5


def test_daily_series_groups_by_utc_day(org: Organization) -> None:
    key, _ = make_key(org)
    today = NOW.replace(hour=0, minute=0, second=0)
    seed(key, today + 1 * HOUR, c2=1)
    seed(key, today + 23 * HOUR, c2=2)  # later today, still today
    seed(key, today - 1 * HOUR, c4=4)  # 23:00 yesterday
    seed(key, today - 29 * DAY, c5=6)  # the first day of the window
    seed(key, today - 30 * DAY, c2=50)  # outside
    window = usage_window("30d", now=NOW)
    points = usage_series(
        org=org, since=window.since, until=window.until, granularity=window.granularity
    )
    assert len(points) == 30
    assert points[-1].start == today and points[-1].count_2xx == 3
    assert points[-2].count_4xx == 4
    assert points[0].count_5xx == 6
    assert sum(p.requests for p in points) == 13


def test_totals_by_key_and_client_versions(org: Organization, other_org: Organization) -> None:
    a, _ = make_key(org, name="a")
    b, _ = make_key(org, name="b")
    seed(a, NOW, c2=10, c4=2, versions=["sdk-2.0"])
    seed(a, NOW - 2 * DAY, c2=5, c5=1, versions=["sdk-1.9", "sdk-2.0"])
    seed(a, NOW - 40 * DAY, c2=1000, versions=["sdk-0.1"])  # too old for every window
    seed(b, NOW - 5 * HOUR, c2=3)
    seed(make_key(other_org)[0], NOW, c2=77)
    summaries = usage_by_key(org=org, now=NOW)
    assert set(summaries) == {a.pk, b.pk}
    assert summaries[a.pk].requests_24h == 12
    assert summaries[a.pk].requests_30d == 18
    assert summaries[a.pk].errors_30d == 3
    assert summaries[b.pk].requests_24h == 3 and summaries[b.pk].errors_30d == 0
    month = usage_totals(org=org, since=month_start(NOW), until=NOW + HOUR)
    assert (month.count_2xx, month.count_4xx, month.count_5xx) == (18, 2, 1)
    assert month.requests == 21 and month.errors == 3
    window = usage_window("30d", now=NOW)
    seen = usage_client_versions(org=org, key=a, since=window.since, until=window.until)
    assert [(s.version, s.last_seen) for s in seen] == [
        ("sdk-2.0", hour_of(NOW)),
        ("sdk-1.9", hour_of(NOW - 2 * DAY)),
    ]


def test_the_usage_api_reads_through_the_same_selectors(org: Organization) -> None:
    """The API's totals equal the dashboard's for the same range."""
    from apikeys.selectors import UsageTotals, usage_key_buckets

    key, _ = make_key(org)
    seed(key, NOW, c2=4, c4=1, versions=["v1"])
    seed(key, NOW - HOUR, c5=2)
    window = usage_window("24h", now=NOW)
    buckets = usage_key_buckets(org=org, since=window.since, until=window.until, granularity="hour")
    assert [b.key_id for b in buckets] == [key.public_id, key.public_id]
    assert UsageTotals.of(buckets) == usage_totals(org=org, since=window.since, until=window.until)


# --- the chart -----------------------------------------------------------------------------


def test_axis_steps_and_labels_are_round() -> None:
    assert [nice_step(n) for n in (0, 1, 3, 4, 7, 40, 41, 999, 12_000)] == [
        1,
        1,
        1,
        1,
        2,
        10,
        20,
        250,
        5000,
    ]
    assert [compact(n) for n in (0, 12, 1000, 1500, 2_000_000, 3_250_000_000)] == [
        "0",
        "12",
        "1k",
        "1.5k",
        "2M",
        "3.2B",
    ]


def test_bars_stack_status_classes_in_proportion(org: Organization) -> None:
    key, _ = make_key(org)
    seed(key, NOW, c2=60, c4=20, c5=20)
    seed(key, NOW - HOUR, c2=50)
    window = usage_window("24h", now=NOW)
    chart = build_chart(
        usage_series(org=org, since=window.since, until=window.until, granularity="hour"),
        window,
    )
    assert not chart.empty and chart.peak == 100 and chart.totals.requests == 150
    last, previous = chart.bars[-1], chart.bars[-2]
    assert [s.status_class for s in last.segments] == ["2xx", "4xx", "5xx"]
    heights = [s.height for s in last.segments]
    assert heights[0] == pytest.approx(3 * heights[1]) and heights[1] == pytest.approx(heights[2])
    assert sum(heights) == pytest.approx(PLOT_HEIGHT)  # the peak reaches the top tick
    assert previous.segments[0].height == pytest.approx(PLOT_HEIGHT / 2)
    # Stacked: each segment sits on the one below it.
    assert last.segments[1].y + last.segments[1].height == pytest.approx(last.segments[0].y)
    assert chart.bars[0].segments == []
    assert [t.label for t in chart.ticks] == ["0", "25", "50", "75", "100"]
    assert chart.bars[-1].axis_label == "" and chart.bars[-3].axis_label == "12:00"


# --- the key detail page -------------------------------------------------------------------


def test_key_detail_shows_the_chart_totals_versions_and_last_use(
    clock: FrozenClock, member_client: Client, org: Organization
) -> None:
    key, _ = make_key(org)
    seed(key, NOW, c2=8, c4=2, versions=["sdk-3.1"])
    seed(key, NOW - 5 * HOUR, c2=4, c5=1, versions=["sdk-3.0"])
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=NOW, last_used_ip="198.51.100.7")
    response = member_client.get(f"/o/{org.slug}/api-keys/{key.public_id}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "usage.css" in html
    drawn = bars(html)
    assert len(drawn) == 24
    assert drawn[-1] == {
        "start": "2031-03-17T14:00:00+00:00",
        "requests": "10",
        "2xx": "8",
        "4xx": "2",
        "5xx": "0",
    }
    assert drawn[-6]["requests"] == "5" and drawn[-6]["5xx"] == "1"
    assert 'data-total="requests">15<' in html
    assert 'data-total="4xx">2<' in html and 'data-total="5xx">1<' in html
    assert html.count('class="bar-segment bar-2xx"') == 2
    # The accessible table alternative carries the same figures.
    table = html[html.index('<table class="usage-table">') :]
    assert "17 Mar, 14:00\N{EN DASH}15:00 UTC" in table
    assert 'Total</th><td class="num">15</td>' in table
    assert re.search(r"sdk-3\.1</span>\s*<span[^>]*>sdk-3\.0", html)
    assert "198.51.100.7" in html


def test_key_detail_switches_to_thirty_days(
    clock: FrozenClock, member_client: Client, org: Organization
) -> None:
    key, _ = make_key(org)
    seed(key, NOW - 10 * DAY, c2=40)
    seed(key, NOW, c2=1)
    base = f"/o/{org.slug}/api-keys/{key.public_id}/"
    day_html = member_client.get(base).content.decode()
    assert 'data-total="requests">1<' in day_html
    html = member_client.get(base + "?range=30d").content.decode()
    drawn = bars(html)
    assert len(drawn) == 30
    assert drawn[-11]["start"] == "2031-03-07T00:00:00+00:00" and drawn[-11]["requests"] == "40"
    assert 'data-total="requests">41<' in html
    assert 'href="?range=30d#key-usage" class="range-option" data-range="30d" aria-current' in html
    # An unknown range is the default, not an error.
    assert member_client.get(base + "?range=1y").status_code == 200


def test_an_unused_key_says_no_requests_yet_without_a_chart(
    clock: FrozenClock, member_client: Client, org: Organization
) -> None:
    key, _ = make_key(org)
    html = member_client.get(f"/o/{org.slug}/api-keys/{key.public_id}/").content.decode()
    assert "No requests yet" in html
    assert "<svg" not in html and bars(html) == []
    assert "once the key is used" in html
    assert 'class="recent-requests"' not in html and 'id="key-client-versions"' not in html


def test_a_key_just_used_shows_its_requests_before_the_first_fold(
    clock: FrozenClock, member_client: Client, org: Organization
) -> None:
    key, _ = make_key(org)
    push_recent(key, status=200, path="/api/v1/me", request_id="req_just_now")
    html = member_client.get(f"/o/{org.slug}/api-keys/{key.public_id}/").content.decode()
    assert "No requests yet" not in html
    assert "the first requests appear here within a minute" in html
    assert 'class="recent-requests"' in html and "req_just_now" in html


def test_a_key_quiet_in_the_window_says_so_and_keeps_its_sections(
    clock: FrozenClock, member_client: Client, org: Organization
) -> None:
    key, _ = make_key(org)
    seed(key, NOW - 3 * DAY, c2=2, versions=["sdk-9"])
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=NOW - 3 * DAY)
    html = member_client.get(f"/o/{org.slug}/api-keys/{key.public_id}/").content.decode()
    assert "No requests in the last 24 hours" in html and "<svg" not in html
    assert "sdk-9" in html and 'id="no-recent-requests"' in html
    thirty = member_client.get(f"/o/{org.slug}/api-keys/{key.public_id}/?range=30d")
    assert len(bars(thirty.content.decode())) == 30


def test_recent_requests_table(
    clock: FrozenClock, member_client: Client, org: Organization
) -> None:
    key, _ = make_key(org)
    other, _ = make_key(org, name="other")
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=NOW)
    push_recent(key, status=200, path="/api/v1/me", request_id="req_first", version="sdk-1")
    push_recent(
        key,
        status=403,
        path="/api/v1/api-keys",
        request_id="req_second",
        ip="2001:db8::5",
    )
    push_recent(key, status=500, path="/api/v1/members", request_id="req_third", method="POST")
    push_recent(other, status=200, path="/api/v1/ping", request_id="req_other")
    html = member_client.get(f"/o/{org.slug}/api-keys/{key.public_id}/").content.decode()
    rows = re.findall(
        r'<tr class="recent-request" data-request-id="([^"]+)">(.*?)</tr>', html, re.S
    )
    assert [request_id for request_id, _ in rows] == ["req_third", "req_second", "req_first"]
    third, second, first = (text(row) for _, row in rows)
    assert "POST /api/v1/members" in third and "500" in third
    assert "badge-danger" in rows[0][1] and "badge-warning" in rows[1][1]
    assert "badge-success" in rows[2][1]
    assert "2001:db8::5" in second
    assert "sdk-1" in first and "203.0.113.9" in first
    assert "2031-03-17 14:25:10" in first
    assert "req_other" not in html


def test_members_see_usage_but_no_actions(
    clock: FrozenClock, member_client: Client, owner_client: Client, org: Organization
) -> None:
    key, _ = make_key(org)
    seed(key, NOW, c2=3)
    page = f"/o/{org.slug}/api-keys/{key.public_id}/"
    member_html = member_client.get(page).content.decode()
    assert len(bars(member_html)) == 24
    for action in ('id="rotate-form"', 'id="revoke-key"', 'id="delete-key"'):
        assert action not in member_html
        assert action in owner_client.get(page).content.decode()
    assert member_client.post(f"{page}revoke/").status_code == 403


def test_another_orgs_key_is_a_404_and_shows_nothing(
    clock: FrozenClock, owner_client: Client, org: Organization, other_org: Organization
) -> None:
    theirs, _ = make_key(other_org, name="Globex secret project")
    seed(theirs, NOW, c2=5)
    push_recent(theirs, status=200, path="/api/v1/me", request_id="req_globex")
    for suffix in ("", "?range=30d"):
        response = owner_client.get(f"/o/{org.slug}/api-keys/{theirs.public_id}/{suffix}")
        assert response.status_code == 404
        assert b"Globex secret project" not in response.content
        assert b"req_globex" not in response.content


# --- the org usage page ----------------------------------------------------------------------


def test_usage_page_shows_the_org_chart_quota_and_each_key(
    clock: FrozenClock, member_client: Client, org: Organization, other_org: Organization
) -> None:
    busy, _ = make_key(org, name="Busy")
    quiet, _ = make_key(org, name="Quiet")
    gone, _ = make_key(org, name="Gone")
    seed(busy, NOW, c2=900, c4=50, c5=50)
    seed(busy, NOW - 3 * DAY, c2=2000)
    seed(gone, NOW - HOUR, c2=7, c4=3)
    seed(quiet, NOW - 20 * DAY, c2=1)  # February: in 30 days, not this month
    seed(make_key(other_org)[0], NOW, c2=12345)
    ApiKey.objects.filter(pk=busy.pk).update(last_used_at=NOW - timedelta(minutes=5))
    apikey_delete(key=gone, actor=Actor.system())
    response = member_client.get(f"/o/{org.slug}/usage/")
    assert response.status_code == 200
    html = response.content.decode()
    drawn = bars(html)
    assert len(drawn) == 24
    assert drawn[-1]["requests"] == "1000" and drawn[-2]["requests"] == "10"
    assert 'id="usage-requests">1,010<' in html
    assert 'id="usage-errors">103<' in html
    # This month: 3,010 of the starter plan's 100,000.
    assert 'id="month-requests">3,010<' in html
    assert 'id="month-quota">100,000<' in html
    assert '<progress class="quota-meter quota-ok" max="100000" value="3010"' in html
    assert 'id="quota-percent">3.0%<' in html
    rows = dict(
        re.findall(r'<tr class="usage-key[^"]*" data-key-id="([^"]+)">(.*?)</tr>', html, re.S)
    )
    assert list(rows) == [busy.public_id, quiet.public_id, "deleted"]
    assert 'data-col="24h">1,000<' in rows[busy.public_id]
    assert 'data-col="30d">3,000<' in rows[busy.public_id]
    assert "100</span>" in rows[busy.public_id] and "(3.3%)" in rows[busy.public_id]
    assert 'datetime="2031-03-17T14:20:10+00:00"' in rows[busy.public_id]
    assert 'data-col="30d">1<' in rows[quiet.public_id] and "never" in rows[quiet.public_id]
    assert 'data-col="24h">10<' in rows["deleted"] and 'data-col="errors">3<' in rows["deleted"]
    assert "12,345" not in html
    thirty = member_client.get(f"/o/{org.slug}/usage/?range=30d").content.decode()
    assert len(bars(thirty)) == 30 and 'id="usage-requests">3,011<' in thirty


def test_usage_page_quota_levels(
    clock: FrozenClock, owner_client: Client, org: Organization
) -> None:
    key, _ = make_key(org)
    seed(key, NOW, c2=85)
    org.custom_monthly = 100
    org.save()
    html = owner_client.get(f"/o/{org.slug}/usage/").content.decode()
    assert 'class="quota-meter quota-high" max="100" value="85"' in html
    seed(key, NOW - HOUR, c2=30)
    html = owner_client.get(f"/o/{org.slug}/usage/").content.decode()
    assert 'class="quota-meter quota-exhausted" max="100" value="100"' in html
    assert "refused until the 1st" in html
    org.custom_monthly = 0
    org.save()
    html = owner_client.get(f"/o/{org.slug}/usage/").content.decode()
    assert "<progress" not in html and 'id="quota-unlimited"' in html
    assert 'id="month-requests">115<' in html


def test_usage_page_empty_state(
    clock: FrozenClock, member_client: Client, org: Organization
) -> None:
    make_key(org)
    html = member_client.get(f"/o/{org.slug}/usage/").content.decode()
    assert "No requests yet" in html and "<svg" not in html
    assert 'id="usage-requests">0<' in html


def test_usage_page_of_another_org_is_a_404(
    clock: FrozenClock, owner_client: Client, org: Organization, other_org: Organization
) -> None:
    MembershipFactory.create(org=other_org, role=Role.OWNER)
    assert owner_client.get(f"/o/{other_org.slug}/usage/").status_code == 404
    assert owner_client.get("/o/no-such-org/usage/").status_code == 404
    assert Client().get(f"/o/{org.slug}/usage/").status_code == 302


def test_overview_card_counts_the_last_24_hours(
    clock: FrozenClock, member_client: Client, org: Organization
) -> None:
    key, _ = make_key(org)
    seed(key, NOW, c2=1200, c4=4)
    seed(key, NOW - 2 * DAY, c2=999)
    html = member_client.get(f"/o/{org.slug}/").content.decode()
    assert 'id="requests-24h">1,204<' in html
    assert "4 errors" in html
    assert f'href="/o/{org.slug}/usage/" id="usage-link"' in html


@pytest.mark.parametrize("page", ["usage/", "usage/?range=30d", "api-keys/KEY/", ""])
def test_usage_pages_use_no_inline_style_or_script(
    page: str, clock: FrozenClock, owner_client: Client, org: Organization
) -> None:
    key, _ = make_key(org)
    seed(key, NOW, c2=3, c4=1, c5=1)
    push_recent(key, status=201, path="/api/v1/api-keys", request_id="req_x")
    html = owner_client.get(f"/o/{org.slug}/{page.replace('KEY', key.public_id)}").content
    assert b" style=" not in html and b"<style" not in html
    assert re.search(rb"<script(?![^>]*\bsrc=)", html) is None
    assert re.search(rb"\son[a-z]+=", html) is None


# --- constant queries ----------------------------------------------------------------------


def _many_keys_with_a_month_of_hours(org: Organization, count: int) -> ApiKey:
    keys = [make_key(org, name=f"key {i}")[0] for i in range(count)]
    first_hour = hour_of(NOW) - 30 * 24 * HOUR
    KeyUsageHour.objects.bulk_create(
        KeyUsageHour(
            api_key=key,
            org=org,
            hour=first_hour + h * HOUR,
            count_2xx=10,
            count_4xx=1,
            count_5xx=h % 2,
            client_versions=[f"sdk-{h % 3}"],
        )
        for key in keys
        for h in range(30 * 24 + 1)
    )
    ApiKey.objects.filter(org=org).update(last_used_at=NOW, last_used_ip="192.0.2.1")
    for i, key in enumerate(keys):
        push_recent(key, status=200, path="/api/v1/me", request_id=f"req_{i}")
    return keys[0]


def _queries(client: Client, org: Organization, key: ApiKey) -> dict[str, int]:
    pages = {
        "usage 24h": "usage/",
        "usage 30d": "usage/?range=30d",
        "key 24h": f"api-keys/{key.public_id}/",
        "key 30d": f"api-keys/{key.public_id}/?range=30d",
        "overview": "",
    }
    counts = {}
    for name, page in pages.items():
        with CaptureQueriesContext(connection) as captured:
            response = client.get(f"/o/{org.slug}/{page}")
        assert response.status_code == 200
        counts[name] = len(captured)
    return counts


def test_usage_pages_run_a_constant_number_of_queries(
    clock: FrozenClock, member_user: object, org: Organization, other_org: Organization
) -> None:
    client = signed_in_client(member_user)  # type: ignore[arg-type]
    small_key = _many_keys_with_a_month_of_hours(org, 1)
    small = _queries(client, org, small_key)
    MembershipFactory.create(org=other_org, user=member_user, role=Role.MEMBER)
    large_key = _many_keys_with_a_month_of_hours(other_org, 50)
    assert KeyUsageHour.objects.filter(org=other_org).count() == 50 * 721
    large = _queries(client, other_org, large_key)
    assert small == large
    html = client.get(f"/o/{other_org.slug}/usage/?range=30d").content.decode()
    assert len(bars(html)) == 30 and html.count('class="usage-key"') == 50
