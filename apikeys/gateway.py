"""The gateway door: forward-auth for nginx `auth_request`, Traefik ForwardAuth and
Envoy's HTTP ext_authz (docs/gateway/README.md).

`/gateway/auth` runs the API's own pipeline (`ApiView`): key format and checksum, the
verification cache, revocation and expiry, org suspension, the org header, the scope the
catalogue's route table requires for the *original* request, rate limits and quota, and
usage. Only the question differs: the original method comes from `X-Original-Method` or
`X-Forwarded-Method` (else the request's own), the original path from `X-Original-URI`
or `X-Forwarded-Uri` (else the part after `/gateway/auth`).

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
from rest_framework.request import Request

from apikeys.api_base import OrgApiView
from apikeys.authentication import ApiKeyPrincipal
from apikeys.catalogue import current
from apikeys.errors import ApiError
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
    """Forward-auth: is this key allowed the original request? Any method."""

    # The scope comes from the catalogue's route table, per request (required_scope_for).
    resource = ANY_SCOPE
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]
    schema = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        self.original = original_request(request._request, kwargs.get("rest"))
        self.route = current().route_for(*self.original)
        super().initial(request, *args, **kwargs)

    def counted_request(self, request: Request) -> tuple[str, str]:
        # Usage records the request the gateway asked about, as if it came to the API.
        return self.original

    def counted_scopes(self) -> str:
        # Read quietly: a caller learns of a missing route only once its key is accepted.
        return self.route.scope if self.route is not None else ""

    def check_key_kind(self, principal: ApiKeyPrincipal) -> None:
        # Before the route is looked up: a system key learns nothing of the route table.
        if principal.is_system:
            raise ApiError("insufficient_scope", "System keys cannot pass the gateway door.")

    def required_scope_for(self, method: str) -> str | None:
        route = self.route
        if route is None:
            raise ApiError(
                "route_not_found",
                f"No route of the catalogue matches {self.original[0]} {self.original[1]}.",
            )
        return route.scope

    @classmethod
    def implements(cls, method: str) -> bool:
        return True

    def run_handler(  # type: ignore[override]
        self, request: Request, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        # A plain, empty response (nothing to render): the gateway passes the request on.
        response = HttpResponse(status=200)
        # Straight into the header store, as the rate-limit headers are: every value is
        # ASCII made by Latchkey (ids, slug, scope names) or the actor header, which the
        # pipeline has already checked to be printable ASCII.
        store = response.headers._store
        store.update(_allow_headers(self.principal))
        store["x-latchkey-actor-id"] = ("X-Latchkey-Actor-Id", self.external_actor_id)
        return response

    def finalize_response(  # type: ignore[override]
        self, request: Request, response: Any, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        final = super().finalize_response(request, response, *args, **kwargs)
        if final.status_code < 400:
            return final
        body = getattr(final, "data", None) or {}
        code = str(body.get("error", {}).get("code", ""))
        final["X-Latchkey-Status"] = str(final.status_code)
        final["X-Latchkey-Error-Code"] = code
        final["X-Latchkey-Error"] = json.dumps(body, separators=(",", ":"), ensure_ascii=True)
        if request._request.META.get(DENY_STATUS_HEADER, "").strip() == "403":
            final.status_code = 403
        return final
