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


def _shell_org(request: HttpRequest, user_orgs: Any) -> dict[str, str] | None:
    """The org the shell shows: the page's own, else the last one used (the selected-org
    cookie the org pages set), else the user's only org. Account and platform pages keep
    the org context this way (ADR 0081)."""
    from orgs.tenancy import SELECTED_ORG_COOKIE

    org = getattr(request, "org", None)
    if org is not None:
        membership = getattr(request, "membership", None)
        return {"name": org.name, "slug": org.slug, "role": getattr(membership, "role", "")}
    orgs = list(user_orgs)
    remembered = request.COOKIES.get(SELECTED_ORG_COOKIE, "")
    for candidate in orgs:
        if candidate["slug"] == remembered:
            return candidate
    return orgs[0] if len(orgs) == 1 else None


def shell(request: HttpRequest) -> dict[str, Any]:
    """What the page shell needs on every page: the product name, the current org and,
    for a signed-in user, their orgs for the switcher (one query, run only if a template
    reads `user_orgs`)."""
    user_orgs = SimpleLazyObject(lambda: _user_orgs(request))
    return {
        "product_name": "Latchkey",
        "current_org": getattr(request, "org", None),
        "current_membership": getattr(request, "membership", None),
        "user_orgs": user_orgs,
        "shell_org": SimpleLazyObject(lambda: _shell_org(request, user_orgs)),
        # The catalogue's header names, so pages name the headers integrators send.
        "wire": SimpleLazyObject(_wire),
    }


def _wire() -> Any:
    from apikeys.catalogue import current

    return current().wire
