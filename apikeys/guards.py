"""The API guards as the request pipeline calls them (hooks of `apikeys.api_base.ApiView`).

- `before_handler`: after authentication and scope checks, the rate limits and the monthly
  quota, counted in the same Redis round trip as the request's usage (`apikeys.ratelimit`);
  a refusal is 429 `rate_limited` / `quota_exceeded` with `Retry-After`.
- `around_handler`: a mutation's handler under the idempotency protocol
  (`apikeys.idempotency`), which opens the handler's transaction itself.
- `after_response`: the rate-limit headers on every authenticated response, and the
  status class of the response in the usage counters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.http import HttpResponseBase
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys import idempotency, ratelimit, usage
from apikeys.errors import ApiError
from config.net import client_ip

_STATE_ATTR = "latchkey_guard_state"


@dataclass
class _GuardState:
    result: ratelimit.LimitResult
    at: float


def _meta(request: Request) -> ratelimit.UsageMeta:
    django_request = request._request
    return ratelimit.UsageMeta(
        ip=client_ip(django_request) or "",
        client_version=str(getattr(django_request, "client_version", "") or ""),
        method=django_request.method or "GET",
        path=django_request.path,
        request_id=str(getattr(django_request, "request_id", "") or ""),
    )


def before_handler(request: Request, principal: Any) -> None:
    """Count the request against the key's limits; refuse it with 429 when over."""
    now = ratelimit.clock()
    result = ratelimit.guard(
        key_pk=principal.key_id,
        org_pk=principal.org_id,
        limits=principal.limits,
        meta=_meta(request),
        now=now,
    )
    setattr(request._request, _STATE_ATTR, _GuardState(result=result, at=now))
    if not result.allowed:
        raise ApiError(result.code, headers=result.headers())


def around_handler(
    view: Any, request: Request, principal: Any, presented_key: str, call: Callable[[], Any]
) -> Any:
    """Run a mutation's handler under the idempotency protocol.

    The outcome is stored as rendered bytes, so the handler's DRF response gets its
    renderer here (as `finalize_response` would give it) before it is stored.
    """
    django_request = request._request

    def call_and_prepare() -> Any:
        response = call()
        if isinstance(response, Response):
            response.accepted_renderer = request.accepted_renderer
            response.accepted_media_type = request.accepted_media_type
            response.renderer_context = view.get_renderer_context()  # type: ignore[attr-defined]
        return response

    try:
        return idempotency.run(
            method=request.method or "POST",
            path=django_request.get_full_path(),
            body=django_request.body,
            header=django_request.META.get(idempotency.META_HEADER),
            api_key_pk=principal.key_id,
            api_key_secret=presented_key,
            handler=call_and_prepare,
        )
    except idempotency.IdempotencyError as exc:
        raise ApiError(exc.code, exc.message, headers=exc.headers) from None


def after_response(request: Request, principal: Any, response: HttpResponseBase) -> None:
    """Rate-limit headers and the response's status class in the usage counters."""
    state: _GuardState | None = getattr(request._request, _STATE_ATTR, None)
    status_class = usage.status_class(response.status_code)
    if state is None:
        # Refused before the limiter (org, scope, validation of headers): count the
        # request for usage only and report the windows as they stand.
        result = ratelimit.guard(
            key_pk=principal.key_id,
            org_pk=principal.org_id,
            limits=principal.limits,
            meta=_meta(request),
            status_class=status_class,
            count_limits=False,
            status=response.status_code,
        )
    else:
        result = state.result
        if result.allowed:
            usage.record_status(
                key_pk=principal.key_id,
                org_pk=principal.org_id,
                hour=usage.hour_start(state.at),
                status_class=status_class,
                status=response.status_code,
                recent=result.recent,
            )
    for name, value in result.headers().items():
        response[name] = value
