"""The request pipeline: deny by default, key kinds, and the hook points in their order."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test.client import RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import PlatformRole
from apikeys import api, leaks
from apikeys.api_base import (
    AnyKeyApiView,
    ApiView,
    OrgApiView,
    PublicApiView,
    SystemApiView,
)
from apikeys.errors import ApiError
from apikeys.services import system_apikey_create
from orgs.actors import Actor
from orgs.models import Organization
from tests.apikeys.api.conftest import ApiClient, KeyMaker, assert_error
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

# The only views served without a key. Adding one here is a reviewed decision.
# Served without a key: liveness, the catch-all 404, and the leak reports (anyone may
# report a key; GitHub's are signed instead).
PUBLIC_VIEWS = {api.PingApi, api.NotFoundApi, leaks.LeakReportApi, leaks.GithubSecretScanningApi}


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def _api_views() -> list[tuple[str, type]]:
    views = []
    for route, callback in _walk(get_resolver().url_patterns):
        if route.startswith("api/v1/"):
            views.append((route, callback.view_class))
    return views


def test_every_api_view_declares_what_it_guards() -> None:
    views = _api_views()
    assert len(views) >= 10
    for route, view_class in views:
        assert issubclass(view_class, ApiView), f"{route}: {view_class} is not built on ApiView"
        if view_class.public:
            assert view_class in PUBLIC_VIEWS, f"{route}: {view_class} is public"
            assert view_class.authentication_classes == []
        else:
            assert view_class.resource is not None, f"{route}: no resource"
            view_class.check_declaration()


def test_a_view_without_a_resource_is_never_served(full_key: Any) -> None:
    class Forgetful(OrgApiView):
        def get(self, request: Request) -> Response:
            return Response({"leaked": True})

    request = RequestFactory().get("/api/v1/x", HTTP_AUTHORIZATION=f"Bearer {full_key[1]}")
    with pytest.raises(ImproperlyConfigured):
        Forgetful.as_view()(request)


@pytest.mark.parametrize(
    ("resource", "method"),
    [("no_such_resource", "get"), ("audit_log", "post"), ("platform_kyc", "get")],
)
def test_a_view_with_an_unknown_or_impossible_resource_is_never_served(
    resource: str, method: str
) -> None:
    view: type[ApiView] = type(
        "Wrong", (OrgApiView,), {"resource": resource, method: lambda self, request: Response()}
    )
    with pytest.raises(ImproperlyConfigured):
        view.check_declaration()


def test_a_public_view_cannot_also_claim_a_resource() -> None:
    view: type[ApiView] = type("Odd", (PublicApiView,), {"resource": "members"})
    with pytest.raises(ImproperlyConfigured):
        view.check_declaration()


@pytest.fixture
def system_secret(db: None) -> str:
    owner = UserFactory.create(
        email="root@latchkey.test", platform_role=PlatformRole.PLATFORM_OWNER
    )
    _, secret = system_apikey_create(
        name="Platform bot",
        scopes=["platform_organizations:read", "platform_kyc:write"],
        actor=Actor.for_user(owner),
    )
    return secret


class PlatformProbe(SystemApiView):
    resource = "platform_organizations"

    def get(self, request: Request) -> Response:
        return Response({"ok": True})

    def post(self, request: Request) -> Response:
        return Response({"ok": True})


_probe_keys = itertools.count()


def _call(view: Any, secret: str, method: str = "get", **headers: str) -> Any:
    factory = RequestFactory()
    if method != "get":
        headers.setdefault("HTTP_IDEMPOTENCY_KEY", f"probe-{next(_probe_keys)}")
    request = getattr(factory, method)(
        "/api/v1/probe", HTTP_AUTHORIZATION=f"Bearer {secret}", **headers
    )
    request.request_id = "req_probe0001"
    response = view.as_view()(request)
    response.render()
    return response


def test_system_keys_serve_system_views_with_scopes(system_secret: str) -> None:
    assert _call(PlatformProbe, system_secret).status_code == 200
    refused = _call(PlatformProbe, system_secret, "post")
    assert refused.status_code == 403
    assert refused.data["error"]["required_scope"] == "platform_organizations:write"


def test_org_keys_are_refused_on_system_views(full_key: Any) -> None:
    response = _call(PlatformProbe, full_key[1])
    assert response.status_code == 403
    assert response.data["error"]["code"] == "insufficient_scope"
    assert response.data["error"]["required_scope"] == "platform_organizations:read"


def test_system_keys_are_refused_on_org_endpoints_but_may_call_me(system_secret: str) -> None:
    error = assert_error(ApiClient(system_secret).get("members"), 403, "insufficient_scope")
    assert error["required_scope"] == "members:read"
    me = ApiClient(system_secret).get("me").json()
    assert me["key"]["environment"] == "sys"
    assert me["organization"] is None and me["rate_limits"] is None
    mismatch = ApiClient(system_secret, **{"X-Org-Id": "acme"}).get("me")
    assert_error(mismatch, 403, "org_mismatch")


class Recorder:
    """Records the pipeline's hook calls in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []


def _hooked(base: type, recorder: Recorder) -> type:
    class Hooked(base):
        resource = "members"

        def admit_request(self, request: Request) -> None:
            try:
                super().admit_request(request)
            finally:
                admission = self.admission
                assert admission is not None
                code = admission.error.code if admission.error else "admitted"
                recorder.calls.append(f"admit:{code}")

        def around_handler(self, request: Request, call: Callable[[], Response]) -> Response:
            recorder.calls.append("around")
            response = call()
            recorder.calls.append("around:done")
            return response

        def after_response(self, request: Request, response: Any) -> None:
            recorder.calls.append(f"after:{response.status_code}")
            response["X-RateLimit-Limit"] = "60"

        def get(self, request: Request) -> Response:
            recorder.calls.append("handler:get")
            return Response({})

        def post(self, request: Request) -> Response:
            recorder.calls.append("handler:post")
            return Response({}, status=201)

    return Hooked


def test_hooks_run_in_pipeline_order(full_key: Any) -> None:
    recorder = Recorder()
    view = _hooked(OrgApiView, recorder)
    get = _call(view, full_key[1])
    assert get["X-RateLimit-Limit"] == "60"
    assert recorder.calls == ["admit:admitted", "handler:get", "after:200"]
    recorder.calls.clear()
    _call(view, full_key[1], "post")
    assert recorder.calls == [
        "admit:admitted",
        "around",
        "handler:post",
        "around:done",
        "after:201",
    ]


def test_a_refusal_by_the_limits_skips_the_handler_and_keeps_its_headers(
    full_key: Any, org: Organization
) -> None:
    from tests.apikeys.guards.conftest import set_limits

    set_limits(org, monthly=1)
    recorder = Recorder()
    view = _hooked(OrgApiView, recorder)
    assert _call(view, full_key[1]).status_code == 200
    response = _call(view, full_key[1], "post")
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    assert response.data["error"]["code"] == "quota_exceeded"
    assert recorder.calls == [
        "admit:admitted",
        "handler:get",
        "after:200",
        "admit:quota_exceeded",
        "after:429",
    ]


def test_hooks_do_not_run_before_authentication_and_scope(
    org: Organization, make_api_key: KeyMaker
) -> None:
    recorder = Recorder()
    view = _hooked(OrgApiView, recorder)
    _, wrong = make_api_key(org, ["usage:read"])
    assert _call(view, wrong).status_code == 403
    assert _call(view, "lk_test_garbage").status_code == 401
    assert recorder.calls == [
        "admit:insufficient_scope",
        "after:403",
        "admit:invalid_api_key",
        "after:401",
    ]


def test_any_key_view_and_public_view_bases() -> None:
    assert AnyKeyApiView.resource == "*"
    assert PublicApiView.public is True
    assert api.MeApi.key_kind == "any"


@pytest.mark.django_db(transaction=True)
def test_a_mutation_runs_in_one_transaction_by_default(full_key: Any) -> None:
    from django.db import connection

    seen: dict[str, bool] = {}

    class Writer(OrgApiView):
        resource = "members"

        def get(self, request: Request) -> Response:
            seen["get"] = connection.in_atomic_block
            return Response({})

        def post(self, request: Request) -> Response:
            seen["post"] = connection.in_atomic_block
            return Response({}, status=201)

    _call(Writer, full_key[1])
    _call(Writer, full_key[1], "post")
    assert seen == {"get": False, "post": True}


def test_a_mutation_that_fails_leaves_no_writes(full_key: Any, org: Organization) -> None:
    from orgs.models import AuditEvent
    from orgs.services import audit_record

    class HalfWriter(OrgApiView):
        resource = "members"

        def post(self, request: Request) -> Response:
            audit_record(action="test.partial", org=org)
            raise ApiError("validation_error", "changed my mind")

    response = _call(HalfWriter, full_key[1], "post")
    assert response.status_code == 400
    assert not AuditEvent.objects.filter(action="test.partial").exists()
