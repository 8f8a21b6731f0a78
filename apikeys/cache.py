"""The key-verification cache's invalidation hook.

Entries live under `apikey:<digest>` in Django's default cache. Every write that changes
whether a key is accepted (revoke, rotate, delete) calls `invalidate_key` after its
transaction commits, so no worker keeps accepting a stale entry.
"""

from __future__ import annotations

from django.core.cache import cache


def cache_key(digest: str) -> str:
    return f"apikey:{digest}"


def invalidate_key(digest: str) -> None:
    cache.delete(cache_key(digest))
