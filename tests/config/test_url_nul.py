"""NUL bytes, overlong and out-of-range values in a URL, query or form are a 4xx, never a
500 (ADR 0074).

PostgreSQL refuses NUL in text, so a NUL that reaches a query is a 500 there. These tests
do not need PostgreSQL to show it: `refuse_nul_in_queries` makes every database refuse a
query that carries a NUL, as PostgreSQL does, and records it. A value is therefore proved
to be refused before any query (by a path converter, a form or a view's check) on SQLite
as on PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import DataError, connection
from django.test import Client
from django.urls import (
    Resolver404,
    URLPattern,
    URLResolver,
    get_resolver,
    resolve,
)
from django.urls.resolvers import RegexPattern, RoutePattern

from accounts.models import User
from config.converters import OrgSlugConverter, PublicIdConverter, TokenConverter
from orgs.models import AuditEvent, Membership, Organization, Role
from orgs.services import audit_record
from tests.conftest import signed_in_client, verified_client
from tests.factories import MembershipFactory

# --- The database refuses NUL, everywhere -------------------------------------------------


def _carries_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(_carries_nul(item) for item in value)
    if isinstance(value, dict):
        return any(_carries_nul(item) for item in value.values())
    return False


@pytest.fixture
def refuse_nul_in_queries(db: None) -> Iterator[list[str]]:
    """Every query with a NUL in its text or parameters fails as on PostgreSQL (`DataError`);
    the offending statements are listed for the assertion message."""
    refused: list[str] = []

    def refuse(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if _carries_nul(sql) or _carries_nul(params):
            refused.append(f"{sql} {params!r}")
            raise DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse):
        yield refused


# --- Every URL pattern, as a template with its parameters ---------------------------------

# Percent-encoded, as a client sends them: a bare NUL, a NUL inside a well-formed id and
# slug, an overlong value; none can be an id, a slug or a token.
MALFORMED = ["%00", "key_0AbC%00dEf", "acme%00", "x" * 3000]
# Requested too: a number no integer column holds (Django's admin has `<int:pk>`).
BAD_VALUES = [*MALFORMED, "9" * 40]

# A well-formed value for the parameters not under test, by name, whatever the converter:
# the org is the signed-in owner's, so a bad id on an org page gets as far as the view
# would let it. Any other parameter is an id.
VALID_BY_NAME = {
    "org_slug": "acme",
    "token": "A" * 43,
    "content_type_id": "1",
    "object_id": "1",
    "pk": "1",
}
WELL_FORMED_ID = "zz_" + "A" * 24

# Regex patterns cannot be filled in generically: each one the project has, as a template.
# A new `re_path` fails `test_every_regex_pattern_has_a_template` until it is added here.
REGEX_TEMPLATES: list[tuple[re.Pattern[str], str, dict[str, str]]] = [
    # /api/v1/ catch-all: the API's JSON 404.
    (re.compile(r"^\^\.\*\$$"), "{rest}", {"rest": "x"}),
    # Anything else under /api/ or /gateway/: the API's JSON 404 (no parameter).
    (re.compile(r"^\^\(\?:api\|gateway\)"), "api/elsewhere", {}),
    # The gateway door: the original path follows /gateway/auth.
    (re.compile(r"^\^gateway/auth\(\?P<rest>"), "gateway/auth/{rest}", {"rest": ""}),
    # Django admin: an app's index, and the catch-all that adds a slash or 404s.
    (re.compile(r"^\^\(\?P<app_label>"), "{app_label}/", {"app_label": "orgs"}),
    (re.compile(r"^\(\?P<url>\.\*\)\$$"), "{url}", {"url": "x"}),
]

ROUTE_PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


class Template:
    """A URL pattern as `o/{org_slug}/members/{member_id}/remove/` plus a well-formed
    value for each parameter."""

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.text = ""
        self.valid: dict[str, str] = {}
        self.converters: dict[str, object] = {}
        self.regex: list[str] = []

    def add(self, pattern: object) -> None:
        if isinstance(pattern, RoutePattern):
            route = str(pattern)
            self.text += ROUTE_PARAMETER.sub(lambda m: "{" + m["name"] + "}", route)
            for name, converter in pattern.converters.items():
                self.converters[name] = converter
                self.valid[name] = VALID_BY_NAME.get(name, WELL_FORMED_ID)
        elif isinstance(pattern, RegexPattern):
            regex = str(pattern)
            self.regex.append(regex)
            for matcher, text, valid in REGEX_TEMPLATES:
                if matcher.search(regex):
                    self.text += text
                    self.valid.update(valid)
                    return
            self.text += "{UNTEMPLATED}"
        else:  # pragma: no cover - Django has no other kind
            raise TypeError(pattern)

    @property
    def label(self) -> str:
        return "/" + self.text

    def url(self, **values: str) -> str:
        return "/" + self.text.format(**{**self.valid, **values})


def _templates(
    entries: list[URLPattern | URLResolver], prefix: tuple[object, ...] = ()
) -> Iterator[Template]:
    for entry in entries:
        if isinstance(entry, URLResolver):
            yield from _templates(entry.url_patterns, (*prefix, entry.pattern))
        else:
            template = Template(entry.name)
            for pattern in (*prefix, entry.pattern):
                template.add(pattern)
            yield template


TEMPLATES = list(_templates(get_resolver().url_patterns))
WITH_PARAMETERS = [t for t in TEMPLATES if t.valid]
# Django's admin and its own converters are Django's; its views are walked below all the same.
PROJECT = [t for t in WITH_PARAMETERS if not t.text.startswith("admin/")]
# Catch-alls whose parameter is any path by design; their views judge it.
ANY_PATH = {"api-not-found", "gateway-auth"}


def test_the_walk_sees_every_kind_of_id() -> None:
    routes = {t.text for t in PROJECT}
    assert {
        "o/{org_slug}/members/{member_id}/remove/",
        "o/{org_slug}/api-keys/{key_id}/",
        "invitations/id/{invitation_id}/",
        "o/{org_slug}/kyc/documents/{doc_id}/",
        "account/passkeys/{public_id}/delete/",
        "login/magic/{token}/",
        "platform/kyc/{kyc_id}/documents/{doc_id}/",
        "api/v1/api-keys/{key_id}",
    } <= routes


def test_every_regex_pattern_has_a_template() -> None:
    untemplated = [t.regex for t in TEMPLATES if "{UNTEMPLATED}" in t.text]
    assert untemplated == []


@pytest.mark.parametrize("template", PROJECT, ids=[t.label for t in PROJECT])
def test_every_project_url_parameter_has_a_converter_that_validates_it(
    template: Template,
) -> None:
    """`<str:…>`, `<slug:…>` or `<path:…>` would let a NUL or a megabyte through."""
    if template.name in ANY_PATH:
        return
    ours = (PublicIdConverter, OrgSlugConverter, TokenConverter)
    loose = {
        name: type(converter).__name__
        for name, converter in template.converters.items()
        if not isinstance(converter, ours)
    }
    assert loose == {}


@pytest.mark.parametrize("template", PROJECT, ids=[t.label for t in PROJECT])
def test_the_resolver_refuses_a_malformed_parameter(template: Template) -> None:
    """The value never reaches a view: a 404 from the resolver (or the API's catch-all)."""
    if template.name in ANY_PATH:
        return
    for name in template.valid:
        for value in MALFORMED:
            path = template.url(**{name: value}).replace("%00", "\x00")
            try:
                match = resolve(path)
            except Resolver404:
                continue
            assert match.url_name == "api-not-found", f"{path!r} reached {match.url_name}"


# --- Every URL, requested ------------------------------------------------------------------


@pytest.fixture
def actors(owner: User, org: Organization) -> dict[str, Client]:
    """An anonymous visitor, the owner of `acme` (second factor passed) and a platform
    owner with the admin's staff flag (verified), each seeing errors as responses."""
    root = User.objects.create_superuser("root@latchkey.test")
    clients = {
        "anonymous": Client(),
        "org owner": signed_in_client(owner),
        "platform owner": verified_client(root),
    }
    for client in clients.values():
        client.raise_request_exception = False
    return clients


@pytest.mark.parametrize("template", WITH_PARAMETERS, ids=[t.label for t in WITH_PARAMETERS])
def test_no_malformed_path_parameter_is_a_server_error(
    template: Template, actors: dict[str, Client], refuse_nul_in_queries: list[str]
) -> None:
    failures = []
    for name in template.valid:
        for value in BAD_VALUES:
            url = template.url(**{name: value})
            for actor, client in actors.items():
                for method in ("get", "post"):
                    status = getattr(client, method)(url).status_code
                    if status >= 500:
                        failures.append(f"{method.upper()} {url[:80]} as {actor}: {status}")
    assert failures == [], refuse_nul_in_queries


# --- Query and form values ----------------------------------------------------------------


@pytest.fixture
def owner_client(owner: User) -> Client:
    client = signed_in_client(owner)
    client.raise_request_exception = False
    return client


@pytest.fixture
def events(org: Organization) -> list[AuditEvent]:
    for number in range(3):
        audit_record(action="test.event", org=org, details={"n": number})
    return list(AuditEvent.objects.filter(org=org).order_by("-created_at", "-id"))


@pytest.mark.parametrize("cursor", ["before", "after"])
@pytest.mark.parametrize(
    "value", ["%00", "evt_AAAA%00AAAA", "evt_" + "A" * 500, "mem_" + "A" * 24, "x" * 3000]
)
def test_a_malformed_audit_cursor_is_a_400(
    owner_client: Client, refuse_nul_in_queries: list[str], cursor: str, value: str
) -> None:
    response = owner_client.get(f"/o/acme/audit/?{cursor}={value}")
    assert response.status_code == 400
    assert refuse_nul_in_queries == []


def test_a_well_formed_audit_cursor_still_pages(
    owner_client: Client, events: list[AuditEvent], refuse_nul_in_queries: list[str]
) -> None:
    newest = events[0].public_id
    older = owner_client.get(f"/o/acme/audit/?before={newest}")
    assert older.status_code == 200
    assert newest not in [row["event"].public_id for row in older.context["rows"]]
    unknown = owner_client.get("/o/acme/audit/?after=evt_" + "A" * 24)
    assert unknown.status_code == 200 and unknown.context["rows"] == []


@pytest.mark.parametrize("field", ["action", "actor", "target", "since", "until"])
def test_a_nul_in_an_audit_filter_is_refused_by_the_form(
    owner_client: Client, refuse_nul_in_queries: list[str], field: str
) -> None:
    page = owner_client.get(f"/o/acme/audit/?{field}=a%00b")
    assert page.status_code < 500 and page.context["form"].errors
    export = owner_client.get(f"/o/acme/audit/export.csv?{field}=a%00b")
    assert export.status_code == 400
    assert refuse_nul_in_queries == []


@pytest.mark.parametrize("value", ["\x00", "mem_AAAA\x00AAAA", "mem_" + "A" * 500, "x" * 3000])
def test_a_malformed_member_in_the_ownership_transfer_is_a_400(
    owner_client: Client, org: Organization, refuse_nul_in_queries: list[str], value: str
) -> None:
    response = owner_client.post("/o/acme/settings/transfer/", {"membership": value})
    assert response.status_code == 400
    assert refuse_nul_in_queries == []
    assert Membership.objects.filter(org=org, role=Role.OWNER).count() == 1


def test_the_ownership_transfer_still_works(
    owner_client: Client, owner: User, org: Organization, refuse_nul_in_queries: list[str]
) -> None:
    unknown = owner_client.post("/o/acme/settings/transfer/", {"membership": "mem_" + "A" * 24})
    assert unknown.status_code == 404
    heir = MembershipFactory.create(org=org, role=Role.ADMIN)
    response = owner_client.post("/o/acme/settings/transfer/", {"membership": heir.public_id})
    assert response.status_code == 302
    heir.refresh_from_db()
    assert heir.role == Role.OWNER


@pytest.mark.parametrize(
    "url",
    [
        "/orgs/switch/?org=%00",
        "/orgs/switch/?org=acme%00",
        "/o/acme/usage/?range=%00",
        "/o/acme/api-keys/?page=%00",
        "/login/?next=/o/acme/%00/&email=a%00@example.com",
        "/?org=%00",
    ],
)
def test_a_nul_in_a_query_is_never_a_server_error(
    owner_client: Client, refuse_nul_in_queries: list[str], url: str
) -> None:
    assert owner_client.get(url).status_code < 500
    assert refuse_nul_in_queries == []


def test_a_nul_in_the_sign_in_form_is_never_a_server_error(
    db: None, refuse_nul_in_queries: list[str]
) -> None:
    client = Client(raise_request_exception=False)
    response = client.post("/login/", {"email": "a\x00@example.com", "next": "/o/\x00/"})
    assert response.status_code < 500
    response = client.post("/login/", {"email": "a@example.com", "next": "/o/\x00/"})
    assert response.status_code < 500
    assert refuse_nul_in_queries == []


@pytest.mark.parametrize(
    "url",
    [
        "/platform/organizations/?q=%00&status=%00&page=%00",
        "/platform/organizations/?page=" + "9" * 40,
        "/platform/kyc/?status=%00",
    ],
)
def test_a_nul_in_a_console_query_is_never_a_server_error(
    db: None, refuse_nul_in_queries: list[str], url: str
) -> None:
    client = verified_client(User.objects.create_superuser("root@latchkey.test"))
    client.raise_request_exception = False
    assert client.get(url).status_code < 500
    assert refuse_nul_in_queries == []


def test_a_nul_in_the_selected_org_cookie_is_ignored(
    owner: Any, org: Any, refuse_nul_in_queries: list[str]
) -> None:
    from django.test import Client

    from orgs.tenancy import SELECTED_ORG_COOKIE

    client = Client()
    client.force_login(owner)
    client.cookies[SELECTED_ORG_COOKIE] = "ac\x00me"
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == f"/o/{org.slug}/"
    assert refuse_nul_in_queries == []


def test_the_admins_view_on_site_shortcut_refuses_a_nul_object_id(
    actors: dict[str, Client], refuse_nul_in_queries: list[str]
) -> None:
    from django.contrib.contenttypes.models import ContentType
    from django.contrib.sessions.models import Session

    sessions = ContentType.objects.get_for_model(Session)  # a model with a text key
    response = actors["platform owner"].get(f"/admin/r/{sessions.pk}/ab%00cd/")
    assert response.status_code == 404
    assert refuse_nul_in_queries == []
