"""The stable import path for host code guarded by Latchkey keys.

A host app's DRF views subclass `OrgApiView`, declare the catalogue `resource` they guard
(and `actions` where a method needs an action other than read or write), raise `ApiError`
with a code of the error table, and read the calling key with `principal(request)`.
Latchkey's pipeline (verification, org checks, scope, rate limits, quota, idempotency,
usage, the error shape, OpenAPI) applies to them as to its own endpoints. See
docs/guide/your-own-endpoints.md.
"""

from __future__ import annotations

from typing import Any

from apikeys.api_base import OrgApiView, SystemApiView
from apikeys.authentication import ApiKeyPrincipal
from apikeys.errors import ApiError

__all__ = ["ApiError", "ApiKeyPrincipal", "OrgApiView", "SystemApiView", "principal"]


def principal(request: Any) -> ApiKeyPrincipal:
    """The key that made `request` (a DRF or Django request of a guarded view): its id,
    name, environment, scopes, org (`org_public_id`, `org_slug`), limits and `meta`."""
    auth = getattr(request, "auth", None)
    if auth is None and hasattr(request, "_request"):
        auth = getattr(request._request, "auth", None)
    if not isinstance(auth, ApiKeyPrincipal):
        raise ApiError("missing_api_key")
    return auth
