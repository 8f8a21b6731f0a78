"""Known-good calls of every `webhook-endpoints` operation conform to the schema
(statuses, shapes, headers), as tests/apikeys/api/test_schemathesis.py does for the rest."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis

from apikeys.models import ApiKey
from orgs.actors import Actor
from orgs.models import Organization
from tests.apikeys.api.test_schemathesis import CHECKS, OPERATIONS, _auth
from tests.wsgi import application
from webhooks.events import emit
from webhooks.services import endpoint_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def full_key(org: Organization, make_api_key: Any) -> tuple[ApiKey, str]:
    key: tuple[ApiKey, str] = make_api_key(org, name="Full access")
    return key


def test_every_webhook_operation_answers_as_documented(
    org: Organization, full_key: tuple[ApiKey, str], settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True
    org.custom_per_minute = org.custom_burst = org.custom_monthly = 0
    org.save(update_fields=["custom_per_minute", "custom_burst", "custom_monthly"])
    url = "http://127.0.0.1:9/hooks"  # never reached: on-commit callbacks do not run
    endpoint, _ = endpoint_create(org=org, url=url, actor=Actor.system())
    doomed, _ = endpoint_create(org=org, url=url, actor=Actor.system())
    (delivery,) = emit(
        org, "webhook.test", {"endpoint": {"id": endpoint.public_id}}, endpoints=[endpoint]
    )
    one = {"endpoint_id": endpoint.public_id}
    known_good: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/api/v1/webhook-endpoints", {"query": {"limit": 1}}),
        (
            "POST",
            "/api/v1/webhook-endpoints",
            {"body": {"url": url, "description": "Ops", "events": ["api_key.created"]}},
        ),
        ("GET", "/api/v1/webhook-endpoints/{endpoint_id}", {"path_parameters": one}),
        (
            "PATCH",
            "/api/v1/webhook-endpoints/{endpoint_id}",
            {"path_parameters": one, "body": {"description": "Renamed"}},
        ),
        ("POST", "/api/v1/webhook-endpoints/{endpoint_id}/test", {"path_parameters": one}),
        ("GET", "/api/v1/webhook-endpoints/{endpoint_id}/deliveries", {"path_parameters": one}),
        (
            "POST",
            "/api/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/resend",
            {"path_parameters": {**one, "delivery_id": delivery.public_id}},
        ),
        ("POST", "/api/v1/webhook-endpoints/{endpoint_id}/disable", {"path_parameters": one}),
        ("POST", "/api/v1/webhook-endpoints/{endpoint_id}/enable", {"path_parameters": one}),
        (
            "DELETE",
            "/api/v1/webhook-endpoints/{endpoint_id}",
            {"path_parameters": {"endpoint_id": doomed.public_id}},
        ),
    ]
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    covered = set()
    for index, (method, path, inputs) in enumerate(known_good):
        headers = _auth(full_key[1])
        if method != "GET":
            headers["Idempotency-Key"] = f"webhooks-{index}"
        case = schema[path][method].Case(headers=headers, **inputs)
        response = case.call_and_validate(checks=CHECKS)
        assert 200 <= response.status_code < 300, (method, path, response.text[:300])
        covered.add((method, path))
    documented = {(m, p) for m, p, _ in OPERATIONS if p.startswith("/api/v1/webhook-")}
    assert len(documented) == 10
    assert documented <= covered, documented - covered
