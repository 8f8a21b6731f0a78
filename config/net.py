"""Request metadata helpers shared by audit, usage and throttling."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest, *, strict: bool = False) -> str | None:
    """The caller's IP. X-Forwarded-For is trusted only behind a configured proxy count
    (`TRUSTED_PROXY_HOPS`): its entry that many places from the end.

    A header with fewer entries means the request skipped a proxy. For usage, audit and
    throttles the connection's own address is the best there is; with `strict` (an IP
    allowlist decides access on it) the address is unknown: None, so the request is
    outside every list rather than inside one that holds the inner proxy's address."""
    trusted_hops = getattr(settings, "TRUSTED_PROXY_HOPS", 0)
    if trusted_hops:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if len(hops) >= trusted_hops:
            return hops[-trusted_hops]
        if strict:
            return None
    return request.META.get("REMOTE_ADDR") or None


def user_agent(request: HttpRequest) -> str:
    return request.META.get("HTTP_USER_AGENT", "")[:512]
