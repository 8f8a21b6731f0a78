"""Scope checks driven by the registry (`apikeys.scopes`).

A view declares the `resource` it guards; safe methods (GET, HEAD, OPTIONS) need
`<resource>:read`, every other method `<resource>:write`, unless the view's `actions`
maps a method to another action of the resource (`{"POST": "execute"}`). The admission
pipeline (`apikeys.guard`) refuses a key without it: 403 `insufficient_scope` naming
`required_scope`.
"""

from __future__ import annotations

from collections.abc import Mapping

from rest_framework.permissions import SAFE_METHODS

from apikeys.scopes import READ, WRITE, get_resource

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
