"""Where a sign-in may continue to: same-site paths only."""

from __future__ import annotations

from django.utils.http import url_has_allowed_host_and_scheme

MAX_NEXT_URL_LENGTH = 1024


def safe_next_url(value: str | None) -> str:
    """`value` when it is a same-site path (`/...`), else "".

    Absolute URLs, scheme-relative `//host` forms, backslash tricks and control characters
    are refused, so a crafted link cannot send a freshly signed-in user to another site.
    """
    if not value or len(value) > MAX_NEXT_URL_LENGTH:
        return ""
    if not value.startswith("/") or value.startswith("//"):
        return ""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return ""
    if not url_has_allowed_host_and_scheme(value, allowed_hosts=set(), require_https=False):
        return ""
    return value
