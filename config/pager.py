"""Keyset pages: one query a page, however deep the page and however long the list. The
one pager of the dashboard's lists (the audit log, the key list) and of every API list
(`apikeys.pagination.ApiCursorPagination`).

A list is ordered by a time field and then the row id, both descending (newest first, the
default) or both ascending (`order`). A page is named by a cursor, the public id of a row
of the same list: `following` gives the rows just after it in the list's order (older,
in a newest-first list), `preceding` the rows just before it. The cursor is resolved
inside the page's own query (a subquery on `scope`), so an unknown id, or one of another
organisation, gives an empty page, never a position in someone else's list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

from django.db.models import Model, Q, QuerySet, Subquery

T = TypeVar("T", bound=Model)

NEWEST_FIRST = ("-created_at", "-id")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page in the list's order, with the cursors (public ids) of its neighbours:
    `next` for the page after it, `previous` for the one before; None at either end."""

    items: list[T]
    next: str | None
    previous: str | None

    @classmethod
    def empty(cls) -> Page[Any]:
        return cls(items=[], next=None, previous=None)


def keyset_page(
    rows: QuerySet[T],
    *,
    scope: QuerySet[T],
    following: str = "",
    preceding: str = "",
    limit: int,
    order: tuple[str, str] = NEWEST_FIRST,
) -> Page[T]:
    """The page of `rows` in `order` (a time field, then "id"; "-" for descending, the
    same for both) just after the row `following` or just before the row `preceding`, or
    the first page. `scope` is where a cursor may be found (for the dashboard, the
    unfiltered list, so a filter change keeps the position)."""
    field = order[0].removeprefix("-")
    descending = order[0].startswith("-")
    reversed_order = tuple(name.removeprefix("-") if descending else f"-{name}" for name in order)
    rows = rows.order_by(*order)
    cursor_id = following or preceding
    if cursor_id:
        cursor = scope.filter(public_id=cursor_id)
        at = Subquery(cursor.values(field)[:1])
        row = Subquery(cursor.values("id")[:1])
        # Further along the list's order: smaller values when descending.
        smaller = descending == bool(following)
        if smaller:
            rows = rows.filter(Q(**{f"{field}__lt": at}) | Q(**{field: at, "id__lt": row}))
        else:
            rows = rows.filter(Q(**{f"{field}__gt": at}) | Q(**{field: at, "id__gt": row}))
        if preceding:
            rows = rows.order_by(*reversed_order)
    found = list(rows[: limit + 1])
    more = len(found) > limit
    found = found[:limit]
    if preceding:
        found.reverse()
    if not found:
        return Page.empty()
    # Going back (`preceding`), there is a next page: the cursor's row itself.
    has_next = more if not preceding else True
    # Going forward or from the start, a previous page exists only past a cursor.
    has_previous = more if preceding else bool(following)
    return Page(
        items=found,
        next=str(getattr(found[-1], "public_id")) if has_next else None,  # noqa: B009
        previous=str(getattr(found[0], "public_id")) if has_previous else None,  # noqa: B009
    )


def cursors(params: Any, *, prefix: str) -> tuple[str, str]:
    """(`before`, `after`) of a page's query string; a cursor that is not an id of the
    list's kind (`evt_…`, `key_…`) was made by hand: 400."""
    from django.core.exceptions import BadRequest

    from orgs.ids import is_public_id

    before = str(params.get("before", ""))
    after = "" if before else str(params.get("after", ""))
    if not all(is_public_id(cursor, prefix=prefix) for cursor in (before, after) if cursor):
        raise BadRequest("Malformed page cursor.")
    return before, after


def links(path: str, query: dict[str, str], page: Page[Any], *, paged: bool) -> dict[str, str]:
    """The pager's links (`partials/pager.html`) of a newest-first list: older, newer
    and, once away from the first page (`paged`), back to the newest; `query` keeps the
    page's filters. In the URL `before` names the row the older page follows, `after`
    the row the newer page precedes."""

    return {
        "older_url": page_url(path, query, before=page.next) if page.next else "",
        "newer_url": page_url(path, query, after=page.previous) if page.previous else "",
        "newest_url": page_url(path, query) if paged else "",
    }


def page_url(path: str, query: dict[str, str], **cursor: str | None) -> str:
    """`path` with the page's filters `query` and a cursor, if any."""
    params = {**query, **{k: v for k, v in cursor.items() if v}}
    return f"{path}?{urlencode(params)}" if params else path
