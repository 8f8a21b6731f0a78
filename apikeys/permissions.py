"""Scope checks driven by the registry (`apikeys.scopes`).

A view declares the `resource` it guards; safe methods (GET, HEAD, OPTIONS) need
`<resource>:read`, every other method `<resource>:write`, unless the view's `actions`
maps a method to another action of the resource (`{"POST": "execute"}`). A missing scope
is 403 `insufficient_scope` naming `required_scope`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from apikeys.authentication import ApiKeyPrincipal
from apikeys.errors import ApiError
from apikeys.scopes import READ, WRITE, get_resource, has_scope

# A view whose `resource` is this needs a valid key but no particular scope (`GET me`).
ANY_SCOPE = "*"


def required_scope(
    resource: str,
    method: str,
    *,
    system: bool = False,
    actions: Mapping[str, str] | None = None,
) -> str | None:
    """The scope `method` on a view guarding `resource` needs; None for ANY_SCOPE.

    Raises LookupError for a resource the registry does not know, or an action the
    resource lacks (a programming error: such a view cannot be served).
    """
    if resource == ANY_SCOPE:
        return None
    entry = get_resource(resource, system=system)
    if entry is None:
        kind = "system" if system else "organisation"
        raise LookupError(f"{resource!r} is not an {kind} resource of the scope registry.")
    method = method.upper()
    if actions and method in actions:
        action = actions[method]
    elif method in SAFE_METHODS:
        action = READ
    else:
        action = WRITE
    if not entry.has(action):
        raise LookupError(
            f"{resource!r} has no action {action!r} ({', '.join(entry.actions)}); {method} "
            "cannot be guarded by it: declare `actions = {method: action}` on the view."
        )
    return f"{entry.name}:{action}"


class HasResourceScope(BasePermission):
    """Grants the request when the key holds the scope the view's resource requires."""

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.auth
        scope = view.required_scope_for(request.method or "GET")
        if scope is None:
            return True
        if not isinstance(principal, ApiKeyPrincipal) or not has_scope(principal.scopes, scope):
            raise ApiError(
                "insufficient_scope",
                f"This request needs the scope '{scope}'.",
                required_scope=scope,
            )
        return True
