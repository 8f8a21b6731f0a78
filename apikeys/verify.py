"""The verify API (`POST /api/v1/keys/verify`): a service in any language asks whether a
key may do something, and gets the answer of the API's own pipeline.

The caller is a system key holding `keys:verify`. The verified key goes through what a
direct request would: format and checksum, the verification cache, revocation and expiry,
org suspension, the scopes asked for (or those the catalogue's route table requires for
`method` and `path`), rate limits and quota, usage. A refused key is still a 200 with
`valid: false` and the API's error `code`; a malformed call is a 400.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys import serializers as s
from apikeys import usage
from apikeys.api import _iso, _valid, me_body
from apikeys.api_base import SystemApiView
from apikeys.authentication import ApiKeyPrincipal, authenticate_key
from apikeys.catalogue import current
from apikeys.errors import ApiError, spec_for
from apikeys.ratelimit import UsageMeta, clock, guard
from apikeys.scopes import ScopeError, has_scope, normalize_scopes
from config.net import client_ip


class VerifyKeyApi(SystemApiView):
    """Verify a key for your own service: counted as a request of that key."""

    resource = "keys"
    actions = {"POST": "verify"}

    @extend_schema(
        request=s.VerifyRequestSerializer,
        responses=s.VerifyResultSerializer,
        summary="Verify an API key",
        tags=["keys"],
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.VerifyRequestSerializer, request.data)
        needed = self._needed_scopes(data)
        try:
            principal = authenticate_key(data["key"])
        except ApiError as refused:
            return Response(_answer(None, refused.code))
        if principal.is_system:
            return Response(_answer(None, "invalid_api_key"))
        missing = next((scope for scope in needed if not has_scope(principal.scopes, scope)), "")
        meta = UsageMeta(
            ip=client_ip(request._request) or "",
            client_version="",
            method=str(data.get("method", "POST")).upper()[:16],
            path=str(data.get("path", request._request.path))[:512],
            request_id=str(getattr(request._request, "request_id", "") or ""),
        )
        now = clock()
        if missing:
            result = guard(
                key_pk=principal.key_id,
                org_pk=principal.org_id,
                limits=principal.limits,
                meta=meta,
                status_class=usage.status_class(403),
                count_limits=False,
                status=403,
                now=now,
            )
            return Response(_answer(principal, "insufficient_scope", result))
        result = guard(
            key_pk=principal.key_id,
            org_pk=principal.org_id,
            limits=principal.limits,
            meta=meta,
            now=now,
        )
        if not result.allowed:
            return Response(_answer(principal, result.code, result))
        usage.record_status(
            key_pk=principal.key_id,
            org_pk=principal.org_id,
            hour=usage.hour_start(now),
            status_class=usage.status_class(200),
            status=200,
            recent=result.recent,
        )
        return Response(_answer(principal, None, result))

    def run_handler(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # A question, not a change: no Idempotency-Key, answered at once (still counted).
        if (request.method or "").upper() == "POST":
            return self.post(request)
        return super().run_handler(request, *args, **kwargs)

    def _needed_scopes(self, data: dict[str, Any]) -> list[str]:
        if "path" in data:
            route = current().route_for(data["method"], data["path"])
            if route is None:
                raise ApiError(
                    "route_not_found",
                    f"No route of the catalogue matches {data['method']} {data['path']}.",
                    param="path",
                )
            return [route.scope]
        try:
            normalize_scopes(data.get("scopes", []))
        except ScopeError as exc:
            raise ApiError("validation_error", exc.message, param="scopes") from None
        return list(data.get("scopes", []))


def _answer(
    principal: ApiKeyPrincipal | None, code: str | None, result: Any = None
) -> dict[str, Any]:
    """The verify answer; a refused key names the code the API would have answered with."""
    if code is not None:
        spec_for(code)  # a code of the error table, always
    answer: dict[str, Any] = {
        "valid": code is None,
        "code": code,
        "key": None,
        "organization": None,
        "scopes": [],
        "meta": {},
        "rate_limit": None,
    }
    if principal is None:
        return answer
    answer["key"] = {
        "id": principal.public_id,
        "name": principal.name,
        "environment": principal.environment,
        "display": principal.display,
        "expires_at": _iso(principal.expires_at),
    }
    answer["organization"] = me_body(principal)["organization"]
    answer["scopes"] = sorted(principal.scopes)
    answer["meta"] = dict(principal.meta)
    if result is not None:
        answer["rate_limit"] = {
            "limit": result.per_minute,
            "remaining": result.minute_remaining,
            "reset": result.minute_reset,
        }
    return answer
