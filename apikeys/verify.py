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
from apikeys.api import _iso, me_body
from apikeys.api_base import SystemApiView, validated
from apikeys.authentication import ApiKeyPrincipal
from apikeys.catalogue import current
from apikeys.errors import ApiError, spec_for
from apikeys.guard import Facts, admit, settle
from apikeys.scopes import ScopeError, normalize_scopes


class VerifyKeyApi(SystemApiView):
    """Verify a key for your own service: counted as a request of that key."""

    resource = "keys"
    actions = {"POST": "verify"}
    # Its POST is a question (`run_handler` below): no Idempotency-Key (apikeys.schema).
    idempotency_key_required = False

    @extend_schema(
        request=s.VerifyRequestSerializer,
        responses=s.VerifyResultSerializer,
        summary="Verify an API key",
        tags=["keys"],
    )
    def post(self, request: Request) -> Response:
        data = validated(s.VerifyRequestSerializer, request.data)
        door = _VerifiedKeyDoor(self._needed_scopes(data))
        facts = Facts(
            request=request._request,
            door=door,
            method=str(data.get("method", "POST")).upper()[:16],
            path=str(data.get("path", request._request.path))[:512],
            key=data["key"],
            scopes=" ".join(door.scopes),
            client_ip=data.get("ip"),
        )
        admission = admit(facts)
        settle(admission, 200)
        error = admission.error
        if error is None:
            return Response(_answer(admission.principal, None, admission.limits))
        if error.code in _KEY_REFUSALS:
            return Response(_answer(None, error.code))
        return Response(_answer(admission.principal, error.code, admission.limits))

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


# Refusals that say the key itself is not accepted: the answer describes no key.
_KEY_REFUSALS = frozenset(
    {"invalid_api_key", "api_key_revoked", "api_key_expired", "org_suspended"}
)


class _VerifiedKeyDoor:
    """What the verify API asks of the key it verifies: an org key with `scopes`."""

    def __init__(self, scopes: list[str]) -> None:
        self.scopes = scopes

    def check_key_kind(self, principal: ApiKeyPrincipal) -> None:
        if principal.is_system:
            raise ApiError("invalid_api_key")

    def required_scopes(self) -> list[str]:
        return self.scopes


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
        "leaked": principal.leaked,
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
