"""Base views of the API: the request pipeline every endpoint goes through.

`ApiView.dispatch` runs one fixed sequence, the only place where guards are applied:

    1. declaration check   a view that declares no `resource` (and is not explicitly
                           `public`) is never served: ImproperlyConfigured (deny by default)
    2. negotiation         JSON only, whatever `Accept` says
    3. admit_request       (skipped for public views) the admission pipeline,
                           `apikeys.guard.admit`: credentials, verification, key kind, org
                           header, client headers, scope (`required_scopes`, from the
                           view's `resource` and `actions`), rate limits and the monthly
                           quota; `request.user` / `request.auth` are set from its
                           admission, and a refusal is raised as its ApiError
    4. run_handler         safe methods call the handler directly; mutations go through
       HOOK around_handler(request, call)
                           the idempotency protocol (`apikeys.idempotency`): claim the key
                           (committed, so a concurrent duplicate sees it), run `call()` and
                           store the outcome in one transaction, or replay a stored outcome
    5. errors              any exception → `apikeys.exceptions` → the error shape
    6. finalize            `Cache-Control: no-store`, then
       HOOK after_response(request, response)
                           `apikeys.guard.settle` (usage: status class, recent request)
                           and the admission's rate-limit headers; runs for every response
                           of a non-public view, errors included

The view is the pipeline's `Door`: `check_key_kind` and `required_scopes`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponseBase
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.permissions import SAFE_METHODS
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apikeys import idempotency
from apikeys.authentication import (
    ApiKeyAuthentication,
    ApiKeyPrincipal,
    ApiKeyUser,
    credentials_from_headers,
)
from apikeys.errors import ApiError
from apikeys.guard import Admission, Facts, admit, notes, settle
from apikeys.models import ApiKey
from apikeys.pagination import ApiCursorPagination
from apikeys.permissions import ANY_SCOPE, required_scope
from apikeys.selectors import apikey_get
from config.middleware import on_close
from orgs.actors import Actor
from orgs.models import Organization
from orgs.selectors import organization_by_pk

# JSON bodies of this API are small; anything larger is refused before parsing.
MAX_BODY_BYTES = 1024 * 1024

KEY_KIND_ORG = "org"
KEY_KIND_SYSTEM = "system"
KEY_KIND_ANY = "any"


class ApiJSONParser(JSONParser):
    """JSON in UTF-8 (RFC 8259, whatever `charset` claims), size-capped, strict.

    Invalid UTF-8, NaN/Infinity, deep nesting and oversized numbers are 400
    malformed_json; a body over MAX_BODY_BYTES is 413 request_too_large.
    """

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        raw = stream.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError("request_too_large", f"The body is larger than {MAX_BODY_BYTES} bytes.")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError("malformed_json", "The body is not valid UTF-8.") from None
        try:
            return json.loads(text, parse_constant=_refuse_constant)
        except RecursionError:
            raise ApiError("malformed_json", "The body is nested too deeply.") from None
        except ValueError as exc:
            raise ApiError("malformed_json", f"The body is not valid JSON: {exc}"[:300]) from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


class JsonOnlyNegotiation(DefaultContentNegotiation):
    """Every API response is JSON; a client's `Accept` header never turns it into a 406."""

    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


# Per view class, computed once: classes that passed `check_declaration`, and the scope
# each method requires (a class and its declarations do not change while serving).
_DECLARED: set[type] = set()
_SCOPES: dict[tuple[type, str], object] = {}
_METHODS: dict[type, tuple[frozenset[str], tuple[str, ...]]] = {}
_UNKNOWN = object()


class ApiView(APIView):
    """The pipeline (see the module docstring). Subclass `OrgApiView`, `SystemApiView`,
    `AnyKeyApiView` or `PublicApiView`; never this class directly."""

    # The scope-registry resource this view guards, or ANY_SCOPE (any valid key).
    resource: ClassVar[str | None] = None
    # Explicitly served without a key (ping). Nothing else may set this.
    public: ClassVar[bool] = False
    key_kind: ClassVar[str] = KEY_KIND_ORG
    # Method → action of `resource`, where it is not read (safe methods) or write.
    actions: ClassVar[dict[str, str]] = {}

    # This request's admission (`admission`), set by `admit_request`.
    _admission: Admission | None = None

    # For OpenAPI and DRF's interface; the pipeline verifies keys and checks scopes.
    authentication_classes = [ApiKeyAuthentication]
    permission_classes: list[Any] = []
    parser_classes = [ApiJSONParser]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonOnlyNegotiation
    pagination_class = ApiCursorPagination
    throttle_classes = []
    metadata_class = None
    # No OPTIONS/PUT/TRACE: they are 405 like any undeclared method.
    http_method_names = ["get", "post", "patch", "delete", "head"]

    # ---- the declaration (deny by default) -------------------------------------------------

    @classmethod
    def check_declaration(cls) -> None:
        """Refuse to serve a view that does not say what it guards (checked on every
        dispatch; a class found well declared is remembered, classes do not change)."""
        if cls in _DECLARED:
            return
        cls._check_declaration()
        _DECLARED.add(cls)

    @classmethod
    def _check_declaration(cls) -> None:
        if cls.public:
            if cls.resource is not None:
                raise ImproperlyConfigured(f"{cls.__name__}: a public view declares no resource.")
            return
        if cls.resource is None:
            raise ImproperlyConfigured(
                f"{cls.__name__} must declare `resource` (a scope-registry resource or "
                "ANY_SCOPE); API views without one are never served."
            )
        for method in cls.implemented_methods():
            try:
                required_scope(
                    cls.resource,
                    method,
                    system=cls.key_kind == KEY_KIND_SYSTEM,
                    actions=cls.actions,
                )
            except LookupError as exc:
                raise ImproperlyConfigured(f"{cls.__name__}: {exc}") from None

    @classmethod
    def implemented_methods(cls) -> list[str]:
        methods = _METHODS.get(cls)
        if methods is None:
            found = [m.upper() for m in cls.http_method_names if hasattr(cls, m) and m != "head"]
            if "GET" in found:
                found.append("HEAD")
            methods = _METHODS[cls] = frozenset(found), tuple(found)
        return list(methods[1])

    @classmethod
    def implements(cls, method: str) -> bool:
        methods = _METHODS.get(cls)
        if methods is None:
            cls.implemented_methods()
            methods = _METHODS[cls]
        return method.upper() in methods[0]

    def required_scope_for(self, method: str) -> str | None:
        """The scope `method` needs here; None when any key will do, or for a method this
        view does not implement (it is answered 405 after authentication)."""
        cls = type(self)
        found = _SCOPES.get((cls, method), _UNKNOWN)
        if found is _UNKNOWN:
            found = None
            if self.resource is not None and self.implements(method):
                found = required_scope(
                    self.resource,
                    method,
                    system=self.key_kind == KEY_KIND_SYSTEM,
                    actions=self.actions,
                )
            _SCOPES[(cls, method)] = found
        return found  # type: ignore[return-value]

    # ---- the pipeline ----------------------------------------------------------------------

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponseBase:
        self.check_declaration()
        self.args = args
        self.kwargs = kwargs
        drf_request = self.initialize_request(request, *args, **kwargs)
        self.request = drf_request
        self.headers = self.default_response_headers
        response: HttpResponseBase
        try:
            self.initial(drf_request, *args, **kwargs)
            response = self.run_handler(drf_request, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(exc)
            # Handled: its traceback's frames would hold this view and the request in a
            # cycle with it (ADR 0104).
            exc.__traceback__ = None
        return self.answered(self.finalize_response(drf_request, response, *args, **kwargs))

    def answered(self, response: HttpResponseBase) -> HttpResponseBase:
        """`response`, kept as this view's, to be released with it when the server closes
        it (`_release`)."""
        self.response = response  # type: ignore[assignment]
        on_close(response, self._release)
        return response

    def _release(self) -> None:
        """(when the response is closed) Break the cycles of this view, DRF's request
        (which keeps the view in its parser context) and a DRF response (whose renderer
        context keeps the view, the request and the response itself), so that all are
        freed by reference counting (ADR 0104)."""
        response = self.__dict__.get("response")
        if response is not None:
            response.__dict__.pop("renderer_context", None)
        request = self.__dict__.get("request")
        if isinstance(request, Request):  # (Django's own is left to its middleware)
            request.__dict__.clear()
        self.__dict__.clear()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        self.format_kwarg = None
        request.accepted_renderer, request.accepted_media_type = self.perform_content_negotiation(
            request
        )
        if not self.public:
            self.admit_request(request)

    def admit_request(self, request: Request) -> None:
        """Step 3: the admission pipeline (`apikeys.guard`)."""
        django_request = request._request
        method, path = self.counted_request(request)
        admission = admit(
            Facts(
                request=django_request,
                door=self,
                method=method,
                path=path,
                scopes=self.counted_scopes(),
            )
        )
        notes(django_request).admission = self._admission = admission
        principal = admission.principal
        if principal is not None:
            request.user, request.auth = ApiKeyUser(principal), principal  # type: ignore[assignment]
        else:
            request.user, request.auth = None, None  # type: ignore[assignment]  # DRF's default
        if admission.error is not None:
            raise admission.error

    def counted_request(self, request: Request) -> tuple[str, str]:
        """(method, path) usage records for this request."""
        django_request = request._request  # DRF proxies `method` through a __getattr__
        return django_request.method or "GET", django_request.path

    def counted_scopes(self) -> str:
        """The scopes usage records for this request, space-separated (before the key is
        known: nothing here may refuse)."""
        return self.required_scope_for(self.request._request.method or "GET") or ""

    # ---- the Door the pipeline asks (steps 3b and 3e) ------------------------------------

    def check_key_kind(self, principal: ApiKeyPrincipal) -> None:
        if self.key_kind == KEY_KIND_ANY:
            return
        wants_system = self.key_kind == KEY_KIND_SYSTEM
        if principal.is_system == wants_system:
            return
        scope = self.required_scope_for(self.request.method or "GET")
        message = (
            "Only system keys can call platform endpoints."
            if wants_system
            else "System keys cannot call organisation endpoints."
        )
        raise ApiError("insufficient_scope", message, required_scope=scope)

    def required_scopes(self) -> tuple[str, ...]:
        scope = self.required_scope_for(self.request._request.method or "GET")
        return () if scope is None else (scope,)

    def run_handler(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        method = (request._request.method or "GET").lower()
        if method in self.http_method_names and self.implements(method):
            handler: Callable[..., Response] = getattr(self, method)
        else:
            return self.http_method_not_allowed(request, *args, **kwargs)
        if method.upper() in SAFE_METHODS:
            return handler(request, *args, **kwargs)
        return self.around_handler(request, lambda: handler(request, *args, **kwargs))

    def finalize_response(  # type: ignore[override]
        self, request: Request, response: Any, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Cache-Control"] = "no-store"
        if not self.public:
            self.after_response(request, response)
        return response

    # ---- hooks around the handler and the response ------------------------------------

    def around_handler(self, request: Request, call: Callable[[], Response]) -> Response:
        """A mutation's handler under the idempotency protocol, in its own transaction
        (`apikeys.idempotency`): claim, run, store the outcome with the writes, or replay.

        The outcome is stored as rendered bytes, so the handler's DRF response gets its
        renderer here (as `finalize_response` would give it) before it is stored.
        """
        django_request = request._request

        def call_and_prepare() -> Any:
            response = call()
            if isinstance(response, Response):
                response.accepted_renderer = request.accepted_renderer
                response.accepted_media_type = request.accepted_media_type
                response.renderer_context = self.get_renderer_context()  # type: ignore[attr-defined]
            return response

        try:
            response = idempotency.run(
                method=request.method or "POST",
                path=django_request.get_full_path(),
                hashed_body=idempotency.request_body_hash(django_request),
                header=django_request.META.get(idempotency.META_HEADER),
                api_key_pk=self.principal.key_id,
                api_key_secret=credentials_from_headers(request) or "",
                handler=call_and_prepare,
            )
        except idempotency.IdempotencyError as exc:
            raise ApiError(exc.code, exc.message, headers=exc.headers) from None
        finally:
            idempotency.close_body_spool(django_request)
        return response  # type: ignore[return-value]

    def after_response(self, request: Request, response: HttpResponseBase) -> None:
        """Every response of a non-public view: usage (`apikeys.guard.settle`) and the
        rate-limit headers, once the key is known."""
        admission = self.admission
        if admission is None:
            return
        settle(admission, response.status_code)
        admission.write_headers(response.headers._store)

    # ---- what handlers use -----------------------------------------------------------------

    @property
    def principal(self) -> ApiKeyPrincipal:
        principal = self.request.auth
        assert isinstance(principal, ApiKeyPrincipal)
        return principal

    @property
    def admission(self) -> Admission | None:
        """The pipeline's admission of this request (None before step 3 or when public);
        also in the request's notes (`apikeys.guard.notes`)."""
        return self._admission

    @property
    def external_actor_id(self) -> str:
        """The integrator's own user id this request named (`X-Actor-Id`), or ""."""
        admission = self.admission
        return admission.external_actor_id if admission is not None else ""

    def key_actor(self, key: ApiKey) -> Actor:
        """Who acts in this request: `key` (the presenting key's row), on behalf of the
        `X-Actor-Id` it named."""
        return Actor.for_key(key, external_actor_id=self.external_actor_id)

    def paginate(
        self, queryset: Any, serializer_class: Any, *, ordering: tuple[str, str] | None = None
    ) -> Response:
        """One keyset page of `queryset` (`config.pager`): newest first unless `ordering`
        (a time field and "id", both ascending or both descending) says otherwise."""
        paginator = ApiCursorPagination()
        if ordering is not None:
            paginator.ordering = ordering
        page = paginator.paginate_queryset(queryset, self.request, view=self)
        data = serializer_class(page, many=True).data
        return paginator.get_paginated_response(data)


class PublicApiView(ApiView):
    """Served without a key: liveness (ping), the catch-all 404 and the leak reports
    (apikeys.leaks), which anyone may send. Every one is listed in a reviewed test."""

    public = True
    authentication_classes = []
    permission_classes = []


class OrgApiView(ApiView):
    """An endpoint of the key's organisation. Declare `resource`.

    The org comes from the key, never from the URL or the body; object lookups go through
    selectors filtered by `self.org`, so another org's object is a 404.
    """

    key_kind = KEY_KIND_ORG

    @cached_property
    def org(self) -> Organization:
        org_id = self.principal.org_id
        assert org_id is not None  # check_key_kind refused system keys
        return organization_by_pk(pk=org_id)

    @cached_property
    def api_key(self) -> ApiKey:
        """The presenting key's row, behind `actor`."""
        return apikey_get(org=self.org, public_id=self.principal.public_id)

    @cached_property
    def actor(self) -> Actor:
        """The `actor=` of the services this endpoint calls: the presenting key."""
        return self.key_actor(self.api_key)


class SystemApiView(ApiView):
    """A platform endpoint for system keys (environment `sys`). Declare a system
    `resource` (`platform_organizations`, `platform_kyc`); org keys get 403."""

    key_kind = KEY_KIND_SYSTEM


class AnyKeyApiView(ApiView):
    """Any valid key, org or system (`GET me`)."""

    key_kind = KEY_KIND_ANY
    resource = ANY_SCOPE


def validated(serializer_class: type[Any], data: Any) -> dict[str, Any]:
    """`data` through `serializer_class` (a strict serializer): its validated data, or
    the `ValidationError` the exception handler turns into 400 `validation_error`."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
