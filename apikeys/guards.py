"""The API guards as the request pipeline calls them (hooks of `apikeys.api_base.ApiView`).

- `resolve_counting` (called by authentication): the key's verification and, on a warm
  cache, the rate-limit check-and-count and usage in the same single Redis round trip
  (ADR 0064), or no round trip at all under this process's admission lease on a
  high-limit key (`apikeys.leases`, ADR 0065); the verdict waits on the request.
- `before_handler`: after authentication and scope checks, the rate limits and the monthly
  quota (the verdict already reached, or one round trip on the cold path,
  `apikeys.ratelimit`); a refusal is 429 `rate_limited` / `quota_exceeded` with
  `Retry-After`.
- `around_handler`: a mutation's handler under the idempotency protocol
  (`apikeys.idempotency`), which opens the handler's transaction itself.
- `after_response`: the rate-limit headers on every authenticated response, the status
  class of the response in the usage counters (a round trip only for 4xx/5xx), and the
  refund of a request counted and then refused before the limiter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys import idempotency, keycache, leases, ratelimit, usage
from apikeys.catalogue import current
from apikeys.errors import ApiError
from config.net import client_ip

_STATE_ATTR = "latchkey_guard_state"
# Set at authentication when the verification-and-count script already checked and
# counted the request (ADR 0064); `before_handler` then only applies its verdict.
_COUNTED_ATTR = "latchkey_guard_counted"


@dataclass
class _GuardState:
    result: ratelimit.LimitResult
    at: float
    key_pk: int = 0
    org_pk: int | None = None
    # Admitted under this process's admission lease (ADR 0065): no Redis call at all.
    lease: leases.Lease | None = None


def resolve_counting(request: HttpRequest, digest: str) -> keycache.Resolved | None:
    """Resolve the key with `digest` and, on the warm path, check and count the request
    against its limits in the same Redis round trip (ADR 0064).

    The verdict waits on the request for `before_handler`, which applies it after the
    key-kind, org and scope checks; a request refused by one of those is refunded by
    `after_response` (or `refund_counted` when authentication itself refuses it).
    """
    now = ratelimit.clock()
    taken = leases.take(digest, now)
    if taken is not None:
        lease, minute_used = taken
        state = _GuardState(
            ratelimit.leased_result(lease.limits, now, minute_used),
            now,
            lease.key_pk,
            lease.org_pk,
            lease,
        )
        setattr(request, _COUNTED_ATTR, state)
        return lease.resolved
    meta = _early_meta(request)
    body = meta.recent_body(now)
    pushed = usage.provisional_status(meta.method)
    wanted = leases.wanted()
    asked_at = time.monotonic()
    resolved, counted, error = keycache.resolve_and_count(
        digest,
        now=now,
        request_args=ratelimit.request_args(now, meta, body, pushed),
        lease=wanted,
    )
    if resolved is None:
        return None
    org = resolved.org
    limits = org.limits if org is not None else ratelimit.UNLIMITED
    if counted is not None:
        result = ratelimit.counted_result(
            resolved.key.pk, limits, now, counted.verdict, counted.minute_used, body, pushed
        )
        if counted.extra > 0:
            leases.grant(
                digest=digest,
                resolved=resolved,
                limits=limits,
                now=now,
                asked_at=asked_at,
                length_ms=wanted[1],
                tokens=counted.extra,
                minute_used=counted.minute_used,
            )
            # The headers report the window without the lease's unused tokens.
            result = replace(result, minute_used=counted.minute_used - counted.extra)
    elif error is not None:
        # Redis is down: authentication went to the database; the limits fail open
        # without a second attempt on this request.
        ratelimit.log_fail_open(error)
        result = ratelimit.degraded_result(limits, now)
    else:
        return resolved
    state = _GuardState(result, now, resolved.key.pk, org.pk if org is not None else None)
    setattr(request, _COUNTED_ATTR, state)
    return resolved


def refund_counted(request: HttpRequest, status: int) -> ratelimit.LimitResult | None:
    """Undo the counting of a request refused after the script counted it."""
    state: _GuardState | None = getattr(request, _COUNTED_ATTR, None)
    if state is None:
        return None
    delattr(request, _COUNTED_ATTR)
    if state.lease is not None:
        leases.give_back(state.lease)
        if status != 401:  # a key refused by authentication is not counted (as off lease)
            leases.record(
                state.lease,
                now=state.at,
                meta=_early_meta(request),
                status=status,
                status_class=usage.status_class(status),
            )
        return replace(state.result, minute_used=max(0, state.result.minute_used - 1))
    return ratelimit.refund(
        key_pk=state.key_pk, org_pk=state.org_pk, result=state.result, now=state.at, status=status
    )


def usage_method(request: HttpRequest) -> str:
    """The method usage records (the original request's, as `usage_path`)."""
    return str(getattr(request, "original_method", "") or request.method or "GET")


def usage_path(request: HttpRequest) -> str:
    """The path usage records: the original request's, when a door asks on its behalf
    (the gateway sets `original_path`), else the request's own."""
    return str(getattr(request, "original_path", "") or request.path)


def _early_meta(request: HttpRequest) -> ratelimit.UsageMeta:
    """The usage metadata before the pipeline validated the client headers (an invalid
    `X-Client-Version` makes the request a 400, refunded; `clean_version` drops it)."""
    return ratelimit.UsageMeta(
        ip=client_ip(request) or "",
        client_version=request.META.get(current().client_version_meta, ""),
        method=usage_method(request),
        path=usage_path(request),
        request_id=str(getattr(request, "request_id", "") or ""),
    )


def _meta(request: Request) -> ratelimit.UsageMeta:
    django_request = request._request
    return ratelimit.UsageMeta(
        ip=client_ip(django_request) or "",
        client_version=str(getattr(django_request, "client_version", "") or ""),
        method=usage_method(django_request),
        path=usage_path(django_request),
        request_id=str(getattr(django_request, "request_id", "") or ""),
    )


def before_handler(request: Request, principal: Any) -> None:
    """Count the request against the key's limits; refuse it with 429 when over."""
    counted: _GuardState | None = getattr(request._request, _COUNTED_ATTR, None)
    if counted is not None:
        setattr(request._request, _STATE_ATTR, counted)
        if not counted.result.allowed:
            raise ApiError(counted.result.code, headers=counted.result.headers())
        return
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
    refunded = None
    if state is None:
        refunded = refund_counted(request._request, response.status_code)
    if refunded is not None:
        result = refunded
    elif state is None:
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
        if state.lease is not None:
            leases.record(
                state.lease,
                now=state.at,
                meta=_meta(request),
                status=response.status_code,
                status_class=status_class,
            )
        elif result.allowed:
            usage.record_status(
                key_pk=principal.key_id,
                org_pk=principal.org_id,
                hour=usage.hour_start(state.at),
                status_class=status_class,
                status=response.status_code,
                recent=result.recent,
            )
    # Straight into the response's header store: these names and values are ASCII made
    # here (what `response[name] = value` would check, at a cost on every request).
    store = response.headers._store
    for name, value in result.headers().items():
        store[name.lower()] = (name, value)
