"""Property-based conformance: schemathesis drives every operation of /api/schema/ through
the WSGI application with a valid full-access key, with schema-valid (positive) and
schema-violating (negative) inputs, and checks that no response is a 5xx, undocumented,
shaped differently from the schema, or an acceptance of invalid input."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apikeys.models import ApiKey
from apikeys.services import apikey_create
from orgs.actors import Actor
from orgs.models import Organization, Role
from tests.factories import MembershipFactory
from tests.wsgi import application

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    ignored_auth,
]
MAX_EXAMPLES = 15


def _operations() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) for every operation; negative cases only where there is an
    input to get wrong."""
    generated = SchemaGenerator().get_schema(request=None, public=True)
    cases = []
    for path, item in sorted(generated["paths"].items()):
        for method, operation in item.items():
            cases.append((method.upper(), path, GenerationMode.POSITIVE))
            if operation.get("parameters") or operation.get("requestBody"):
                cases.append((method.upper(), path, GenerationMode.NEGATIVE))
    return cases


OPERATIONS = _operations()


def test_the_schema_lists_every_endpoint() -> None:
    paths = {path for _, path, _ in OPERATIONS}
    assert {
        "/api/v1/ping",
        "/api/v1/me",
        "/api/v1/organization",
        "/api/v1/members",
        "/api/v1/members/{member_id}",
        "/api/v1/api-keys",
        "/api/v1/api-keys/{key_id}",
        "/api/v1/api-keys/{key_id}/rotate",
        "/api/v1/api-keys/{key_id}/revoke",
        "/api/v1/audit-events",
    } <= paths


@pytest.fixture(autouse=True)
def _unlimited(org: Organization) -> None:
    """Hundreds of requests a second with one key: conformance, not the rate limiter."""
    org.custom_per_minute = org.custom_burst = org.custom_monthly = 0
    org.save(update_fields=["custom_per_minute", "custom_burst", "custom_monthly"])


def _auth(secret: str) -> dict[str, str]:
    # Both headers, equal: whatever credentials the generator adds are overridden.
    return {"Authorization": f"Bearer {secret}", "X-API-Key": secret}


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_operation_conforms_to_the_schema(
    method: str, path: str, mode: GenerationMode, full_key: tuple[ApiKey, str]
) -> None:
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    operation = schema[path][method]
    headers = _auth(full_key[1])

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()


@pytest.fixture
def known_good(org: Organization, full_key: tuple[ApiKey, str]) -> dict[tuple[str, str], Any]:
    """Inputs that succeed for each operation, so the success shapes are checked too."""
    target, _ = apikey_create(
        actor=Actor.system(), org=org, name="Target", environment="test", scopes=["usage:read"]
    )
    member = MembershipFactory.create(org=org, role=Role.MEMBER)
    other = MembershipFactory.create(org=org, role=Role.MEMBER)
    key_path = {"key_id": target.public_id}
    from orgs.services import member_invite

    invited = member_invite(
        org=org, email="invited@example.com", role="member", actor=Actor.system()
    )
    closing = member_invite(
        org=org, email="closing@example.com", role="member", actor=Actor.system()
    )
    return {
        ("GET", "/api/v1/ping"): {},
        ("GET", "/api/v1/me"): {},
        ("GET", "/api/v1/scopes"): {},
        ("GET", "/api/v1/organization"): {},
        ("PATCH", "/api/v1/organization"): {"body": {"name": "Acme Renamed"}},
        ("GET", "/api/v1/members"): {"query": {"limit": 2}},
        ("POST", "/api/v1/members"): {"body": {"email": "new@example.com", "role": "admin"}},
        ("GET", "/api/v1/members/{member_id}"): {
            "path_parameters": {"member_id": member.public_id}
        },
        ("PATCH", "/api/v1/members/{member_id}"): {
            "path_parameters": {"member_id": member.public_id},
            "body": {"role": "admin"},
        },
        ("DELETE", "/api/v1/members/{member_id}"): {
            "path_parameters": {"member_id": other.public_id}
        },
        ("POST", "/api/v1/sign-in-links"): {
            "body": {"email": member.user.email, "ttl_minutes": 5, "next": "/account/"}
        },
        ("GET", "/api/v1/invitations"): {"query": {"limit": 2}},
        ("GET", "/api/v1/invitations/{invitation_id}"): {
            "path_parameters": {"invitation_id": invited.public_id}
        },
        ("POST", "/api/v1/invitations/{invitation_id}/resend"): {
            "path_parameters": {"invitation_id": invited.public_id}
        },
        ("POST", "/api/v1/invitations/{invitation_id}/cancel"): {
            "path_parameters": {"invitation_id": closing.public_id}
        },
        ("GET", "/api/v1/api-keys"): {"query": {"limit": 1}},
        ("POST", "/api/v1/api-keys"): {
            "body": {
                "name": "Deploys",
                "environment": "test",
                "scopes": ["members:write"],
                "expires_at": "2999-01-01T00:00:00Z",
                "meta": {"tenant": "t_42", "plan": {"name": "pro", "seats": 5}},
            }
        },
        ("GET", "/api/v1/api-keys/{key_id}"): {"path_parameters": key_path},
        ("PATCH", "/api/v1/api-keys/{key_id}"): {
            "path_parameters": key_path,
            "body": {
                "scopes": ["members:read"],
                "allowed_ips": ["203.0.113.0/24", "2001:db8::/32"],
                "allowed_ips_mode": "report",
            },
        },
        ("POST", "/api/v1/api-keys/{key_id}/rotate"): {
            "path_parameters": key_path,
            "body": {"grace_period": 60},
        },
        ("POST", "/api/v1/api-keys/{key_id}/revoke"): {"path_parameters": key_path},
        ("DELETE", "/api/v1/api-keys/{key_id}"): {"path_parameters": key_path},
        ("GET", "/api/v1/audit-events"): {"query": {"action": "api_key.created", "limit": 5}},
        ("GET", "/api/v1/usage"): {"query": {"granularity": "day"}},
    }


@pytest.mark.django_db
def test_successful_responses_conform_to_the_schema(
    known_good: dict[tuple[str, str], Any], full_key: tuple[ApiKey, str]
) -> None:
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    covered = set()
    for (method, path), inputs in known_good.items():
        headers = _auth(full_key[1])
        if method != "GET":
            headers["Idempotency-Key"] = f"known-good {method} {path}"
        case = schema[path][method].Case(headers=headers, **inputs)
        response = case.call_and_validate(checks=CHECKS)
        assert 200 <= response.status_code < 300, (method, path, response.text[:300])
        covered.add((method, path))
    # KYC and platform endpoints have known-good cases in tests/platform_admin, the verify
    # API (system keys) in tests/apikeys/api/test_verify.py, webhook endpoints in
    # tests/webhooks/test_api_schema.py, leak reports in test_leaked_keys.py.
    documented = {
        (m, p)
        for m, p, _ in OPERATIONS
        if not p.startswith(
            (
                "/api/v1/kyc",
                "/api/v1/platform/",
                "/api/v1/keys/verify",
                "/api/v1/webhook-",
                "/api/v1/leaked-keys",
                "/api/v1/secret-scanning/",
            )
        )
    }
    assert documented <= covered, documented - covered
