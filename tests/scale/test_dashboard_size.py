"""The dashboard at size: an org with 10,000 keys and 1,000,000 audit events runs the same
number of queries on every page as an org with a handful (docs/performance.md, "Scale by
size"). Key lists and the audit log are keyset pages; the usage page lists the most used
keys. The rows are inserted in bulk (one INSERT … SELECT for the events), on whichever
database the run uses."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apikeys.models import ApiKey
from apikeys.services import apikey_create
from orgs.actors import Actor
from orgs.models import AuditEvent, Organization
from orgs.services import audit_record

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

KEYS = 10_000
EVENTS = 1_000_000


def pages(org: Organization, key: ApiKey, cursor: str) -> dict[str, str]:
    base = f"/o/{org.slug}"
    return {
        "overview": f"{base}/",
        "keys": f"{base}/api-keys/",
        "keys, a later page": f"{base}/api-keys/?before={key.public_id}",
        "key": f"{base}/api-keys/{key.public_id}/",
        "usage": f"{base}/usage/",
        "audit": f"{base}/audit/",
        "audit, a deep page": f"{base}/audit/?before={cursor}",
        "audit, filtered": f"{base}/audit/?action=api_key.created",
        "members": f"{base}/members/",
        "settings": f"{base}/settings/",
    }


def queries(client: Client, urls: dict[str, str]) -> dict[str, int]:
    counts = {}
    for name, url in urls.items():
        client.get(url)  # warm per-process caches (content types, catalogue)
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url)
        assert response.status_code == 200, (name, response.status_code)
        counts[name] = len(captured.captured_queries)
    return counts


def add_keys(org: Organization, count: int, start: int = 0) -> None:
    now = timezone.now()
    ApiKey.objects.bulk_create(
        [
            ApiKey(
                org=org,
                name=f"bulk {i}",
                environment="test",
                scopes=["members:read"],
                digest=f"{org.pk:08x}{i:056x}",
                display=f"lk_test_{i:04d}\u2026bulk",
                created_at=now - timedelta(seconds=i + 10),
            )
            for i in range(start, start + count)
        ],
        batch_size=2_000,
    )


def event_id(batch: str, n: int) -> str:
    """The public id `add_events` gives the `n`-th event of `batch` (5 letters)."""
    return f"evt_{batch}{n:019d}"


def add_events(org: Organization, count: int, batch: str) -> None:
    """`count` audit events in one statement (a row generator on either database), with
    ids `event_id(batch, 1…count)`."""
    table = AuditEvent._meta.db_table
    columns = (
        "public_id, org_id, action, actor_type, actor_id, actor_label, external_actor_id, "
        "target_type, target_id, target_label, user_agent, request_id, details, created_at"
    )
    rest = (
        "%s, 'member.invited', 'system', '', 'system', '', 'membership', '', '', '', '', '{}', %s"
    )
    at = timezone.now() - timedelta(days=1)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {table} ({columns}) "
                f"SELECT 'evt_' || %s || lpad(n.i::text, 19, '0'), {rest} "
                "FROM generate_series(1, %s) AS n(i)",
                [batch, org.pk, at, count],
            )
        else:
            cursor.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s) "
                f"INSERT INTO {table} ({columns}) "
                f"SELECT 'evt_' || %s || printf('%%019d', n.i), {rest} FROM n",
                [count, batch, org.pk, at],
            )


def test_every_page_runs_the_same_queries_with_10k_keys_and_1m_events(
    owner_client: Client, org: Organization
) -> None:
    key, _ = apikey_create(
        actor=Actor.system(), org=org, name="Mine", environment="test", scopes=["members:read"]
    )
    for i in range(3):
        audit_record(action="member.invited", org=org, details={"n": i})
    add_keys(org, 60)  # past one page of keys
    add_events(org, 60, "bulkA")  # past one page of events
    small = queries(owner_client, pages(org, key, event_id("bulkA", 30)))

    add_keys(org, KEYS - 60, start=60)
    add_events(org, EVENTS, "bulkB")
    assert ApiKey.objects.filter(org=org).count() == KEYS + 1
    assert AuditEvent.objects.filter(org=org).count() >= EVENTS
    urls = pages(org, key, event_id("bulkB", 500_000))
    large = queries(owner_client, urls)
    assert large == small

    # And every page stays a page: 50 rows, whatever the org holds.
    def rows(url: str, marker: str) -> int:
        return owner_client.get(url).content.decode().count(marker)

    assert rows(urls["keys"], 'class="api-key"') == 50
    assert rows(urls["keys, a later page"], 'class="api-key"') == 50
    assert rows(urls["audit, a deep page"], 'class="audit-event"') == 50
    usage = owner_client.get(urls["usage"]).content.decode()
    assert usage.count('<tr class="usage-key"') == 50
    assert "The 50 most used of 10,001 keys" in usage
