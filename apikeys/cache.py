"""Invalidation hooks of the key-verification cache (`apikeys.keycache`).

Every write that changes whether a key is accepted calls one of these; inside a
transaction they take effect when it commits, so no worker process keeps accepting a key
(or applying limits) the database no longer backs:

- `invalidate_key(digest)`: revoke, rotate, delete of one key;
- `invalidate_org(org_pk)`: suspension, reactivation, plan or custom-limit change of an
  organisation (every key of the org at once, without enumerating them).
"""

from __future__ import annotations

from apikeys.keycache import cache_key, invalidate_key, invalidate_org

__all__ = ["cache_key", "invalidate_key", "invalidate_org"]
