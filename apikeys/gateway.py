"""The gateway door: forward-auth for nginx `auth_request`, Traefik ForwardAuth and
Envoy's HTTP ext_authz (docs/gateway/README.md).

`/gateway/auth` runs the API's own pipeline (`apikeys.guard.admit`): key format and
checksum, the verification cache, revocation and expiry, org suspension, the org header,
the scope the catalogue's route table requires for the *original* request, rate limits
and quota, and usage. Only the question differs: the original method comes from
`X-Original-Method` or `X-Forwarded-Method` (else the request's own), the original path
from `X-Original-URI` or `X-Forwarded-Uri` (else the part after `/gateway/auth`).

- Allowed: 200 with an empty body and `X-Latchkey-*` headers for the upstream, plus the
  rate-limit headers.
- Denied: the API's status, error body, `WWW-Authenticate`, `Retry-After` and rate-limit
  headers, plus `X-Latchkey-Status`, `X-Latchkey-Error-Code` and `X-Latchkey-Error` (the
  error body as one line of JSON, for gateways that cannot pass a subrequest's body on).
  With the request header `X-Latchkey-Deny-Status: 403` every denial is sent as 403 (nginx
  accepts only 401 and 403 from an auth subrequest); `X-Latchkey-Status` keeps the real one.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote, urlsplit

from django.http import HttpResponse, HttpResponseBase
from rest_framework.renderers import JSONRenderer

from apikeys.api_base import OrgApiView
from apikeys.authentication import ApiKeyPrincipal, ApiKeyUser
from apikeys.catalogue import current
from apikeys.errors import ApiError
from apikeys.exceptions import error_response_for
from apikeys.guard import Facts, admit, notes, settle
from apikeys.permissions import ANY_SCOPE

MAX_ORIGINAL_URI = 4096
DENY_STATUS_HEADER = "HTTP_X_LATCHKEY_DENY_STATUS"


def original_request(request: Any, rest: str | None) -> tuple[str, str]:
    """(method, path) of the request the gateway asks about; the path without its query."""
    meta = request.META
    method = (
        meta.get("HTTP_X_ORIGINAL_METHOD")
        or meta.get("HTTP_X_FORWARDED_METHOD")
        or request.method
        or "GET"
    )
    uri = meta.get("HTTP_X_ORIGINAL_URI") or meta.get("HTTP_X_FORWARDED_URI")
    if uri is None:
        uri = rest or "/"
    if len(uri) > MAX_ORIGINAL_URI or "\x00" in uri:
        raise ApiError("validation_error", "The original URI is too long or malformed.")
    if uri.startswith("/"):
        raw_path = uri.partition("?")[0].partition("#")[0]
    else:  # an absolute URI
        raw_path = urlsplit(uri).path or "/"
    path = unquote(raw_path) if "%" in raw_path else raw_path
    if not path.startswith("/"):
        path = "/" + path
    # A route is chosen by path: a dot segment or an encoded slash could make one path
    # look like another to the route table and to the upstream. Refuse them.
    if "%2f" in raw_path.lower() or any(part in (".", "..") for part in path.split("/")):
        raise ApiError("validation_error", "The original path has dot segments or an encoded '/'.")
    return method.strip().upper()[:16], path


_ALLOW_MAX = 4096
# id(principal) -> (principal, headers): principals are immutable values built once per
# process and cache entry, so their allow headers are too (as `me`'s body is).
_allow: dict[int, tuple[ApiKeyPrincipal, dict[str, tuple[str, str]]]] = {}


def _allow_headers(p: ApiKeyPrincipal) -> dict[str, tuple[str, str]]:
    """The allow headers of `p`, as entries of a response's header store."""
    found = _allow.get(id(p))
    if found is None or found[0] is not p:
        if len(_allow) >= _ALLOW_MAX:
            _allow.clear()
        headers = {
            name.lower(): (name, value)
            for name, value in (
                ("X-Latchkey-Org-Id", p.org_public_id),
                ("X-Latchkey-Org-Slug", p.org_slug),
                ("X-Latchkey-Key-Id", p.public_id),
                ("X-Latchkey-Environment", p.environment),
                ("X-Latchkey-Scopes", " ".join(sorted(p.scopes))),
            )
        }
        found = _allow[id(p)] = (p, headers)
    return found[1]


class GatewayAuthApi(OrgApiView):
    """Forward-auth: is this key allowed the original request? Any method.

    The door has no body to parse and, when it allows, nothing to render: it asks the
    admission pipeline directly, without DRF's request, negotiation and renderer. A
    denial is the API's error response (`apikeys.exceptions`), rendered as JSON.
    """

    # The scope comes from the catalogue's route table, per request (required_scope_for).
    resource = ANY_SCOPE
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]
    schema = None

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponseBase:
        self.request = request
        self.args, self.kwargs = args, kwargs
        admission = None
        try:
            self.original = original_request(request, kwargs.get("rest"))
            self.route = current().route_for(*self.original)
            admission = admit(
                Facts(
                    request=request,
                    door=self,
                    method=self.original[0],
                    path=self.original[1],
                    scopes=self.route.scope if self.route is not None else "",
                )
            )
            notes(request).admission = self._admission = admission
            if admission.error is not None:
                raise admission.error
            principal = admission.principal
            assert principal is not None
            request.user = ApiKeyUser(principal)
            response: HttpResponseBase = HttpResponse(status=200)
            settle(admission, 200)
            # Straight into the header store: every value is ASCII made by Latchkey (ids,
            # slug, scope names, the rate-limit figures) or the actor header, which the
            # pipeline has already checked to be printable ASCII.
            store = response.headers._store
            store.update(_allow_headers(principal))
            store["x-latchkey-actor-id"] = ("X-Latchkey-Actor-Id", admission.external_actor_id)
        except Exception as exc:
            response = self._denial(request, exc)
            exc.__traceback__ = None  # as `ApiView.dispatch` (ADR 0104)
        store = response.headers._store
        store["cache-control"] = ("Cache-Control", "no-store")
        if admission is not None:
            admission.write_headers(store)
        return self.answered(response)

    def _denial(self, request: Any, exc: Exception) -> HttpResponseBase:
        """The API's error response for `exc`, with the error also in headers (a gateway
        may not pass a subrequest's body on) and the status the gateway asked for."""
        response = error_response_for(exc, request)
        body = response.data or {}
        status = response.status_code
        response.accepted_renderer = _RENDERER
        response.accepted_media_type = _RENDERER.media_type
        response.renderer_context = {}  # type: ignore[attr-defined]
        response["X-Latchkey-Status"] = str(status)
        response["X-Latchkey-Error-Code"] = str(body.get("error", {}).get("code", ""))
        response["X-Latchkey-Error"] = json.dumps(body, separators=(",", ":"), ensure_ascii=True)
        if request.META.get(DENY_STATUS_HEADER, "").strip() == "403":
            response.status_code = 403
        return response

    # ---- the Door the pipeline asks ------------------------------------------------------

    def check_key_kind(self, principal: ApiKeyPrincipal) -> None:
        # Before the route is looked up: a system key learns nothing of the route table.
        if principal.is_system:
            raise ApiError("insufficient_scope", "System keys cannot pass the gateway door.")

    def required_scopes(self) -> tuple[str, ...]:
        route = self.route
        if route is None:
            raise ApiError(
                "route_not_found",
                f"No route of the catalogue matches {self.original[0]} {self.original[1]}.",
            )
        return (route.scope,)


_RENDERER = JSONRenderer()
