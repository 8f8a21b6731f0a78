"""A client generated from the live /api/schema/ needs no hand edits (ADR 0080).

openapi-python-client (a dev dependency) generates a Python client from the schema a
running server serves; the client must pass `mypy --strict` as generated, and a journey
through the generated code alone (me, keys, usage, audit, members and invitations,
sign-in links, the KYC upload with file parts, a system key) must succeed, every request
and response validated against the same schema by openapi-core.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from accounts.models import PlatformRole
from apikeys.services import apikey_create, system_apikey_create
from orgs.actors import Actor
from orgs.models import Organization, Role
from tests.apikeys.api.conftest import ALL_ORG_SCOPES
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.platform_admin.conftest import pdf_bytes, png_bytes

PACKAGE = "latchkey_api_client"
BIN = Path(sys.executable).parent


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # The generator's post hooks call `ruff` by name: the venv's.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


# ---- openapi-core over httpx ------------------------------------------------------------


class OpenApiRequest:
    """An httpx request as openapi-core's Request protocol."""

    def __init__(self, request: httpx.Request) -> None:
        request.read()
        url = request.url
        self.host_url = f"{url.scheme}://{url.netloc.decode('ascii')}"
        self.path = url.path
        self.method = request.method.lower()
        self.body: bytes | None = request.content or None
        self.content_type = request.headers.get("content-type", "")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(url.params.multi_items()),
            header=Headers(list(request.headers.items())),
            cookie=ImmutableMultiDict(),
        )


class OpenApiResponse:
    """An httpx response as openapi-core's Response protocol."""

    def __init__(self, response: httpx.Response) -> None:
        response.read()
        self.status_code = response.status_code
        self.content_type = response.headers.get("content-type", "")
        self.headers = Headers(list(response.headers.items()))
        self.data: bytes | None = response.content


class SchemaChecker:
    """An httpx response hook: every exchange is validated against the schema at once."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.api = OpenAPI.from_dict(schema)
        self.templates = [
            (method.upper(), path, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"))
            for path, item in schema["paths"].items()
            for method in item
        ]
        self.seen: set[tuple[str, str]] = set()
        self.statuses: list[int] = []

    def __call__(self, response: httpx.Response) -> None:
        request = OpenApiRequest(response.request)
        answer = OpenApiResponse(response)
        where = f"{request.method.upper()} {request.path} -> {response.status_code}"
        try:
            self.api.validate_request(request)
            self.api.validate_response(request, answer)
        except Exception as exc:
            causes = [repr(exc)]
            while exc.__cause__ is not None:
                exc = exc.__cause__  # type: ignore[assignment]
                causes.append(repr(exc)[:2000])
            for error in getattr(exc, "schema_errors", ()):
                causes.append(str(error)[:2000])
            raise AssertionError(
                f"{where} disagrees with the schema: {' <- '.join(causes)}\n{answer.data!r}"
            ) from None
        for method, path, pattern in self.templates:
            if method == request.method.upper() and pattern.match(request.path):
                self.seen.add((method, path))
        self.statuses.append(response.status_code)


# ---- the generated client -------------------------------------------------------------------


@pytest.fixture
def generated(live_server: Any, tmp_path: Path) -> Iterator[Path]:
    """The client generated from the live server's schema, importable while the test runs."""
    schema_url = f"{live_server.url}/api/schema/?format=json"
    result = _run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--url",
            schema_url,
            "--output-path",
            str(tmp_path / "client"),
        ],
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # The generator reports what it had to leave out as warnings: nothing may be missing.
    assert "Warning" not in output, output
    root = tmp_path / "client"
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Generated clients to close after the test: a keep-alive connection left open would
    hold a live-server thread, and the database connection it shares, past the test."""
    clients: list[Any] = []
    yield clients
    for client in clients:
        client.get_httpx_client().close()


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def _key() -> str:
    return str(uuid.uuid4())


def _cursor(url: str) -> str:
    return parse_qs(urlsplit(url).query)["cursor"][0]


@pytest.fixture
def acme(transactional_db: None) -> Organization:
    # Generous limits, not none: the rate-limit headers must be there to be checked.
    org = OrganizationFactory.create(
        name="Acme", slug="acme", custom_per_minute=100_000, custom_burst=100_000
    )
    MembershipFactory.create(
        org=org, user=UserFactory.create(email="owner@acme.test"), role=Role.OWNER
    )
    return org


def test_generated_client_passes_mypy_strict_and_runs_the_whole_journey(
    generated: Path,
    live_server: Any,
    acme: Organization,
    settings: Any,
    tmp_path: Path,
    closing: list[Any],
) -> None:
    settings.SITE_URL = live_server.url
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"  # the KYC documents
    mypy = _run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(generated.parent / ".mypy_cache"),
            PACKAGE,
        ],
        cwd=generated,
    )
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr
    assert "Success: no issues found" in mypy.stdout, mypy.stdout

    schema = httpx.get(f"{live_server.url}/api/schema/?format=json").json()
    assert schema["openapi"] == "3.0.3"
    assert schema["servers"] == [{"url": live_server.url, "description": "This deployment."}]
    checker = SchemaChecker(schema)

    _, secret = apikey_create(
        actor=Actor.system(),
        org=acme,
        name="Integration",
        environment="test",
        scopes=ALL_ORG_SCOPES,
    )
    member = MembershipFactory.create(
        org=acme, user=UserFactory.create(email="bob@acme.test"), role=Role.MEMBER
    )
    leaving = MembershipFactory.create(
        org=acme, user=UserFactory.create(email="carol@acme.test"), role=Role.MEMBER
    )

    package = importlib.import_module(PACKAGE)
    m = _module("models")
    types = _module("types")
    hooks = {"event_hooks": {"response": [checker]}}
    client = package.AuthenticatedClient(
        base_url=live_server.url, token=secret, raise_on_unexpected_status=True, httpx_args=hooks
    )
    anonymous = package.Client(
        base_url=live_server.url, raise_on_unexpected_status=True, httpx_args=hooks
    )
    closing += [client, anonymous]

    # ---- meta ----------------------------------------------------------------------------
    assert _module("api.meta.ping_retrieve").sync(client=anonymous).ok is True
    me = _module("api.meta.me_retrieve").sync(client=client)
    assert isinstance(me, m.Me) and me.object_ == "me"
    assert me.organization.slug == "acme"
    assert me.organization.plan == m.PlanEnum.STARTER
    assert me.organization.kyc_status == m.KycStatusEnum.NOT_SUBMITTED
    assert me.organization.status == m.OrgStatusEnum.ACTIVE
    assert me.rate_limits.per_minute == 100_000
    scopes = _module("api.meta.scopes_retrieve").sync(client=client)
    assert "api_keys" in {r.name for r in scopes.resources}

    # ---- keys: create (and its replay), list with filters, get, rotate, revoke, delete ----
    create = _module("api.api_keys.api_keys_create")
    body = m.ApiKeyCreateRequest(name="Reader", scopes=["members:read"])  # environment: default
    once = _key()
    created = create.sync_detailed(client=client, body=body, idempotency_key=once)
    assert created.status_code == 201 and "Idempotent-Replayed" not in created.headers
    key = created.parsed
    assert isinstance(key, m.ApiKeyWithSecret)
    assert key.environment == m.KeyEnvironmentEnum.TEST
    assert key.status == m.ApiKeyStatusEnum.ACTIVE and key.secret.startswith("lk_test_")
    replayed = create.sync_detailed(client=client, body=body, idempotency_key=f'"{once}"')
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.parsed.id == key.id and replayed.parsed.secret == key.secret

    listing = _module("api.api_keys.api_keys_list")
    page = listing.sync(
        client=client,
        status=m.ApiKeyStatusEnum.ACTIVE,
        environment=m.ApiKeysListEnvironment.TEST,
        limit=1,
    )
    assert isinstance(page, m.PaginatedApiKeyList) and len(page.results) == 1
    assert isinstance(page.next_, str) and page.previous is None
    rest = listing.sync(client=client, cursor=_cursor(page.next_), limit=1)
    assert {page.results[0].id, rest.results[0].id} == {key.id, me.key.id}

    got = _module("api.api_keys.api_keys_retrieve").sync(key.id, client=client)
    assert got.id == key.id and got.created_by == me.key.id
    rotated = _module("api.api_keys.api_keys_rotate_create").sync(
        key.id,
        client=client,
        body=m.ApiKeyRotateRequest(grace_period=3600),
        idempotency_key=_key(),
    )
    successor = rotated.id
    assert rotated.predecessor_id == key.id and rotated.secret != key.secret
    old = _module("api.api_keys.api_keys_retrieve").sync(key.id, client=client)
    assert old.status == m.ApiKeyStatusEnum.EXPIRING and old.rotated_to == successor
    revoked = _module("api.api_keys.api_keys_revoke_create").sync(
        key.id, client=client, idempotency_key=_key()
    )
    assert revoked.status == m.ApiKeyStatusEnum.REVOKED
    listed = listing.sync(client=client, status=m.ApiKeyStatusEnum.REVOKED)
    assert [k.id for k in listed.results] == [key.id]
    deleted = _module("api.api_keys.api_keys_destroy").sync_detailed(
        key.id, client=client, idempotency_key=_key()
    )
    assert deleted.status_code == 204
    gone = _module("api.api_keys.api_keys_retrieve").sync(key.id, client=client)
    assert isinstance(gone, m.ApiError) and gone.error.code == "not_found"
    assert gone.error.type_ == m.ErrorDetailTypeEnum.INVALID_REQUEST_ERROR
    # A code of a later version is parsed, not refused (docs/api.md: handle unknown codes).
    later = {**gone.error.to_dict(), "code": "a_code_of_a_later_version", "extra": 1}
    assert m.ApiError.from_dict({"error": later}).error.code == "a_code_of_a_later_version"

    # ---- usage and audit -----------------------------------------------------------------
    usage = _module("api.usage.usage_retrieve").sync(
        client=client,
        granularity=m.UsageRetrieveGranularity.DAY,
        since=datetime.now(UTC) - timedelta(days=2),
    )
    assert isinstance(usage, m.Usage) and usage.granularity == m.GranularityEnum.DAY
    events = _module("api.audit_log.audit_events_list").sync(
        client=client, action="api_key.rotated", since=datetime.now(UTC) - timedelta(hours=1)
    )
    assert [(e.target.type_, e.target.id) for e in events.results] == [("api_key", key.id)]
    assert events.results[0].actor.type_ == m.AuditActorTypeEnum.API_KEY

    # ---- members and invitations ---------------------------------------------------------
    members = _module("api.members.members_list").sync(client=client)
    assert {x.email for x in members.results} >= {"bob@acme.test", "carol@acme.test"}
    promoted = _module("api.members.members_partial_update").sync(
        member.public_id,
        client=client,
        body=m.PatchedMemberUpdateRequest(role=m.RoleEnum.ADMIN),
        idempotency_key=_key(),
    )
    assert promoted.role == m.RoleEnum.ADMIN
    assert _module("api.members.members_retrieve").sync(member.public_id, client=client).id
    removed = _module("api.members.members_destroy").sync_detailed(
        leaving.public_id, client=client, idempotency_key=_key()
    )
    assert removed.status_code == 204
    invitation = _module("api.members.members_create").sync(
        client=client,
        body=m.MemberInviteRequest(email="dave@example.com"),
        idempotency_key=_key(),
    )
    assert isinstance(invitation, m.Invitation)
    assert invitation.status == m.InvitationStatusEnum.PENDING
    invitations = _module("api.members.invitations_list").sync(client=client)
    assert [i.id for i in invitations.results] == [invitation.id]
    assert _module("api.members.invitations_retrieve").sync(invitation.id, client=client).id
    _module("api.members.invitations_resend_create").sync(
        invitation.id, client=client, idempotency_key=_key()
    )
    cancelled = _module("api.members.invitations_cancel_create").sync(
        invitation.id, client=client, idempotency_key=_key()
    )
    assert cancelled.status == m.InvitationStatusEnum.CANCELLED
    link = _module("api.sign_in_links.sign_in_links_create").sync(
        client=client,
        body=m.SignInLinkCreateRequest(email="bob@acme.test", ttl_minutes=5),
        idempotency_key=_key(),
    )
    assert isinstance(link, m.SignInLink) and "/login/magic/" in link.url

    # ---- KYC: status, then the upload as file parts ----------------------------------------
    kyc = _module("api.kyc.kyc_retrieve").sync(client=client)
    assert kyc.status == m.KycStatusEnum.NOT_SUBMITTED and kyc.application is None
    form = m.KycSubmitMultipartRequest(
        legal_name="Acme Ltd",
        registration_number="01234567",
        country="GB",
        address="1 High Street, London",
        director_name="Ada Director",
        documents=[
            types.File(io.BytesIO(pdf_bytes()), "incorporation.pdf", "application/pdf"),
            types.File(io.BytesIO(png_bytes()), "passport.png", "image/png"),
        ],
    )
    submitted = _module("api.kyc.kyc_create").sync_detailed(
        client=client, body=form, idempotency_key=_key()
    )
    assert submitted.status_code == 201, submitted.content
    application = submitted.parsed.application
    assert submitted.parsed.status == m.KycStatusEnum.PENDING
    assert application.legal_name == "Acme Ltd"
    assert [(d.filename, d.content_type) for d in application.documents] == [
        ("incorporation.pdf", m.ContentTypeEnum.APPLICATIONPDF),
        ("passport.png", m.ContentTypeEnum.IMAGEPNG),
    ]

    # ---- a system key: `me` without an organisation or limits -----------------------------
    staff = UserFactory.create(
        email="root@latchkey.test", platform_role=PlatformRole.PLATFORM_OWNER
    )
    _, system_secret = system_apikey_create(
        name="Platform bot", scopes=["platform_organizations:read"], actor=Actor.for_user(staff)
    )
    system = package.AuthenticatedClient(
        base_url=live_server.url,
        token=system_secret,
        raise_on_unexpected_status=True,
        httpx_args=hooks,
    )
    closing.append(system)
    system_me = _module("api.meta.me_retrieve").sync(client=system)
    assert system_me.organization is None and system_me.rate_limits is None
    assert system_me.key.environment == m.AnyKeyEnvironmentEnum.SYS

    journey = {
        ("GET", "/api/v1/ping"),
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/scopes"),
        ("POST", "/api/v1/api-keys"),
        ("GET", "/api/v1/api-keys"),
        ("GET", "/api/v1/api-keys/{key_id}"),
        ("POST", "/api/v1/api-keys/{key_id}/rotate"),
        ("POST", "/api/v1/api-keys/{key_id}/revoke"),
        ("DELETE", "/api/v1/api-keys/{key_id}"),
        ("GET", "/api/v1/usage"),
        ("GET", "/api/v1/audit-events"),
        ("GET", "/api/v1/members"),
        ("POST", "/api/v1/members"),
        ("GET", "/api/v1/members/{member_id}"),
        ("PATCH", "/api/v1/members/{member_id}"),
        ("DELETE", "/api/v1/members/{member_id}"),
        ("GET", "/api/v1/invitations"),
        ("GET", "/api/v1/invitations/{invitation_id}"),
        ("POST", "/api/v1/invitations/{invitation_id}/resend"),
        ("POST", "/api/v1/invitations/{invitation_id}/cancel"),
        ("POST", "/api/v1/sign-in-links"),
        ("GET", "/api/v1/kyc"),
        ("POST", "/api/v1/kyc"),
    }
    assert journey <= checker.seen, journey - checker.seen
    assert 404 in checker.statuses  # an error answer was validated too
