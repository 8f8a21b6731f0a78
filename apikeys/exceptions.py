"""The API's one exception handler, and Django-level 400/404/500 handlers for /api/.

Every error leaves as `{"error": {"type", "code", "message", "request_id", ...}}` with the
status of the code in `apikeys.errors.ERRORS`. Unexpected exceptions become 500
`internal_error`: the body carries the request id, never a stack trace; the log carries
both.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import set_rollback

from apikeys.errors import AUTHENTICATION_CODES, ERRORS, ApiError, error_body, www_authenticate
from apikeys.redisconn import ErrorLog
from apikeys.scopes import ScopeError
from apikeys.services import ScopeNotAllowed
from config.errors import InvalidFields, ServiceError

logger = logging.getLogger("apikeys.api")

# The database is unreachable (or dropped the connection): 503 with Retry-After, never a
# 500. Django closes an unusable connection at the end of the request, so the next one
# reconnects: workers recover by themselves once the database is back.
#
# Only an error that says the server cannot be reached (or is too busy to take the
# query) is a 503: a deadlock, a serialization failure or a missing table is the
# application's error, a 500 that must be seen as one.
DATABASE_RETRY_AFTER = 5
# SQLSTATE classes and codes of an unreachable server: connection exceptions (08...),
# admin/crash shutdown and "cannot connect now" (57P01-03), too many connections (53300).
_UNREACHABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
# SQLite's messages for a database file another process holds or that cannot be opened.
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file")


def is_database_down(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached right now (a 503)."""
    if isinstance(exc, InterfaceError):  # the connection is already closed
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    if isinstance(cause, sqlite3.OperationalError):
        return str(cause).startswith(_SQLITE_UNAVAILABLE)
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate is None:
        # The driver's own error, with no server reply: connecting failed or the
        # connection dropped mid-query.
        return cause is not None
    return str(sqlstate).startswith(_UNREACHABLE_SQLSTATES)


_database_errors = ErrorLog(logger_name="apikeys.api")


def database_down(exc: BaseException) -> None:
    _database_errors.error("database", "Database unreachable: answering 503", exc)


API_PATH_PREFIX = "/api/"

# Machine-readable reasons of the org services, mapped to the table's codes. The
# original reason travels in the body as `reason` so a client can tell them apart.
# The reasons of refused service calls (`config.errors.ServiceError.code`) that are not
# API error codes themselves, and the API error code each is sent as (with the reason in
# the body's `reason`). Any other reason is a `validation_error`.
SERVICE_ERROR_CODES: Mapping[str, str] = {
    "forbidden": "permission_denied",
    "staff": "permission_denied",
    "already_member": "conflict",
    "already_invited": "conflict",
    "last_owner": "conflict",
    "slug_taken": "conflict",
    "invitation_closed": "conflict",
    "disabled": "conflict",
    "too_many_endpoints": "conflict",
    "kyc_pending": "conflict",
    "kyc_approved": "conflict",
    "kyc_not_pending": "conflict",
}


def request_id_of(request: Any) -> str:
    return str(getattr(request, "request_id", "") or "")


def _flatten(detail: Any, path: str = "") -> Iterator[dict[str, str]]:
    """DRF's nested error details as a flat list of `{param, code, message}`."""
    if isinstance(detail, Mapping):
        for key, value in detail.items():
            name = "" if key == api_settings.NON_FIELD_ERRORS_KEY else str(key)
            yield from _flatten(value, f"{path}.{name}" if path and name else path or name)
    elif isinstance(detail, list):
        leaves = all(isinstance(item, drf.ErrorDetail) for item in detail)
        for index, item in enumerate(detail):
            if leaves:
                yield from _flatten(item, path)
            else:
                yield from _flatten(item, f"{path}.{index}" if path else str(index))
    else:
        code = getattr(detail, "code", None) or "invalid"
        yield {"param": path, "code": str(code), "message": str(detail)}


def _validation_payload(detail: Any) -> tuple[str, dict[str, Any]]:
    errors = list(_flatten(detail))
    if not errors:
        return ERRORS["validation_error"].message, {}
    first = errors[0]
    message = f"{first['param']}: {first['message']}" if first["param"] else first["message"]
    extra: dict[str, Any] = {"errors": errors}
    if first["param"]:
        extra["param"] = first["param"]
    return message, extra


def service_error(exc: ServiceError) -> tuple[str, str, dict[str, Any]]:
    """(API error code, message, body fields) of a refused service call: the one mapping
    of every app's `ServiceError` to the API's error shape."""
    param = {"grace": "grace_period"}.get(exc.param, exc.param) or None
    if not exc.code_is_reason:
        code = exc.code if exc.code in ERRORS else "validation_error"
        return code, exc.message, {"param": param, **exc.extra}
    code = exc.code if exc.code in ERRORS else SERVICE_ERROR_CODES.get(exc.code, "validation_error")
    fields: dict[str, Any] = {"reason": exc.code, **exc.extra}
    if param:
        fields["param"] = param
    return code, exc.message, fields


def _classify(exc: BaseException) -> tuple[str, str | None, dict[str, Any], dict[str, str]]:
    """(code, message, extra body fields, extra headers) for a known exception.

    Raises LookupError for an exception that is not a client error (a 500).
    """
    if isinstance(exc, ApiError):
        return exc.code, exc.message, dict(exc.extra), dict(exc.headers)
    if is_database_down(exc):
        database_down(exc)
        return "service_unavailable", None, {}, {"Retry-After": str(DATABASE_RETRY_AFTER)}
    if isinstance(exc, drf.ValidationError):
        message, extra = _validation_payload(exc.detail)
        return "validation_error", message, extra, {}
    if isinstance(exc, InvalidFields | DjangoValidationError):
        if isinstance(exc, InvalidFields):
            detail = exc.fields
        else:
            detail = exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
        message, extra = _validation_payload(
            {k: [drf.ErrorDetail(m, code="invalid") for m in v] for k, v in detail.items()}
        )
        return "validation_error", message, extra, {}
    if isinstance(exc, ScopeNotAllowed):
        return (
            "insufficient_scope",
            exc.message,
            {"required_scope": exc.required_scope, "param": exc.param or None},
            {},
        )
    if isinstance(exc, ServiceError):
        return (*service_error(exc), {})
    if isinstance(exc, ScopeError):
        return "validation_error", exc.message, {"param": "scopes"}, {}
    if isinstance(exc, drf.ParseError):
        return "malformed_json", f"The body is not valid JSON: {_short(exc.detail)}", {}, {}
    if isinstance(exc, drf.NotAuthenticated):
        return "missing_api_key", None, {}, {}
    if isinstance(exc, drf.AuthenticationFailed):
        return "invalid_api_key", None, {}, {}
    if isinstance(exc, drf.PermissionDenied | DjangoPermissionDenied):
        return "permission_denied", None, {}, {}
    if isinstance(exc, drf.NotFound | Http404):
        return "not_found", None, {}, {}
    if isinstance(exc, drf.MethodNotAllowed):
        return "method_not_allowed", _short(exc.detail), {}, {}
    if isinstance(exc, drf.UnsupportedMediaType | drf.NotAcceptable):
        return "unsupported_media_type", None, {}, {}
    if isinstance(exc, drf.Throttled):
        wait = int(getattr(exc, "wait", None) or 1)
        return "rate_limited", None, {}, {"Retry-After": str(max(wait, 1))}
    if isinstance(exc, RequestDataTooBig):
        return "request_too_large", None, {}, {}
    if isinstance(exc, SuspiciousOperation):
        return "validation_error", "The request is malformed.", {}, {}
    if isinstance(exc, drf.APIException) and 400 <= exc.status_code < 500:
        return "validation_error", _short(exc.detail), {}, {}
    raise LookupError(type(exc).__name__)


def _short(detail: Any) -> str:
    return str(detail)[:300]


def error_response_for(exc: BaseException, request: Any) -> Response:
    """The API error response for `exc` (any exception) raised while serving `request`."""
    request_id = request_id_of(request)
    try:
        code, message, extra, headers = _classify(exc)
    except LookupError:
        logger.error(
            "Unhandled exception serving %s %s (request id %s)",
            getattr(request, "method", "?"),
            getattr(request, "path", "?"),
            request_id,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        code, message, extra, headers = "internal_error", None, {}, {}
    if code in AUTHENTICATION_CODES:
        headers.setdefault("WWW-Authenticate", www_authenticate(code))
    body = error_body(code, request_id=request_id, message=message, **extra)
    return Response(body, status=ERRORS[code].status, headers=headers)


def api_exception_handler(exc: Exception, context: Mapping[str, Any]) -> Response:
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]: every exception gets the error shape."""
    set_rollback()
    return error_response_for(exc, context.get("request"))


def json_error(request: HttpRequest, code: str, message: str | None = None) -> JsonResponse:
    body = error_body(code, request_id=request_id_of(request), message=message)
    response = JsonResponse(body, status=ERRORS[code].status)
    if code in AUTHENTICATION_CODES:
        response["WWW-Authenticate"] = www_authenticate(code)
    return response


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PATH_PREFIX)


# Django-level handlers (config/urls.py): JSON under /api/, Django's pages elsewhere.


def handler400(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        if isinstance(exception, RequestDataTooBig):
            return json_error(request, "request_too_large")
        return json_error(request, "validation_error", "The request is malformed.")
    return defaults.bad_request(request, exception)


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return json_error(request, "not_found")
    return defaults.page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    exc = sys.exc_info()[1]
    if exc is not None and is_database_down(exc):
        return _database_down_response(request, exc)
    if _is_api(request):
        return json_error(request, "internal_error")
    return defaults.server_error(request)


def _database_down_response(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """503 with Retry-After: the API's error shape under /api/ and /gateway/, a page that
    needs nothing from the database elsewhere."""
    database_down(exc)
    response: HttpResponse
    if request.path.startswith(("/api/", "/gateway/")):
        response = json_error(request, "service_unavailable")
    else:
        response = HttpResponse(
            "<!doctype html><title>Temporarily unavailable</title>"
            "<h1>Temporarily unavailable</h1><p>Latchkey cannot reach its database. "
            "Try again in a few seconds.</p>",
            status=503,
            content_type="text/html; charset=utf-8",
        )
    response["Retry-After"] = str(DATABASE_RETRY_AFTER)
    return response
