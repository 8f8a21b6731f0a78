"""Schema conformance of the KYC and platform endpoints: schemathesis drives each of them
through the WSGI application (schema-valid and schema-violating inputs) with a key of the
right kind, and known-good inputs check the success shapes."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.models import User
from apikeys.scopes import all_scopes
from apikeys.services import apikey_create
from orgs.actors import Actor
from orgs.models import Organization
from platform_admin import services
from tests.platform_admin.conftest import pdf_bytes, submit
from tests.wsgi import application

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
MAX_EXAMPLES = 10
MINE = ("/api/v1/kyc", "/api/v1/platform/")


def _operations() -> list[tuple[str, str, GenerationMode]]:
    generated = SchemaGenerator().get_schema(request=None, public=True)
    cases = []
    for path, item in sorted(generated["paths"].items()):
        if not path.startswith(MINE):
            continue
        for method, operation in item.items():
            cases.append((method.upper(), path, GenerationMode.POSITIVE))
            if operation.get("parameters") or operation.get("requestBody"):
                cases.append((method.upper(), path, GenerationMode.NEGATIVE))
    return cases


OPERATIONS = _operations()


def test_the_schema_lists_the_kyc_and_platform_endpoints() -> None:
    assert {(m, p) for m, p, _ in OPERATIONS} >= {
        ("GET", "/api/v1/kyc"),
        ("POST", "/api/v1/kyc"),
        ("GET", "/api/v1/platform/organizations"),
        ("POST", "/api/v1/platform/organizations"),
        ("GET", "/api/v1/platform/organizations/{org_id}"),
        ("PATCH", "/api/v1/platform/organizations/{org_id}"),
        ("GET", "/api/v1/platform/kyc-applications"),
        ("POST", "/api/v1/platform/kyc-applications/{kyc_id}/approve"),
        ("POST", "/api/v1/platform/kyc-applications/{kyc_id}/reject"),
    }


def _headers(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "X-API-Key": secret, "Idempotency-Key": "k1"}


@pytest.fixture
def secrets_by_kind(org: Organization, platform_owner: User) -> dict[str, str]:
    _, org_secret = apikey_create(
        actor=Actor.system(), org=org, name="full", environment="test", scopes=all_scopes()
    )
    _, system_secret = services.system_key_create(
        name="full", scopes=all_scopes(system=True), actor=Actor.for_user(platform_owner)
    )
    return {"org": org_secret, "system": system_secret}


def _secret_for(path: str, secrets: dict[str, str]) -> str:
    return secrets["system" if path.startswith("/api/v1/platform/") else "org"]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_operation_conforms_to_the_schema(
    method: str, path: str, mode: GenerationMode, secrets_by_kind: dict[str, str]
) -> None:
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    operation = schema[path][method]
    headers = _headers(_secret_for(path, secrets_by_kind))
    counter = iter(range(10_000))

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(
            headers={**headers, "Idempotency-Key": f"fuzz-{next(counter)}"}, checks=CHECKS
        )

    run()


@pytest.mark.django_db
def test_successful_responses_conform_to_the_schema(
    secrets_by_kind: dict[str, str],
    org: Organization,
    other_org: Organization,
    admin_user: User,
) -> None:
    first = submit(other_org, None)
    second = submit(org, admin_user)
    pdf = base64.b64encode(pdf_bytes()).decode()
    known_good: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/api/v1/kyc", {}),
        ("GET", "/api/v1/platform/organizations", {"query": {"q": "acme", "limit": 5}}),
        (
            "POST",
            "/api/v1/platform/organizations",
            {"body": {"name": "Initech", "slug": "initech", "owner_email": "bill@initech.test"}},
        ),
        (
            "GET",
            "/api/v1/platform/organizations/{org_id}",
            {"path_parameters": {"org_id": org.public_id}},
        ),
        (
            "PATCH",
            "/api/v1/platform/organizations/{org_id}",
            {
                "path_parameters": {"org_id": org.public_id},
                "body": {"plan": "growth", "custom_limits": {"monthly": 0}},
            },
        ),
        ("GET", "/api/v1/platform/kyc-applications", {"query": {"status": "pending"}}),
        (
            "GET",
            "/api/v1/platform/kyc-applications/{kyc_id}",
            {"path_parameters": {"kyc_id": first.public_id}},
        ),
        (
            "POST",
            "/api/v1/platform/kyc-applications/{kyc_id}/approve",
            {"path_parameters": {"kyc_id": first.public_id}},
        ),
        (
            "POST",
            "/api/v1/platform/kyc-applications/{kyc_id}/reject",
            {"path_parameters": {"kyc_id": second.public_id}, "body": {"reason": "Blurry"}},
        ),
        (
            "POST",
            "/api/v1/kyc",
            {
                "body": {
                    "legal_name": "Acme Ltd",
                    "registration_number": "123",
                    "country": "FR",
                    "address": "1 rue de Rivoli",
                    "director_name": "Marie Curie",
                    "documents": [{"filename": "k.pdf", "content_base64": pdf}],
                },
                "media_type": "application/json",
            },
        ),
    ]
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    covered = set()
    for index, (method, path, inputs) in enumerate(known_good):
        headers = {**_headers(_secret_for(path, secrets_by_kind)), "Idempotency-Key": f"g{index}"}
        case = schema[path][method].Case(headers=headers, **inputs)
        response = case.call_and_validate(checks=CHECKS)
        assert 200 <= response.status_code < 300, (method, path, response.text[:300])
        covered.add((method, path))
    documented = {(m, p) for m, p, _ in OPERATIONS}
    assert documented <= covered, documented - covered
