"""The API's error-code table: the one place that maps a code to its status and type.

Every error the API returns is `{"error": {"type", "code", "message", "request_id", ...}}`
(docs/api.md). The exception handler (`apikeys.exceptions`), the authentication and
permission classes, the OpenAPI schema and docs/api.md all read `ERRORS`; a code that is
not in this table is never sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rest_framework.exceptions import APIException

AUTHENTICATION_ERROR = "authentication_error"
PERMISSION_ERROR = "permission_error"
RATE_LIMIT_ERROR = "rate_limit_error"
IDEMPOTENCY_ERROR = "idempotency_error"
INVALID_REQUEST_ERROR = "invalid_request_error"
API_ERROR = "api_error"


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    type: str
    message: str


ERRORS: Mapping[str, ErrorSpec] = {
    # 401: who are you?
    "missing_api_key": ErrorSpec(
        401,
        AUTHENTICATION_ERROR,
        "No API key was sent. Use 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
    ),
    "invalid_api_key": ErrorSpec(
        401,
        AUTHENTICATION_ERROR,
        "The API key is not valid: check that it was copied whole, that its prefix names "
        "the environment you meant (test or live), and that it was not deleted.",
    ),
    "api_key_revoked": ErrorSpec(401, AUTHENTICATION_ERROR, "The API key was revoked."),
    "api_key_expired": ErrorSpec(401, AUTHENTICATION_ERROR, "The API key has expired."),
    "invalid_signature": ErrorSpec(
        401, AUTHENTICATION_ERROR, "The request's signature is missing or does not verify."
    ),
    # 403: you may not.
    "insufficient_scope": ErrorSpec(
        403, PERMISSION_ERROR, "The API key lacks the scope this request needs."
    ),
    "org_mismatch": ErrorSpec(
        403, PERMISSION_ERROR, "X-Org-Id names an organisation other than the key's."
    ),
    "org_suspended": ErrorSpec(403, PERMISSION_ERROR, "The organisation is suspended."),
    "environment_not_allowed": ErrorSpec(
        403, PERMISSION_ERROR, "The key's environment does not allow this."
    ),
    "permission_denied": ErrorSpec(403, PERMISSION_ERROR, "You may not do this."),
    "ip_not_allowed": ErrorSpec(
        403, PERMISSION_ERROR, "The API key may not be used from this IP address."
    ),
    # 429: slow down.
    "rate_limited": ErrorSpec(429, RATE_LIMIT_ERROR, "Too many requests; retry later."),
    "quota_exceeded": ErrorSpec(
        429, RATE_LIMIT_ERROR, "The organisation's monthly request quota is used up."
    ),
    # Idempotency (enforced by the idempotency layer of the request pipeline).
    "idempotency_key_missing": ErrorSpec(
        400, IDEMPOTENCY_ERROR, "This request needs an Idempotency-Key header."
    ),
    "idempotency_key_invalid": ErrorSpec(
        400,
        IDEMPOTENCY_ERROR,
        "The Idempotency-Key must be 1 to 255 printable ASCII characters.",
    ),
    "idempotency_key_in_use": ErrorSpec(
        409, IDEMPOTENCY_ERROR, "A request with this Idempotency-Key is still running."
    ),
    "idempotency_key_reused": ErrorSpec(
        422,
        IDEMPOTENCY_ERROR,
        "This Idempotency-Key was used with a different method, path or body.",
    ),
    # 4xx: the request itself is wrong.
    "validation_error": ErrorSpec(400, INVALID_REQUEST_ERROR, "The request is not valid."),
    "conflicting_credentials": ErrorSpec(
        400,
        INVALID_REQUEST_ERROR,
        "Authorization and X-API-Key name different keys; send one.",
    ),
    "malformed_json": ErrorSpec(400, INVALID_REQUEST_ERROR, "The body is not valid JSON."),
    "not_found": ErrorSpec(404, INVALID_REQUEST_ERROR, "No such resource."),
    "route_not_found": ErrorSpec(
        404,
        INVALID_REQUEST_ERROR,
        "No route of the catalogue matches this method and path (gateway door).",
    ),
    "method_not_allowed": ErrorSpec(
        405, INVALID_REQUEST_ERROR, "This method is not allowed on this resource."
    ),
    "conflict": ErrorSpec(
        409, INVALID_REQUEST_ERROR, "The request conflicts with the resource's current state."
    ),
    "already_rotated": ErrorSpec(
        409,
        INVALID_REQUEST_ERROR,
        "This key was already rotated; rotate its successor (`successor_id`) instead.",
    ),
    "request_too_large": ErrorSpec(413, INVALID_REQUEST_ERROR, "The request body is too large."),
    "unsupported_media_type": ErrorSpec(
        415, INVALID_REQUEST_ERROR, "Send the body as JSON (Content-Type: application/json)."
    ),
    # 5xx: our fault.
    "internal_error": ErrorSpec(
        500, API_ERROR, "Something went wrong on our side. Quote the request id if you ask us."
    ),
    "service_unavailable": ErrorSpec(
        503, API_ERROR, "The service is temporarily unavailable; retry later."
    ),
}

# What to do about each code: the errors page (`/api/docs/errors/#<code>`) shows it, and
# every error body links to it in `doc_url`. A test keeps this complete.
FIXES: Mapping[str, str] = {
    "missing_api_key": "Send the key in the Authorization header as `Bearer <key>` (or in "
    "the key header your deployment names).",
    "invalid_api_key": "Copy the key again from where you stored it at creation: the whole "
    "string, prefix included. A test key never works where a live one is meant, and a "
    "deleted key is unknown. Lost keys cannot be shown again: create a new one.",
    "api_key_revoked": "The key was revoked in the dashboard or through the API, or reported "
    "leaked. Create a new key and replace the old one everywhere.",
    "api_key_expired": "The key passed its expiry, or the grace period of its rotation ended. "
    "Use its successor (`rotated_to`) or create a new key.",
    "invalid_signature": "A signed request (GitHub secret scanning) must carry the sender's "
    "key identifier and a signature of the raw body that verifies with that published key. "
    "If GitHub's own alerts are refused, check GITHUB_SECRET_SCANNING_KEYS_URL "
    "(docs/secret-scanning.md).",
    "insufficient_scope": "The body's `required_scope` names what the request needs. Give "
    "the key that scope (a new key, or narrow your request), or call with another key.",
    "org_mismatch": "The organisation header names another organisation than the key's. "
    "Send the key's own organisation id or slug, or leave the header out.",
    "org_suspended": "The organisation is suspended by the platform: no key of it works "
    "until it is reactivated. Contact the platform's support.",
    "environment_not_allowed": "Live keys need the organisation's KYC approved, and a test "
    "key can create test keys only. Use a test key, or finish KYC first.",
    "ip_not_allowed": "The key carries an IP allowlist and the request came from an address "
    "outside it (the address is in the message). Call from an allowed network, or have an "
    "owner or admin add the range on the key's page. Behind a proxy, the operator sets "
    "TRUSTED_PROXY_HOPS so the client's own address is used.",
    "permission_denied": "The key acts with an admin's powers: owners and admins are out of "
    "its reach. Ask an owner to do this in the dashboard.",
    "rate_limited": "Wait for `Retry-After` seconds and retry; spread requests out. The "
    "`RateLimit` headers show what is left in the window.",
    "quota_exceeded": "The organisation's monthly quota is used up until the 1st (UTC). "
    "Wait for `Retry-After`, or ask the platform for a larger plan.",
    "idempotency_key_missing": "Send an `Idempotency-Key` header with every POST, PATCH "
    "and DELETE: a new unique value per operation, the same value when you retry it.",
    "idempotency_key_invalid": "Use 1 to 255 printable ASCII characters, e.g. a UUID.",
    "idempotency_key_in_use": "The first request with this key is still running. Wait for "
    "`Retry-After` seconds and retry with the same key: you will get its outcome.",
    "idempotency_key_reused": "This key was used for another request (method, path or "
    "body). Use a new key for a new operation.",
    "validation_error": "The body's `param` (and `errors`) name what is wrong. Fix that "
    "field and send the request again.",
    "conflicting_credentials": "Two key headers carry different keys. Send one key.",
    "malformed_json": "Send a valid JSON document in UTF-8 with `Content-Type: application/json`.",
    "not_found": "Check the path and the id; another organisation's object is not found "
    "either. The API reference lists every endpoint.",
    "route_not_found": "No route of the catalogue matches the original request: add a "
    "route for it to the catalogue (docs/catalogue.md) or fix the path.",
    "method_not_allowed": "Use one of the methods the endpoint lists in its `Allow` header.",
    "conflict": "The resource's state forbids this now (already a member, the last owner, "
    "a KYC application under review); the message and `reason` say which.",
    "already_rotated": "Rotate the key named in `successor_id` instead.",
    "request_too_large": "Send a smaller body: JSON bodies up to 1 MB; documents through "
    "the KYC endpoint's multipart form.",
    "unsupported_media_type": "Send `Content-Type: application/json` (or multipart/form-data "
    "where an endpoint takes files).",
    "internal_error": "Our fault. Retry later; if it lasts, quote the `request_id`.",
    "service_unavailable": "A dependency is down for a moment. Retry after `Retry-After` seconds.",
}


def doc_url(code: str) -> str:
    """Where the errors page explains `code` (cause and fix)."""
    from django.conf import settings

    return f"{settings.SITE_URL}/api/docs/errors/#{code}"


# The 401 codes: their responses carry `WWW-Authenticate: Bearer`.
AUTHENTICATION_CODES = frozenset(c for c, s in ERRORS.items() if s.status == 401)


def spec_for(code: str) -> ErrorSpec:
    return ERRORS[code]


def error_body(
    code: str, *, request_id: str, message: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The error document for `code`. `extra` adds fields such as `param`, `errors`."""
    spec = ERRORS[code]
    error: dict[str, Any] = {
        "type": spec.type,
        "code": code,
        "message": message or spec.message,
        "request_id": request_id,
        "doc_url": doc_url(code),
    }
    error.update({k: v for k, v in extra.items() if v is not None})
    return {"error": error}


def www_authenticate(code: str) -> str:
    """RFC 6750 challenge: a missing key gets the bare scheme, a bad one `invalid_token`."""
    if code == "missing_api_key":
        return 'Bearer realm="api"'
    return f'Bearer realm="api", error="invalid_token", error_description="{code}"'


class ApiError(APIException):
    """Raise one of the table's errors from anywhere in the API pipeline.

    `extra` fields (`param`, `required_scope`, ...) are added to the error body;
    `headers` to the response (for example `Retry-After`).
    """

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        spec = ERRORS[code]  # an unknown code is a programming error: fail loudly here
        self.code = code
        self.status_code = spec.status
        self.message = message or spec.message
        self.extra = extra
        self.headers = dict(headers or {})
        super().__init__(detail=self.message, code=code)
