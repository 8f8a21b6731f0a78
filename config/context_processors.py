from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject


def _user_orgs(request: HttpRequest) -> list[dict[str, str]]:
    from orgs.selectors import org_switcher_list

    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return []
    return org_switcher_list(user=user)


def shell(request: HttpRequest) -> dict[str, Any]:
    """What the page shell needs on every page: the product name, the current org and,
    for a signed-in user, their orgs for the switcher (one query, run only if a template
    reads `user_orgs`)."""
    return {
        "product_name": "Latchkey",
        "current_org": getattr(request, "org", None),
        "current_membership": getattr(request, "membership", None),
        "user_orgs": SimpleLazyObject(lambda: _user_orgs(request)),
        # The catalogue's header names, so pages name the headers integrators send.
        "wire": SimpleLazyObject(_wire),
    }


def _wire() -> Any:
    from apikeys.catalogue import current

    return current().wire
