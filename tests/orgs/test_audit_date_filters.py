"""The audit page's and the CSV export's `since` / `until` filters: a day out of range
(year 1, year 9999 — whose following day does not exist), a NUL byte or an overlong value
is a form error on the page and a 400 from the export, never a 500; the widest accepted
range still lists and exports."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from django.http import StreamingHttpResponse
from django.test import Client

from orgs.models import ActorType, AuditEvent, Organization

pytestmark = pytest.mark.django_db

AUDIT = "/o/acme/audit/"
EXPORT = "/o/acme/audit/export.csv"
RANGE_MESSAGE = "Use a date from 1970-01-01 to 2999-12-31."

OUT_OF_RANGE = ["9999-12-31", "9999-01-01", "0001-01-01", "3000-01-01", "1969-12-31"]
MALFORMED = ["2024-01-01\x00", "\x00", "2024-01-01" + " " * 100, "9" * 1000, "10000-01-01"]


@pytest.fixture
def event(org: Organization) -> AuditEvent:
    return AuditEvent.objects.create(
        org=org,
        action="test.event",
        actor_type=ActorType.SYSTEM,
        actor_label="system",
        created_at=datetime(2024, 5, 1, 12, tzinfo=UTC),
    )


def _exported_actions(response: Any) -> list[str]:
    assert isinstance(response, StreamingHttpResponse)
    body = b"".join(response.streaming_content).decode()  # type: ignore[arg-type]
    return [row[2] for row in list(csv.reader(io.StringIO(body)))[1:]]


@pytest.mark.parametrize("value", OUT_OF_RANGE)
@pytest.mark.parametrize("param", ["since", "until"])
def test_the_page_reports_a_day_out_of_range_as_a_form_error(
    owner_client: Client, event: AuditEvent, param: str, value: str
) -> None:
    response = owner_client.get(AUDIT, {param: value})
    assert response.status_code == 200
    assert response.context["rows"] == []
    assert response.context["form"].errors[param] == [RANGE_MESSAGE]
    assert RANGE_MESSAGE in response.content.decode()


@pytest.mark.parametrize("value", MALFORMED)
@pytest.mark.parametrize("param", ["since", "until"])
def test_the_page_reports_a_malformed_day_as_a_form_error(
    owner_client: Client, event: AuditEvent, param: str, value: str
) -> None:
    response = owner_client.get(AUDIT, {param: value})
    assert response.status_code == 200
    assert response.context["rows"] == []
    assert param in response.context["form"].errors


@pytest.mark.parametrize("value", OUT_OF_RANGE + MALFORMED)
@pytest.mark.parametrize("param", ["since", "until"])
def test_the_export_refuses_a_day_out_of_range_with_a_400(
    owner_client: Client, org: Organization, event: AuditEvent, param: str, value: str
) -> None:
    response = owner_client.get(EXPORT, {param: value})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode().startswith(f"Invalid filters: {param}:")
    assert not AuditEvent.objects.filter(org=org, action="audit_log.exported").exists()


def test_the_widest_accepted_range_still_lists_and_exports(
    owner_client: Client, event: AuditEvent
) -> None:
    query = {"action": "test.event", "since": "1970-01-01", "until": "2999-12-31"}
    page = owner_client.get(AUDIT, query)
    assert page.status_code == 200
    assert not page.context["form"].errors
    assert [row["event"] for row in page.context["rows"]] == [event]
    export = owner_client.get(EXPORT, query)
    assert export.status_code == 200
    assert _exported_actions(export) == ["test.event"]


def test_the_date_pickers_offer_only_the_accepted_days(owner_client: Client) -> None:
    form = owner_client.get(AUDIT).context["form"]
    for name in ("since", "until"):
        html = str(form[name])
        assert 'min="1970-01-01"' in html and 'max="2999-12-31"' in html, html
